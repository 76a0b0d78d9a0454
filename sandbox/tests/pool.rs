//! The pool keeps serving when a job panics its worker, and keeps results in order.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use couplet_sandbox::{Backend, Job, JobResult, Limits, SandboxPool};

/// A backend that panics on jobs whose id starts with "boom".
struct Flaky {
    served: AtomicUsize,
}

impl Backend for Flaky {
    fn name(&self) -> &'static str {
        "flaky"
    }
    fn run(&self, job: &Job, _limits: &Limits) -> JobResult {
        if job.id.starts_with("boom") {
            panic!("worker crashed on {}", job.id);
        }
        self.served.fetch_add(1, Ordering::SeqCst);
        JobResult {
            id: job.id.clone(),
            tests: Vec::new(),
            syntax_ok: None,
            sandbox_error: None,
            wall_seconds: 0.0,
            instances: 1,
        }
    }
}

#[test]
fn pool_survives_a_crashing_job() {
    let backend = Arc::new(Flaky {
        served: AtomicUsize::new(0),
    });
    let pool = SandboxPool::new(backend.clone(), 2).unwrap();
    let ids = ["a", "boom-1", "b", "c", "boom-2", "d", "e", "f"];
    let jobs: Vec<Job> = ids
        .iter()
        .map(|id| Job {
            id: id.to_string(),
            solution: String::new(),
            tests: vec![],
            check_syntax: false,
            ..Default::default()
        })
        .collect();
    let results = pool.run_all(jobs, Limits::default());
    assert_eq!(
        results.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ids
    );
    for r in &results {
        if r.id.starts_with("boom") {
            assert!(
                r.sandbox_error
                    .as_deref()
                    .is_some_and(|e| e.contains("panicked")),
                "{r:?}"
            );
            assert_eq!(r.pass_rate(), None, "a sandbox failure is never a 0 reward");
        } else {
            assert!(r.sandbox_error.is_none());
        }
    }
    assert_eq!(backend.served.load(Ordering::SeqCst), 6);
    let stats = pool.stats();
    assert_eq!((stats.jobs, stats.sandbox_failures), (8, 2));
    // And it still serves afterwards.
    let again = pool.run_all(
        vec![Job {
            id: "g".into(),
            solution: String::new(),
            tests: vec![],
            check_syntax: false,
            ..Default::default()
        }],
        Limits::default(),
    );
    assert!(again[0].sandbox_error.is_none());
}
