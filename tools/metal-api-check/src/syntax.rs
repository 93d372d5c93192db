//! `clang++ -fsyntax-only -fobjc-arc -x objective-c++ -Werror` of every .mm
//! file of native/metal for an Apple target, against the declaration headers
//! of native/metal/sdk and the Linux system's C and C++ headers.
//!
//! Under ARC, sending a selector that no visible declaration has is an
//! error, so a misspelled selector fails here; a declaration that is itself
//! wrong fails `decls`.

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn find_clang() -> Option<PathBuf> {
    if let Some(c) = std::env::var_os("CLANG") {
        return Some(PathBuf::from(c));
    }
    let candidates = ["/usr/lib/llvm-16/bin/clang++", "/usr/bin/clang++-16"];
    candidates.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// The Linux C++ standard library and C headers, as -isystem flags.
fn system_includes() -> Result<Vec<String>, String> {
    let arch = std::env::consts::ARCH;
    let triple = format!("{arch}-linux-gnu");
    let cxx = Path::new("/usr/include/c++");
    let version = std::fs::read_dir(cxx)
        .map_err(|e| format!("{}: {e} (libstdc++ headers are needed)", cxx.display()))?
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .max()
        .ok_or("no libstdc++ headers under /usr/include/c++")?;
    Ok(vec![
        format!("/usr/include/c++/{version}"),
        format!("/usr/include/{triple}/c++/{version}"),
        format!("/usr/include/{triple}"),
        "/usr/include".to_string(),
    ])
}

/// The command that checks `file`.
pub fn command(clang: &Path, root: &Path, metal: &Path, file: &Path) -> Result<Command, String> {
    let target = match std::env::consts::ARCH {
        "aarch64" => "arm64-apple-macos13",
        _ => "x86_64-apple-macos13",
    };
    let mut cmd = Command::new(clang);
    cmd.args([
        "-fsyntax-only",
        "-fobjc-arc",
        "-x",
        "objective-c++",
        "-std=c++17",
    ])
    .args([
        "-Werror",
        "-Wall",
        "-Wextra",
        "-Werror=unguarded-availability-new",
    ])
    .args(["-target", target])
    // Clang's Darwin predefines collide with glibc's __nonnull macro;
    // glibc wants _GNU_SOURCE for C++ (GCC and clang set it on Linux).
    .args([
        "-U__nonnull",
        "-U__nullable",
        "-D_GNU_SOURCE",
        "-nostdinc++",
    ]);
    for dir in system_includes()? {
        cmd.arg("-isystem").arg(dir);
    }
    cmd.arg("-I")
        .arg(metal.join("sdk"))
        .arg("-I")
        .arg(root.join("native/include"))
        .arg("-I")
        .arg(root.join("native/core"))
        .arg("-I")
        .arg(metal)
        .arg("-DFM_WITH_METAL")
        .arg(file);
    Ok(cmd)
}

/// Checks every .mm file of `metal`; the failures, with clang's output.
pub fn run(root: &Path, metal: &Path) -> Result<Vec<String>, String> {
    let clang = find_clang().ok_or(
        "clang 16 not found (set CLANG, or install Debian's clang-16: apt-get install clang-16)",
    )?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(metal)
        .map_err(|e| format!("{}: {e}", metal.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "mm"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("no .mm files in {}", metal.display()));
    }
    let mut failures = Vec::new();
    for file in &files {
        let output = command(&clang, root, metal, file)?
            .output()
            .map_err(|e| format!("{}: {e}", clang.display()))?;
        let text = String::from_utf8_lossy(&output.stderr).to_string();
        if output.status.success() {
            println!("metal-api-check syntax: {} ok", file.display());
        } else {
            eprintln!("{text}");
            failures.push(format!("{}: {text}", file.display()));
        }
    }
    Ok(failures)
}
