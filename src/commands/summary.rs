//! The one-screen summary `train`, `eval` and `sft` end with, and its JSON twin
//! (`summary.json` in the run or output directory): where the wall time went by phase,
//! throughput, peak memory, and the figures a user checks first (start → end).

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

/// One phase's share of the wall time.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub name: &'static str,
    pub seconds: f64,
}

/// A figure at the start and at the end of the job.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct StartEnd {
    pub start: f64,
    pub end: f64,
}

/// What a job did and where its time went.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// `train`, `eval` or `sft`.
    pub command: &'static str,
    /// Optimizer steps this process ran (0 for `eval`).
    pub steps: u64,
    pub wall_seconds: f64,
    /// Phases in the order they run; `other` is the wall time no phase accounts for.
    pub phases: Vec<Phase>,
    /// Tokens decoded (rollouts or evaluation samples) and their rate over decoding time.
    pub tokens_decoded: f64,
    pub tokens_per_second: Option<f64>,
    /// Sandbox tests run and their rate over the sandbox's busy time.
    pub tests_run: u64,
    pub tests_per_second: Option<f64>,
    /// Tokens trained on per second of update time (`sft`).
    pub train_tokens_per_second: Option<f64>,
    /// Peak resident memory of the process over the job (MiB).
    pub peak_resident_mib: f64,
    /// Training reward, mean of the first and of the last 5 steps.
    pub reward: Option<StartEnd>,
    /// pass@1, at the first and at the last evaluation.
    pub pass_at_1: Option<StartEnd>,
    /// Training loss, mean of the first and of the last 5 logged steps (`sft`).
    pub loss: Option<StartEnd>,
}

impl RunSummary {
    /// An empty summary of `command` that ran for `wall_seconds`.
    pub fn new(command: &'static str, wall_seconds: f64) -> Self {
        RunSummary {
            command,
            steps: 0,
            wall_seconds,
            phases: Vec::new(),
            tokens_decoded: 0.0,
            tokens_per_second: None,
            tests_run: 0,
            tests_per_second: None,
            train_tokens_per_second: None,
            peak_resident_mib: 0.0,
            reward: None,
            pass_at_1: None,
            loss: None,
        }
    }

    /// Adds `seconds` to phase `name` (created in first-seen order).
    pub fn add(&mut self, name: &'static str, seconds: f64) {
        match self.phases.iter_mut().find(|p| p.name == name) {
            Some(p) => p.seconds += seconds,
            None => self.phases.push(Phase { name, seconds }),
        }
    }

    /// Closes the phase list with `other`: wall time outside every phase (loading, logs).
    pub fn close(&mut self) {
        let known: f64 = self.phases.iter().map(|p| p.seconds).sum();
        self.add("other", (self.wall_seconds - known).max(0.0));
    }

    /// The screen: a phase table and one line per figure.
    pub fn render(&self) -> String {
        let mut out = format!(
            "── {} summary: {} ──\n",
            self.command,
            match self.steps {
                0 => duration(self.wall_seconds),
                n => format!("{n} steps in {}", duration(self.wall_seconds)),
            }
        );
        out += "where the time went           seconds    share\n";
        for p in &self.phases {
            let share = 100.0 * p.seconds / self.wall_seconds.max(1e-9);
            out += &format!("  {:<26} {:>9.1} {:>7.1} %\n", p.name, p.seconds, share);
        }
        if let Some(rate) = self.tokens_per_second {
            out += &format!(
                "decoding      {rate:.0} tokens/s ({:.0} tokens)\n",
                self.tokens_decoded
            );
        }
        if let Some(rate) = self.train_tokens_per_second {
            out += &format!("training      {rate:.0} tokens/s\n");
        }
        if let Some(rate) = self.tests_per_second {
            out += &format!(
                "sandbox       {rate:.1} tests/s ({} tests)\n",
                self.tests_run
            );
        }
        out += &format!("peak memory   {:.0} MiB resident\n", self.peak_resident_mib);
        if let Some(r) = self.reward {
            out += &format!(
                "reward        {:.3} → {:.3} (mean of the first / last 5 steps)\n",
                r.start, r.end
            );
        }
        if let Some(p) = self.pass_at_1 {
            out += &format!(
                "pass@1        {:.1} % → {:.1} % (first / last evaluation)\n",
                100.0 * p.start,
                100.0 * p.end
            );
        }
        if let Some(l) = self.loss {
            out += &format!(
                "loss          {:.4} → {:.4} (mean of the first / last 5 logged steps)\n",
                l.start, l.end
            );
        }
        out
    }

    /// Writes `summary.json` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join("summary.json");
        std::fs::write(&path, serde_json::to_string_pretty(self)? + "\n")
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// This process's resident memory now (MiB), from /proc/self/statm (0 where unavailable).
pub fn resident_mib() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as f64;
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |pages| pages * page / (1 << 20) as f64)
}

/// The process's peak resident memory (MiB) since the last [`reset_peak_resident`]:
/// `VmHWM` of /proc/self/status (0 where unavailable).
pub fn peak_resident_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Resets the peak-resident mark (`echo 5 > /proc/self/clear_refs`, Linux ≥ 4.0); where
/// that is not possible the peak keeps counting from the start of the process.
pub fn reset_peak_resident() {
    let _ = std::fs::write("/proc/self/clear_refs", b"5");
}

/// Mean of the first and of the last `n` values (None when there are none).
pub fn start_end(values: &[f64], n: usize) -> Option<StartEnd> {
    if values.is_empty() {
        return None;
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let n = n.min(values.len());
    Some(StartEnd {
        start: mean(&values[..n]),
        end: mean(&values[values.len() - n..]),
    })
}

/// `4 min 48 s`, `12.3 s`, `1 h 02 min`.
fn duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        _ if seconds < 60.0 => format!("{seconds:.1} s"),
        _ if s < 3600 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_add_up_to_the_wall_time_with_other() {
        let mut s = RunSummary::new("train", 10.0);
        s.add("rollout", 4.0);
        s.add("update", 3.0);
        s.add("rollout", 1.0);
        s.close();
        let names: Vec<&str> = s.phases.iter().map(|p| p.name).collect();
        assert_eq!(names, ["rollout", "update", "other"]);
        assert_eq!(s.phases[0].seconds, 5.0);
        assert_eq!(s.phases[2].seconds, 2.0);
        let screen = s.render();
        assert!(screen.contains("rollout"), "{screen}");
        assert!(screen.contains("50.0 %"), "{screen}");
    }

    #[test]
    fn start_end_takes_window_means() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let r = start_end(&v, 2).unwrap();
        assert_eq!((r.start, r.end), (1.5, 5.5));
        let r = start_end(&v[..1], 5).unwrap();
        assert_eq!((r.start, r.end), (1.0, 1.0));
        assert!(start_end(&[], 5).is_none());
        assert_eq!(duration(288.0), "4 min 48 s");
        assert_eq!(duration(3725.0), "1 h 02 min");
    }
}
