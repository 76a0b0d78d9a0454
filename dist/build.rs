//! Compiles the c10d shim against the libtorch headers torch-sys found (the `.venv` wheel):
//! the same flags torch-sys uses for its own C++, plus `USE_C10D_GLOO`. Gloo's headers
//! (Debian `libgloo-dev`, build time only; the Gloo code itself is inside libtorch) must be
//! under /usr/include or `GLOO_INCLUDE_DIR`.
use std::path::PathBuf;

fn main() {
    torch_link::emit();
    println!("cargo:rerun-if-changed=csrc/c10d_shim.cpp");
    println!("cargo:rerun-if-env-changed=GLOO_INCLUDE_DIR");
    let lib = PathBuf::from(
        std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys sets DEP_TCH_LIBTORCH_LIB"),
    );
    let include = lib
        .parent()
        .expect("libtorch lib dir has a parent")
        .join("include");
    let gloo = std::env::var("GLOO_INCLUDE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/usr/include"));
    if !gloo.join("gloo/config.h").exists() {
        panic!(
            "Gloo headers not found in {} (gloo/config.h): install Debian's libgloo-dev (scripts/setup.sh does) or set GLOO_INCLUDE_DIR",
            gloo.display()
        );
    }
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .file("csrc/c10d_shim.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .include(&gloo)
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .flag("-DUSE_C10D_GLOO")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-deprecated-declarations")
        .warnings(false);
    if std::env::var("CARGO_FEATURE_NCCL").is_ok() {
        // The wheel's CUDA and NCCL headers live beside torch in site-packages/nvidia.
        let site = lib
            .ancestors()
            .nth(2)
            .expect("site-packages")
            .join("nvidia");
        build
            .define("COUPLET_NCCL", None)
            .define("USE_C10D_NCCL", None)
            .define("USE_CUDA", None)
            .include(site.join("cu13/include"))
            .include(site.join("nccl/include"));
    }
    build.compile("couplet_c10d_shim");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}
