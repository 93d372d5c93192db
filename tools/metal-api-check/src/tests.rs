//! Self-tests of the checker: the shipped headers pass, and a misspelled
//! selector, in a declaration header or in a .mm file, fails naming it.

use std::path::{Path, PathBuf};

use crate::{check, objc, repo_root, run_decls, syntax};

/// A scratch copy of native/metal (the .mm files, headers and sdk/).
fn copy_of_metal(tag: &str) -> PathBuf {
    let from = repo_root().join("native/metal");
    let to = std::env::temp_dir().join(format!("metal-api-check-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&to);
    copy_dir(&from, &to);
    to
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let path = entry.path();
        let target = to.join(entry.file_name());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

fn misspell(file: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains(from), "{} has no '{from}'", file.display());
    std::fs::write(file, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn shipped_headers_match_the_objc2_crates() {
    let errors = run_decls(&repo_root().join("native/metal/sdk"), true).unwrap();
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn a_misspelled_selector_in_a_header_fails_naming_it() {
    let dir = copy_of_metal("header");
    let header = dir.join("sdk/MetalPerformanceShadersGraph/MetalPerformanceShadersGraph.h");
    misspell(&header, "reLUWithTensor:", "reluWithTensor:");
    let errors = run_decls(&dir.join("sdk"), true).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].contains("'reluWithTensor:name:'"),
        "{}",
        errors[0]
    );
}

#[test]
fn a_wrong_argument_type_fails_naming_the_selector() {
    let dir = copy_of_metal("types");
    let header = dir.join("sdk/MetalPerformanceShadersGraph/MetalPerformanceShadersGraph.h");
    misspell(
        &header,
        "softMaxWithTensor:(MPSGraphTensor *)tensor axis:(NSInteger)axis",
        "softMaxWithTensor:(MPSGraphTensor *)tensor axis:(NSUInteger)axis",
    );
    let errors = run_decls(&dir.join("sdk"), true).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].contains("softMaxWithTensor:axis:name:")
            && errors[0].contains("argument 2 is NSUInteger here, NSInteger in objc2"),
        "{}",
        errors[0]
    );
}

#[test]
fn invented_classes_constants_and_functions_fail() {
    let (index, core, _) = crate::load_index().unwrap();
    let text = "@interface MPSGraphWidget : MPSGraphObject\n@end\n\
                typedef NS_ENUM(NSUInteger, MPSGraphPaddingStyle) {\n    MPSGraphPaddingStyleExplicit = 7,\n};\n\
                FM_SDK_EXTERN BOOL MPSSupportsMTLDevices(id<MTLDevice> device);\n\
                FM_SDK_EXTERN NSErrorUserInfoKey const MTLCommandBufferEncoderInfoErrorKeys;\n";
    let decls = objc::parse("invented.h", text).unwrap();
    let report = check::check(&decls, &index, Some(&core));
    let all = report.errors.join("\n");
    assert!(all.contains("class 'MPSGraphWidget'"), "{all}");
    assert!(
        all.contains("'MPSGraphPaddingStyleExplicit' is 7 here, 0"),
        "{all}"
    );
    assert!(all.contains("function 'MPSSupportsMTLDevices'"), "{all}");
    assert!(
        all.contains("constant 'MTLCommandBufferEncoderInfoErrorKeys'"),
        "{all}"
    );
}

/// Clang is required where FM_REQUIRE_CLANG=1 (CI); elsewhere its absence skips.
fn clang_or_skip() -> bool {
    if syntax::find_clang().is_some() {
        return true;
    }
    assert!(
        std::env::var("FM_REQUIRE_CLANG").as_deref() != Ok("1"),
        "FM_REQUIRE_CLANG=1 but clang 16 is missing"
    );
    eprintln!("skipping: clang 16 not found");
    false
}

#[test]
fn shipped_mm_files_pass_the_syntax_check() {
    if !clang_or_skip() {
        return;
    }
    let root = repo_root();
    let failures = syntax::run(&root, &root.join("native/metal")).unwrap();
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn a_misspelled_selector_in_a_mm_file_fails_naming_it() {
    if !clang_or_skip() {
        return;
    }
    let dir = copy_of_metal("mm");
    misspell(
        &dir.join("metal_exec.mm"),
        "[g softMaxWithTensor:",
        "[g softmaxWithTensor:",
    );
    let failures = syntax::run(&repo_root(), &dir).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(failures.len(), 1, "{failures:#?}");
    assert!(
        failures[0].contains("metal_exec.mm")
            && failures[0].contains("'softmaxWithTensor:axis:name:'"),
        "{}",
        failures[0]
    );
}
