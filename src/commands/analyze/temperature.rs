//! `couplet analyze temperature`: pass@k against sampling temperature, with the AR-ness of
//! the same samples.

use std::path::PathBuf;

use anyhow::Result;
use couplet_trainer::analysis::{best_temperature, TemperaturePoint};

use super::figures::{by_temperature, Series};
use super::{draw, Setup};

#[derive(clap::Args)]
pub struct Args {
    /// Model folder, training checkpoint or run directory.
    #[arg(long)]
    model: PathBuf,
    /// Sampling temperatures (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        allow_negative_numbers = true,
        default_value = "0.2,0.4,0.6,0.8,1.0,1.2"
    )]
    temperatures: Vec<f64>,
    /// N: samples per problem at each temperature (pass@k for every k ≤ N).
    #[arg(long, default_value_t = 10)]
    samples: usize,
    /// The k drawn in the figure (default: 1 and N).
    #[arg(long, value_delimiter = ',')]
    k: Vec<usize>,
    #[command(flatten)]
    setup: Setup,
    /// Where temperature.json and temperature.png go.
    #[arg(long, default_value = "analysis/temperature")]
    out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let ks = shown_ks(&args.k, args.samples)?;
    let bench = args.setup.open_sweep(&args.temperatures, args.samples)?;
    let model = bench.load(&args.model)?;
    let points = bench.sweep(&model, &args.temperatures, args.samples, "temperature")?;
    print!("{}", table(&points, &ks));
    let best: Vec<_> = (1..=args.samples)
        .filter_map(|k| best_temperature(&points, k).map(|(t, v)| (k, t, v)))
        .map(|(k, t, v)| serde_json::json!({"k": k, "temperature": t, "pass_at_k": v}))
        .collect();
    let json = super::write_json(
        &args.out,
        "temperature.json",
        &serde_json::json!({
            "command": "analyze temperature",
            "model": args.model,
            "decode": bench.describe(),
            "samples": args.samples,
            "points": points,
            "best": best,
        }),
    )?;
    let series = [Series {
        label: "",
        points: &points,
        dashed: false,
    }];
    let png = draw(&args.out, "temperature.png", &by_temperature(&series, &ks))?;
    super::say_written(&[json, png]);
    Ok(())
}

/// The k to draw: `--k` (each in 1..=N) or 1 and N.
pub fn shown_ks(ks: &[usize], samples: usize) -> Result<Vec<usize>> {
    if let Some(k) = ks.iter().find(|&&k| k == 0 || k > samples) {
        usage!("--k {k}: pass@k needs 1 ≤ k ≤ --samples ({samples})");
    }
    let mut ks = if ks.is_empty() {
        vec![1, samples]
    } else {
        ks.to_vec()
    };
    ks.dedup();
    Ok(ks)
}

/// `temperature  pass@k…  local@1  global@1`, then the best temperature per k.
pub fn table(points: &[TemperaturePoint], ks: &[usize]) -> String {
    let mut s = String::from("temperature");
    ks.iter()
        .for_each(|k| s += &format!(" {:>7}", format!("pass@{k}")));
    s += "  local@1  global@1\n";
    for p in points {
        s += &format!("{:>11.2}", p.temperature);
        for &k in ks {
            s += &format!(" {:>6.1}%", 100.0 * p.pass_at(k).unwrap_or(f64::NAN));
        }
        let first = |v: &[f64]| v.first().copied().unwrap_or(f64::NAN);
        s += &format!(
            "  {:>7.3}  {:>8.3}\n",
            first(&p.arness.local),
            first(&p.arness.global)
        );
    }
    for &k in ks {
        if let Some((t, v)) = best_temperature(points, k) {
            s += &format!("best temperature for pass@{k}: {t} ({:.1}%)\n", 100.0 * v);
        }
    }
    s
}
