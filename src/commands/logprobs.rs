//! `couplet logprobs`: per-token likelihood estimates of given completions, as JSON lines.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use couplet_model::LoadedModel;
use couplet_trainer::{score, score_versions, Algorithm, EstimatorBatch, Versions};
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
    /// The algorithm whose likelihood estimate is computed (`algorithm.name`).
    #[arg(long, alias = "estimator", default_value = "coupled")]
    algorithm: String,
    /// One of the algorithm's knobs, as in `[algorithm]` (repeatable): --set pairs=2.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    knobs: Vec<String>,
    /// Mask seed of the iteration.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// coupled: λ, the number of complementary pairs (same as --set pairs=N).
    #[arg(long)]
    pairs: Option<usize>,
    /// coupled: leave out the fully masked version (same as --set include_full_mask=false).
    #[arg(long)]
    no_full_mask: bool,
    /// d1: probability of masking each prompt token (same as --set p_mask_prompt=P).
    #[arg(long)]
    p_mask_prompt: Option<f64>,
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

/// The algorithm of `--algorithm` with the knobs of `--set` and the shorthand flags, read
/// and checked exactly as an `[algorithm]` section.
fn algorithm(args: &Args) -> Result<Algorithm> {
    let mut lines = vec![format!("name = {:?}", args.algorithm)];
    lines.extend(args.knobs.iter().cloned());
    lines.extend(args.pairs.map(|p| format!("pairs = {p}")));
    lines.extend(
        args.no_full_mask
            .then(|| "include_full_mask = false".to_string()),
    );
    lines.extend(args.p_mask_prompt.map(|p| format!("p_mask_prompt = {p}")));
    let text = format!("[algorithm]\n{}\n", lines.join("\n"));
    let config = couplet_trainer::TrainConfig::from_toml(&text, "--algorithm/--set", &[])?;
    Ok(config.algorithm)
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
    let weights = Tensor::from_slice(&flat_w).view([v, 1, k as i64]);
    Ok(Versions {
        masked: Tensor::from_slice(&flat_m).view([v, 1, l as i64]),
        read: weights.ne(0.0),
        weights,
        ratios: vec![Vec::new()],
    })
}

/// The methods whose estimate is `Σ_v weight · lp(v)` per token (what `--masks` pins).
const LINEAR: [&str; 4] = ["coupled", "d1", "full_mask", "decoupled"];

pub fn run(args: Args) -> Result<()> {
    let algorithm = algorithm(&args)?;
    let method = algorithm.method();
    if args.masks.is_some() && !LINEAR.contains(&method.name()) {
        bail!(
            "--masks pins the weights of a per-token linear estimate ({}), not {}'s",
            LINEAR.join(", "),
            method.name()
        );
    }
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
        let batch = EstimatorBatch::new(&sequences, &prompt_mask, &samples);
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
                    score_versions(&ckpt.model, mask_id, method, &versions, &batch),
                    Vec::new(),
                )
            }
            None => {
                let (e, v) = score(&ckpt.model, mask_id, method, &batch, args.seed);
                (e, v.ratios[0].clone())
            }
        };
        // Per-token methods give K estimates, per-sequence ones one (or one per draw).
        let estimates =
            Vec::<f32>::try_from(&estimates.get(0).to_device(Device::Cpu).flatten(0, -1))?;
        writeln!(
            out,
            "{}",
            json!({"sample": sample, "completion_ids": completion, "estimates": estimates, "ratios": ratios})
        )?;
    }
    Ok(())
}
