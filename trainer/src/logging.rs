//! Run logs: TensorBoard scalars, `metrics.jsonl` (every step's metrics, one JSON object a
//! line) and `completions.jsonl` (sampled completions with their rewards every N steps).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use tensorboard_rs::summary_writer::SummaryWriter;

use crate::train::{CompletionSample, StepMetrics};

pub struct RunLog {
    tensorboard: Option<SummaryWriter>,
    metrics: File,
    completions: File,
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
        })
    }

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
        put("train/loss", m.loss);
        put("train/kl", m.kl);
        put("train/clip_ratio", m.clip_ratio);
        put("train/grad_norm", m.grad_norm);
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
        put("rollout/tokens_per_second", m.rollout_tokens_per_second);
        put("sandbox/tests_per_second", m.sandbox_tests_per_second);
        put("sandbox/timeouts", m.sandbox_timeouts as f64);
        put("sandbox/failures", m.sandbox_failures as f64);
        put("time/rollout", m.rollout_seconds);
        put("time/reward", m.reward_seconds);
        put("time/update", m.update_seconds);
        tb.flush();
        Ok(())
    }

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
