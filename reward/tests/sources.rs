//! Row sources: gzip shards, directories and globs of shards read as one dataset, with row
//! errors naming the shard, the line and the field.

use std::io::Write;
use std::path::{Path, PathBuf};

use couplet_reward::{load_rows, BadRows, DataError, LoadOptions};

fn row(id: &str) -> String {
    format!(r#"{{"id": "{id}", "question": "q {id}", "test_cases": ["assert True"]}}"#)
}

fn write_plain(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

fn write_gz(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&path).unwrap(),
        flate2::Compression::default(),
    );
    gz.write_all(lines.join("\n").as_bytes()).unwrap();
    gz.finish().unwrap();
    path
}

fn ids(spec: &Path) -> Vec<String> {
    let (rows, _) = load_rows(spec, &LoadOptions::default()).unwrap();
    rows.into_iter().map(|r| r.id).collect()
}

#[test]
fn gzip_files_read_like_plain_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let lines = vec![row("a"), row("b")];
    let gz = write_gz(tmp.path(), "rows.jsonl.gz", &lines);
    assert_eq!(ids(&gz), ["a", "b"]);
    // A JSON array inside gzip too.
    let array = write_gz(
        tmp.path(),
        "rows.json.gz",
        &[format!("[{}, {}]", row("x"), row("y"))],
    );
    assert_eq!(ids(&array), ["x", "y"]);
}

#[test]
fn a_directory_or_a_glob_of_shards_is_one_dataset_in_name_order() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("shards");
    std::fs::create_dir(&dir).unwrap();
    write_gz(&dir, "train-00001-of-00003.jsonl.gz", &[row("c"), row("d")]);
    write_plain(&dir, "train-00000-of-00003.jsonl", &[row("a"), row("b")]);
    write_plain(
        &dir,
        "train-00002-of-00003.json",
        &[format!("[{}]", row("e"))],
    );
    write_plain(&dir, "README.md", &["not rows".to_string()]);
    assert_eq!(ids(&dir), ["a", "b", "c", "d", "e"]);
    let glob = dir.join("train-0000[01]-of-*.jsonl*");
    assert_eq!(ids(&glob), ["a", "b", "c", "d"]);
    let none = dir.join("valid-*.jsonl");
    let err = load_rows(&none, &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, DataError::Format { .. }), "{err}");
    assert!(err.to_string().contains("matches no file"), "{err}");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = load_rows(&empty, &LoadOptions::default()).unwrap_err();
    assert!(err.to_string().contains("no jsonl/json files"), "{err}");
}

#[test]
fn a_bad_row_names_its_shard_line_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    write_plain(tmp.path(), "part-0.jsonl", &[row("a")]);
    let bad = r#"{"id": "b", "question": "q", "test_cases": "assert True"}"#.to_string();
    write_gz(tmp.path(), "part-1.jsonl.gz", &[row("z"), bad]);
    let fatal = LoadOptions {
        bad_rows: BadRows::Fatal,
        ..LoadOptions::default()
    };
    let err = load_rows(tmp.path(), &fatal).unwrap_err().to_string();
    assert!(
        err.contains("part-1.jsonl.gz") && err.contains(":2") && err.contains("test_cases"),
        "{err}"
    );
    let (rows, summary) = load_rows(tmp.path(), &LoadOptions::default()).unwrap();
    assert_eq!((rows.len(), summary.read, summary.skipped), (2, 3, 1));
}

#[test]
fn humaneval_files_may_be_gzip_or_sharded_too() {
    let tmp = tempfile::tempdir().unwrap();
    let problem = |id: &str| {
        format!(
            r#"{{"task_id": "{id}", "prompt": "def f():\n", "canonical_solution": "    return 1\n", "test": "def check(c):\n    assert c() == 1\n", "entry_point": "f"}}"#
        )
    };
    write_gz(
        tmp.path(),
        "he-0.jsonl.gz",
        &[problem("t/0"), problem("t/1")],
    );
    write_plain(tmp.path(), "he-1.jsonl", &[problem("t/2")]);
    let ids = |spec: &Path| -> Vec<String> {
        couplet_reward::humaneval::load(spec)
            .unwrap()
            .into_iter()
            .map(|p| p.task_id)
            .collect()
    };
    assert_eq!(ids(&tmp.path().join("he-0.jsonl.gz")), ["t/0", "t/1"]);
    assert_eq!(ids(&tmp.path().join("he-*.jsonl*")), ["t/0", "t/1", "t/2"]);
    write_plain(tmp.path(), "he-2.jsonl", &["{broken".to_string()]);
    let err = couplet_reward::humaneval::load(tmp.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("he-2.jsonl") && err.contains("line 1"),
        "{err}"
    );
}
