//! `couplet analyze arness`: how left-to-right the model decodes, per temperature.

use std::path::PathBuf;

use anyhow::Result;

use super::figures::{arness_by_k, Series};
use super::{arness_table, draw, Ks, Setup};

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
        default_value = "0.2,0.6,1.0,1.2"
    )]
    temperatures: Vec<f64>,
    /// Samples per problem at each temperature.
    #[arg(long, default_value_t = 1)]
    samples: usize,
    /// The k of local AR-ness shown: a range A..B or a list (1 ≤ k ≤ 9; global up to 4).
    #[arg(long, default_value = "1..9")]
    k: Ks,
    #[command(flatten)]
    setup: Setup,
    /// Where arness.json and arness.png go.
    #[arg(long, default_value = "analysis/arness")]
    out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let bench = args.setup.open_sweep(&args.temperatures, args.samples)?;
    let model = bench.load(&args.model)?;
    let points = bench.sweep(&model, &args.temperatures, args.samples, "arness")?;
    print!("{}", arness_table(&points, &args.k.0));
    let json = super::write_json(
        &args.out,
        "arness.json",
        &serde_json::json!({
            "command": "analyze arness",
            "model": args.model,
            "decode": bench.describe(),
            "samples": args.samples,
            "points": points,
        }),
    )?;
    let series = [Series {
        label: "",
        points: &points,
        dashed: false,
    }];
    let png = draw(&args.out, "arness.png", &arness_by_k(&series, &args.k.0))?;
    super::say_written(&[json, png]);
    Ok(())
}
