//! Build-script helper shared by every crate whose binaries or tests link libtorch.
//!
//! `torch-sys` tells dependants where libtorch lives (`DEP_TCH_LIBTORCH_LIB`, from its
//! `links = "tch"` metadata) but cannot make the final link step do two things we need:
//!
//! * an rpath to that directory, so `couplet` and the test binaries run without
//!   `LD_LIBRARY_PATH`;
//! * `libtorch_cuda.so` kept as a dependency even though no symbol of it is referenced
//!   directly. Without `--no-as-needed` the linker drops it and CUDA is never registered,
//!   so `tch::Cuda::is_available()` is false even on a GPU machine.
//!
//! Cargo only applies `rustc-link-arg` to the package whose build script emits it, so each
//! such package has a two-line `build.rs` that calls [`emit`].
//!
//! What this is not for: finding libtorch (torch-sys does that, from the `.venv` python when
//! `LIBTORCH_USE_PYTORCH=1`).
#![deny(missing_docs)]

use std::path::Path;

/// Emits the rpath and `--no-as-needed torch_cuda` link arguments for the calling package.
///
/// The calling package must depend on `torch-sys` directly, or the metadata is not visible.
pub fn emit() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!(
            "cargo:warning=DEP_TCH_LIBTORCH_LIB is not set; add torch-sys as a direct \
             dependency so the libtorch rpath can be baked in"
        );
        return;
    };
    let lib_dir = Path::new(&lib_dir);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
    if lib_dir.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--push-state,--no-as-needed,-ltorch_cuda,--pop-state");
    }
}
