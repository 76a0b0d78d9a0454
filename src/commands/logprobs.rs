//! `couplet logprobs`: per-token likelihood estimates of given completions, as JSON lines.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use couplet_model::LoadedModel;
use couplet_trainer::{
    estimate, estimate_versions, Estimator, EstimatorBatch, EstimatorKind, Versions,
};
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

#[derive(clap::Args)]
pub struct Args {
    /// Model folder, training checkpoint or run directory.
    #[arg(long)]
    model: PathBuf,
    /// JSON lines: {"prompt", "completion"} (text, tokenised as is) or {"prompt_ids",
    /// "completion_ids"}; optional "sample" (global sample index, default: line number − 1).
    #[arg(long)]
    input: PathBuf,
    /// coupled, d1, full_mask or decoupled.
    #[arg(long, default_value = "coupled")]
    estimator: EstimatorKind,
    /// Mask seed of the iteration.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// coupled: λ, the number of complementary pairs.
    #[arg(long, default_value_t = 1)]
    pairs: usize,
    /// coupled: leave out the fully masked version.
    #[arg(long)]
    no_full_mask: bool,
    /// d1: probability of masking each prompt token.
    #[arg(long, default_value_t = 0.15)]
    p_mask_prompt: f64,
    /// JSON lines, one per input row, pinning the versions exactly:
    /// {"masked": [[0|1 per prompt+completion token] per version], "weights": [[coefficient per completion token] per version]}.
    #[arg(long)]
    masks: Option<PathBuf>,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "cpu")]
    device: couplet_model::DeviceSpec,
    /// f32 or bf16 weights.
    #[arg(long, default_value = "f32")]
    dtype: couplet_model::Precision,
}

fn estimator(args: &Args) -> Result<Estimator> {
    if args.estimator == EstimatorKind::Coupled && args.pairs == 0 {
        bail!("--pairs must be at least 1");
    }
    if args.estimator == EstimatorKind::D1 && !(0.0..=1.0).contains(&args.p_mask_prompt) {
        bail!("--p-mask-prompt must be in [0, 1]");
    }
    Ok(args
        .estimator
        .with_knobs(args.pairs, !args.no_full_mask, args.p_mask_prompt))
}

fn ids(
    value: &Value,
    ids_key: &str,
    text_key: &str,
    ckpt: &LoadedModel,
    at: &str,
) -> Result<Vec<i64>> {
    if let Some(list) = value.get(ids_key) {
        return serde_json::from_value(list.clone())
            .with_context(|| format!("{at}: field `{ids_key}` must be a list of token ids"));
    }
    match value.get(text_key).and_then(Value::as_str) {
        Some(text) => Ok(ckpt.tokenizer.encode(text)?),
        None => bail!("{at}: needs `{ids_key}` or `{text_key}`"),
    }
}

fn pinned(value: &Value, l: usize, k: usize, at: &str) -> Result<Versions> {
    let masked: Vec<Vec<u8>> = serde_json::from_value(value["masked"].clone())
        .with_context(|| format!("{at}: field `masked`"))?;
    let weights: Vec<Vec<f64>> = serde_json::from_value(value["weights"].clone())
        .with_context(|| format!("{at}: field `weights`"))?;
    if masked.is_empty() || masked.len() != weights.len() {
        bail!("{at}: `masked` and `weights` need the same, non-zero number of versions");
    }
    if masked.iter().any(|m| m.len() != l) || weights.iter().any(|w| w.len() != k) {
        bail!("{at}: each `masked` row needs {l} entries (prompt + completion) and each `weights` row {k}");
    }
    let v = masked.len() as i64;
    let flat_m: Vec<bool> = masked.iter().flatten().map(|&x| x != 0).collect();
    let flat_w: Vec<f64> = weights.into_iter().flatten().collect();
    Ok(Versions {
        masked: Tensor::from_slice(&flat_m).view([v, 1, l as i64]),
        weights: Tensor::from_slice(&flat_w).view([v, 1, k as i64]),
        ratios: vec![Vec::new()],
    })
}

pub fn run(args: Args) -> Result<()> {
    let est = estimator(&args)?;
    let ckpt = super::load_model(&args.model, args.device, args.dtype)?;
    let mask_id = ckpt.tokenizer.special().mask;
    let read = |path: &PathBuf| -> Result<Vec<Value>> {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut rows = Vec::new();
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line?;
            if !line.trim().is_empty() {
                rows.push(
                    serde_json::from_str(&line)
                        .with_context(|| format!("{}:{}: not valid JSON", path.display(), i + 1))?,
                );
            }
        }
        Ok(rows)
    };
    let rows = read(&args.input)?;
    let masks = args.masks.as_ref().map(read).transpose()?;
    if let Some(m) = &masks {
        if m.len() != rows.len() {
            bail!(
                "{}: {} mask rows for {} input rows",
                args.masks
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                m.len(),
                rows.len()
            );
        }
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let _guard = tch::no_grad_guard();
    for (i, row) in rows.iter().enumerate() {
        let at = format!("{}:{}", args.input.display(), i + 1);
        let prompt = ids(row, "prompt_ids", "prompt", &ckpt, &at)?;
        let completion = ids(row, "completion_ids", "completion", &ckpt, &at)?;
        if completion.is_empty() {
            bail!("{at}: empty completion");
        }
        let sample = row
            .get("sample")
            .and_then(Value::as_u64)
            .unwrap_or(i as u64);
        let seq: Vec<i64> = prompt.iter().chain(&completion).copied().collect();
        let sequences = Tensor::from_slice(&seq)
            .view([1, -1])
            .to_device(ckpt.model.device());
        let prompt_mask = Tensor::ones([1, prompt.len() as i64], (Kind::Int64, Device::Cpu));
        let samples = [sample];
        let batch = EstimatorBatch {
            sequences: &sequences,
            prompt_mask: &prompt_mask,
            prompt_width: prompt.len() as i64,
            samples: &samples,
        };
        let (estimates, ratios) = match &masks {
            Some(m) => {
                let versions = pinned(
                    &m[i],
                    seq.len(),
                    completion.len(),
                    &format!(
                        "{}:{}",
                        args.masks
                            .as_ref()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default(),
                        i + 1
                    ),
                )?;
                (
                    estimate_versions(&ckpt.model, mask_id, &versions, &batch),
                    Vec::new(),
                )
            }
            None => {
                let (e, v) = estimate(&ckpt.model, mask_id, &est, &batch, args.seed);
                (e, v.ratios[0].clone())
            }
        };
        let estimates = Vec::<f32>::try_from(&estimates.get(0).to_device(Device::Cpu))?;
        writeln!(
            out,
            "{}",
            json!({"sample": sample, "completion_ids": completion, "estimates": estimates, "ratios": ratios})
        )?;
    }
    Ok(())
}
