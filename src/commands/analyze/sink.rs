//! `couplet analyze entropy-sink`: the first denoising step's confidence and entropy by
//! completion position (mean over prompts), and the decode order of a few samples.

use std::path::PathBuf;

use anyhow::Result;

use super::figures::{order_maps, sink, Profile};
use super::{draw, draw_orders, Setup};

#[derive(clap::Args)]
pub struct Args {
    /// Model folder, training checkpoint or run directory.
    #[arg(long)]
    model: PathBuf,
    /// Decode orders drawn (one sample of each of the first N problems, decoded at
    /// --temperature).
    #[arg(long, default_value_t = 3)]
    orders: usize,
    #[command(flatten)]
    setup: Setup,
    /// Where entropy-sink.json, entropy-sink.png and decode-order.png go.
    #[arg(long, default_value = "analysis/entropy-sink")]
    out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let bench = args.setup.open()?;
    bench.say_protocol();
    let model = bench.load(&args.model)?;
    let profile = bench.profile(&model)?;
    let orders = bench.orders(&model, args.orders)?;
    let (confidence, entropy) = profile.mean();
    print!(
        "{}",
        summary(profile.confidence.len(), &confidence, &entropy)
    );
    let json = super::write_json(
        &args.out,
        "entropy-sink.json",
        &serde_json::json!({
            "command": "analyze entropy-sink",
            "model": args.model,
            "decode": bench.describe(),
            "mean_confidence": confidence,
            "mean_entropy": entropy,
            "per_prompt": profile,
            "orders": orders,
        }),
    )?;
    let panels = sink(&[Profile {
        label: "mean over prompts",
        confidence: &confidence,
        entropy: &entropy,
        dashed: false,
    }]);
    let png = draw(&args.out, "entropy-sink.png", &panels)?;
    let maps = draw_orders(&args.out, "decode-order.png", &order_maps("", &orders))?;
    super::say_written(&[json, png, maps]);
    Ok(())
}

/// The profile's shape in a few numbers (means over `prompts` prompts by position): the
/// first positions against the rest.
pub fn summary(prompts: usize, confidence: &[f64], entropy: &[f64]) -> String {
    let rest = |v: &[f64]| {
        let tail = &v[v.len().min(4)..];
        tail.iter().sum::<f64>() / tail.len().max(1) as f64
    };
    let head = |v: &[f64]| {
        v.iter()
            .take(4)
            .map(|x| format!("{x:.3}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "first step, mean over {} prompts:\n  confidence at positions 0..3: {}  (mean of the rest {:.3})\n  entropy at positions 0..3:    {}  (mean of the rest {:.3})\n",
        prompts,
        head(confidence),
        rest(confidence),
        head(entropy),
        rest(entropy)
    )
}
