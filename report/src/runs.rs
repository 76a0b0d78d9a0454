//! What a run directory holds, read back: the resolved config (for the variant's label and
//! seed), every step's reward and time (`metrics.jsonl`) and the evaluations (`eval.jsonl`).

use std::path::{Path, PathBuf};

use crate::ReportError;

/// One validation evaluation of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalPoint {
    /// The optimizer step it ran after.
    pub step: u64,
    /// Validation pass@1.
    pub pass1: f64,
    /// Local AR-ness@1..9 of the evaluation's decode orders.
    pub arness_local: Vec<f64>,
    /// Global AR-ness@1..4.
    pub arness_global: Vec<f64>,
}

/// One run, as the report needs it.
#[derive(Debug, Clone)]
pub struct RunData {
    /// The run directory.
    pub dir: PathBuf,
    /// The variant: `algorithm.name`, plus `/block` for the LLaDA block decoder.
    pub label: String,
    /// `seed` of its config.
    pub seed: u64,
    /// (step, mean reward) of every logged step.
    pub rewards: Vec<(u64, f64)>,
    /// Every validation evaluation, in step order.
    pub evals: Vec<EvalPoint>,
    /// Rollout + reward + update seconds, summed over steps.
    pub seconds: f64,
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
        .unwrap_or_default()
}

/// Reads `dir`; a missing or malformed file is an error naming it and the line.
pub fn load_run(dir: &Path) -> Result<RunData, ReportError> {
    let err = |path: &Path, message: String| ReportError::Run {
        path: path.to_path_buf(),
        message,
    };
    let config_path = dir.join("config.toml");
    let text = std::fs::read_to_string(&config_path).map_err(|e| {
        err(
            &config_path,
            format!("{e} (is {} a Couplet run directory?)", dir.display()),
        )
    })?;
    let config: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| err(&config_path, e.to_string()))?;
    let get = |section: &str, key: &str| config.get(section).and_then(|s| s.get(key));
    // `algorithm.name`; runs written before the algorithm became a value kept it in
    // `estimator.kind`.
    let mut label = get("algorithm", "name")
        .or_else(|| get("estimator", "kind"))
        .and_then(|v| v.as_str())
        .unwrap_or("coupled")
        .to_string();
    if get("rollout", "decoder").and_then(|v| v.as_str()) == Some("block") {
        label += "/block";
    }
    let seed = config.get("seed").and_then(|v| v.as_integer()).unwrap_or(0) as u64;

    let metrics_path = dir.join("metrics.jsonl");
    let text =
        std::fs::read_to_string(&metrics_path).map_err(|e| err(&metrics_path, e.to_string()))?;
    let mut rewards: Vec<(u64, f64)> = Vec::new();
    let mut seconds = 0.0;
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| err(&metrics_path, format!("line {}: {e}", i + 1)))?;
        let step = v["step"].as_u64().ok_or_else(|| {
            err(
                &metrics_path,
                format!("line {}: field `step` missing", i + 1),
            )
        })?;
        // A resumed run logs the steps after its checkpoint again: keep the latest.
        rewards.retain(|(s, _)| *s < step);
        rewards.push((step, v["reward"].as_f64().unwrap_or(f64::NAN)));
        seconds += ["rollout_seconds", "reward_seconds", "update_seconds"]
            .iter()
            .filter_map(|k| v[*k].as_f64())
            .sum::<f64>();
    }
    let eval_path = dir.join("eval.jsonl");
    let mut evals: Vec<EvalPoint> = Vec::new();
    if let Ok(text) = std::fs::read_to_string(&eval_path) {
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let v: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| err(&eval_path, format!("line {}: {e}", i + 1)))?;
            let pass1 = v["pass_at_k"]
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .find(|p| p[0].as_u64() == Some(1))
                        .and_then(|p| p[1].as_f64())
                })
                .ok_or_else(|| err(&eval_path, format!("line {}: no pass@1", i + 1)))?;
            let step = v["step"].as_u64().unwrap_or(0);
            evals.retain(|e| e.step < step);
            evals.push(EvalPoint {
                step,
                pass1,
                arness_local: floats(&v["arness"]["local"]),
                arness_global: floats(&v["arness"]["global"]),
            });
        }
    }
    Ok(RunData {
        dir: dir.to_path_buf(),
        label,
        seed,
        rewards,
        evals,
        seconds,
    })
}
