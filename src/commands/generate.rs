//! `couplet generate`: diffusion decoding from the command line.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use couplet_rollout::generate_rollout;

use super::decode_args::DecodeArgs;
use serde_json::json;

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Model folder (config.json, safetensors, tokenizer.json), training checkpoint
    /// (`RUN/checkpoint-N`) or run directory (its latest checkpoint).
    #[arg(long)]
    pub model: PathBuf,
    /// A prompt (repeatable).
    #[arg(long, conflicts_with = "prompts")]
    pub prompt: Vec<String>,
    /// JSON-lines file of prompts: each line an object with a "prompt" (or "question") string.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Wrap each prompt in the chat template (system + user → assistant).
    #[arg(long)]
    pub chat: bool,
    /// System prompt used with --chat.
    #[arg(long, default_value = couplet_model::tokenizer::DEFAULT_SYSTEM_PROMPT)]
    pub system: String,
    #[command(flatten)]
    pub decode: DecodeArgs,
    /// Completions per prompt.
    #[arg(long, default_value_t = 1)]
    pub samples: usize,
    /// Print one JSON object per completion (text, token ids, reveal order) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON lines to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

fn read_prompts(args: &Args) -> Result<Vec<String>> {
    let mut prompts = args.prompt.clone();
    if let Some(path) = &args.prompts {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line =
                line.with_context(|| format!("{}: reading line {}", path.display(), i + 1))?;
            if line.trim().is_empty() {
                continue;
            }
            let value: serde_json::Value = serde_json::from_str(&line)
                .with_context(|| format!("{}:{}: not valid JSON", path.display(), i + 1))?;
            let text = value
                .get("prompt")
                .or_else(|| value.get("question"))
                .and_then(|v| v.as_str())
                .with_context(|| {
                    format!(
                        "{}:{}: field `prompt` (or `question`) missing or not a string",
                        path.display(),
                        i + 1
                    )
                })?;
            prompts.push(text.to_string());
        }
    }
    if prompts.is_empty() {
        usage!("no prompts: give --prompt TEXT or --prompts FILE.jsonl");
    }
    Ok(prompts)
}

pub fn run(args: Args) -> Result<()> {
    let mut config = args.decode.rollout(args.samples.max(1))?;
    config.progress = !args.json;
    let prompts = read_prompts(&args)?;
    let ckpt = super::load_with_adapter(
        &args.model,
        args.decode.adapter.as_deref(),
        args.decode.device,
        args.decode.dtype,
    )?;
    let texts: Vec<String> = if args.chat {
        prompts
            .iter()
            .map(|p| ckpt.tokenizer.chat_prompt(&args.system, p))
            .collect::<Result<_, _>>()?
    } else {
        prompts.clone()
    };
    let rollout = generate_rollout(
        &ckpt.model,
        &ckpt.tokenizer,
        &texts,
        &config,
        args.decode.seed,
        0,
    )?;

    let ids = Vec::<Vec<i64>>::try_from(&rollout.completion_ids.to_device(tch::Device::Cpu))?;
    let prompt_ids = Vec::<Vec<i64>>::try_from(&rollout.prompt_ids.to_device(tch::Device::Cpu))?;
    let prompt_mask = Vec::<Vec<i64>>::try_from(&rollout.prompt_mask.to_device(tch::Device::Cpu))?;
    let mut out_file = match &args.out {
        Some(path) => Some(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        ),
        None => None,
    };
    let stdout = std::io::stdout();
    let mut stdout = stdout.lock();
    for row in 0..rollout.len() {
        let p = rollout.prompt_index[row];
        let len = rollout.completion_lengths[row];
        let record = json!({
            "prompt": prompts[p],
            "sample": row % config.group_size,
            "completion": rollout.texts[row],
            "prompt_ids": prompt_ids[row].iter().zip(&prompt_mask[row]).filter(|(_, &m)| m == 1).map(|(&t, _)| t).collect::<Vec<i64>>(),
            "completion_ids": &ids[row][..len],
            "all_completion_ids": &ids[row],
            "seconds": rollout.seconds,
            "terminated": rollout.terminated[row],
            "decode_order": rollout.decode_orders[row],
            "forward_passes": rollout.stats.forward_passes,
            "forwards_per_run": rollout.forwards_per_chunk(),
            "tokens_per_forward": rollout.tokens_per_forward(),
            "audit_mean_abs_dlogp": rollout.stats.mean_abs_dlogp(),
            "arness": rollout.arness[row],
        });
        if args.json {
            writeln!(stdout, "{record}")?;
        } else {
            writeln!(
                stdout,
                "=== prompt {p}, sample {}: {}\n{}",
                row % config.group_size,
                prompts[p],
                rollout.texts[row]
            )?;
        }
        if let Some(f) = out_file.as_mut() {
            writeln!(f, "{record}")?;
        }
    }
    let ar = rollout.mean_arness();
    let stats = &rollout.stats;
    eprintln!(
        "decoded {} completions × {} tokens, {} forward passes ({} full), {:.2} tokens per step, {:.2}s ({:.0} tokens/s); AR-ness local@1 {:.3} global@1 {:.3}",
        rollout.len(),
        args.decode.max_new_tokens,
        stats.forward_passes,
        stats.refreshes,
        rollout.tokens_per_forward(),
        rollout.seconds,
        rollout.tokens_per_second(),
        ar.local[0],
        ar.global[0],
    );
    if let Some(d) = stats.mean_abs_dlogp() {
        eprintln!(
            "cache audit: mean |Δ log p| of the {} tokens revealed on cached steps = {d:.6}",
            stats.audit_tokens
        );
    }
    Ok(())
}
