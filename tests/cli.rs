//! The `couplet` binary end to end: init-model, generate, and its option errors.

mod common;

use std::process::Command;

fn couplet(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_couplet"))
        .args(args)
        .current_dir(common::repo())
        .output()
        .unwrap()
}

#[test]
fn init_model_then_generate_json() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let tok = common::cpu_tokenizer();
    let out = couplet(&[
        "init-model",
        "--preset",
        "tiny",
        "--tokenizer",
        tok.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "generation_config.json",
    ] {
        assert!(dir.join(f).exists(), "{f}");
    }
    let out = couplet(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--prompt",
        "def add(a, b):",
        "--prompt",
        "x",
        "--steps",
        "8",
        "--max-new-tokens",
        "8",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for l in &lines {
        let ids = l["completion_ids"].as_array().unwrap();
        assert!(!ids.is_empty() && ids.len() <= 8);
        assert_eq!(
            l["decode_order"].as_array().unwrap().len(),
            8,
            "all K positions revealed"
        );
        assert_eq!(l["arness"]["local"].as_array().unwrap().len(), 9);
        assert_eq!(l["arness"]["global"].as_array().unwrap().len(), 4);
    }
}

#[test]
fn bad_options_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_model(tmp.path(), false, 0);
    let d = dir.to_str().unwrap();
    for (args, needle) in [
        (vec!["--temperature", "-1"], "temperature"),
        (vec!["--top-p", "1.5"], "top_p"),
        (vec!["--top-p", "0"], "top_p"),
        (vec!["--alg", "magic"], "unknown algorithm"),
        (vec!["--steps", "0"], "steps"),
        (vec!["--device", "tpu"], "--device"),
        (
            vec!["--max-new-tokens", "64", "--block-length", "24"],
            "block_length",
        ),
        (
            vec![
                "--max-new-tokens",
                "64",
                "--block-length",
                "16",
                "--steps",
                "6",
            ],
            "steps",
        ),
        (
            vec!["--block-length", "16", "--remasking", "psychic"],
            "remasking",
        ),
    ] {
        let mut full = vec!["generate", "--model", d, "--prompt", "x"];
        full.extend(args.iter().copied());
        let out = couplet(&full);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let out = couplet(&["generate", "--model", "/nonexistent/model", "--prompt", "x"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/model"));
}
