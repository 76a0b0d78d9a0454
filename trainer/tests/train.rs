//! The training loop end to end on a tiny model: a smoke run per estimator, and exact
//! resume (including from a checkpoint written mid-round).

use std::path::{Path, PathBuf};

use couplet_model::{init_model_folder, Preset};
use couplet_trainer::{latest_checkpoint, TrainConfig, Trainer};
use tch::Tensor;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A tiny random model whose end-of-text logit swings strongly from position to position,
/// so completion lengths — and with `soft_overlong` the rewards — differ within a group:
/// the advantages are not all zero and the updates are real.
fn tiny_model(dir: &Path) -> PathBuf {
    let out = dir.join("model");
    let tok = repo().join("data/tokenizer-cpu/tokenizer.json");
    let model = init_model_folder(Preset::Tiny.config(4096), &tok, &out, 1).unwrap();
    tch::no_grad(|| {
        let head = model.var_store().variables()["lm_head.weight"].shallow_clone();
        let mut eos_row = head.get(0);
        let _ = eos_row.g_mul_scalar_(35.0);
    });
    couplet_model::save_model(&model, &out, &couplet_model::SaveOptions::default()).unwrap();
    out
}

fn config(model: &Path, run: &Path, estimator: &str) -> TrainConfig {
    let toml = format!(
        r#"
seed = 3
[model]
path = "{model}"
[data]
train = "{train}"
max_prompt_length = 48
[rollout]
num_generations = 2
prompts_per_step = 2
generation_batch_size = 4
max_new_tokens = 8
steps = 4
[reward]
functions = [{{ name = "code", weight = 2.0 }}, {{ name = "code_format", weight = 0.5 }}, {{ name = "soft_overlong", weight = 1.0 }}]
overlong_buffer = 6
[sandbox]
timeout_seconds = 2.0
[algorithm]
name = "{estimator}"
beta = 0.05
[reference]
sync_steps = 2
[optimizer]
lr = 1e-3
[schedule]
num_iterations = 2
kind = "constant"
warmup_steps = 0
max_steps = 4
micro_batch_size = 2
gradient_accumulation_steps = 2
[checkpointing]
run_dir = "{run}"
save_every = 1
save_total_limit = 2
"#,
        model = model.display(),
        train = repo().join("data/tasks/train.jsonl").display(),
        run = run.display(),
    );
    TrainConfig::from_toml(&toml, "test", &[]).unwrap()
}

fn weights(t: &Trainer) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = t
        .policy
        .model
        .var_store()
        .variables()
        .into_iter()
        .map(|(n, x)| (n, x.copy()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn smoke_each_estimator() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    for est in ["coupled", "d1", "full_mask", "decoupled"] {
        let cfg = config(&model, &tmp.path().join(format!("run-{est}")), est);
        let mut trainer = Trainer::new(cfg, &repo(), None).unwrap();
        let before = weights(&trainer);
        for _ in 0..2 {
            let m = trainer.step().unwrap();
            assert!(
                m.loss.is_finite()
                    && m.kl.is_finite()
                    && m.grad_norm.is_finite()
                    && m.reward.is_finite(),
                "{est}: {m:?}"
            );
        }
        let after = weights(&trainer);
        let changed = before
            .iter()
            .zip(&after)
            .any(|((_, a), (_, b))| (a - b).abs().max().double_value(&[]) > 0.0);
        assert!(changed, "{est}: weights did not change");
    }
}

#[test]
fn resume_is_exact_even_mid_round() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    // Straight: 4 optimizer steps (2 rounds of μ = 2).
    let mut straight = Trainer::new(
        config(&model, &tmp.path().join("a"), "coupled"),
        &repo(),
        None,
    )
    .unwrap();
    let losses_a: Vec<f64> = (0..4).map(|_| straight.step().unwrap().loss).collect();
    let final_a = weights(&straight);
    // Interrupted after step 1 (mid-round) and after step 3 (mid-round again).
    let run_b = tmp.path().join("b");
    let mut losses_b = Vec::new();
    let mut b = Trainer::new(config(&model, &run_b, "coupled"), &repo(), None).unwrap();
    losses_b.push(b.step().unwrap().loss);
    b.save_checkpoint().unwrap();
    drop(b);
    let mut b = Trainer::new(
        config(&model, &run_b, "coupled"),
        &repo(),
        latest_checkpoint(&run_b).as_deref(),
    )
    .unwrap();
    assert_eq!(b.state.step, 1);
    losses_b.push(b.step().unwrap().loss);
    losses_b.push(b.step().unwrap().loss);
    b.save_checkpoint().unwrap();
    drop(b);
    // A half-written checkpoint is ignored.
    std::fs::create_dir_all(run_b.join("checkpoint-99")).unwrap();
    let latest = latest_checkpoint(&run_b).unwrap();
    assert!(latest.ends_with("checkpoint-3"), "{}", latest.display());
    let mut b = Trainer::new(config(&model, &run_b, "coupled"), &repo(), Some(&latest)).unwrap();
    losses_b.push(b.step().unwrap().loss);
    assert!(losses_a.iter().any(|l| *l != 0.0), "{losses_a:?}");
    assert_eq!(losses_a, losses_b, "losses differ");
    for ((name, a), (_, b)) in final_a.iter().zip(weights(&b)) {
        assert!(a.equal(&b), "{name} differs after resume");
    }
    // save_total_limit = 2 keeps the newest two complete checkpoints.
    let kept: Vec<String> = std::fs::read_dir(&run_b)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("checkpoint-") && n != "checkpoint-99")
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
}

#[test]
fn nonfinite_steps_are_skipped_then_stop_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let mut cfg = config(&model, &tmp.path().join("run"), "coupled");
    cfg.schedule.max_nonfinite_in_a_row = 2;
    cfg.schedule.max_steps = Some(10);
    let mut trainer = Trainer::new(cfg, &repo(), None).unwrap();
    let m = trainer.step().unwrap();
    assert!(m.loss.is_finite() && m.skipped_nonfinite == 0, "{m:?}");
    // A diverged model: one NaN weight makes every logit, hence every loss, NaN.
    tch::no_grad(|| {
        let norm =
            trainer.policy.model.var_store().variables()["model.norm.weight"].shallow_clone();
        let mut first = norm.get(0);
        let _ = first.fill_(f64::NAN);
    });
    let poisoned = weights(&trainer);
    let m = trainer.step().unwrap();
    assert!(!m.loss.is_finite(), "{m:?}");
    assert_eq!((m.step, m.skipped_nonfinite), (2, 1));
    // The skipped step left the weights (and so the NaN) exactly as they were.
    for ((name, a), (_, b)) in poisoned.iter().zip(weights(&trainer)) {
        let same = a.isnan().equal(&b.isnan())
            && a.nan_to_num(0.0, None, None)
                .equal(&b.nan_to_num(0.0, None, None));
        assert!(same, "{name} changed in a skipped step");
    }
    let err = trainer.step().unwrap_err().to_string();
    assert!(
        err.contains("NaN/inf in 2 optimizer steps in a row")
            && err.contains("max_nonfinite_in_a_row"),
        "{err}"
    );
}

/// The stability telemetry at β = 0 (`logging.kl_to_start`) holds a frozen copy of the start
/// and reports the KL to it, and changes nothing else: losses and weights are bit-identical
/// to a run without it. The KL starts at (numerically) zero and grows as the policy moves;
/// the samples' entropy is non-negative, the clipped-step share a share.
#[test]
fn kl_to_start_telemetry_reports_without_changing_training() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let run = |kl_to_start: bool| {
        let mut cfg = config(
            &model,
            &tmp.path().join(format!("run-{kl_to_start}")),
            "coupled",
        );
        let overrides = [
            "algorithm.beta=0.0".into(),
            "schedule.num_iterations=1".into(),
        ];
        cfg = TrainConfig::from_toml(&cfg.to_toml(), "test", &overrides).unwrap();
        cfg.optimizer.max_grad_norm = 0.05;
        cfg.logging.kl_to_start = kl_to_start;
        let mut trainer = Trainer::new(cfg, &repo(), None).unwrap();
        let metrics: Vec<_> = (0..3).map(|_| trainer.step().unwrap()).collect();
        (metrics, weights(&trainer))
    };
    let (with, w_with) = run(true);
    let (without, w_without) = run(false);
    for (a, b) in with.iter().zip(&without) {
        assert_eq!((a.loss, a.grad_norm), (b.loss, b.grad_norm));
        assert_eq!((b.kl, b.kl_k2), (0.0, 0.0));
        assert!(a.entropy >= 0.0 && a.entropy == b.entropy, "{a:?}");
        assert!((0.0..=1.0).contains(&a.grad_clipped_share));
    }
    for ((name, x), (_, y)) in w_with.iter().zip(&w_without) {
        assert!(x.equal(y), "{name} differs with the telemetry on");
    }
    // Step 1 scores the starting weights against their own copy (two kernels' rounding).
    assert!(
        with[0].kl.abs() < 1e-5 && with[0].kl_k2 < 1e-8,
        "{:?}",
        with[0]
    );
    assert!(with[2].kl_k2 > 1e-6, "the policy moved: {:?}", with[2]);
}
