//! `couplet analyze` end to end on a tiny model: each command's numbers, files and errors.

use couplet_testkit as common;

use std::path::Path;
use std::process::{Command, Output};

use common::assert_ok;
use serde_json::Value;

fn couplet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_couplet"))
        .args(args)
        .current_dir(common::repo())
        .output()
        .unwrap()
}

/// `couplet analyze SUB --model M` on two validation tasks, 8-token completions.
fn analyze(sub: &str, model: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "analyze",
        sub,
        "--model",
        model.to_str().unwrap(),
        "--benchmark",
        "data/tasks/val.jsonl",
        "--limit",
        "2",
        "--max-new-tokens",
        "8",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    couplet(&args)
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 1000,
        "{}",
        path.display()
    );
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn arness_sweeps_temperatures_and_left_to_right_decoding_scores_one() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::tiny_model(tmp.path(), false, 0);
    let out = tmp.path().join("arness");
    let run = analyze("arness", &model, &out, &["--temperatures", "0.5,1.5"]);
    assert_ok(&run);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("local@9") && stdout.contains("global@4"),
        "{stdout}"
    );
    let report = json(&out.join("arness.json"));
    // The paper's protocol unless told otherwise: one token per step, low-confidence order.
    assert_eq!(report["decode"]["steps"], 8);
    assert_eq!(report["decode"]["alg"], "maskgit_plus");
    let points = report["points"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    for p in points {
        let (local, global) = (
            floats(&p["arness"]["local"]),
            floats(&p["arness"]["global"]),
        );
        assert_eq!((local.len(), global.len()), (9, 4));
        assert!(local.iter().chain(&global).all(|v| (0.0..=1.0).contains(v)));
    }
    assert_png(&out.join("arness.png"));

    // Blocks of one token decode strictly left to right: every AR-ness is exactly 1.
    let out = tmp.path().join("blocks");
    let run = analyze(
        "arness",
        &model,
        &out,
        &["--temperatures", "1.0", "--block-length", "1"],
    );
    assert_ok(&run);
    let p = &json(&out.join("arness.json"))["points"][0]["arness"];
    let all: Vec<f64> = [floats(&p["local"]), floats(&p["global"])].concat();
    assert!(all.iter().all(|&v| v == 1.0), "{p}");

    // Option errors name the flag and exit 2.
    for (extra, flag) in [
        (&["--temperature", "1.0"][..], "--temperature"),
        (&["--temperatures", "-1"][..], "--temperatures"),
        (&["--k", "0..3"][..], "--k"),
    ] {
        let run = analyze("arness", &model, &out, extra);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(
            stderr.contains(flag) && !stderr.contains("panicked"),
            "{stderr}"
        );
    }
}

#[test]
fn temperature_reports_pass_at_every_k_and_the_best_temperature() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::tiny_model(tmp.path(), false, 0);
    let out = tmp.path().join("temperature");
    let extra = ["--temperatures", "0.4,1.2", "--samples", "3"];
    let run = analyze("temperature", &model, &out, &extra);
    assert_ok(&run);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("best temperature for pass@3"), "{stdout}");
    let report = json(&out.join("temperature.json"));
    for p in report["points"].as_array().unwrap() {
        let pass: Vec<(u64, f64)> = p["pass_at_k"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| (x[0].as_u64().unwrap(), x[1].as_f64().unwrap()))
            .collect();
        assert_eq!(pass.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 2, 3]);
        // pass@k of the same samples never falls as k grows.
        assert!(pass.windows(2).all(|w| w[0].1 <= w[1].1), "{pass:?}");
    }
    let best = report["best"].as_array().unwrap();
    assert_eq!(best.len(), 3);
    for b in best {
        let t = b["temperature"].as_f64().unwrap();
        assert!(t == 0.4 || t == 1.2, "{b}");
    }
    assert_png(&out.join("temperature.png"));
    let run = analyze("temperature", &model, &out, &["--samples", "2", "--k", "3"]);
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("--k 3"));
}

#[test]
fn entropy_sink_profiles_the_first_step_and_draws_decode_orders() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::tiny_model(tmp.path(), false, 0);
    let out = tmp.path().join("sink");
    let run = analyze("entropy-sink", &model, &out, &["--orders", "2"]);
    assert_ok(&run);
    let report = json(&out.join("entropy-sink.json"));
    let confidence = floats(&report["mean_confidence"]);
    let entropy = floats(&report["mean_entropy"]);
    assert_eq!((confidence.len(), entropy.len()), (8, 8));
    assert!(
        confidence.iter().all(|c| *c > 0.0 && *c <= 1.0),
        "{confidence:?}"
    );
    assert!(entropy.iter().all(|e| *e >= 0.0), "{entropy:?}");
    assert_eq!(
        report["per_prompt"]["confidence"].as_array().unwrap().len(),
        2
    );
    // 8 steps for 8 tokens: every position revealed once, within the 8 steps, at most two
    // at a step (Dream's schedule reveals int(8 · (1 − s/t)) = 0 at its first step, so its
    // last step reveals two).
    let orders = report["orders"].as_array().unwrap();
    assert_eq!(orders.len(), 2);
    for o in orders {
        let steps: Vec<i64> = o["reveal_step"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_i64().unwrap())
            .collect();
        assert_eq!(steps.len(), 8);
        assert!(steps.iter().all(|s| (0..8).contains(s)), "{steps:?}");
        let most = (0..8)
            .map(|t| steps.iter().filter(|&&s| s == t).count())
            .max();
        assert!(most <= Some(2), "{steps:?}");
    }
    assert_png(&out.join("entropy-sink.png"));
    assert_png(&out.join("decode-order.png"));
}

#[test]
fn compare_of_a_model_with_itself_measures_the_same_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::tiny_model(tmp.path(), false, 0);
    let out = tmp.path().join("compare");
    let m = model.to_str().unwrap();
    let run = couplet(&[
        "analyze",
        "compare",
        m,
        m,
        "--benchmark",
        "data/tasks/val.jsonl",
        "--limit",
        "2",
        "--max-new-tokens",
        "8",
        "--temperatures",
        "0.5,1.0",
        "--samples",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_ok(&run);
    let mut report = json(&out.join("compare.json"));
    for side in ["a", "b"] {
        for p in report[side]["points"].as_array_mut().unwrap() {
            let p = p.as_object_mut().unwrap();
            p.remove("seconds");
            p.remove("tokens_per_second");
        }
    }
    for key in ["points", "mean_confidence", "mean_entropy", "orders"] {
        assert_eq!(report["a"][key], report["b"][key], "{key}");
    }
    assert_eq!(report["a"]["points"].as_array().unwrap().len(), 2);
    for png in [
        "arness.png",
        "temperature.png",
        "entropy-sink.png",
        "decode-order-a.png",
        "decode-order-b.png",
    ] {
        assert_png(&out.join(png));
    }
}
