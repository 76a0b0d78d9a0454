//! The one job type and its answer: "run this solution against these tests with these
//! limits" → an outcome per test, plus the sandbox's own failures kept apart.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A solution and the tests to run against it (AceCoder: one `assert` line per test).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Job {
    /// Caller's label, echoed in the result.
    #[serde(default)]
    pub id: String,
    /// Python source defining the solution.
    pub solution: String,
    /// Test programs (run in the trusted interpreter; each after a fresh execution of the
    /// solution in the untrusted one).
    pub tests: Vec<String>,
    /// Also report whether the solution parses (CPython's own compiler: `ast.parse` rules).
    #[serde(default)]
    pub check_syntax: bool,
    /// Trusted dataset code (a HumanEval prompt with its helpers, MBPP's
    /// `test_setup_code`): run before each test in the trusted interpreter, and before the
    /// solution in the untrusted one (as the dataset's own harness runs it). The names it
    /// defines are the dataset's: a test sees them, never the solution's redefinitions.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub setup: String,
    /// The names the task asks the solution for (HumanEval's `entry_point`). Only these
    /// may shadow a builtin, a standard-library module or a setup-defined name; empty: no
    /// solution name may.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entry_points: Vec<String>,
}

/// Limits of one job.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Wall-clock budget of each test (the reference uses 5 s per test).
    pub per_test: Duration,
    /// Wall-clock budget of the whole job; tests not reached get `Timeout`.
    pub per_job: Duration,
    /// Memory available to the interpreter.
    pub memory_bytes: u64,
    /// stdout / stderr kept per test (each).
    pub output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_test: Duration::from_secs(5),
            per_job: Duration::from_secs(60),
            memory_bytes: 512 << 20,
            output_bytes: 4 << 10,
        }
    }
}

/// What happened to one test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The test ran to completion in the trusted interpreter.
    Passed,
    /// An exception: `AssertionError` for a failed assert, else the exception's type name
    /// (`SystemExit` for `sys.exit` — a reward hack never passes).
    Failed {
        /// The exception's type name.
        error: String,
    },
    /// Ran past its time budget, or the job budget ran out before it started.
    Timeout,
    /// Hit the memory cap.
    Memory,
    /// Flooded the output channel.
    OutputLimit,
    /// The interpreter died or trapped (os._exit, stack overflow, closed stdout, signal).
    Crashed {
        /// What is known of how it died.
        detail: String,
    },
}

impl Outcome {
    /// Whether the test passed.
    pub fn passed(&self) -> bool {
        matches!(self, Outcome::Passed)
    }
}

/// One test's outcome with what it printed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestResult {
    /// How the test ended.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Captured standard output (capped).
    pub stdout: String,
    /// Captured standard error (capped).
    pub stderr: String,
    /// Output was cut at the cap.
    pub truncated: bool,
}

impl TestResult {
    /// A result with no captured output.
    pub fn bare(outcome: Outcome) -> Self {
        TestResult {
            outcome,
            stdout: String::new(),
            stderr: String::new(),
            truncated: false,
        }
    }
}

/// Everything a job produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    /// The job's id.
    pub id: String,
    /// One entry per test, in order. Empty when `sandbox_error` is set.
    pub tests: Vec<TestResult>,
    /// `Some(true/false)` when syntax was checked and could be determined.
    pub syntax_ok: Option<bool>,
    /// A failure of ours (interpreter missing, harness broken, module failed to compile):
    /// never to be read as a failing test; rewards become NaN and the failure is counted.
    pub sandbox_error: Option<String>,
    /// Wall time of the whole job.
    pub wall_seconds: f64,
    /// Interpreter instances started (1 + restarts after traps, crashes and timeouts).
    pub instances: u32,
}

/// Error reason of a test whose solution result was used as anything but plain data (see
/// docs/guide/sandbox.md, the protocol): the solution returned an object and the test compared
/// it, tested its truth, hashed or printed it.
pub const NON_DATA_RESULT: &str = "non-data result";
/// Error reason of a test that passed the solution something that is not plain data (a
/// function, an instance of a class the test defines, a `collections` object, ...).
pub const NON_DATA_ARGUMENT: &str = "non-data argument";

/// Tests that failed because a value could not cross between test and solution as plain
/// data. Run over canonical solutions, this is the part of a dataset the sandbox cannot
/// evaluate; during training, a rising count means the policy is returning objects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NonDataCounts {
    /// Tests failed with [`NON_DATA_RESULT`].
    pub results: usize,
    /// Tests failed with [`NON_DATA_ARGUMENT`].
    pub arguments: usize,
}

impl NonDataCounts {
    /// Summed over jobs.
    pub fn of<'a>(jobs: impl IntoIterator<Item = &'a JobResult>) -> Self {
        jobs.into_iter()
            .map(JobResult::non_data)
            .fold(NonDataCounts::default(), |a, b| NonDataCounts {
                results: a.results + b.results,
                arguments: a.arguments + b.arguments,
            })
    }

    /// Both kinds together.
    pub fn total(&self) -> usize {
        self.results + self.arguments
    }
}

impl JobResult {
    /// This job's tests that failed for a non-data value.
    pub fn non_data(&self) -> NonDataCounts {
        let count = |reason: &str| {
            self.tests
                .iter()
                .filter(|t| matches!(&t.outcome, Outcome::Failed { error } if error == reason))
                .count()
        };
        NonDataCounts {
            results: count(NON_DATA_RESULT),
            arguments: count(NON_DATA_ARGUMENT),
        }
    }

    /// Tests that passed.
    pub fn passed(&self) -> usize {
        self.tests.iter().filter(|t| t.outcome.passed()).count()
    }

    /// passed / total, or `None` when the sandbox itself failed.
    pub fn pass_rate(&self) -> Option<f64> {
        if self.sandbox_error.is_some() {
            return None;
        }
        if self.tests.is_empty() {
            return Some(0.0);
        }
        Some(self.passed() as f64 / self.tests.len() as f64)
    }

    /// A job the sandbox itself could not run (all tests unrun).
    pub fn sandbox_failure(id: &str, error: String, wall_seconds: f64) -> Self {
        JobResult {
            id: id.to_string(),
            tests: Vec::new(),
            syntax_ok: None,
            sandbox_error: Some(error),
            wall_seconds,
            instances: 0,
        }
    }
}
