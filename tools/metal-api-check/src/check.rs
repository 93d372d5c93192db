//! The comparison: every declaration of the headers must exist in the
//! index, methods with the same argument and return types (after both sides
//! are reduced to one spelling: pointers, nullability, ownership wrappers
//! and `id<P>` / `ProtocolObject<dyn P>` dropped, C scalars named as Rust's).

use std::collections::BTreeMap;

use crate::index::{split_top, Index, Receiver, RustMethod};
use crate::objc::{Decl, Located};

/// Declarations objc2 provides by other means than a generated method:
/// `alloc` is its `AllocAnyThread` trait (checked to exist by name).
/// `copyWithZone:` is objc2-foundation's hand-written `NSCopying` (its
/// `copy` goes through it).
const PROVIDED_BY_OBJC2: &[(&str, &str, &str)] = &[
    ("NSObject", "alloc", "fn alloc("),
    ("NSCopying", "copyWithZone:", "copyWithZone:"),
];

/// Objective-C protocol names that objc2 spells differently.
fn protocol_name(name: &str) -> &str {
    match name {
        "NSObject" => "NSObjectProtocol",
        other => other,
    }
}

pub struct Report {
    pub errors: Vec<String>,
    pub checked: usize,
    pub notes: Vec<String>,
}

pub fn check(decls: &[Located], index: &Index, objc2_core: Option<&str>) -> Report {
    let mut report = Report {
        errors: Vec::new(),
        checked: 0,
        notes: Vec::new(),
    };
    // Superclasses as the headers declare them, to find inherited methods.
    let mut supers: BTreeMap<String, String> = BTreeMap::new();
    for d in decls {
        if let Decl::Class {
            name,
            superclass: Some(s),
            ..
        } = &d.decl
        {
            supers.insert(name.clone(), s.clone());
        }
    }
    let mut unavailable_checks = 0;
    for d in decls {
        report.checked += 1;
        let at = &d.origin;
        match &d.decl {
            Decl::Class {
                name,
                superclass,
                protocols,
            } => {
                match index.classes.get(name) {
                    // A root class (NSObject) is written by hand in objc2.
                    None if superclass.is_none() && index.types.contains(name) => {}
                    None => report
                        .errors
                        .push(format!("{at}: class '{name}' is not in the objc2 crates")),
                    Some(chain) => {
                        let expected = superclass.as_deref().unwrap_or("");
                        let actual = chain.first().map(String::as_str).unwrap_or("");
                        if !expected.is_empty() && expected != actual {
                            report.errors.push(format!(
                                "{at}: class '{name}' has superclass '{actual}' in the objc2 crates, '{expected}' here"
                            ));
                        }
                    }
                }
                for p in protocols {
                    conformance(&mut report, index, at, name, p);
                }
            }
            Decl::Protocol { name, protocols } => {
                if !index.protocols.contains(protocol_name(name)) {
                    report.errors.push(format!(
                        "{at}: protocol '{name}' is not in the objc2 crates"
                    ));
                }
                for p in protocols {
                    if !index.protocols.contains(protocol_name(p)) {
                        report.errors.push(format!(
                            "{at}: protocol '{p}' (inherited by '{name}') is not in the objc2 crates"
                        ));
                    }
                }
            }
            Decl::Method {
                container,
                selector,
                class_method,
                ret,
                args,
                available,
            } => {
                if available.is_some() {
                    unavailable_checks += 1;
                }
                if let Some((_, _, needle)) = PROVIDED_BY_OBJC2
                    .iter()
                    .find(|(c, s, _)| c == container && s == selector)
                {
                    if !objc2_core.is_some_and(|text| text.contains(needle)) {
                        report.errors.push(format!(
                            "{at}: '{selector}' of {container} is not provided by the objc2 crate"
                        ));
                    }
                    continue;
                }
                check_method(
                    &mut report,
                    index,
                    &supers,
                    at,
                    container,
                    selector,
                    *class_method,
                    ret,
                    args,
                );
            }
            Decl::EnumConstant { name, value } => match index.constants.get(name) {
                None => report.errors.push(format!(
                    "{at}: enum constant '{name}' is not in the objc2 crates"
                )),
                Some(rust) => {
                    if let (Some(ours), Some(theirs)) = (literal(value), rust_literal(rust)) {
                        if ours != theirs {
                            report.errors.push(format!(
                                "{at}: enum constant '{name}' is {ours} here, {theirs} in the objc2 crates"
                            ));
                        }
                    }
                }
            },
            Decl::Function { name, inline } => {
                if *inline {
                    report.notes.push(format!(
                        "{at}: inline helper '{name}' not checked (the crates model it differently)"
                    ));
                } else if !index.functions.contains(name) {
                    report.errors.push(format!(
                        "{at}: function '{name}' is not in the objc2 crates"
                    ));
                }
            }
            Decl::Global { name } => {
                if !index.statics.contains(name) {
                    report.errors.push(format!(
                        "{at}: constant '{name}' is not in the objc2 crates"
                    ));
                }
            }
            Decl::Type { name } => {
                if !index.types.contains(name) && !index.classes.contains_key(name) {
                    report
                        .errors
                        .push(format!("{at}: type '{name}' is not in the objc2 crates"));
                }
            }
        }
    }
    if index.availability_lines == 0 {
        report.notes.push(format!(
            "availability: the objc2 crates carry no macOS version annotations ({} files read), so the \
             {unavailable_checks} API_AVAILABLE annotations of the headers are checked only by clang \
             against the deployment target",
            index.files
        ));
    }
    report
}

fn conformance(report: &mut Report, index: &Index, at: &crate::objc::Origin, class: &str, p: &str) {
    let protocol = protocol_name(p).to_string();
    if !index
        .conformances
        .contains(&(protocol.clone(), class.to_string()))
    {
        report.errors.push(format!(
            "{at}: class '{class}' does not conform to '{p}' in the objc2 crates"
        ));
    }
}

#[allow(clippy::too_many_arguments)]
fn check_method(
    report: &mut Report,
    index: &Index,
    supers: &BTreeMap<String, String>,
    at: &crate::objc::Origin,
    container: &str,
    selector: &str,
    class_method: bool,
    ret: &str,
    args: &[String],
) {
    let Some(candidates) = index.methods.get(selector) else {
        report.errors.push(format!(
            "{at}: selector '{selector}' (declared on {container}) is not in the objc2 crates"
        ));
        return;
    };
    // The declaring container, else one of its superclasses.
    let mut owner = Some(container.to_string());
    let mut found: Vec<&RustMethod> = Vec::new();
    while let Some(c) = owner {
        found = candidates.iter().filter(|m| m.container == c).collect();
        if !found.is_empty() {
            break;
        }
        owner = supers.get(&c).cloned();
    }
    if found.is_empty() {
        let elsewhere: Vec<&str> = candidates.iter().map(|m| m.container.as_str()).collect();
        report.errors.push(format!(
            "{at}: selector '{selector}' is not declared on {container} (or its superclasses) in the objc2 crates; \
             they have it on {}",
            elsewhere.join(", ")
        ));
        return;
    }
    // objc2 folds a trailing `NSError **` out-parameter into a Result.
    let mut ours: Vec<String> = args.iter().map(|a| objc_type(a, container)).collect();
    let mut our_ret = objc_type(ret, container);
    let error_out = args
        .last()
        .is_some_and(|a| a.replace(' ', "").contains("NSError**"));
    if error_out {
        ours.pop();
        if our_ret == "bool" {
            our_ret = "()".to_string();
        }
    }
    let mut problems = Vec::new();
    for m in &found {
        let receiver_ok = match m.receiver {
            Receiver::Class => class_method,
            Receiver::Instance | Receiver::Init => !class_method,
        };
        let theirs: Vec<String> = m
            .params
            .iter()
            .map(|p| rust_type(p, &m.container, index))
            .collect();
        let ours_expanded: Vec<String> = ours.iter().map(|t| expand(t, index)).collect();
        let their_ret = rust_return(&m.ret, &m.container, index);
        let our_ret_expanded = expand(&our_ret, index);
        if receiver_ok && theirs == ours_expanded && their_ret == our_ret_expanded {
            return;
        }
        let mut why = Vec::new();
        if !receiver_ok {
            why.push(format!(
                "{} method here, {} in objc2",
                if class_method {
                    "a class"
                } else {
                    "an instance"
                },
                if m.receiver == Receiver::Class {
                    "a class method"
                } else {
                    "an instance method"
                }
            ));
        }
        if theirs.len() != ours_expanded.len() {
            why.push(format!(
                "{} arguments here, {} in objc2",
                ours_expanded.len(),
                theirs.len()
            ));
        } else {
            for (k, (a, b)) in ours_expanded.iter().zip(&theirs).enumerate() {
                if a != b {
                    why.push(format!("argument {} is {a} here, {b} in objc2", k + 1));
                }
            }
        }
        if their_ret != our_ret_expanded {
            why.push(format!(
                "returns {our_ret_expanded} here, {their_ret} in objc2"
            ));
        }
        problems.push(format!("{} ({})", why.join("; "), m.file));
    }
    report.errors.push(format!(
        "{at}: selector '{selector}' of {container} does not match the objc2 crates: {}",
        problems.join(" / ")
    ));
}

fn literal(value: &str) -> Option<u64> {
    let v = value.trim();
    if let Some(hex) = v.strip_prefix("0x") {
        return u64::from_str_radix(hex, 16).ok();
    }
    v.parse().ok()
}

fn rust_literal(value: &str) -> Option<u64> {
    let v = value.trim();
    let inner = v
        .strip_prefix("Self(")
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or(v);
    literal(inner)
}

/// A type reduced to a name with generic arguments: `NSArray<NSNumber>`.
#[derive(Debug)]
struct Ty {
    name: String,
    args: Vec<Ty>,
}

impl Ty {
    fn render(&self) -> String {
        if self.args.is_empty() {
            self.name.clone()
        } else {
            let args: Vec<String> = self.args.iter().map(Ty::render).collect();
            format!("{}<{}>", self.name, args.join(","))
        }
    }
}

/// Objective-C spelling -> canonical.
pub fn objc_type(t: &str, container: &str) -> String {
    let mut s = t.to_string();
    for q in [
        "_Nullable",
        "_Nonnull",
        "__nullable",
        "__nonnull",
        "nullable",
        "nonnull",
        "__kindof",
        "__strong",
        "__covariant",
        "const",
    ] {
        s = s.replace(q, " ");
    }
    // `T [ ]` array parameters are pointers.
    s = s.replace("[]", "*").replace("[ ]", "*");
    let pointer_to_void = s.replace(' ', "") == "void*";
    if pointer_to_void {
        return "c_void".to_string();
    }
    let ty = parse_objc(&s.replace('*', " "));
    canonical(ty, container).render()
}

fn parse_objc(s: &str) -> Ty {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix("id<") {
        let inner = rest.trim_end().trim_end_matches('>');
        return Ty {
            name: inner.trim().to_string(),
            args: Vec::new(),
        };
    }
    if let Some(open) = s.find('<') {
        let name = s[..open].trim().to_string();
        let inner = s[open + 1..].trim_end();
        let inner = inner.strip_suffix('>').unwrap_or(inner);
        let args = split_top(inner).iter().map(|a| parse_objc(a)).collect();
        return Ty { name, args };
    }
    let words: Vec<&str> = s.split_whitespace().collect();
    Ty {
        name: words.join(" "),
        args: Vec::new(),
    }
}

/// Rust spelling -> canonical.
pub fn rust_type(t: &str, container: &str, index: &Index) -> String {
    let ty = parse_rust(t);
    expand(&canonical(ty, container).render(), index)
}

fn rust_return(t: &str, container: &str, index: &Index) -> String {
    let t = t.trim();
    if let Some(rest) = t.strip_prefix("Result<") {
        let inner = rest.strip_suffix('>').unwrap_or(rest);
        let ok = split_top(inner).into_iter().next().unwrap_or_default();
        return rust_type(&ok, container, index);
    }
    rust_type(t, container, index)
}

fn parse_rust(s: &str) -> Ty {
    let mut s = s.trim();
    loop {
        let before = s;
        for prefix in ["&mut ", "&", "*mut ", "*const ", "dyn ", "'static ", "mut "] {
            if let Some(rest) = s.strip_prefix(prefix) {
                s = rest.trim();
            }
        }
        if s == before {
            break;
        }
    }
    let (name, args) = match s.find('<') {
        Some(open) => {
            let inner = s[open + 1..].trim_end();
            let inner = inner.strip_suffix('>').unwrap_or(inner);
            (
                s[..open].trim(),
                split_top(inner).iter().map(|a| parse_rust(a)).collect(),
            )
        }
        None => (s, Vec::new()),
    };
    let name = name.rsplit("::").next().unwrap_or(name);
    match name {
        "Option" | "Retained" | "Allocated" | "NonNull" | "ProtocolObject" if args.len() == 1 => {
            args.into_iter().next().unwrap()
        }
        _ => Ty {
            name: name.to_string(),
            args,
        },
    }
}

fn canonical(ty: Ty, container: &str) -> Ty {
    let name = match ty.name.as_str() {
        "BOOL" | "Bool" | "bool" => "bool",
        "float" | "c_float" | "f32" => "f32",
        "double" | "c_double" | "f64" => "f64",
        "int" | "c_int" | "i32" | "int32_t" => "i32",
        "unsigned int" | "c_uint" | "u32" | "uint32_t" => "u32",
        "long long" | "c_longlong" | "i64" | "int64_t" => "i64",
        "unsigned long long" | "c_ulonglong" | "u64" | "uint64_t" => "u64",
        "uint8_t" | "u8" | "c_uchar" => "u8",
        "char" | "c_char" => "c_char",
        "size_t" | "usize" => "usize",
        "void" | "()" | "" => "()",
        "id" | "AnyObject" => "AnyObject",
        "instancetype" | "Self" => container,
        other => other,
    };
    Ty {
        name: name.to_string(),
        args: ty
            .args
            .into_iter()
            .map(|a| canonical(a, container))
            .collect(),
    }
}

/// Expands the crates' type aliases (`MPSShape` = `NSArray<NSNumber>`).
fn expand(t: &str, index: &Index) -> String {
    let mut current = t.to_string();
    for _ in 0..4 {
        let Some(alias) = index.aliases.get(&current) else {
            break;
        };
        let ty = canonical(parse_rust(alias), "");
        current = ty.render();
    }
    current
}
