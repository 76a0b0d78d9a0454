//! `couplet analyze compare A B`: AR-ness, pass@k against temperature and the entropy sink
//! of two models (or runs) on the same problems, decode settings and seeds.

use std::path::{Path, PathBuf};

use anyhow::Result;
use couplet_trainer::analysis::{SampleOrder, TemperaturePoint};

use super::figures::{arness_by_k, by_temperature, order_maps, sink, Profile, Series};
use super::temperature::{shown_ks, table};
use super::{draw, draw_orders, Bench, Setup};

#[derive(clap::Args)]
pub struct Args {
    /// The first model: folder, training checkpoint or run directory (solid lines).
    a: PathBuf,
    /// The second (dashed lines), e.g. the run `couplet train` left.
    b: PathBuf,
    /// Sampling temperatures (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        allow_negative_numbers = true,
        default_value = "0.2,0.6,1.0,1.2"
    )]
    temperatures: Vec<f64>,
    /// N: samples per problem at each temperature.
    #[arg(long, default_value_t = 4)]
    samples: usize,
    /// Decode orders drawn per model (one greedy sample of each of the first N problems).
    #[arg(long, default_value_t = 2)]
    orders: usize,
    #[command(flatten)]
    setup: Setup,
    /// Where compare.json and the PNGs go.
    #[arg(long, default_value = "analysis/compare")]
    out: PathBuf,
}

/// Everything measured on one model (the first-step profile as its means by position).
struct Measured {
    label: String,
    points: Vec<TemperaturePoint>,
    prompts: usize,
    confidence: Vec<f64>,
    entropy: Vec<f64>,
    orders: Vec<SampleOrder>,
}

pub fn run(args: Args) -> Result<()> {
    let ks = shown_ks(&[], args.samples)?;
    let bench = args.setup.open_sweep(&args.temperatures, args.samples)?;
    let a = measure(&bench, &args.a, &args, "A")?;
    let b = measure(&bench, &args.b, &args, "B")?;
    for m in [&a, &b] {
        println!("{}:", m.label);
        print!("{}", table(&m.points, &ks));
        print!(
            "{}",
            super::sink::summary(m.prompts, &m.confidence, &m.entropy)
        );
    }
    let side = |m: &Measured, path: &Path| {
        serde_json::json!({
            "model": path,
            "points": m.points,
            "mean_confidence": m.confidence,
            "mean_entropy": m.entropy,
            "orders": m.orders,
        })
    };
    let json = super::write_json(
        &args.out,
        "compare.json",
        &serde_json::json!({
            "command": "analyze compare",
            "decode": bench.describe(),
            "samples": args.samples,
            "a": side(&a, &args.a),
            "b": side(&b, &args.b),
        }),
    )?;
    let series = [
        Series {
            label: &a.label,
            points: &a.points,
            dashed: false,
        },
        Series {
            label: &b.label,
            points: &b.points,
            dashed: true,
        },
    ];
    let all_k: Vec<usize> = (1..=couplet_rollout::order::LOCAL_K).collect();
    let profiles = [
        Profile {
            label: &a.label,
            confidence: &a.confidence,
            entropy: &a.entropy,
            dashed: false,
        },
        Profile {
            label: &b.label,
            confidence: &b.confidence,
            entropy: &b.entropy,
            dashed: true,
        },
    ];
    let written = vec![
        json,
        draw(&args.out, "arness.png", &arness_by_k(&series, &all_k))?,
        draw(&args.out, "temperature.png", &by_temperature(&series, &ks))?,
        draw(&args.out, "entropy-sink.png", &sink(&profiles))?,
        draw_orders(
            &args.out,
            "decode-order-a.png",
            &order_maps("A ", &a.orders),
        )?,
        draw_orders(
            &args.out,
            "decode-order-b.png",
            &order_maps("B ", &b.orders),
        )?,
    ];
    super::say_written(&written);
    Ok(())
}

/// Sweep, first-step profile and decode orders of the model at `path`.
fn measure(bench: &Bench, path: &Path, args: &Args, which: &str) -> Result<Measured> {
    let model = bench.load(path)?;
    let label = format!("{which} ({})", super::model_label(path));
    let points = bench.sweep(&model, &args.temperatures, args.samples, which)?;
    let profile = bench.profile(&model)?;
    let (confidence, entropy) = profile.mean();
    Ok(Measured {
        points,
        prompts: profile.confidence.len(),
        confidence,
        entropy,
        orders: bench.orders(&model, args.orders)?,
        label,
    })
}
