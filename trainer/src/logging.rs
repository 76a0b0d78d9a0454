//! Run logs: TensorBoard scalars, `metrics.jsonl` (every step's metrics, one JSON object a
//! line) and `completions.jsonl` (sampled completions with their rewards every N steps).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use tensorboard_rs::summary_writer::SummaryWriter;

use crate::eval::EvalReport;
use crate::train::stability::{ValidationChange, Warning, DROP_STANDARD_ERRORS};
use crate::train::{metrics::StepMetrics, CompletionSample};

/// A run's logs: `metrics.jsonl`, `eval.jsonl`, `completions.jsonl` and TensorBoard events.
pub struct RunLog {
    tensorboard: Option<SummaryWriter>,
    metrics: File,
    completions: File,
    eval: File,
}

fn append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl RunLog {
    /// Opens (appending) the logs of `run_dir`; TensorBoard events go to `run_dir/tensorboard`.
    pub fn open(run_dir: &Path, tensorboard: bool) -> std::io::Result<Self> {
        std::fs::create_dir_all(run_dir)?;
        let tensorboard = if tensorboard {
            let dir = run_dir.join("tensorboard");
            std::fs::create_dir_all(&dir)?;
            Some(SummaryWriter::new(&dir))
        } else {
            None
        };
        Ok(RunLog {
            tensorboard,
            metrics: append(&run_dir.join("metrics.jsonl"))?,
            completions: append(&run_dir.join("completions.jsonl"))?,
            eval: append(&run_dir.join("eval.jsonl"))?,
        })
    }

    /// Appends a step's metrics (and TensorBoard scalars).
    pub fn step(&mut self, m: &StepMetrics) -> std::io::Result<()> {
        writeln!(
            self.metrics,
            "{}",
            serde_json::to_string(m).unwrap_or_default()
        )?;
        let Some(tb) = self.tensorboard.as_mut() else {
            return Ok(());
        };
        let step = m.step as usize;
        let mut put = |tag: &str, v: f64| {
            if v.is_finite() {
                tb.add_scalar(tag, v as f32, step);
            }
        };
        put("reward/total", m.reward);
        put("reward/std", m.reward_std);
        for (name, v) in &m.reward_per_function {
            put(&format!("reward/{name}"), *v);
        }
        for (label, v) in &m.reward_per_stratum {
            put(&format!("reward_by_stratum/{label}"), *v);
        }
        put("train/loss", m.loss);
        put("train/kl", m.kl);
        put("train/kl_k2", m.kl_k2);
        put("train/entropy", m.entropy);
        put("train/clip_ratio", m.clip_ratio);
        put("train/grad_norm", m.grad_norm);
        put("train/grad_clipped_share", m.grad_clipped_share);
        for (kind, _) in &m.warnings {
            put(kind.tag(), 1.0);
        }
        put("train/lr", m.lr);
        put("train/advantage_mean_abs", m.advantage_mean_abs);
        put("train/zero_std_ratio", m.zero_std_ratio);
        put("train/skipped_nonfinite", m.skipped_nonfinite as f64);
        put("completion/mean_length", m.completion_length);
        put("completion/min_length", m.completion_min);
        put("completion/max_length", m.completion_max);
        put("completion/clipped_ratio", m.clipped_ratio);
        for (k, v) in m.arness_local.iter().enumerate() {
            put(&format!("arness/local@{}", k + 1), *v);
        }
        for (k, v) in m.arness_global.iter().enumerate() {
            put(&format!("arness/global@{}", k + 1), *v);
        }
        put(
            "rollout/tokens_per_second",
            m.cost.rollout_tokens_per_second,
        );
        put(
            "rollout/forwards_per_run",
            m.cost.rollout_forwards_per_chunk,
        );
        put(
            "rollout/tokens_per_forward",
            m.cost.rollout_tokens_per_forward,
        );
        put("sandbox/tests_per_second", m.cost.sandbox_tests_per_second);
        put("sandbox/timeouts", m.cost.sandbox_timeouts as f64);
        put("sandbox/failures", m.cost.sandbox_failures as f64);
        put("sandbox/non_data", m.cost.sandbox_non_data as f64);
        put("time/rollout", m.cost.rollout_seconds);
        put("time/reward", m.cost.reward_seconds);
        put("time/update", m.update_seconds);
        tb.flush();
        Ok(())
    }

    /// One validation evaluation at optimizer step `step` (0 = the starting model):
    /// `eval.jsonl` gets the summary, per-problem counts and (after the first) the paired
    /// change since the first with its noise and any warning; TensorBoard `eval/pass@k`,
    /// the change and the samples' AR-ness.
    pub fn eval(
        &mut self,
        step: u64,
        report: &EvalReport,
        change: Option<&(ValidationChange, Option<String>)>,
    ) -> std::io::Result<()> {
        let mut line = serde_json::json!({
            "step": step,
            "pass_at_k": report.pass_at_k,
            "arness": report.arness,
            "sandbox_errors": report.sandbox_errors,
            "seconds": report.seconds,
            "correct": report.problems.iter().map(|p| (p.id.clone(), p.correct)).collect::<Vec<_>>(),
        });
        if let Some((c, warning)) = change {
            line["change_vs_start"] = c.change.into();
            line["noise"] = (DROP_STANDARD_ERRORS * c.standard_error).into();
            if let Some(w) = warning {
                line["warnings"] = serde_json::json!([w]);
            }
        }
        writeln!(self.eval, "{line}")?;
        if let Some(tb) = self.tensorboard.as_mut() {
            for (k, v) in &report.pass_at_k {
                tb.add_scalar(&format!("eval/pass@{k}"), *v as f32, step as usize);
            }
            if let Some(a) = &report.arness {
                if let (Some(l), Some(g)) = (a.local.first(), a.global.first()) {
                    tb.add_scalar("eval/arness_local@1", *l as f32, step as usize);
                    tb.add_scalar("eval/arness_global@1", *g as f32, step as usize);
                }
            }
            tb.add_scalar("eval/seconds", report.seconds as f32, step as usize);
            if let Some((c, warning)) = change {
                tb.add_scalar("eval/change_vs_start", c.change as f32, step as usize);
                let noise = DROP_STANDARD_ERRORS * c.standard_error;
                tb.add_scalar("eval/noise", noise as f32, step as usize);
                if warning.is_some() {
                    tb.add_scalar(Warning::ValidationDrop.tag(), 1.0, step as usize);
                }
            }
            tb.flush();
        }
        Ok(())
    }

    /// Appends sampled completions to `completions.jsonl`.
    pub fn completions(&mut self, samples: &[CompletionSample]) -> std::io::Result<()> {
        for s in samples {
            writeln!(
                self.completions,
                "{}",
                serde_json::to_string(s).unwrap_or_default()
            )?;
        }
        Ok(())
    }
}
