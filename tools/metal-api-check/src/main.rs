//! metal-api-check: the Linux-side checks of native/metal.
//!
//!   metal-api-check decls  [SDK_DIR]   declaration headers vs the objc2 crates
//!   metal-api-check syntax [METAL_DIR] clang -fsyntax-only of every .mm file
//!
//! `decls` needs the objc2 crates' sources in cargo's registry (`cargo fetch
//! --manifest-path tools/metal-api-check/Cargo.toml` puts them there);
//! `syntax` needs clang 16 (`CLANG`, `clang++-16`, or /usr/lib/llvm-16).
//! Both exit 1 naming each problem; scripts/metal-check.sh runs them.

mod check;
mod index;
mod objc;
mod syntax;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The repository root (two levels above this crate).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root exists")
}

/// (name, version) of the crates the lock file pins.
fn pinned_crates() -> Result<Vec<(String, String)>, String> {
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock");
    let text = std::fs::read_to_string(&lock).map_err(|e| format!("{}: {e}", lock.display()))?;
    let wanted = [
        "objc2",
        "objc2-foundation",
        "objc2-metal",
        "objc2-metal-performance-shaders",
        "objc2-metal-performance-shaders-graph",
    ];
    let mut out = Vec::new();
    let mut name = String::new();
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("name = \"") {
            name = n.trim_end_matches('"').to_string();
        } else if let Some(v) = line.strip_prefix("version = \"") {
            if wanted.contains(&name.as_str()) {
                out.push((name.clone(), v.trim_end_matches('"').to_string()));
            }
        }
    }
    if out.len() != wanted.len() {
        return Err(format!(
            "{}: expected pinned versions of {}, found {out:?}",
            lock.display(),
            wanted.join(", ")
        ));
    }
    Ok(out)
}

/// The unpacked sources of `name-version` in cargo's registry.
fn crate_dir(name: &str, version: &str) -> Result<PathBuf, String> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .ok_or("neither CARGO_HOME nor HOME is set")?;
    let src = home.join("registry").join("src");
    let entries = std::fs::read_dir(&src).map_err(|e| format!("{}: {e}", src.display()))?;
    for entry in entries.flatten() {
        let dir = entry.path().join(format!("{name}-{version}"));
        if dir.join("src").is_dir() {
            return Ok(dir);
        }
    }
    Err(format!(
        "{name} {version} is not in {} (run: cargo fetch --manifest-path tools/metal-api-check/Cargo.toml)",
        src.display()
    ))
}

pub fn load_index() -> Result<(index::Index, String, Vec<String>), String> {
    let mut dirs = Vec::new();
    let mut names = Vec::new();
    let mut core = String::new();
    for (name, version) in pinned_crates()? {
        let dir = crate_dir(&name, &version)?;
        if name == "objc2" || name == "objc2-foundation" {
            // What the crates provide by hand rather than generate (alloc,
            // NSCopying), for the few declarations checked by name.
            let mut files = Vec::new();
            gather(&dir.join("src"), &mut files);
            for f in files
                .iter()
                .filter(|f| !f.to_string_lossy().contains("generated"))
            {
                core.push_str(&std::fs::read_to_string(f).unwrap_or_default());
            }
        }
        dirs.push(dir);
        names.push(format!("{name} {version}"));
    }
    Ok((index::Index::read(&dirs)?, core, names))
}

fn gather(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                gather(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
}

/// Checks the headers of `sdk`; the number of problems, each printed.
pub fn run_decls(sdk: &Path, quiet: bool) -> Result<Vec<String>, String> {
    let decls = objc::parse_dir(sdk)?;
    let (index, core, names) = load_index()?;
    let report = check::check(&decls, &index, Some(&core));
    if !quiet {
        println!(
            "metal-api-check decls: {} declarations of {} against {}",
            report.checked,
            sdk.display(),
            names.join(", ")
        );
        for note in &report.notes {
            println!("note: {note}");
        }
    }
    for error in &report.errors {
        eprintln!("error: {error}");
    }
    Ok(report.errors)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = repo_root();
    let result = match args.first().map(String::as_str) {
        Some("decls") => {
            let sdk = args
                .get(1)
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("native/metal/sdk"));
            run_decls(&sdk, false).map(|errors| errors.len())
        }
        Some("syntax") => {
            let metal = args
                .get(1)
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("native/metal"));
            syntax::run(&root, &metal).map(|failures| failures.len())
        }
        _ => Err("usage: metal-api-check decls [SDK_DIR] | syntax [METAL_DIR]".to_string()),
    };
    match result {
        Ok(0) => ExitCode::SUCCESS,
        Ok(n) => {
            eprintln!("metal-api-check: {n} problem(s)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("metal-api-check: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests;
