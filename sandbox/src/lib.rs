//! The sandbox stage: runs untrusted, model-written Python and its unit tests.
//!
//! One job type — "run this solution against these tests with these limits" — answered with
//! a per-test [`Outcome`] (passed, failed, timeout, memory, output limit, crashed), captured
//! output and timing, and the sandbox's own failures reported apart from test failures
//! ([`JobResult::sandbox_error`]). Two backends share one harness ([`harness`]):
//! [`WasmBackend`] (wasmtime running CPython built for WASI, the default) and
//! [`ProcessBackend`] (native `python3` with OS limits). [`SandboxPool`] runs jobs in
//! parallel. A test counts as passed only when the harness proves the test statement itself
//! completed (SPEC section 3), so `sys.exit(0)` and friends never earn reward.
//!
//! Not for: reward arithmetic or answer extraction (the `reward` crate does that).

pub mod harness;
pub mod job;
pub mod pool;
pub mod process;
pub mod wasm;

pub use job::{Job, JobResult, Limits, Outcome, TestResult};
pub use pool::{PoolStats, SandboxPool};
pub use process::ProcessBackend;
pub use wasm::WasmBackend;

/// A way to run jobs. Implementations enforce the limits themselves and never panic on
/// bad input (a panic is still caught by the pool).
pub trait Backend: Send + Sync {
    fn name(&self) -> &'static str;
    fn run(&self, job: &Job, limits: &Limits) -> JobResult;
}

/// A backend that could not be set up (missing interpreter, bad checksum, ...).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("sandbox setup: {0}")]
    Setup(String),
}
