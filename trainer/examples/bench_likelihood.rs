//! One forward + backward of the coupled estimator and GRPO loss, either the way the
//! reference computes it (full-vocabulary logits for every position of all 3B stacked
//! sequences, then a per-sequence log-softmax + gather, kept alive for backward) or
//! through Couplet's lean path. Prints seconds and peak RSS growth as one JSON line.
//! Run by `scripts/bench-likelihood`, once per mode, each in a fresh process.
//!
//! usage: bench_likelihood naive|lean VOCAB BATCH PROMPT COMPLETION

use couplet_model::{DreamModel, Init, Preset};
use couplet_trainer::{
    grpo_loss, Algorithm, Coupled, EstimatorBatch, LeanConfig, LeanScore, Method, ObjectiveConfig,
};
use tch::{Device, Kind, Tensor};

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, vocab, b, p, k] = args.as_slice() else {
        eprintln!("usage: bench_likelihood naive|lean VOCAB BATCH PROMPT COMPLETION");
        std::process::exit(2);
    };
    let parse = |s: &String| s.parse::<i64>().expect("integer argument");
    let (vocab, b, p, k) = (parse(vocab), parse(b), parse(p), parse(k));
    let mut cfg = Preset::Small.config(vocab as usize);
    cfg.mask_token_id = Some(vocab - 1);
    tch::manual_seed(0);
    let model = DreamModel::new(&cfg, Device::Cpu, Kind::Float, Init::Random);
    let mask = vocab - 1;
    let seqs = Tensor::randint(vocab - 2, [b, p + k], (Kind::Int64, Device::Cpu));
    let pmask = Tensor::ones([b, p], (Kind::Int64, Device::Cpu));
    let samples: Vec<u64> = (0..b as u64).collect();
    let batch = EstimatorBatch {
        sequences: &seqs,
        prompt_mask: &pmask,
        prompt_width: p,
        samples: &samples,
        completion_mask: None,
        reveal_steps: None,
    };
    let est = Algorithm::Coupled(Coupled {
        pairs: 1,
        include_full_mask: true,
        ..Default::default()
    });
    let adv = Tensor::randn([b], (Kind::Float, Device::Cpu));
    let cmask = Tensor::ones([b, k], (Kind::Int64, Device::Cpu));
    let objective = ObjectiveConfig {
        beta: 0.0,
        ..Default::default()
    };
    let baseline = peak_rss_kib();
    let start = std::time::Instant::now();
    match mode.as_str() {
        "naive" => {
            let versions = Method::versions(&est, &batch, 1);
            let nv = versions.masked.size()[0];
            let inputs = seqs
                .unsqueeze(0)
                .expand([nv, b, p + k], false)
                .masked_fill(&versions.masked, mask)
                .reshape([nv * b, p + k]);
            let logits = model.forward_logits(&inputs, None); // [3B, L, V], all kept for backward
            let logits = logits.narrow(1, p - 1, k); // shifted: row i scores token i + 1
            let targets = seqs.narrow(1, p, k).repeat([nv, 1]);
            // selective_log_softmax: one row (sequence) at a time, as the reference does.
            let per_row: Vec<Tensor> = (0..nv * b)
                .map(|r| {
                    logits
                        .get(r)
                        .log_softmax(-1, Kind::Float)
                        .gather(-1, &targets.get(r).unsqueeze(-1), false)
                        .squeeze_dim(-1)
                })
                .collect();
            let lp = Tensor::stack(&per_row, 0).view([nv, b, k]);
            let estimate =
                (lp * versions.weights.to_kind(Kind::Float)).sum_dim_intlist(0, false, Kind::Float);
            let (loss, _) =
                grpo_loss(&estimate, None, None, &adv, &cmask, &objective, None).unwrap();
            loss.backward();
        }
        "lean" => {
            let lean = LeanScore::new(
                &model,
                mask,
                &est,
                &batch,
                1,
                LeanConfig {
                    chunk_rows: 256,
                    recompute_layers: false,
                },
            );
            let (loss, _) =
                grpo_loss(&lean.scores, None, None, &adv, &cmask, &objective, None).unwrap();
            loss.backward();
            lean.backward();
        }
        other => panic!("unknown mode {other}"),
    }
    let seconds = start.elapsed().as_secs_f64();
    let grad_norm: f64 = model
        .var_store()
        .trainable_variables()
        .iter()
        .map(|t| {
            t.grad()
                .pow_tensor_scalar(2)
                .sum(Kind::Double)
                .double_value(&[])
        })
        .sum::<f64>()
        .sqrt();
    println!(
        "{{\"mode\": \"{mode}\", \"seconds\": {seconds:.3}, \"peak_mib\": {:.1}, \"grad_norm\": {grad_norm:.6}}}",
        (peak_rss_kib().saturating_sub(baseline)) as f64 / 1024.0
    );
}
