//! The backends every sandbox integration test runs on, built once per test binary.

use std::path::PathBuf;
use std::sync::OnceLock;

use std::time::Duration;

use couplet_sandbox::{Backend, Limits, ProcessBackend, WasmBackend};

/// The limits of the reward-hack batteries: short enough that a hang shows, roomy enough
/// for an honest solution on a busy machine.
#[allow(dead_code)] // not every test binary needs it
pub fn hack_limits() -> Limits {
    Limits {
        per_test: Duration::from_secs(3),
        per_job: Duration::from_secs(30),
        memory_bytes: 256 << 20,
        output_bytes: 4096,
    }
}

/// The repository root (where `scripts/setup.sh` put the interpreter).
#[allow(dead_code)] // not every test binary needs it
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The WebAssembly backend from the repository's default paths.
pub fn wasm() -> &'static WasmBackend {
    static B: OnceLock<WasmBackend> = OnceLock::new();
    B.get_or_init(|| WasmBackend::from_repo(&root()).expect("wasm backend (run scripts/setup.sh)"))
}

/// The process backend on the default interpreter.
pub fn process() -> &'static ProcessBackend {
    static B: OnceLock<ProcessBackend> = OnceLock::new();
    B.get_or_init(|| {
        ProcessBackend::new(&ProcessBackend::default_python()).expect("process backend")
    })
}

/// Both backends.
#[allow(dead_code)] // not every test binary needs it
pub fn backends() -> [&'static dyn Backend; 2] {
    [wasm(), process()]
}
