//! The sandbox stage: runs untrusted, model-written Python and its unit tests.
//!
//! One job type — "run this solution against these tests with these limits" — answered with
//! a per-test outcome (passed, failed, timeout, memory, output limit, crashed), captured
//! output and timing, and the sandbox's own failures reported apart from test failures.
//! Two backends will live here: WebAssembly (wasmtime running CPython built for WASI, the
//! default) and a native `python3` process with OS limits, plus a worker pool. A test counts
//! as passed only when the harness proves the test statement itself completed (SPEC
//! section 3), so `sys.exit(0)` and friends never earn reward.
//!
//! Not for: reward arithmetic or answer extraction (the `reward` crate does that).
