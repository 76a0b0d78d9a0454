//! Data parallelism with two processes on Gloo (`couplet launch --nproc 2`): the same
//! global batch gives the same weights as one process, with ZeRO 0, 1 and 2; only rank 0
//! writes; a two-rank run (also under ZeRO-2) resumes from its checkpoint; two torchrun
//! "nodes" on the loopback address equal one process.

use couplet_testkit as common;

use std::process::Command;

use common::assert_ok;
use run_helpers::{max_diff, metrics, model, sets, train, weights};

use tch::Tensor;

mod run_helpers;

#[test]
fn two_ranks_equal_one_process_on_the_same_global_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let model = model(tmp.path());
    for (estimator, extra) in [
        ("coupled", &[][..]),
        ("d1", &[][..]),
        ("coupled", &["distributed.zero1=true"][..]),
        ("coupled", &["distributed.zero=2"][..]),
        ("d1", &["distributed.zero=2"][..]),
    ] {
        let tag = format!("{estimator}-{}", extra.join("-"));
        let one = tmp.path().join(format!("one-{tag}"));
        let two = tmp.path().join(format!("two-{tag}"));
        let single_extra: Vec<&str> = extra
            .iter()
            .copied()
            .filter(|s| !s.contains("zero"))
            .collect();
        assert_ok(&train(&model, &one, estimator, 1, &single_extra));
        let out = train(&model, &two, estimator, 2, extra);
        assert_ok(&out);
        // One optimizer step: equal to 1e-6 (in practice bitwise).
        let diff = max_diff(
            &weights(&one.join("checkpoint-1")),
            &weights(&two.join("checkpoint-1")),
        );
        eprintln!("{tag}: after one step max |Δw| = {diff:e}");
        assert!(
            diff < 1e-6,
            "{tag}: one step, 2 ranks vs 1 process differ by {diff}"
        );
        // The round's second step: same rewards, same loss to rounding. Its weights are
        // only held to a few AdamW step sizes (lr = 1e-3): the micro-batch gradients are summed in
        // another order (and with another thread count), and m / sqrt(v) magnifies that
        // rounding wherever a gradient is tiny or changes sign between the two steps.
        // (The loss is an advantage-weighted sum that can nearly cancel: floor the scale.)
        let (ma, mb) = (metrics(&one), metrics(&two));
        for (x, y) in ma.iter().zip(&mb) {
            assert_eq!(x["reward"], y["reward"], "{tag}");
            let (lx, ly) = (x["loss"].as_f64().unwrap(), y["loss"].as_f64().unwrap());
            let scale = lx.abs().max(1e-2);
            assert!((lx - ly).abs() <= 1e-5 * scale, "{tag}: loss {lx} vs {ly}");
        }
        let a = weights(&one.join("checkpoint-2"));
        let b = weights(&two.join("checkpoint-2"));
        let before = Tensor::read_safetensors(model.join("model.safetensors")).unwrap();
        let moved = a
            .iter()
            .map(|(n, t)| {
                let (_, s) = before.iter().find(|(m, _)| m == n).unwrap();
                (t - s).abs().max().double_value(&[])
            })
            .fold(0.0, f64::max);
        assert!(
            moved > 1e-4,
            "{tag}: the steps did not move the weights ({moved})"
        );
        let diff = max_diff(&a, &b);
        eprintln!("{tag}: after two steps max |Δw| = {diff:e}");
        assert!(
            diff < 4e-3,
            "{tag}: two steps, 2 ranks vs 1 process differ by {diff}"
        );
        // Same optimizer state too (ZeRO-1 gathers its shards into the same file).
        let oa = Tensor::read_safetensors(one.join("checkpoint-1/optimizer.safetensors")).unwrap();
        let ob = Tensor::read_safetensors(two.join("checkpoint-1/optimizer.safetensors")).unwrap();
        let mut oa = oa;
        let mut ob = ob;
        oa.sort_by(|x, y| x.0.cmp(&y.0));
        ob.sort_by(|x, y| x.0.cmp(&y.0));
        assert!(max_diff(&oa, &ob) < 1e-6, "{tag}: optimizer state differs");
        // Rank 0 alone logs: one line per step.
        assert_eq!(mb.len(), 2, "{tag}");
    }
}

#[test]
fn two_ranks_resume_mid_round_and_refuse_another_world_size() {
    resume_case(&[]);
}

#[test]
fn zero2_resumes_exactly() {
    resume_case(&["distributed.zero=2"]);
}

/// Simulated multi-node: `torchrun --nnodes 2 --nproc-per-node 1`, two "nodes" on the
/// loopback address with a static rendezvous (node 0's agent hosts the store), gives the
/// same step as one process.
#[test]
fn two_nodes_through_torchrun_equal_one_process() {
    let tmp = tempfile::tempdir().unwrap();
    let model = model(tmp.path());
    let one = tmp.path().join("one");
    assert_ok(&train(
        &model,
        &one,
        "coupled",
        1,
        &["schedule.max_steps=1"],
    ));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let two = tmp.path().join("two");
    let nodes: Vec<_> = (0..2)
        .map(|node| {
            Command::new(common::python())
                .args(["-m", "torch.distributed.run", "--nnodes", "2"])
                .args(["--nproc-per-node", "1", "--node-rank", &node.to_string()])
                .args(["--master-addr", "127.0.0.1", "--master-port", &port])
                .args(["--no-python", env!("CARGO_BIN_EXE_couplet")])
                .args(["train", "--config", "configs/tiny_cpu.toml"])
                .args(sets(&model, &two, "coupled", 2))
                .args([
                    "--set",
                    "schedule.max_steps=1",
                    "--set",
                    "distributed.zero=2",
                ])
                .env("OMP_NUM_THREADS", "1")
                .current_dir(common::repo())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut node in nodes {
        assert!(node.wait().unwrap().success(), "a node failed");
    }
    let diff = max_diff(
        &weights(&one.join("checkpoint-1")),
        &weights(&two.join("checkpoint-1")),
    );
    assert!(diff < 1e-6, "two nodes vs one process differ by {diff}");
}

/// A two-rank run (with `extra`) stopped mid-round resumes to the straight run's weights;
/// one process refuses its checkpoint.
fn resume_case(extra: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let model = model(tmp.path());
    let run = tmp.path().join("run");
    let with = |more: &[&'static str]| -> Vec<String> {
        extra.iter().chain(more).map(|s| s.to_string()).collect()
    };
    let first: Vec<String> = with(&["schedule.max_steps=1"]);
    let first: Vec<&str> = first.iter().map(String::as_str).collect();
    // Step 1 of a μ = 2 round: the checkpoint holds each rank's part of the buffer.
    let out = train(&model, &run, "coupled", 2, &first);
    assert_ok(&out);
    assert!(run.join("checkpoint-1/round_buffer.safetensors").exists());
    assert!(run
        .join("checkpoint-1/round_buffer-rank1.safetensors")
        .exists());
    let resumed = Command::new(env!("CARGO_BIN_EXE_couplet"))
        .current_dir(common::repo())
        .args([
            "launch",
            "--nproc",
            "2",
            "--",
            "train",
            "--config",
            "configs/tiny_cpu.toml",
        ])
        .args(sets(&model, &run, "coupled", 2))
        .args(with(&[]).iter().flat_map(|s| ["--set", s.as_str()]))
        .args(["--resume", run.to_str().unwrap()])
        .output()
        .unwrap();
    assert_ok(&resumed);
    assert!(String::from_utf8_lossy(&resumed.stderr).contains("at step 1"));
    // The straight two-step run and the resumed one end with the same weights.
    let straight = tmp.path().join("straight");
    assert_ok(&train(&model, &straight, "coupled", 2, extra));
    let diff = max_diff(
        &weights(&run.join("checkpoint-2")),
        &weights(&straight.join("checkpoint-2")),
    );
    assert!(diff == 0.0, "resumed run differs by {diff}");
    // One process cannot resume a two-rank checkpoint.
    let out = Command::new(env!("CARGO_BIN_EXE_couplet"))
        .current_dir(common::repo())
        .args(["train", "--config", "configs/tiny_cpu.toml"])
        .args(sets(&model, &run, "coupled", 1))
        .args(["--set", "schedule.max_steps=3"])
        .args(["--resume", run.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("written by 2 rank(s), resumed with 1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
