//! src/sys/bindings.rs is committed; this regenerates it with the pinned
//! bindgen configuration and fails if the committed file is stale. Without
//! libclang it prints why it skipped, unless FERROMETAL_REQUIRE_LIBCLANG=1
//! (set by .ci/run), where a missing libclang is a failure.

#[path = "../build_support/bindings.rs"]
mod bindings;

use std::path::Path;

#[test]
fn committed_bindings_match_the_header() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let header = root.join("native/include/ferrometal.h");
    // The bindings are pinned to libclang 14: prefer it where newer ones
    // are installed too (Debian's path), unless the caller chose one.
    let llvm14 = Path::new("/usr/lib/llvm-14/lib");
    if std::env::var_os("LIBCLANG_PATH").is_none() && llvm14.is_dir() {
        std::env::set_var("LIBCLANG_PATH", llvm14);
    }
    // bindgen panics when it cannot load libclang at run time.
    let generated = std::panic::catch_unwind(|| bindings::generate(&header));
    let generated = match generated {
        Ok(result) => result.unwrap_or_else(|e| panic!("{e}")),
        Err(panic) => {
            let reason = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            if std::env::var("FERROMETAL_REQUIRE_LIBCLANG").is_ok_and(|v| v == "1") {
                panic!("libclang is required (FERROMETAL_REQUIRE_LIBCLANG=1) but bindgen failed: {reason}");
            }
            eprintln!("skipping the bindings freshness check: bindgen could not run ({reason}); install libclang-dev");
            return;
        }
    };
    let version = bindgen::clang_version();
    if version.parsed.map(|(major, _)| major) != Some(bindings::CLANG_MAJOR) {
        if std::env::var("FERROMETAL_REQUIRE_LIBCLANG").is_ok_and(|v| v == "1") {
            panic!(
                "libclang {} is required, found {}",
                bindings::CLANG_MAJOR,
                version.full
            );
        }
        eprintln!(
            "skipping the bindings freshness check: it needs libclang {} (found {})",
            bindings::CLANG_MAJOR,
            version.full
        );
        return;
    }
    let target = root.join("src/sys/bindings.rs");
    // scripts/update-bindings.sh regenerates through this test, so the
    // committed file is exactly what it compares against.
    if std::env::var("FERROMETAL_UPDATE_BINDINGS").is_ok_and(|v| v == "1") {
        std::fs::write(&target, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&target).unwrap();
    assert!(
        generated == committed,
        "src/sys/bindings.rs is stale: native/include/ferrometal.h changed. Run scripts/update-bindings.sh"
    );
}
