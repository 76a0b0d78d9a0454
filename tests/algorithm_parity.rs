//! ESPO, wd1, BGPO, SPG, JustGRPO and TraceRL, on a Dream (shifted) and a LLaDA-style (unshifted) model, against
//! plain-PyTorch ports of their authors' released code (tests/reference/algorithms_ref.py):
//! the method's scores, its loss, and the gradient of the loss with respect to the final
//! norm and the LM head, computed here through the policy pass that training runs (memory-
//! lean; BGPO and JustGRPO one backward per Monte-Carlo sample / position) and there
//! through full logits and autograd.

use couplet_testkit as common;

use couplet_model::{load_model, LoadOptions};
use couplet_trainer::{
    policy_backward, score, Advantages, Algorithm, EstimatorBatch, LeanConfig, LossContext, Method,
};
use serde_json::json;
use tch::{Kind, Tensor};

const GRAD_PARAMS: [&str; 2] = ["model.norm.weight", "lm_head.weight"];

fn algorithm(toml: &str) -> Algorithm {
    // K = 6 completion tokens, as in the batch below.
    let text = format!("[rollout]\nmax_new_tokens = 6\nsteps = 6\ndecoder = \"block\"\nblock_length = 1\ntemperature = 1.0\ncache = \"none\"\n[reward]\noverlong_buffer = 0\n[algorithm]\n{toml}\n");
    couplet_trainer::TrainConfig::from_toml(&text, "test", &[])
        .unwrap()
        .algorithm
}

#[test]
fn methods_match_their_reference_ports() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = common::tiny_model(tmp.path(), false, 21);
    // Dream scores token i from row i − 1 (shifted), LLaDA from row i.
    let llada = tmp.path().join("tiny-llada");
    copy_dir(&dir, &llada);
    let config = llada.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    cfg["shift_logits"] = json!(false);
    std::fs::write(&config, cfg.to_string()).unwrap();
    for dir in [dir, llada] {
        let model = load_model(&dir, LoadOptions::default()).unwrap();
        let mask = model.config().mask_token_id.unwrap();
        // One group of 4: left-padded prompts (P = 5), K = 6 completion tokens, two of the
        // completions ending early (post-end-of-text positions).
        let seqs = vec![
            vec![0i64, 0, 17, 300, 41, 9, 9, 120, 3000, 5, 2],
            vec![55, 66, 77, 88, 99, 1, 2, 3, 4, 5, 6],
            vec![0, 12, 13, 14, 15, 800, 801, 802, 1, 1, 1],
            vec![0, 0, 0, 21, 22, 40, 41, 42, 43, 44, 45],
        ];
        let pmask = vec![
            vec![0i64, 0, 1, 1, 1],
            vec![1; 5],
            vec![0, 1, 1, 1, 1],
            vec![0, 0, 0, 1, 1],
        ];
        let cmask = vec![
            vec![1i64, 1, 1, 1, 0, 0],
            vec![1; 6],
            vec![1, 1, 1, 0, 0, 0],
            vec![1; 6],
        ];
        // The decode step of each completion token (TraceRL's step map): several tokens per
        // step, out of order, post-end-of-text tokens revealed early.
        let reveal = vec![
            vec![0i64, 0, 2, 1, 3, 3],
            vec![5, 4, 3, 2, 1, 0],
            vec![1, 0, 0, 2, 1, 2],
            vec![0, 1, 2, 3, 4, 5],
        ];
        let samples = [8u64, 9, 10, 11];
        let advantages = [1.0f64, -0.5, 0.25, -0.75];
        let (s, m, c) = (
            Tensor::from_slice2(&seqs),
            Tensor::from_slice2(&pmask),
            Tensor::from_slice2(&cmask),
        );
        let steps = Tensor::from_slice2(&reveal);
        let mut batch = EstimatorBatch::new(&s, &m, &samples);
        batch.completion_mask = Some(&c);
        batch.reveal_steps = Some(&steps);
        for (spec, old_shift) in [
            ("name = \"espo\"", 0.0),
            (
                "name = \"espo\"\nreduce_var = false\nstratify_across_rows = false\nbeta = 0.05",
                3.0,
            ),
            ("name = \"wd1\"", 0.0),
            (
                "name = \"wd1\"\npositive_only = true\np_mask_prompt = 0.5",
                0.0,
            ),
            ("name = \"bgpo\"\nmc_num = 4", 0.0),
            (
                "name = \"bgpo\"\nmc_num = 3\nnan_below_minus_one = true",
                0.02,
            ),
            ("name = \"spg\"\nblock_length = 2", 0.0),
            (
                "name = \"spg\"\nblock_length = 3\nestimate = \"eubo\"\np_mask_prompt = 0.5",
                0.0,
            ),
            (
                "name = \"spg\"\nblock_length = 6\nnum_t = 1\nestimate = \"elbo\"",
                0.0,
            ),
            ("name = \"just_grpo\"", 0.0),
            ("name = \"trace_rl\"\nshrink = 2", 0.0),
            ("name = \"trace_rl\"\nshrink = 1\nbeta = 0.5", 0.6),
            ("name = \"just_grpo\"\nepsilon_high = 0.05", 0.3),
        ] {
            let alg = algorithm(spec);
            let seed = 77;
            let (scores, _) = tch::no_grad(|| score(&model, mask, &alg, &batch, seed));
            // Pinned old and reference scores near the policy's, so the ratios and clips bind.
            let old = (&scores + old_shift * 0.5).to_kind(Kind::Float);
            let reference = (&scores - 0.4).to_kind(Kind::Float);
            let adv = Advantages {
                values: advantages.to_vec(),
                zero_std_ratio: 0.0,
                group_std: vec![1.0],
            };
            let coefficients = Tensor::from_slice(&alg.coefficients(&adv, 4)).to_kind(Kind::Float);
            let use_old = old_shift != 0.0;
            let use_ref = alg.beta() > 0.0;
            for (_, p) in model.trainable_parameters() {
                p.grad().defined().then(|| p.grad().zero_());
            }
            // The policy's pass as training runs it: memory-lean, and for BGPO and JustGRPO
            // one backward per Monte-Carlo sample / position.
            let ctx = LossContext {
                old: use_old.then_some(&old),
                reference: use_ref.then_some(&reference),
                advantages: &coefficients,
                completion_mask: &c,
                step_tokens: c.sum(Kind::Float).double_value(&[]),
                step_sequences: 4.0,
                step_units: alg.units(&batch, &coefficients),
            };
            let (loss, _) = policy_backward(
                &model,
                mask,
                &alg,
                &batch,
                seed,
                LeanConfig::default(),
                &ctx,
            )
            .unwrap();

            let flat =
                |t: &Tensor| Vec::<f64>::try_from(&t.to_kind(Kind::Double).flatten(0, -1)).unwrap();
            let req = tmp.path().join("alg.json");
            let out = tmp.path().join("alg-out.json");
            let mut method = toml_to_json(&alg);
            method["name"] = json!(alg.name());
            std::fs::write(
                &req,
                json!({"method": method, "sequences": seqs, "prompt_mask": pmask, "prompt_width": 5,
                       "completion_mask": cmask, "samples": samples, "seed": seed, "mask": mask,
                       "advantages": advantages, "reveal_steps": reveal,
                       "old": use_old.then(|| Vec::<f64>::try_from(&old.to_kind(Kind::Double).flatten(0, -1)).unwrap()),
                       "ref": use_ref.then(|| flat(&reference)),
                       "grad_params": GRAD_PARAMS})
                .to_string(),
            )
            .unwrap();
            common::reference_script(
                "algorithms_ref.py",
                &[
                    "run",
                    dir.to_str().unwrap(),
                    req.to_str().unwrap(),
                    out.to_str().unwrap(),
                ],
            );
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
            let want: Vec<f64> = flatten_json(&v["scores"]);
            let got = flat(&scores);
            // Scores are sums of non-negative weights times log-probs (all ≤ 0), so each log-prob's
            // rounding (the forward's chained reductions, then the log-softmax over the
            // vocabulary) adds up to at most the same bound at the score's own magnitude.
            let cfg = model.config();
            let (width, depth) = (
                cfg.vocab_size.max(cfg.intermediate_size) as usize,
                cfg.num_hidden_layers as usize + 2,
            );
            let magnitude = want.iter().fold(0f64, |m, x| m.max(x.abs()));
            let tol = common::f32_order_tolerance(magnitude, width, depth);
            let max = max_diff(&got, &want);
            let kind = if model.config().shift_logits() {
                "dream"
            } else {
                "llada"
            };
            eprintln!("{kind} {spec:?}: scores max |Δ| = {max:e} (tolerance {tol:e})");
            assert_eq!(got.len(), want.len(), "{spec}: score shapes");
            assert!(max <= tol, "{spec}: scores differ by {max} > {tol}");
            let (ours, theirs) = (loss, v["loss"].as_f64().unwrap());
            let rel = (ours - theirs).abs() / theirs.abs().max(1.0);
            eprintln!("  loss: ours {ours:.8} reference {theirs:.8}");
            assert!(rel <= tol, "{spec}: loss {ours} vs {theirs}");
            let params: std::collections::HashMap<String, Tensor> =
                model.trainable_parameters().into_iter().collect();
            for name in GRAD_PARAMS {
                let ours = flat(&params[name].grad());
                let theirs = flatten_json(&v["grads"][name]);
                let scale = theirs.iter().fold(0f64, |m, x| m.max(x.abs())).max(1e-8);
                let rel = max_diff(&ours, &theirs) / scale;
                eprintln!("  grad {name}: relative max |Δ| = {rel:e}");
                // Backward doubles the chain of reductions; the lean pass sums chunked blocks.
                assert!(
                    rel <= 2.0 * tol / magnitude.max(1.0) + 1e-4,
                    "{spec}: {name} gradient relative diff {rel}"
                );
            }
        }
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn toml_to_json(alg: &Algorithm) -> serde_json::Value {
    serde_json::to_value(alg).unwrap()
}

fn flatten_json(v: &serde_json::Value) -> Vec<f64> {
    match v {
        serde_json::Value::Array(items) => items.iter().flat_map(flatten_json).collect(),
        other => vec![other.as_f64().unwrap_or(f64::NAN)],
    }
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f64, f64::max)
}
