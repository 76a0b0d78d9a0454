//! The DiffuCoder reward cases through the real sandbox, reward hacks, and the bundled
//! task set's canonical solutions.

use couplet_testkit as common;

use std::sync::{Arc, OnceLock};

use couplet_reward::{load_rows, score_batch, LoadOptions, RewardConfig, RewardKind};
use couplet_sandbox::{Limits, SandboxPool, WasmBackend};

fn pool() -> &'static SandboxPool {
    static POOL: OnceLock<SandboxPool> = OnceLock::new();
    POOL.get_or_init(|| {
        SandboxPool::new(
            Arc::new(WasmBackend::from_repo(&common::repo()).unwrap()),
            0,
        )
        .unwrap()
    })
}

fn limits() -> Limits {
    Limits {
        per_test: std::time::Duration::from_secs(2),
        ..Limits::default()
    }
}

const TESTS: [&str; 3] = [
    "assert add(1, 2) == 3",
    "assert add(-1, 1) == 0",
    "assert add(0, 0) == 0",
];

fn score(completions: &[&str], config: &RewardConfig) -> couplet_reward::RewardBatch {
    let completions: Vec<String> = completions.iter().map(|s| s.to_string()).collect();
    let tests = vec![TESTS.iter().map(|s| s.to_string()).collect::<Vec<_>>(); completions.len()];
    let lengths = vec![10; completions.len()];
    score_batch(&completions, &lengths, &tests, config, pool(), limits())
}

fn get(batch: &couplet_reward::RewardBatch, kind: RewardKind) -> Vec<f64> {
    batch
        .per_function
        .iter()
        .find(|(k, _)| *k == kind)
        .unwrap()
        .1
        .clone()
}

#[test]
fn diffucoder_reward_cases() {
    let cases: [(&str, f64, f64); 12] = [
        (
            "Sure.\n```python\ndef add(a, b):\n    return a + b\n```\n",
            1.0,
            1.0,
        ),
        (
            "```python\ndef add(a, b):\n    return a - b if a else b\n```\n",
            1.0,
            1.0 / 3.0,
        ),
        (
            "```python\ndef add(a, b)\n    return a + b\n```\n",
            0.5,
            0.0,
        ),
        ("```python\ndef add(a, b):\n    return a + b\n", 0.0, 0.0),
        (
            "```python\ndef add(a, b):\n    return a + b\n```\n```python\nx = 1\n```\n",
            0.0,
            0.0,
        ),
        (
            "```python\ndef add(a, b):\n    return a + b\n```\nDone.",
            0.0,
            0.0,
        ),
        (
            "```python\ndef add(a, b):\n    return a + b\n```\n\nDone.",
            1.0,
            1.0,
        ),
        ("```py\ndef add(a, b):\n    return a + b\n```\n", 0.0, 0.0),
        (
            "```python\r\ndef add(a, b):\r\n    return a + b\r\n```\n",
            0.0,
            0.0,
        ),
        (
            "```python\ndef add(a, b):\r\n    return a + b\r\n```\n",
            1.0,
            1.0,
        ),
        ("```python\n```\n", 1.0, 0.0),
        // ast.parse accepts a top-level return (compile() would not): format 1.0.
        ("```python\nreturn 1\n```\n", 1.0, 0.0),
    ];
    let completions: Vec<&str> = cases.iter().map(|c| c.0).collect();
    let config = RewardConfig::default();
    let batch = score(&completions, &config);
    let format = get(&batch, RewardKind::CodeFormat);
    let code = get(&batch, RewardKind::Code);
    for (i, (text, f, c)) in cases.iter().enumerate() {
        assert_eq!(format[i], *f, "format of {text:?}");
        assert!((code[i] - c).abs() < 1e-12, "code of {text:?}: {}", code[i]);
        assert!((batch.total[i] - (2.0 * c + 0.5 * f)).abs() < 1e-12);
    }
    assert_eq!(batch.sandbox_failures, 0);
    assert_eq!(batch.nan_counts["code"], 0);
    assert!((batch.means["code_format"] - format.iter().sum::<f64>() / 12.0).abs() < 1e-12);
}

#[test]
fn reward_hacks_score_zero() {
    let hacks = [
        "```python\nimport sys\nsys.exit(0)\n```\n",
        "```python\nimport os\nos._exit(0)\n```\n",
        "```python\nraise SystemExit\n```\n",
        "```python\nimport builtins\nbuiltins.print = lambda *a: None\nclass E(Exception): pass\nbuiltins.AssertionError = E\ndef add(a, b):\n    return 7\n```\n",
        "```python\nimport os\nos.write(1, b'\\nPASS\\n')\nos.close(1)\n```\n",
        "```python\ndef add(a, b):\n    while True:\n        pass\n```\n",
    ];
    let config = RewardConfig {
        functions: vec![
            (RewardKind::Code, 2.0),
            (RewardKind::BinaryCode, 1.0),
            (RewardKind::CodeFormat, 0.5),
        ],
        ..RewardConfig::default()
    };
    let batch = score(&hacks, &config);
    assert_eq!(get(&batch, RewardKind::Code), vec![0.0; hacks.len()]);
    assert_eq!(get(&batch, RewardKind::BinaryCode), vec![0.0; hacks.len()]);
    assert!(
        batch.timeouts >= 3,
        "the hung solution times out on every test"
    );
}

#[test]
fn overlong_and_binary() {
    let config = RewardConfig {
        functions: vec![
            (RewardKind::BinaryCode, 1.0),
            (RewardKind::SoftOverlong, 1.0),
        ],
        max_completion_tokens: 100,
        overlong_buffer: 20,
    };
    let completions = vec!["```python\ndef add(a, b):\n    return a + b\n```\n".to_string(); 3];
    let tests = vec![TESTS.iter().map(|s| s.to_string()).collect::<Vec<_>>(); 3];
    let batch = score_batch(
        &completions,
        &[80, 90, 120],
        &tests,
        &config,
        pool(),
        limits(),
    );
    assert_eq!(get(&batch, RewardKind::BinaryCode), vec![1.0, 1.0, 1.0]);
    assert_eq!(get(&batch, RewardKind::SoftOverlong), vec![0.0, -0.5, -1.0]);
    assert_eq!(batch.total, vec![1.0, 0.5, 0.0]);
}

#[test]
fn bundled_task_set_solutions_pass() {
    let mut total = 0;
    for split in ["train", "val"] {
        let path = common::repo().join(format!("data/tasks/{split}.jsonl"));
        let (rows, summary) = load_rows(&path, &LoadOptions::default()).unwrap();
        assert_eq!(summary.skipped, 0);
        total += rows.len();
        let completions: Vec<String> = rows
            .iter()
            .map(|r| format!("```python\n{}```\n", r.extra["solution"].as_str().unwrap()))
            .collect();
        let tests: Vec<Vec<String>> = rows.iter().map(|r| r.test_cases.clone()).collect();
        assert!(tests.iter().all(|t| (5..=16).contains(&t.len())));
        let lengths = vec![1; rows.len()];
        let batch = score_batch(
            &completions,
            &lengths,
            &tests,
            &RewardConfig::default(),
            pool(),
            limits(),
        );
        let code = get(&batch, RewardKind::Code);
        let failing: Vec<&str> = rows
            .iter()
            .zip(&code)
            .filter(|(_, &c)| c != 1.0)
            .map(|(r, _)| r.id.as_str())
            .collect();
        assert!(
            failing.is_empty(),
            "{split}: canonical solutions failing: {failing:?}"
        );
    }
    assert!(total >= 300, "{total} tasks");
}

#[test]
fn humaneval_prompts_and_programs() {
    let problems = couplet_reward::humaneval::load(
        &common::repo().join(couplet_reward::humaneval::DEFAULT_PATH),
    )
    .unwrap();
    assert_eq!(problems.len(), 164);
    let p = &problems[0];
    assert!(p.instruct_question().contains(p.prompt.trim()));
    assert!(p
        .test_program()
        .ends_with(&format!("check({})\n", p.entry_point)));
}
