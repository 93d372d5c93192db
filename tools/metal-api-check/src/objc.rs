//! A parser for the declaration headers of native/metal/sdk, whose format
//! (one declaration per line) is kept simple for it; see the README there.

use std::path::Path;

/// Where a declaration was written, for messages.
#[derive(Clone, Debug)]
pub struct Origin {
    pub file: String,
    pub line: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

#[derive(Clone, Debug)]
pub enum Decl {
    Class {
        name: String,
        superclass: Option<String>,
        protocols: Vec<String>,
    },
    Protocol {
        name: String,
        protocols: Vec<String>,
    },
    Method {
        container: String,
        selector: String,
        class_method: bool,
        ret: String,
        args: Vec<String>,
        available: Option<String>,
    },
    EnumConstant {
        name: String,
        value: String,
    },
    Function {
        name: String,
        inline: bool,
    },
    /// An extern constant (`FM_SDK_EXTERN Type const Name;`).
    Global {
        name: String,
    },
    Type {
        name: String,
    },
}

#[derive(Clone, Debug)]
pub struct Located {
    pub decl: Decl,
    pub origin: Origin,
}

/// Everything declared in `text` (the contents of header `file`).
pub fn parse(file: &str, text: &str) -> Result<Vec<Located>, String> {
    let mut out = Vec::new();
    let mut container: Option<String> = None;
    let mut in_enum = false;
    let mut in_struct = false;
    for (index, raw) in text.lines().enumerate() {
        let origin = Origin {
            file: file.to_string(),
            line: index + 1,
        };
        let line = raw.trim();
        let mut push = |decl: Decl| {
            out.push(Located {
                decl,
                origin: origin.clone(),
            })
        };
        if line.is_empty() || line.starts_with("//") || line.starts_with('#') {
            continue;
        }
        if in_enum {
            if line.starts_with('}') {
                in_enum = false;
                continue;
            }
            let item = line.trim_end_matches(',');
            let (name, value) = item
                .split_once('=')
                .ok_or_else(|| format!("{origin}: an enum constant needs '= value': {line}"))?;
            push(Decl::EnumConstant {
                name: name.trim().to_string(),
                value: value.trim().to_string(),
            });
            continue;
        }
        if in_struct {
            if let Some(rest) = line.strip_prefix('}') {
                in_struct = false;
                let name = rest.trim().trim_end_matches(';').trim();
                if !name.is_empty() {
                    push(Decl::Type {
                        name: name.to_string(),
                    });
                }
            }
            continue;
        }
        if let Some(rest) = line
            .strip_prefix("typedef NS_ENUM(")
            .or_else(|| line.strip_prefix("typedef NS_OPTIONS("))
        {
            let inside = rest.split(')').next().unwrap_or("");
            let name = inside.split(',').nth(1).unwrap_or("").trim();
            push(Decl::Type {
                name: name.to_string(),
            });
            in_enum = true;
            continue;
        }
        if line.starts_with("typedef struct") {
            if line.ends_with(';') {
                // typedef struct _X X;
                let name = line.trim_end_matches(';').rsplit(' ').next().unwrap_or("");
                push(Decl::Type {
                    name: name.to_string(),
                });
            } else {
                in_struct = true;
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("typedef ") {
            let rest = rest.trim_end_matches(';');
            let name = if let Some(block) = rest.find("(^") {
                rest[block + 2..]
                    .split(')')
                    .next()
                    .unwrap_or("")
                    .to_string()
            } else {
                rest.rsplit([' ', '*']).next().unwrap_or("").to_string()
            };
            push(Decl::Type { name });
            continue;
        }
        if let Some(rest) = line.strip_prefix("@interface ") {
            let (head, protocols) = split_protocols(rest);
            if let Some((class, _category)) = head.split_once('(') {
                container = Some(class.trim().to_string());
                continue;
            }
            let (name, superclass) = match head.split_once(':') {
                Some((n, s)) => (n, Some(strip_generics(s.trim()).to_string())),
                None => (head.as_str(), None),
            };
            let name = strip_generics(name.trim()).to_string();
            container = Some(name.clone());
            push(Decl::Class {
                name,
                superclass,
                protocols,
            });
            continue;
        }
        if let Some(rest) = line.strip_prefix("@protocol ") {
            if rest.trim_end().ends_with(';') {
                continue; // a forward declaration
            }
            let (head, protocols) = split_protocols(rest);
            let name = head.trim().to_string();
            container = Some(name.clone());
            push(Decl::Protocol { name, protocols });
            continue;
        }
        if line.starts_with("@end") {
            container = None;
            continue;
        }
        if line.starts_with("@class") || line.starts_with("__attribute__") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("@property") {
            let owner = container
                .clone()
                .ok_or_else(|| format!("{origin}: a property outside @interface"))?;
            for decl in parse_property(&owner, rest).map_err(|e| format!("{origin}: {e}"))? {
                push(decl);
            }
            continue;
        }
        if line.starts_with('-') || line.starts_with('+') {
            let owner = container
                .clone()
                .ok_or_else(|| format!("{origin}: a method outside @interface"))?;
            push(parse_method(&owner, line).map_err(|e| format!("{origin}: {e}"))?);
            continue;
        }
        if let Some(rest) = line.strip_prefix("FM_SDK_EXTERN ") {
            if rest.contains('(')
                && !rest
                    .split('(')
                    .next()
                    .unwrap_or("")
                    .contains("API_AVAILABLE")
            {
                push(Decl::Function {
                    name: function_name(rest),
                    inline: false,
                });
            } else {
                let (declaration, _) = availability(rest.trim_end_matches(';'));
                let name = declaration.rsplit([' ', '*']).next().unwrap_or("");
                push(Decl::Global {
                    name: name.to_string(),
                });
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("NS_INLINE ") {
            push(Decl::Function {
                name: function_name(rest),
                inline: true,
            });
            continue;
        }
        if line.starts_with('{') || line.starts_with('}') || line.starts_with("NS_ASSUME") {
            continue;
        }
        if line.starts_with("return ") || line.contains(" = {") {
            continue; // bodies of NS_INLINE helpers
        }
        return Err(format!(
            "{origin}: not a declaration this checker reads: {line}"
        ));
    }
    Ok(out)
}

/// Every header under `dir` (sorted), parsed.
pub fn parse_dir(dir: &Path) -> Result<Vec<Located>, String> {
    let mut files = Vec::new();
    collect_headers(dir, &mut files).map_err(|e| format!("{}: {e}", dir.display()))?;
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        out.extend(parse(&file.display().to_string(), &text)?);
    }
    Ok(out)
}

fn collect_headers(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_headers(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "h") {
            out.push(path);
        }
    }
    Ok(())
}

fn function_name(rest: &str) -> String {
    let before = rest.split('(').next().unwrap_or("");
    before
        .rsplit([' ', '*'])
        .next()
        .unwrap_or("")
        .trim()
        .to_string()
}

fn strip_generics(name: &str) -> &str {
    name.split('<').next().unwrap_or(name).trim()
}

/// "Name <A, B>" -> ("Name", [A, B]); generic parameters of the name stay.
fn split_protocols(rest: &str) -> (String, Vec<String>) {
    let rest = rest.trim();
    // The protocol list is the last <...> preceded by a space.
    if let Some(start) = rest.rfind(" <") {
        let list = rest[start + 2..].trim_end_matches('>');
        let protocols = list.split(',').map(|p| p.trim().to_string()).collect();
        return (rest[..start].to_string(), protocols);
    }
    (rest.to_string(), Vec::new())
}

/// The text of the balanced (...) starting at `s[0] == '('`, and the rest.
fn balanced(s: &str) -> Result<(&str, &str), String> {
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return Ok((&s[1..i], &s[i + 1..]));
                }
            }
            _ => {}
        }
    }
    Err(format!("unbalanced parentheses in '{s}'"))
}

fn availability(line: &str) -> (String, Option<String>) {
    match line.find("API_AVAILABLE(") {
        Some(at) => {
            let version = line[at..]
                .split("macos(")
                .nth(1)
                .and_then(|v| v.split(')').next())
                .map(str::to_string);
            (line[..at].trim().to_string(), version)
        }
        None => (line.trim().to_string(), None),
    }
}

fn parse_method(container: &str, line: &str) -> Result<Decl, String> {
    let class_method = line.starts_with('+');
    let (body, available) = availability(line[1..].trim().trim_end_matches(';'));
    let body = body.trim();
    if !body.starts_with('(') {
        return Err(format!("a method needs a return type: {line}"));
    }
    let (ret, mut rest) = balanced(body)?;
    let mut selector = String::new();
    let mut args = Vec::new();
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let part_end = rest
            .find(|c: char| c == ':' || c.is_whitespace())
            .unwrap_or(rest.len());
        let part = &rest[..part_end];
        rest = &rest[part_end..];
        if !rest.starts_with(':') {
            // A selector without arguments.
            if !selector.is_empty() || !args.is_empty() {
                return Err(format!("unexpected '{part}' in {line}"));
            }
            selector.push_str(part);
            break;
        }
        selector.push_str(part);
        selector.push(':');
        rest = rest[1..].trim_start();
        let (ty, after) = balanced(rest)?;
        args.push(ty.trim().to_string());
        // Skip the argument's name.
        rest = after.trim_start();
        let name_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        rest = &rest[name_end..];
    }
    Ok(Decl::Method {
        container: container.to_string(),
        selector,
        class_method,
        ret: ret.trim().to_string(),
        args,
        available,
    })
}

fn parse_property(container: &str, rest: &str) -> Result<Vec<Decl>, String> {
    let (body, available) = availability(rest.trim().trim_end_matches(';'));
    let body = body.trim();
    let (attributes, declaration) = if body.starts_with('(') {
        balanced(body)?
    } else {
        ("", body)
    };
    let attributes: Vec<&str> = attributes.split(',').map(str::trim).collect();
    let declaration = declaration.trim();
    let split = declaration
        .rfind([' ', '*'])
        .ok_or_else(|| format!("a property needs a type and a name: {declaration}"))?;
    let name = declaration[split + 1..].trim().to_string();
    let mut ty = declaration[..=split].trim().to_string();
    let nullable = attributes.contains(&"nullable");
    if nullable {
        ty = format!("{ty} _Nullable");
    }
    let getter = attributes
        .iter()
        .find_map(|a| a.strip_prefix("getter="))
        .map(|g| g.trim().to_string())
        .unwrap_or_else(|| name.clone());
    let mut out = vec![Decl::Method {
        container: container.to_string(),
        selector: getter,
        class_method: false,
        ret: ty.clone(),
        args: Vec::new(),
        available: available.clone(),
    }];
    if !attributes.contains(&"readonly") {
        let mut setter = String::from("set");
        let mut chars = name.chars();
        if let Some(first) = chars.next() {
            setter.extend(first.to_uppercase());
            setter.push_str(chars.as_str());
        }
        setter.push(':');
        out.push(Decl::Method {
            container: container.to_string(),
            selector: setter,
            class_method: false,
            ret: "void".to_string(),
            args: vec![ty],
            available,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_properties_and_enums() {
        let text = "@interface MPSGraph (Ops)\n\
            - (MPSGraphTensor *)additionWithPrimaryTensor:(MPSGraphTensor *)a secondaryTensor:(MPSGraphTensor *)b name:(NSString *_Nullable)name API_AVAILABLE(macos(12.0));\n\
            @property (readwrite, nonatomic) NSUInteger batchSize;\n\
            @end\n\
            typedef NS_ENUM(NSUInteger, X) {\n    XA = 4,\n};\n";
        let decls = parse("t.h", text).unwrap();
        match &decls[0].decl {
            Decl::Method {
                selector,
                args,
                available,
                ..
            } => {
                assert_eq!(selector, "additionWithPrimaryTensor:secondaryTensor:name:");
                assert_eq!(args.len(), 3);
                assert_eq!(available.as_deref(), Some("12.0"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&decls[1].decl, Decl::Method { selector, .. } if selector == "batchSize"));
        assert!(
            matches!(&decls[2].decl, Decl::Method { selector, .. } if selector == "setBatchSize:")
        );
        assert!(
            matches!(&decls[4].decl, Decl::EnumConstant { name, value } if name == "XA" && value == "4")
        );
    }
}
