//! Compiles the native core (C++17) and the backends selected by features
//! into one static library, `libferrometal.a`, and links it.
//!
//! Environment:
//! - `CUDA_HOME` / `CUDA_PATH` (or `nvcc` on `PATH`): the toolkit for `cuda`.
//! - `CUDNN_HOME` (feature `cudnn`): a directory with include/cudnn.h and
//!   lib/libcudnn.so*; without it, the toolkit's own directories, the
//!   PyPI wheel beside it (nvidia/cudnn) and /usr are searched.
//! - `FERROMETAL_LIB_DIR`: link an already built `libferrometal.a` from this
//!   directory instead of compiling (e.g. one made by native/CMakeLists.txt).
//! - `FERROMETAL_WERROR=1`: turn C++ warnings into errors (CI sets it).
//! - `FERROMETAL_SANITIZE=address`: build the native code with
//!   AddressSanitizer and UndefinedBehaviorSanitizer (gcc's or clang's
//!   runtime, whichever compiles it) and link every binary of the package
//!   with them, so the Rust suites exercise the native code under both.
//!   Use its own target dir, and preload the runtime, which must come
//!   first (.ci/run does this):
//!   `FERROMETAL_SANITIZE=address CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="env
//!   LD_PRELOAD=$(gcc -print-file-name=libasan.so)" cargo test --release
//!   --target-dir target/sanitize`.
//! - `MACOSX_DEPLOYMENT_TARGET` (feature `metal`): at least 13.0, the default.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

#[cfg(feature = "bindgen")]
#[path = "build_support/bindings.rs"]
mod bindings;

fn main() {
    let root =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let native = root.join("native");
    let include = native.join("include");
    let cuda = env::var_os("CARGO_FEATURE_CUDA").is_some();
    let metal = env::var_os("CARGO_FEATURE_METAL").is_some();

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build_support/bindings.rs");
    println!(
        "cargo:rerun-if-changed={}",
        include.join("ferrometal.h").display()
    );
    for var in [
        "CUDA_HOME",
        "CUDA_PATH",
        "CUDNN_HOME",
        "FERROMETAL_LIB_DIR",
        "FERROMETAL_WERROR",
        "FERROMETAL_SANITIZE",
        "MACOSX_DEPLOYMENT_TARGET",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    // Dependent crates find the header through DEP_FERROMETAL_INCLUDE.
    println!("cargo:include={}", include.display());

    #[cfg(feature = "bindgen")]
    regenerate_bindings(&root, &include);

    if metal && env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("macos") {
        eprintln!(
            "error: feature `metal` needs macOS (Metal exists only on Apple systems; on Linux, scripts/metal-check.sh checks the backend)"
        );
        std::process::exit(1);
    }
    let cuda_home = cuda.then(find_cuda);
    let cudnn = cuda_home
        .as_deref()
        .filter(|_| env::var_os("CARGO_FEATURE_CUDNN").is_some())
        .map(find_cudnn);

    if let Some(dir) = env::var_os("FERROMETAL_LIB_DIR") {
        println!(
            "cargo:rustc-link-search=native={}",
            Path::new(&dir).display()
        );
        // Relink when the library is rebuilt (a CMake build used for
        // incremental native work).
        println!(
            "cargo:rerun-if-changed={}",
            Path::new(&dir).join("libferrometal.a").display()
        );
        println!("cargo:rustc-link-lib=static=ferrometal");
        println!("cargo:rustc-link-lib=stdc++");
    } else {
        compile_native(
            &native,
            &include,
            cuda_home.as_deref(),
            cudnn.as_ref(),
            metal,
        );
    }
    if let Some(cudnn) = &cudnn {
        link_cudnn(cudnn);
    }
    if let Some(home) = &cuda_home {
        link_cuda(home);
    }
    if metal {
        for framework in [
            "Metal",
            "MetalPerformanceShaders",
            "MetalPerformanceShadersGraph",
            "Foundation",
        ] {
            println!("cargo:rustc-link-lib=framework={framework}");
        }
    }
}

/// Source files of `dir` with extension `ext`, sorted, each watched.
fn sources(dir: &Path, ext: &str) -> Vec<PathBuf> {
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.extension().is_some_and(|e| e == ext) || path.extension().is_some_and(|e| e == "h")
        })
        .collect();
    files.sort();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    files.retain(|path| path.extension().is_some_and(|e| e == ext));
    files
}

fn werror() -> bool {
    env::var("FERROMETAL_WERROR").is_ok_and(|v| v == "1")
}

/// Native code is always optimised: a debug build of the kernels would make
/// `cargo test` (without --release) uselessly slow.
fn opt_level() -> u32 {
    env::var("OPT_LEVEL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
        .max(2)
}

fn compile_native(
    native: &Path,
    include: &Path,
    cuda_home: Option<&Path>,
    cudnn: Option<&Cudnn>,
    metal: bool,
) {
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .opt_level(opt_level())
        .include(include)
        .include(native.join("core"))
        .flag("-Wall")
        .flag("-Wextra")
        // Elementwise loops are compiled for several ISAs (target_clones);
        // no clone may fuse a multiply and an add the others round twice.
        .flag("-ffp-contract=off")
        .warnings_into_errors(werror())
        .files(sources(&native.join("core"), "cpp"))
        .files(sources(&native.join("cpu"), "cpp"));
    if sanitize() {
        for flag in SANITIZE_FLAGS {
            build.flag(flag);
        }
        // The vptr check needs UBSan's C++ runtime, which rustc's link line
        // (-nodefaultlibs) leaves out; the native tests keep it.
        build.flag("-fno-sanitize=vptr");
        // rustc links with -nodefaultlibs, so the driver's -fsanitize does
        // not add the runtimes: name them (not dropped as unneeded).
        for arg in [
            "-Wl,--push-state,--no-as-needed",
            "-lasan",
            "-lubsan",
            "-Wl,--pop-state",
        ] {
            println!("cargo:rustc-link-arg={arg}");
        }
    }
    if let Some(home) = cuda_home {
        // Its own archive, before the core's: the core refers to the CUDA
        // registration and the CUDA objects to the core's helpers, so it is
        // linked whole to break that cycle.
        compile_cuda(native, include, home, cudnn);
        build.define("FM_WITH_CUDA", None);
    }
    if metal {
        // The platform-independent lowering (C++) and the Objective-C++ that
        // translates it into MPSGraph / MPS calls. Apple APIs newer than the
        // deployment target (macOS 13, MACOSX_DEPLOYMENT_TARGET) are errors.
        build
            .define("FM_WITH_METAL", None)
            .include(native.join("metal"))
            .files(sources(&native.join("metal"), "cpp"));
        // MPSGraph executables, NDArrays over buffers and transposes need
        // macOS 13; cc reads the target from this variable.
        if env::var_os("MACOSX_DEPLOYMENT_TARGET").is_none() {
            env::set_var("MACOSX_DEPLOYMENT_TARGET", "13.0");
        }
        let mut objc = cc::Build::new();
        objc.cpp(true)
            .std("c++17")
            .opt_level(opt_level())
            .include(include)
            .include(native.join("core"))
            .include(native.join("metal"))
            .define("FM_WITH_METAL", None)
            .flag("-x")
            .flag("objective-c++")
            .flag("-fobjc-arc")
            .flag("-Wall")
            .flag("-Wextra")
            .flag("-Werror=unguarded-availability-new")
            .warnings_into_errors(werror())
            .files(sources(&native.join("metal"), "mm"));
        build.objects(objc.compile_intermediates());
    }
    build.compile("ferrometal");
    println!("cargo:rustc-link-lib=pthread");
}

const SANITIZE_FLAGS: [&str; 3] = [
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=all",
    "-fno-omit-frame-pointer",
];

fn sanitize() -> bool {
    match env::var("FERROMETAL_SANITIZE").as_deref() {
        Ok("address") => true,
        Ok("") | Err(_) => false,
        Ok(other) => {
            eprintln!("FERROMETAL_SANITIZE={other}: the build knows only 'address' (ASan + UBSan)");
            std::process::exit(1);
        }
    }
}

/// nvcc objects, device-linked by `cc` into libferrometal_cuda.a.
fn compile_cuda(native: &Path, include: &Path, home: &Path, cudnn: Option<&Cudnn>) {
    // cc recognises nvcc (and translates host flags) only when it finds it
    // by name itself, not when given a path, so the toolkit goes first on PATH.
    let path = env::var_os("PATH").unwrap_or_default();
    let paths = std::iter::once(home.join("bin")).chain(env::split_paths(&path));
    env::set_var(
        "PATH",
        env::join_paths(paths).expect("PATH entries are joinable"),
    );
    let generated = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("jit");
    write_jit_headers(native, &generated);
    let mut build = cc::Build::new();
    build
        .cuda(true)
        .include(&generated)
        .std("c++17")
        .opt_level(opt_level())
        .include(include)
        .include(native.join("core"))
        .define("FM_WITH_CUDA", None)
        // cc would hand -Wall/-Werror to nvcc itself, which rejects them.
        .warnings(false)
        .extra_warnings(false)
        // Hopper (H100/H200) machine code, plus PTX so newer GPUs can JIT it.
        .flag("-gencode=arch=compute_90,code=sm_90")
        .flag("-gencode=arch=compute_90,code=compute_90")
        .flag("-Xcompiler=-Wall,-Wextra")
        .cargo_metadata(false)
        .files(sources(&native.join("cuda"), "cu"));
    if let Some(cudnn) = cudnn {
        build.define("FM_WITH_CUDNN", None).include(&cudnn.include);
    }
    if werror() {
        build
            .flag("-Xcompiler=-Werror")
            .flag("-Werror=all-warnings");
    }
    build.compile("ferrometal_cuda");
    let out = env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    println!("cargo:rustc-link-search=native={out}");
    println!("cargo:rustc-link-lib=static:+whole-archive=ferrometal_cuda");
}

/// The headers that the CUDA backend's run-time compiled kernels include
/// (native/cuda/cuda_jit.cu), as C++ string literals in
/// `dir/fm_jit_headers.inc`. native/CMakeLists.txt writes the same file.
fn write_jit_headers(native: &Path, dir: &Path) {
    let headers = [
        native.join("core").join("prim.h"),
        native.join("core").join("elementwise_math.h"),
        native.join("cuda").join("cuda_fused_device.h"),
    ];
    let mut names = String::new();
    let mut sources = String::new();
    for header in &headers {
        println!("cargo:rerun-if-changed={}", header.display());
        let text = fs::read_to_string(header)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", header.display()));
        assert!(
            !text.contains(")fm_jit\""),
            "{} contains the raw-string delimiter",
            header.display()
        );
        let name = header.file_name().expect("a file").to_string_lossy();
        names.push_str(&format!("    \"{name}\",\n"));
        sources.push_str(&format!("    R\"fm_jit({text})fm_jit\",\n"));
    }
    let inc = format!(
        "// Generated by build.rs from the headers named below; do not edit.\n\
         constexpr int kJitHeaderCount = {};\n\
         const char *const kJitHeaderNames[] = {{\n{names}}};\n\
         const char *const kJitHeaderSources[] = {{\n{sources}}};\n",
        headers.len()
    );
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let target = dir.join("fm_jit_headers.inc");
    if fs::read_to_string(&target).ok().as_deref() != Some(inc.as_str()) {
        fs::write(&target, inc)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", target.display()));
    }
}

/// CUDA_HOME, then CUDA_PATH, then the toolkit around `nvcc` on PATH.
fn find_cuda() -> PathBuf {
    let candidates = ["CUDA_HOME", "CUDA_PATH"]
        .iter()
        .filter_map(|var| env::var_os(var).map(PathBuf::from))
        .chain(env::var_os("PATH").into_iter().flat_map(|paths| {
            env::split_paths(&paths)
                .filter(|dir| dir.join("nvcc").is_file())
                .filter_map(|dir| dir.parent().map(Path::to_path_buf))
                .collect::<Vec<_>>()
        }));
    for home in candidates {
        if home.join("bin").join("nvcc").is_file() {
            return home;
        }
    }
    eprintln!(
        "error: feature `cuda` needs the CUDA toolkit: set CUDA_HOME (or CUDA_PATH) to a directory \
         with bin/nvcc, or put nvcc on PATH (scripts/install-cuda-toolkit.sh installs one from PyPI)"
    );
    std::process::exit(1);
}

/// Where cuDNN's header and library are.
struct Cudnn {
    include: PathBuf,
    lib: PathBuf,
}

/// CUDNN_HOME, then the toolkit, then the PyPI wheel's nvidia/cudnn beside
/// the toolkit's nvidia/cu13, then the system's directories.
fn find_cudnn(cuda_home: &Path) -> Cudnn {
    let mut homes: Vec<PathBuf> = env::var_os("CUDNN_HOME")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    homes.push(cuda_home.to_path_buf());
    if let Some(parent) = cuda_home.parent() {
        homes.push(parent.join("cudnn"));
    }
    let mut candidates: Vec<(PathBuf, PathBuf)> = Vec::new();
    for home in &homes {
        for lib in ["lib64", "lib", "lib/x64"] {
            candidates.push((home.join("include"), home.join(lib)));
        }
    }
    candidates.push((
        PathBuf::from("/usr/include"),
        PathBuf::from("/usr/lib/x86_64-linux-gnu"),
    ));
    for (include, lib) in candidates {
        let has_library = ["libcudnn.so", "libcudnn.so.9"]
            .iter()
            .any(|name| lib.join(name).exists());
        if include.join("cudnn.h").is_file() && has_library {
            return Cudnn { include, lib };
        }
    }
    eprintln!(
        "error: feature `cudnn` needs cuDNN 9: set CUDNN_HOME to a directory with include/cudnn.h and \
         lib/libcudnn.so.9 (scripts/install-cuda-toolkit.sh --cudnn installs it from PyPI)"
    );
    std::process::exit(1);
}

fn link_cudnn(cudnn: &Cudnn) {
    println!("cargo:rustc-link-search=native={}", cudnn.lib.display());
    if cfg!(target_os = "linux") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", cudnn.lib.display());
    }
    // The PyPI wheel ships only the versioned name.
    if cudnn.lib.join("libcudnn.so").exists() {
        println!("cargo:rustc-link-lib=cudnn");
    } else {
        println!("cargo:rustc-link-lib=dylib:+verbatim=libcudnn.so.9");
    }
}

fn link_cuda(home: &Path) {
    for lib in ["lib64", "lib", "lib/x64"] {
        let dir = home.join(lib);
        if dir.is_dir() {
            println!("cargo:rustc-link-search=native={}", dir.display());
            // cuBLAS is a shared library: this crate's tests and examples
            // find it where they were linked against it, without
            // LD_LIBRARY_PATH (a GPU machine's own CUDA comes first there).
            if cfg!(target_os = "linux") {
                println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
            }
        }
    }
    println!("cargo:rustc-link-lib=static=cudart_static");
    println!("cargo:rustc-link-lib=cublas");
    println!("cargo:rustc-link-lib=cublasLt");
    println!("cargo:rustc-link-lib=nvrtc");
    println!("cargo:rustc-link-lib=dl");
    println!("cargo:rustc-link-lib=rt");
}

#[cfg(feature = "bindgen")]
fn regenerate_bindings(root: &Path, include: &Path) {
    let generated =
        bindings::generate(&include.join("ferrometal.h")).unwrap_or_else(|e| panic!("{e}"));
    let target = root.join("src").join("sys").join("bindings.rs");
    if fs::read_to_string(&target).ok().as_deref() != Some(generated.as_str()) {
        fs::write(&target, generated)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", target.display()));
    }
}
