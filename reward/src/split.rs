//! The recipe's difficulty split and question rewrite (SPEC section 8), behind
//! `couplet data prepare`.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::data::{for_each_row, DataError, LoadOptions, Row};

/// Models whose pass rates define a question's difficulty.
pub const DIFFICULTY_MODELS: [&str; 2] = ["qwen_coder_2.5", "llama3_instruct"];

/// A question's difficulty from the reference models' pass rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Difficulty {
    /// Mean pass rate at most the 20th percentile and spread at least the 40th.
    Hard,
    /// Mean pass rate between the 25th and 75th percentiles.
    Medium,
    /// Mean pass rate at least the 75th percentile.
    Easy,
}

impl std::str::FromStr for Difficulty {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "hard" => Ok(Difficulty::Hard),
            "medium" => Ok(Difficulty::Medium),
            "easy" => Ok(Difficulty::Easy),
            other => Err(format!(
                "unknown difficulty {other:?} (expected hard, medium or easy)"
            )),
        }
    }
}

/// numpy's default percentile (linear interpolation between closest ranks), `q` in 0..=100.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let pos = q / 100.0 * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    v[lo] + (v[hi] - v[lo]) * frac
}

/// Mean and population std (numpy `np.mean`, `np.std`) of the difficulty models' pass
/// rates, duplicates included. `None` when the row has no such inference.
pub fn pass_rate_stats(row: &Row) -> Option<(f64, f64)> {
    let rates: Vec<f64> = row
        .inferences
        .as_ref()?
        .iter()
        .filter(|inf| DIFFICULTY_MODELS.contains(&inf.model_name.as_str()))
        .map(|inf| inf.pass_rate)
        .collect();
    if rates.is_empty() {
        return None;
    }
    let n = rates.len() as f64;
    let mean = rates.iter().sum::<f64>() / n;
    let var = rates.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n;
    Some((mean, var.sqrt()))
}

/// The rewritten question for rows without "you", when the best inference starts a
/// function: `None` otherwise.
pub fn rewrite_question(row: &Row) -> Option<String> {
    if row.question.to_lowercase().contains("you") {
        return None;
    }
    let inferences = row.inferences.as_ref()?;
    let mut best = inferences.first()?;
    for inf in inferences {
        if inf.pass_rate > best.pass_rate {
            best = inf; // first on ties
        }
    }
    let head = best.completion.split(":\n").next().unwrap_or("").trim();
    let sig = head.strip_prefix("def ")?;
    Some(format!(
        "Please complete the following problem:\n```\ndef {sig}:\n    \"\"\"\n    {}\n    \"\"\"\n```\n",
        row.question
    ))
}

/// Counts at each stage of `data prepare`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SplitReport {
    /// Rows read.
    pub rows_read: usize,
    /// Rows with valid inferences.
    pub rows_valid: usize,
    /// 20th percentile of the mean pass rates.
    pub p20_mean: f64,
    /// 25th percentile of the mean pass rates.
    pub p25_mean: f64,
    /// 75th percentile of the mean pass rates.
    pub p75_mean: f64,
    /// 40th percentile of the pass-rate spread.
    pub p40_std: f64,
    /// Rows of the chosen difficulty.
    pub selected: usize,
    /// Rewritten questions added.
    pub rewritten_added: usize,
    /// Rows written.
    pub written: usize,
}

/// Row selection by difficulty with the thresholds of all rows.
fn selected(difficulty: Difficulty, mean: f64, std: f64, r: &SplitReport) -> bool {
    match difficulty {
        Difficulty::Hard => mean <= r.p20_mean && std >= r.p40_std,
        Difficulty::Medium => r.p25_mean <= mean && mean <= r.p75_mean,
        Difficulty::Easy => mean >= r.p75_mean,
    }
}

/// Reads `input` twice (streaming: once for the percentiles over **all** rows, once to
/// write), writes the selected rows (and their rewrites) without `inferences` to `output`.
pub fn prepare(
    input: &Path,
    output: &Path,
    difficulty: Difficulty,
    options: &LoadOptions,
) -> Result<SplitReport, DataError> {
    let options = LoadOptions {
        require_inferences: true,
        ..options.clone()
    };
    let mut report = SplitReport::default();
    let mut means = Vec::new();
    let mut stds = Vec::new();
    let missing = |row: &Row| {
        DataError::Row(crate::data::RowError {
            file: input.to_path_buf(),
            location: format!("id {}", row.id),
            field: "inferences".into(),
            message: format!(
                "no inference from {} to rate its difficulty",
                DIFFICULTY_MODELS.join(" or ")
            ),
        })
    };
    let summary = for_each_row(input, &options, |row| {
        let (mean, std) = pass_rate_stats(&row).ok_or_else(|| missing(&row))?;
        means.push(mean);
        stds.push(std);
        Ok(())
    })?;
    report.rows_read = summary.read;
    report.rows_valid = summary.kept;
    report.p20_mean = percentile(&means, 20.0);
    report.p25_mean = percentile(&means, 25.0);
    report.p75_mean = percentile(&means, 75.0);
    report.p40_std = percentile(&stds, 40.0);

    let io = |e| DataError::Io {
        path: output.to_path_buf(),
        error: e,
    };
    let mut out = std::io::BufWriter::new(std::fs::File::create(output).map_err(io)?);
    let quiet = LoadOptions {
        bad_rows: crate::data::BadRows::Skip,
        ..options.clone()
    };
    let snapshot = report.clone();
    for_each_row(input, &quiet, |mut row| {
        let (mean, std) = pass_rate_stats(&row).ok_or_else(|| missing(&row))?;
        if !selected(difficulty, mean, std, &snapshot) {
            return Ok(());
        }
        report.selected += 1;
        let rewrite = rewrite_question(&row);
        row.inferences = None;
        let mut write = |row: &Row| -> Result<(), DataError> {
            let line = serde_json::to_string(row).map_err(|e| DataError::Format {
                path: output.to_path_buf(),
                message: e.to_string(),
            })?;
            writeln!(out, "{line}").map_err(io)?;
            report.written += 1;
            Ok(())
        };
        write(&row)?;
        if let Some(question) = rewrite {
            report.rewritten_added += 1;
            write(&Row { question, ..row })?;
        }
        Ok(())
    })?;
    out.flush().map_err(io)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_match_numpy() {
        // np.percentile([1, 2, 3, 4], [20, 25, 40, 75]) = [1.6, 1.75, 2.2, 3.25]
        let v = [4.0, 1.0, 3.0, 2.0];
        for (q, want) in [
            (20.0, 1.6),
            (25.0, 1.75),
            (40.0, 2.2),
            (75.0, 3.25),
            (0.0, 1.0),
            (100.0, 4.0),
        ] {
            assert!((percentile(&v, q) - want).abs() < 1e-12, "q {q}");
        }
        assert_eq!(percentile(&[7.0], 40.0), 7.0);
    }
}
