//! What the objc2 crates declare, read from their (generated) sources:
//! classes with their superclasses, protocols, methods by selector with
//! their Rust signatures, enum constants by their C names, functions, types
//! and type aliases, and protocol conformances.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct RustMethod {
    pub container: String,
    /// `&self` (instance), `this: Allocated<Self>` (init), or neither (class).
    pub receiver: Receiver,
    pub params: Vec<String>,
    pub ret: String,
    pub file: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Receiver {
    Instance,
    Init,
    Class,
}

#[derive(Default, Debug)]
pub struct Index {
    /// class -> superclass chain as objc2 records it (`#[unsafe(super(A, B))]`).
    pub classes: BTreeMap<String, Vec<String>>,
    pub protocols: BTreeSet<String>,
    /// selector -> every method with that selector.
    pub methods: BTreeMap<String, Vec<RustMethod>>,
    /// C name (`#[doc(alias = ...)]`) -> the Rust value expression.
    pub constants: BTreeMap<String, String>,
    pub functions: BTreeSet<String>,
    /// `pub static NAME` (extern constants).
    pub statics: BTreeSet<String>,
    pub types: BTreeSet<String>,
    /// `pub type A = B;`
    pub aliases: BTreeMap<String, String>,
    /// (protocol, type) from `impl Protocol for Type`.
    pub conformances: BTreeSet<(String, String)>,
    /// Whether any availability (macOS version) annotation was seen.
    pub availability_lines: usize,
    pub files: usize,
}

impl Index {
    pub fn read(crate_dirs: &[PathBuf]) -> Result<Index, String> {
        let mut index = Index::default();
        for dir in crate_dirs {
            let mut files = Vec::new();
            collect(&dir.join("src"), &mut files).map_err(|e| format!("{}: {e}", dir.display()))?;
            files.sort();
            for file in files {
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| format!("{}: {e}", file.display()))?;
                index.add_file(&file.display().to_string(), &text);
            }
        }
        Ok(index)
    }

    pub fn add_file(&mut self, file: &str, text: &str) {
        self.files += 1;
        let lines: Vec<&str> = text.lines().collect();
        let mut container = String::new();
        let mut pending_super: Option<Vec<String>> = None;
        let mut pending_alias: Option<String> = None;
        let mut i = 0;
        while i < lines.len() {
            let line = lines[i].trim();
            if line.contains("available(") || line.contains("API_AVAILABLE") {
                self.availability_lines += 1;
            }
            if let Some(rest) = line.strip_prefix("#[unsafe(super(") {
                let list = rest.trim_end_matches(")]").trim_end_matches(')');
                pending_super = Some(split_top(list).iter().map(|s| ident(s)).collect());
            } else if let Some(rest) = line.strip_prefix("pub struct ") {
                let name = ident(rest);
                self.types.insert(name.clone());
                if let Some(chain) = pending_super.take() {
                    self.classes.insert(name, chain);
                }
            } else if let Some(rest) = line.strip_prefix("pub unsafe trait ") {
                let name = ident(rest);
                self.protocols.insert(name.clone());
                container = name;
            } else if let Some(rest) = line.strip_prefix("pub type ") {
                let name = ident(rest);
                if let Some((_, value)) = rest.split_once('=') {
                    let value = value.trim().trim_end_matches(';').trim();
                    // NSInteger and NSUInteger stay by name, as both sides write them.
                    let primitive = matches!(value, "isize" | "usize");
                    if !value.is_empty()
                        && !primitive
                        && !value.contains("Block")
                        && !value.contains("fn(")
                    {
                        self.aliases.insert(name.clone(), value.to_string());
                    }
                }
                self.types.insert(name);
            } else if line.starts_with("impl") || line.starts_with("unsafe impl") {
                let header = line
                    .trim_start_matches("unsafe ")
                    .trim_start_matches("impl");
                let header = skip_generics(header.trim_start());
                if let Some((protocol, ty)) = header.split_once(" for ") {
                    self.conformances
                        .insert((ident(protocol.trim()), ident(ty.trim())));
                } else {
                    container = ident(header);
                }
            } else if let Some(rest) = line.strip_prefix("#[doc(alias = \"") {
                pending_alias = Some(rest.split('"').next().unwrap_or("").to_string());
            } else if let Some(alias) = pending_alias.take() {
                // The constant (or struct, function) the alias names.
                if let Some((_, value)) = line.split_once('=') {
                    if line.starts_with("pub const ") || line.starts_with("const ") {
                        let value = value.trim().trim_end_matches(';').trim();
                        self.constants.insert(alias, value.to_string());
                    }
                } else if !line.starts_with("#[") && !line.starts_with("///") {
                    pending_alias = None;
                } else {
                    pending_alias = Some(alias);
                }
            }
            if let Some(rest) = line.strip_prefix("pub static ") {
                self.statics.insert(ident(rest));
            }
            if (line.contains("fn ") && line.contains("extern")) || line.starts_with("pub fn ") {
                if let Some(after) = line.split("fn ").nth(1) {
                    self.functions.insert(ident(after));
                }
            }
            if let Some(rest) = line.strip_prefix("#[unsafe(method(") {
                let selector = rest.split(')').next().unwrap_or("").to_string();
                // The signature follows the attributes, up to ';' or '{'.
                let mut j = i + 1;
                while j < lines.len()
                    && !lines[j].trim_start().starts_with("pub")
                    && !lines[j].trim_start().starts_with("fn ")
                    && !lines[j].trim_start().starts_with("unsafe fn ")
                {
                    j += 1;
                }
                let mut signature = String::new();
                while j < lines.len() {
                    signature.push_str(lines[j].trim());
                    signature.push(' ');
                    if lines[j].contains(';') || lines[j].contains('{') {
                        break;
                    }
                    j += 1;
                }
                if let Some(method) = parse_signature(&container, &signature, file) {
                    self.methods.entry(selector).or_default().push(method);
                }
                i = j;
            }
            i += 1;
        }
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

fn ident(s: &str) -> String {
    s.trim()
        .trim_start_matches("dyn ")
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// "<T: X> Name<T> {" -> "Name<T> {"
fn skip_generics(s: &str) -> &str {
    if !s.starts_with('<') {
        return s;
    }
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '<' => depth += 1,
            '>' => {
                depth -= 1;
                if depth == 0 {
                    return s[i + 1..].trim_start();
                }
            }
            _ => {}
        }
    }
    s
}

/// Splits at top-level commas.
pub fn split_top(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut current = String::new();
    for c in s.chars() {
        match c {
            '<' | '(' | '[' => depth += 1,
            '>' | ')' | ']' => depth -= 1,
            ',' if depth == 0 => {
                out.push(current.trim().to_string());
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_string());
    }
    out
}

fn parse_signature(container: &str, signature: &str, file: &str) -> Option<RustMethod> {
    let start = signature.find("fn ")?;
    let after = &signature[start + 3..];
    let open = after.find('(')?;
    // The balanced parameter list.
    let mut depth = 0;
    let mut close = None;
    for (i, c) in after[open..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(open + i);
                    break;
                }
            }
            _ => {}
        }
    }
    let close = close?;
    let params_text = &after[open + 1..close];
    let rest = &after[close + 1..];
    let ret = match rest.split_once("->") {
        Some((_, r)) => r
            .split(['{', ';'])
            .next()
            .unwrap_or("")
            .trim()
            .trim_end_matches("where")
            .trim()
            .to_string(),
        None => "()".to_string(),
    };
    let mut receiver = Receiver::Class;
    let mut params = Vec::new();
    for p in split_top(params_text) {
        if p == "&self" || p == "&mut self" || p == "self" {
            receiver = Receiver::Instance;
        } else if p.starts_with("this:") {
            receiver = Receiver::Init;
        } else if let Some((_, ty)) = p.split_once(':') {
            params.push(ty.trim().to_string());
        }
    }
    Some(RustMethod {
        container: container.to_string(),
        receiver,
        params,
        ret,
        file: file.to_string(),
    })
}
