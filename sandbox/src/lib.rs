//! The sandbox stage: runs untrusted, model-written Python and its unit tests.
//!
//! One job type — "run this solution against these tests with these limits" — answered with
//! a per-test [`Outcome`] (passed, failed, timeout, memory, output limit, crashed), captured
//! output and timing, and the sandbox's own failures reported apart from test failures
//! ([`JobResult::sandbox_error`]). Verdicts cannot be forged by the solution: tests run in a
//! trusted interpreter that never executes solution code, every call into the solution goes
//! to a separate untrusted interpreter as a request, and only plain data comes back
//! ([`judge`], the protocol in `harness.py`). Two backends provide the interpreters
//! ([`guest::Launcher`]): [`WasmBackend`] (wasmtime running CPython built for WASI, the
//! default) and [`ProcessBackend`] (native `python3` with OS limits). [`SandboxPool`] runs
//! jobs in parallel. `sys.exit(0)` and friends never earn reward (SPEC section 3).
//!
//! Not for: reward arithmetic or answer extraction (the `reward` crate does that).
#![deny(missing_docs)]

pub mod confine;
pub mod guest;
pub mod harness;
pub mod job;
pub mod judge;
pub mod pool;
pub mod process;
pub mod stdlib;
pub mod wasm;

pub use confine::{Isolation, Layers};
pub use job::{
    Job, JobResult, Limits, NonDataCounts, Outcome, TestResult, NON_DATA_ARGUMENT, NON_DATA_RESULT,
};
pub use pool::{PoolStats, SandboxPool};
pub use process::ProcessBackend;
pub use wasm::WasmBackend;

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A way to run jobs. Implementations enforce the limits themselves and never panic on
/// bad input (a panic is still caught by the pool).
pub trait Backend: Send + Sync {
    /// `wasm` or `process`, for logs and summaries.
    fn name(&self) -> &'static str;
    /// Runs one job to its verdicts.
    fn run(&self, job: &Job, limits: &Limits) -> JobResult;
    /// A line worth telling the user about the isolation actually in force, if any.
    fn isolation_note(&self) -> Option<String> {
        None
    }
}

/// Which backend runs jobs (`sandbox.backend`, `--backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// CPython/WASI under wasmtime: no host access at all (the default).
    #[default]
    Wasm,
    /// Native `python3` with OS limits (rlimits, network namespace when available).
    Process,
}

impl BackendKind {
    /// The name in configs and flags.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Wasm => "wasm",
            BackendKind::Process => "process",
        }
    }
}

impl std::str::FromStr for BackendKind {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        let kinds = [BackendKind::Wasm, BackendKind::Process];
        let found = kinds.into_iter().find(|k| k.name() == name);
        found.ok_or_else(|| format!("expected wasm or process, got {name:?}"))
    }
}

/// Everything needed to build a backend; [`BackendSpec::open`] is the one constructor the
/// trainer and every command use.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendSpec {
    /// Which backend.
    pub kind: BackendKind,
    /// Interpreter of the process backend (default [`ProcessBackend::default_python`]).
    pub python: Option<PathBuf>,
    /// CPython/WASI module of the wasm backend (default `root/`[`wasm::DEFAULT_WASM_PATH`]).
    pub wasm: Option<PathBuf>,
    /// The project folder: the default module and the compiled-module cache
    /// (`root/.cache/wasm-compiled`) are found under it.
    pub root: PathBuf,
    /// How strictly the process backend must isolate its instances.
    pub process_isolation: Isolation,
}

impl BackendSpec {
    /// The default paths of `kind` under the project folder `root`.
    pub fn new(kind: BackendKind, root: &Path) -> Self {
        BackendSpec {
            kind,
            python: None,
            wasm: None,
            root: root.to_path_buf(),
            process_isolation: Isolation::Strict,
        }
    }

    /// Builds the backend (verifying the interpreter, compiling or loading the module).
    pub fn open(&self) -> Result<Arc<dyn Backend>, SandboxError> {
        Ok(match self.kind {
            BackendKind::Wasm => {
                let module = self
                    .wasm
                    .clone()
                    .unwrap_or_else(|| self.root.join(wasm::DEFAULT_WASM_PATH));
                Arc::new(WasmBackend::new(&module, &wasm::cache_dir(&self.root))?)
            }
            BackendKind::Process => {
                let python = self
                    .python
                    .clone()
                    .unwrap_or_else(ProcessBackend::default_python);
                Arc::new(ProcessBackend::with_isolation(
                    &python,
                    self.process_isolation,
                )?)
            }
        })
    }
}

/// A backend that could not be set up (missing interpreter, bad checksum, ...).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// What could not be set up.
    #[error("sandbox setup: {0}")]
    Setup(String),
}

#[cfg(test)]
mod tests {
    use super::BackendKind;

    #[test]
    fn backend_names_parse_back() {
        for kind in [BackendKind::Wasm, BackendKind::Process] {
            assert_eq!(kind.name().parse::<BackendKind>(), Ok(kind));
        }
        assert!("docker".parse::<BackendKind>().is_err());
    }
}
