//! `couplet data prepare` on the handwritten sample, against counts computed by hand, and
//! the documented errors for bad rows and files.

use couplet_testkit as common;

use couplet_reward::{load_rows, prepare, BadRows, DataError, Difficulty, LoadOptions};

fn sample() -> std::path::PathBuf {
    common::repo().join("data/acecoder/sample.jsonl")
}

/// By hand (pass rates of qwen_coder_2.5 / llama3_instruct, duplicates included):
/// means  r0 0, r1 .25, r2 .25, r3 .5, r4 .5, r5 1, r6 .75, r7 .25 (0, 0, .75), r8 .75, r9 .25
/// stds   r0 0, r1 .25, r2 .25, r3 .5, r4 .25, r5 0, r6 .25, r7 .3536, r8 .25, r9 0
/// sorted means [0 .25 .25 .25 .25 .5 .5 .75 .75 1] → P20 = .25, P25 = .25, P75 = .5 + .75·.25 = .6875
/// sorted stds  [0 0 0 .25 .25 .25 .25 .25 .3536 .5] → P40 (position 3.6) = .25
/// hard   = mean ≤ .25 and std ≥ .25 → r1, r2, r7
/// medium = .25 ≤ mean ≤ .6875     → r1, r2, r3, r4, r7, r9
/// easy   = mean ≥ .6875           → r5, r6, r8
/// Rewrites (no "you", best inference starts with "def "): r1 only (r2 says "You", r7's
/// best completion starts with a fence; r3, r4, r9 → best "def f(x)"; r5, r6, r8 → likewise).
#[test]
fn counts_and_rewrite_match_the_hand_computation() {
    let tmp = tempfile::tempdir().unwrap();
    for (difficulty, selected, rewrites, ids) in [
        (Difficulty::Hard, 3, 1, vec!["r1", "r1", "r2", "r7"]),
        (
            Difficulty::Medium,
            6,
            4,
            vec!["r1", "r1", "r2", "r3", "r3", "r4", "r4", "r7", "r9", "r9"],
        ),
        (
            Difficulty::Easy,
            3,
            3,
            vec!["r5", "r5", "r6", "r6", "r8", "r8"],
        ),
    ] {
        let out = tmp.path().join("out.jsonl");
        let report = prepare(&sample(), &out, difficulty, &LoadOptions::default()).unwrap();
        assert_eq!((report.rows_read, report.rows_valid), (10, 10));
        assert_eq!(
            (
                report.p20_mean,
                report.p25_mean,
                report.p75_mean,
                report.p40_std
            ),
            (0.25, 0.25, 0.6875, 0.25)
        );
        assert_eq!(
            (report.selected, report.rewritten_added),
            (selected, rewrites),
            "{difficulty:?}"
        );
        let rows: Vec<serde_json::Value> = std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            rows.iter()
                .map(|r| r["id"].as_str().unwrap())
                .collect::<Vec<_>>(),
            ids,
            "{difficulty:?}"
        );
        assert!(
            rows.iter().all(|r| r.get("inferences").is_none()),
            "inferences dropped"
        );
        assert!(rows
            .iter()
            .all(|r| r["test_cases"].as_array().unwrap().len() == 2));
        if difficulty == Difficulty::Hard {
            assert_eq!(
                rows[1]["question"].as_str().unwrap(),
                "Please complete the following problem:\n```\ndef add(a, b):\n    \"\"\"\n    Write a function that adds two numbers.\n    \"\"\"\n```\n"
            );
            assert_eq!(
                rows[0]["question"],
                "Write a function that adds two numbers."
            );
            assert_eq!(
                rows[0]["context_messages"][0]["role"], "user",
                "other columns kept"
            );
        }
    }
}

#[test]
fn cli_prints_the_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("hard.jsonl");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_couplet"))
        .args([
            "data",
            "prepare",
            "--input",
            sample().to_str().unwrap(),
            "--difficulty",
            "hard",
            "--output",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("rows read:             10") && err.contains("rewrites added:        1"),
        "{err}"
    );
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn bad_rows_are_named_and_skipped_or_fatal() {
    let tmp = tempfile::tempdir().unwrap();
    let good = r#"{"id": "a", "question": "q", "test_cases": ["assert True"]}"#;
    let text = [
        good,
        r#"{"id": "b", "question": "q"}"#,
        r#"{"id": "c", "question": "q", "test_cases": ["assert True", 3]}"#,
        r#"{"id": "d", "question": "  ", "test_cases": ["assert True"]}"#,
        r#"{"question": "q", "test_cases": ["x"]}"#,
        "not json",
        r#"{"id": 7, "question": "q", "test_cases": []}"#,
        good,
    ]
    .join("\n");
    let path = write(tmp.path(), "rows.jsonl", &text);
    let (rows, summary) = load_rows(&path, &LoadOptions::default()).unwrap();
    assert_eq!(
        (rows.len(), summary.read, summary.kept, summary.skipped),
        (2, 8, 2, 6)
    );
    for field in ["test_cases", "question", "id", "<row>"] {
        assert!(
            summary.skipped_by_field.contains_key(field),
            "{field}: {summary:?}"
        );
    }
    assert_eq!(summary.skipped_by_field["test_cases"], 3);
    let fatal = LoadOptions {
        bad_rows: BadRows::Fatal,
        ..LoadOptions::default()
    };
    match load_rows(&path, &fatal) {
        Err(DataError::Row(e)) => {
            assert_eq!((e.location.as_str(), e.field.as_str()), ("2", "test_cases"));
            let text = e.to_string();
            assert!(
                text.contains("rows.jsonl:2: field `test_cases`: missing"),
                "{text}"
            );
        }
        other => panic!("expected a row error, got {other:?}"),
    }
    // Non-string test, named with its index.
    let path = write(
        tmp.path(),
        "one.jsonl",
        r#"{"id": "c", "question": "q", "test_cases": ["ok", 3]}"#,
    );
    let err = load_rows(&path, &fatal).unwrap_err().to_string();
    assert!(err.contains("item 1 is not a string"), "{err}");
    // A configurable prompt column.
    let path = write(
        tmp.path(),
        "p.jsonl",
        r#"{"id": 1, "prompt": "hello", "test_cases": ["assert True"]}"#,
    );
    let opts = LoadOptions {
        prompt_column: "prompt".into(),
        ..LoadOptions::default()
    };
    let (rows, _) = load_rows(&path, &opts).unwrap();
    assert_eq!(
        (rows[0].id.as_str(), rows[0].question.as_str()),
        ("1", "hello")
    );
    // data prepare needs inferences.
    let path = write(tmp.path(), "noinf.jsonl", good);
    let err = prepare(&path, &tmp.path().join("o.jsonl"), Difficulty::Hard, &fatal)
        .unwrap_err()
        .to_string();
    assert!(err.contains("inferences"), "{err}");
}

#[test]
fn json_arrays_stream_and_bad_files_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write(
        tmp.path(),
        "rows.json",
        r#" [ {"id": "a", "question": "q", "test_cases": ["assert True"]}, {"id": "b", "question": "q", "test_cases": "x"} ] "#,
    );
    let (rows, summary) = load_rows(&path, &LoadOptions::default()).unwrap();
    assert_eq!((rows.len(), summary.skipped), (1, 1));
    let fatal = LoadOptions {
        bad_rows: BadRows::Fatal,
        ..LoadOptions::default()
    };
    let err = load_rows(&path, &fatal).unwrap_err().to_string();
    assert!(err.contains("rows.json:1: field `test_cases`"), "{err}");
    let broken = write(
        tmp.path(),
        "broken.json",
        r#"[{"id": "a", "question": "q", "test_cases": ["t"]}, {"#,
    );
    assert!(load_rows(&broken, &LoadOptions::default())
        .unwrap_err()
        .to_string()
        .contains("not a valid JSON array"));
    let missing = tmp.path().join("nope.jsonl");
    assert!(load_rows(&missing, &LoadOptions::default())
        .unwrap_err()
        .to_string()
        .contains("nope.jsonl"));
}
