//! Ablation reports: reads Couplet run directories (`config.toml`, `metrics.jsonl`,
//! `eval.jsonl`), groups the runs by variant (the algorithm, plus the decoder when it is
//! not Dream's), and writes `report.md` with a table (mean ± spread over seeds) and PNG
//! plots: reward vs step, validation pass@1 vs step, AR-ness@k before/after.
//!
//! Not for: running the jobs (`couplet ablate` does, through the trainer) — this crate
//! only reads what runs left on disk, so a report can be remade from old runs at any time.
#![deny(missing_docs)]

pub mod figure;
mod plot;
mod runs;

use std::path::{Path, PathBuf};

pub use runs::{load_run, EvalPoint, RunData};

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A run directory is unreadable or incomplete.
    #[error("{path}: {message}")]
    Run {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A plot could not be drawn.
    #[error("plotting {path}: {message}")]
    Plot {
        /// The PNG being drawn.
        path: PathBuf,
        /// The plotting library's message.
        message: String,
    },
    /// No usable font for the plots.
    #[error("{0}")]
    Font(String),
    /// The report could not be written.
    #[error("writing {path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        error: std::io::Error,
    },
}

/// Runs of one variant (same label, different seeds).
#[derive(Debug, Clone)]
pub struct Variant {
    /// The variant's label.
    pub label: String,
    /// Its runs, one per seed.
    pub runs: Vec<RunData>,
}

/// Groups runs by label, in the order labels first appear.
pub fn group(runs: Vec<RunData>) -> Vec<Variant> {
    let mut out: Vec<Variant> = Vec::new();
    for r in runs {
        match out.iter_mut().find(|v| v.label == r.label) {
            Some(v) => v.runs.push(r),
            None => out.push(Variant {
                label: r.label.clone(),
                runs: vec![r],
            }),
        }
    }
    out
}

/// Mean and half the min–max spread of `values` ("mean ± spread"), NaN when empty.
pub fn mean_spread(values: &[f64]) -> (f64, f64) {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (mean, (hi - lo) / 2.0)
}

fn fmt(v: (f64, f64), scale: f64, digits: usize) -> String {
    if v.0.is_nan() {
        "–".into()
    } else {
        format!("{:.d$} ± {:.d$}", v.0 * scale, v.1 * scale, d = digits)
    }
}

/// One row of the table, per variant.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The variant.
    pub label: String,
    /// Runs (seeds) averaged.
    pub seeds: usize,
    /// Steps of the shortest run.
    pub steps: u64,
    /// Mean reward over the first / last `window` steps of each run.
    pub reward_start: (f64, f64),
    /// Mean reward over the last `window` steps (mean, spread over seeds).
    pub reward_end: (f64, f64),
    /// Validation pass@1 at the first / last evaluation.
    pub pass1_start: (f64, f64),
    /// Validation pass@1 at the last evaluation (mean, spread).
    pub pass1_end: (f64, f64),
    /// Local AR-ness@1 at the first and last evaluation (each mean, spread).
    pub arness_local1: ((f64, f64), (f64, f64)),
    /// Global AR-ness@1 at the first and last evaluation (each mean, spread).
    pub arness_global1: ((f64, f64), (f64, f64)),
    /// Wall seconds of a run (rollout + reward + update, summed over steps).
    pub seconds: (f64, f64),
}

/// The table's numbers; `window` steps are averaged at each end of the reward curve.
pub fn summarize(variant: &Variant, window: usize) -> Summary {
    let runs = &variant.runs;
    let ends = |f: &dyn Fn(&RunData) -> Option<f64>| -> (f64, f64) {
        mean_spread(&runs.iter().filter_map(f).collect::<Vec<_>>())
    };
    let reward_at = |r: &RunData, last: bool| -> Option<f64> {
        let n = r.rewards.len();
        if n == 0 {
            return None;
        }
        let w = window.clamp(1, n);
        let slice = if last {
            &r.rewards[n - w..]
        } else {
            &r.rewards[..w]
        };
        Some(slice.iter().map(|(_, v)| v).sum::<f64>() / w as f64)
    };
    let eval_at = |r: &RunData, last: bool, f: &dyn Fn(&EvalPoint) -> Option<f64>| {
        let e = if last {
            r.evals.last()
        } else {
            r.evals.first()
        };
        e.and_then(f)
    };
    Summary {
        label: variant.label.clone(),
        seeds: runs.len(),
        steps: runs
            .iter()
            .map(|r| r.rewards.last().map_or(0, |x| x.0))
            .max()
            .unwrap_or(0),
        reward_start: ends(&|r| reward_at(r, false)),
        reward_end: ends(&|r| reward_at(r, true)),
        pass1_start: ends(&|r| eval_at(r, false, &|e| Some(e.pass1))),
        pass1_end: ends(&|r| eval_at(r, true, &|e| Some(e.pass1))),
        arness_local1: (
            ends(&|r| eval_at(r, false, &|e| e.arness_local.first().copied())),
            ends(&|r| eval_at(r, true, &|e| e.arness_local.first().copied())),
        ),
        arness_global1: (
            ends(&|r| eval_at(r, false, &|e| e.arness_global.first().copied())),
            ends(&|r| eval_at(r, true, &|e| e.arness_global.first().copied())),
        ),
        seconds: ends(&|r| Some(r.seconds)),
    }
}

/// The markdown table of `summaries`.
pub fn markdown_table(summaries: &[Summary]) -> String {
    let mut s = String::from(
        "| variant | seeds | steps | reward (first 5 steps) | reward (last 5 steps) | val pass@1 start | val pass@1 end | AR-ness local@1 start → end | AR-ness global@1 start → end | minutes / run |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for m in summaries {
        s += &format!(
            "| {} | {} | {} | {} | {} | {} % | {} % | {} → {} | {} → {} | {} |\n",
            m.label,
            m.seeds,
            m.steps,
            fmt(m.reward_start, 1.0, 3),
            fmt(m.reward_end, 1.0, 3),
            fmt(m.pass1_start, 100.0, 1),
            fmt(m.pass1_end, 100.0, 1),
            fmt(m.arness_local1.0, 1.0, 2),
            fmt(m.arness_local1.1, 1.0, 2),
            fmt(m.arness_global1.0, 1.0, 2),
            fmt(m.arness_global1.1, 1.0, 2),
            fmt((m.seconds.0 / 60.0, m.seconds.1 / 60.0), 1.0, 1),
        );
    }
    s
}

/// Reads every run directory, then writes `report.md`, `reward.png`, `pass_at_1.png` and
/// `arness.png` into `out`. Returns the files written.
pub fn write_report(run_dirs: &[PathBuf], out: &Path) -> Result<Vec<PathBuf>, ReportError> {
    let runs = run_dirs
        .iter()
        .map(|d| load_run(d))
        .collect::<Result<Vec<_>, _>>()?;
    let variants = group(runs);
    std::fs::create_dir_all(out).map_err(|e| ReportError::Io {
        path: out.to_path_buf(),
        error: e,
    })?;
    plot::register_font()?;
    let reward_png = out.join("reward.png");
    plot::curves(
        &variants,
        &reward_png,
        "Mean reward per step (line: mean over seeds, band: min–max)",
        "reward",
        |r| r.rewards.clone(),
        5,
    )?;
    let pass_png = out.join("pass_at_1.png");
    plot::curves(
        &variants,
        &pass_png,
        "Validation pass@1 (line: mean over seeds, band: min–max)",
        "pass@1",
        |r| r.evals.iter().map(|e| (e.step, e.pass1)).collect(),
        1,
    )?;
    let arness_png = out.join("arness.png");
    plot::arness(&variants, &arness_png)?;
    let summaries: Vec<Summary> = variants.iter().map(|v| summarize(v, 5)).collect();
    let mut md = String::from("# Couplet ablation report\n\n");
    md += &format!(
        "{} runs in {} variant{}: {}.\n\n",
        run_dirs.len(),
        variants.len(),
        if variants.len() == 1 { "" } else { "s" },
        variants
            .iter()
            .map(|v| v.label.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    md += &markdown_table(&summaries);
    md += "\nmean ± spread over seeds (spread = half the min–max range). Reward: the training \
           reward (weighted sum of the reward functions). Validation pass@1 at the first \
           evaluation (step 0, the starting model) and the last. AR-ness of the validation \
           samples' decode orders (1 = strictly left to right).\n\n";
    md += "![reward](reward.png)\n\n![validation pass@1](pass_at_1.png)\n\n![AR-ness](arness.png)\n\n";
    md += "## Runs\n\n";
    for v in &variants {
        for r in &v.runs {
            md += &format!(
                "- {} seed {}: `{}` ({} steps, {} evaluations)\n",
                v.label,
                r.seed,
                r.dir.display(),
                r.rewards.len(),
                r.evals.len()
            );
        }
    }
    let report = out.join("report.md");
    std::fs::write(&report, md).map_err(|e| ReportError::Io {
        path: report.clone(),
        error: e,
    })?;
    Ok(vec![report, reward_png, pass_png, arness_png])
}
