//! Judging samples: right code passes, wrong or evasive code does not, pass@k per problem.

use std::path::PathBuf;
use std::sync::Arc;

use couplet_sandbox::{Limits, SandboxPool, WasmBackend};
use couplet_trainer::{check_completions, load_benchmark};

#[test]
fn samples_are_judged_on_their_tests() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let problems = load_benchmark("data/tasks/val.jsonl", &repo).unwrap();
    let problems = &problems[..2];
    let pool = SandboxPool::new(Arc::new(WasmBackend::from_repo(&repo).unwrap()), 2).unwrap();
    let good = |i: usize| {
        format!(
            "Here it is:\n```python\n{}```\n",
            problems[i].reference.as_ref().unwrap()
        )
    };
    let completions = vec![
        vec![
            good(0),
            "```python\ndef nothing():\n    pass\n```\n".to_string(),
            // Exiting early must not count as passing.
            "```python\nimport sys\nsys.exit(0)\n```\n".to_string(),
            // No code block: judged on the whole text.
            problems[0].reference.clone().unwrap(),
        ],
        vec![good(1), good(1), "not python at all (".into(), good(1)],
    ];
    let report = check_completions(problems, &completions, &[1, 2, 4], &pool, Limits::default());
    assert_eq!(report.problems[0].passed, vec![true, false, false, true]);
    assert_eq!(report.problems[1].correct, 3);
    // pass@1 = c/n; pass@2 for n = 4, c = 2 is 1 − C(2,2)/C(4,2) = 5/6.
    let p0 = &report.problems[0].pass_at_k;
    assert_eq!(p0[0], (1, 0.5));
    assert!((p0[1].1 - 5.0 / 6.0).abs() < 1e-12);
    assert_eq!(p0[2], (4, 1.0));
    assert!((report.pass_at(1).unwrap() - (0.5 + 0.75) / 2.0).abs() < 1e-12);
    assert_eq!(report.sandbox_errors, 0);
}
