//! The paper's decoding analyses on top of evaluation: the same samples judged at several
//! sampling temperatures (pass@k and AR-ness read together), the best temperature per k,
//! and the decode orders of a few samples. Every number comes from [`evaluate`] and the
//! rollout worker — no second decoder loop, no second AR-ness definition.

use couplet_model::LoadedModel;
use couplet_rollout::{generate_rollout, ArNess, RolloutConfig};
use couplet_sandbox::SandboxPool;
use serde::{Deserialize, Serialize};

use crate::eval::{evaluate, EvalProblem, EvalSettings};

/// One temperature of a sweep: pass@k and the AR-ness of the same samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemperaturePoint {
    /// Sampling temperature.
    pub temperature: f64,
    /// Problems evaluated.
    pub problems: usize,
    /// Samples per problem.
    pub samples: usize,
    /// (k, pass@k) for the settings' k (unbiased estimator, mean over problems).
    pub pass_at_k: Vec<(usize, f64)>,
    /// Mean AR-ness of the samples' decode orders.
    pub arness: ArNess,
    /// Decoded tokens per second.
    pub tokens_per_second: f64,
    /// Wall time of this temperature.
    pub seconds: f64,
}

impl TemperaturePoint {
    /// pass@k, when computed.
    pub fn pass_at(&self, k: usize) -> Option<f64> {
        self.pass_at_k.iter().find(|(x, _)| *x == k).map(|p| p.1)
    }
}

/// Evaluates `model` on `problems` once per `(temperature, settings)` (the settings decode
/// at that temperature; their `ks` are the pass@k reported). `progress(done, total)`
/// counts problems over the whole sweep.
pub fn temperature_sweep(
    model: &LoadedModel,
    problems: &[EvalProblem],
    sweep: &[(f64, EvalSettings)],
    pool: &SandboxPool,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<TemperaturePoint>, String> {
    let total = problems.len() * sweep.len();
    let mut points = Vec::with_capacity(sweep.len());
    for (i, (temperature, settings)) in sweep.iter().enumerate() {
        let offset = i * problems.len();
        let report = evaluate(model, problems, settings, pool, |done, _| {
            progress(offset + done, total)
        })?;
        points.push(TemperaturePoint {
            temperature: *temperature,
            problems: problems.len(),
            samples: settings.samples,
            pass_at_k: report.pass_at_k.clone(),
            arness: report.arness.clone().unwrap_or_default(),
            tokens_per_second: report.tokens_per_second,
            seconds: report.seconds,
        });
    }
    Ok(points)
}

/// The temperature with the highest pass@k and that pass@k (the first on ties, so the
/// lower temperature wins); `None` when no point has pass@k.
pub fn best_temperature(points: &[TemperaturePoint], k: usize) -> Option<(f64, f64)> {
    points
        .iter()
        .filter_map(|p| p.pass_at(k).map(|v| (p.temperature, v)))
        .fold(None, |best: Option<(f64, f64)>, (t, v)| match best {
            Some((_, b)) if b >= v => best,
            _ => Some((t, v)),
        })
}

/// One decoded sample's order: which step revealed each completion position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleOrder {
    /// The problem's id.
    pub problem: String,
    /// Reveal step per completion position (−1: never revealed).
    pub reveal_step: Vec<i64>,
    /// Its AR-ness.
    pub arness: ArNess,
    /// The decoded text.
    pub text: String,
}

/// Decodes one sample for each of the first `n` problems with `cfg` and returns their
/// decode orders (for the position × step pictures).
pub fn sample_orders(
    model: &LoadedModel,
    problems: &[EvalProblem],
    n: usize,
    cfg: &RolloutConfig,
    system_prompt: &str,
    seed: u64,
) -> Result<Vec<SampleOrder>, String> {
    let chosen = &problems[..n.min(problems.len())];
    let prompts = chosen
        .iter()
        .map(|p| model.tokenizer.chat_prompt(system_prompt, &p.question))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let cfg = RolloutConfig {
        group_size: 1,
        ..cfg.clone()
    };
    let rollout = generate_rollout(&model.model, &model.tokenizer, &prompts, &cfg, seed, 0)
        .map_err(|e| e.to_string())?;
    Ok((0..rollout.len())
        .map(|r| SampleOrder {
            problem: chosen[rollout.prompt_index[r]].id.clone(),
            reveal_step: rollout.reveal_steps[r].clone(),
            arness: rollout.arness[r].clone(),
            text: rollout.texts[r].clone(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(temperature: f64, pass: &[f64]) -> TemperaturePoint {
        TemperaturePoint {
            temperature,
            problems: 1,
            samples: pass.len(),
            pass_at_k: pass.iter().enumerate().map(|(i, &v)| (i + 1, v)).collect(),
            arness: ArNess::default(),
            tokens_per_second: 0.0,
            seconds: 0.0,
        }
    }

    #[test]
    fn best_temperature_per_k_prefers_the_lower_on_ties() {
        let points = [
            point(0.2, &[0.5, 0.5]),
            point(0.6, &[0.4, 0.7]),
            point(1.0, &[0.5, 0.7]),
        ];
        assert_eq!(best_temperature(&points, 1), Some((0.2, 0.5)));
        assert_eq!(best_temperature(&points, 2), Some((0.6, 0.7)));
        assert_eq!(best_temperature(&points, 3), None);
        assert_eq!(best_temperature(&[], 1), None);
    }
}
