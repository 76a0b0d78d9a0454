//! Code rewards (SPEC section 3), each a named function with a weight, and their
//! NaN-skipping weighted sum.
//!
//! * `code_format`: 1.0 when the completion is `text ```python\n code ```\n` and the code
//!   parses (CPython's own parser, in the sandbox: `ast.parse` semantics); 0.5 when the
//!   shape matches but the code does not parse; 0.0 otherwise.
//! * `code`: pass rate over the row's tests, only for completions whose format reward is
//!   1.0 (others 0.0). NaN when the sandbox itself failed — never a silent 0.
//! * `binary_code`: 1.0 when that pass rate is > 0.99.
//! * `soft_overlong`: DAPO's length penalty, 0 up to `max − cache` tokens, then linear
//!   to −1 at `max`.

use std::collections::BTreeMap;

use couplet_sandbox::{Job, JobResult, Limits, NonDataCounts, SandboxPool};
use serde::{Deserialize, Serialize};

/// Reward functions by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RewardKind {
    /// Pass rate of the tests (AceCoder's `code` reward).
    Code,
    /// 1 when every test passes, else 0.
    BinaryCode,
    /// 1 for one fenced Python block that parses, else 0.
    CodeFormat,
    /// DAPO's soft length penalty near max_new_tokens.
    SoftOverlong,
}

impl RewardKind {
    /// The function's config name.
    pub fn name(self) -> &'static str {
        match self {
            RewardKind::Code => "code",
            RewardKind::BinaryCode => "binary_code",
            RewardKind::CodeFormat => "code_format",
            RewardKind::SoftOverlong => "soft_overlong",
        }
    }
}

/// Which rewards, with which weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardConfig {
    /// The functions with their weights.
    pub functions: Vec<(RewardKind, f64)>,
    /// `soft_overlong`: the maximum completion length and the soft buffer, in tokens.
    pub max_completion_tokens: usize,
    /// Tokens before the maximum where the soft penalty starts.
    pub overlong_buffer: usize,
}

impl Default for RewardConfig {
    /// The DiffuCoder recipe: code (2.0) + code_format (0.5).
    fn default() -> Self {
        RewardConfig {
            functions: vec![(RewardKind::Code, 2.0), (RewardKind::CodeFormat, 0.5)],
            max_completion_tokens: 256,
            overlong_buffer: 64,
        }
    }
}

/// The code of the first fenced block that starts with "```python\n", up to the next
/// "```"; empty when there is none (SPEC 3).
pub fn extract_code(completion: &str) -> &str {
    const OPEN: &str = "```python\n";
    let Some(start) = completion.find(OPEN) else {
        return "";
    };
    let body = &completion[start + OPEN.len()..];
    match body.find("```") {
        Some(end) => &body[..end],
        None => "",
    }
}

/// Whether the completion has the required shape — the reference regex
/// `^(?:(?!```)[\s\S])*?```python\n(?:(?!```)[\s\S])*?```\n$` under `re.DOTALL |
/// re.MULTILINE` (so text may follow the closing fence's newline only after another
/// newline) — and holds exactly one code block (SPEC: two or more blocks get 0.0).
pub fn format_matches(completion: &str) -> bool {
    let Some(open) = completion.find("```") else {
        return false;
    };
    let Some(body) = completion[open..].strip_prefix("```python\n") else {
        return false;
    };
    let Some(close) = body.find("```") else {
        return false;
    };
    let Some(after) = body[close..].strip_prefix("```\n") else {
        return false;
    };
    // MULTILINE `$`: end of text, or just before a newline.
    let end_ok = after.is_empty() || after.starts_with('\n');
    end_ok && !after.contains("```")
}

/// DAPO soft overlong penalty for a completion of `length` tokens.
pub fn soft_overlong(length: usize, max: usize, buffer: usize) -> f64 {
    let expected = max.saturating_sub(buffer);
    if length <= expected {
        0.0
    } else if length >= max || buffer == 0 {
        -1.0
    } else {
        (expected as f64 - length as f64) / buffer as f64
    }
}

/// Per-function means over non-NaN values, and NaN counts, keyed by function name.
fn summarize(
    per_function: &[(RewardKind, Vec<f64>)],
) -> (BTreeMap<String, f64>, BTreeMap<String, usize>) {
    let mut means = BTreeMap::new();
    let mut nan_counts = BTreeMap::new();
    for (kind, values) in per_function {
        let ok: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
        let mean = if ok.is_empty() {
            f64::NAN
        } else {
            ok.iter().sum::<f64>() / ok.len() as f64
        };
        means.insert(kind.name().to_string(), mean);
        nan_counts.insert(kind.name().to_string(), values.len() - ok.len());
    }
    (means, nan_counts)
}

/// NaN-skipping sum (numpy `nansum`): 0.0 when every term is NaN.
pub fn nansum(values: impl IntoIterator<Item = f64>) -> f64 {
    values.into_iter().filter(|v| !v.is_nan()).sum()
}

/// Rewards of a batch, per function and in total, with what the logs need.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RewardBatch {
    /// Per function (in config order): one value per completion.
    pub per_function: Vec<(RewardKind, Vec<f64>)>,
    /// Σ weight · reward with NaN terms skipped.
    pub total: Vec<f64>,
    /// Mean of each function over non-NaN values.
    pub means: BTreeMap<String, f64>,
    /// NaN count of each function.
    pub nan_counts: BTreeMap<String, usize>,
    /// Jobs the sandbox failed on (their code rewards are NaN).
    pub sandbox_failures: usize,
    /// Sandbox timeouts among executed tests.
    pub timeouts: usize,
    /// Tests failed because a value could not cross as plain data (a policy returning
    /// objects instead of values shows up here).
    pub non_data: usize,
    /// Tests executed.
    pub tests_run: usize,
    /// Summed sandbox wall time.
    pub sandbox_seconds: f64,
    /// Each completion's sandbox job (its tests' outcomes), when one ran: `None` for an
    /// answer without a code block or a config whose rewards need no sandbox.
    #[serde(skip)]
    pub jobs: Vec<Option<JobResult>>,
}

impl RewardBatch {
    /// Joins the batches of consecutive completion groups (scored separately, e.g. while
    /// the next group was being generated).
    pub fn concat(parts: Vec<RewardBatch>) -> RewardBatch {
        let kinds: Vec<RewardKind> = parts
            .first()
            .map(|p| p.per_function.iter().map(|(k, _)| *k).collect())
            .unwrap_or_default();
        let per_function: Vec<(RewardKind, Vec<f64>)> = kinds
            .iter()
            .enumerate()
            .map(|(f, &k)| {
                (
                    k,
                    parts
                        .iter()
                        .flat_map(|p| p.per_function[f].1.iter().copied())
                        .collect(),
                )
            })
            .collect();
        let (means, nan_counts) = summarize(&per_function);
        RewardBatch {
            total: parts.iter().flat_map(|p| p.total.iter().copied()).collect(),
            per_function,
            means,
            nan_counts,
            sandbox_failures: parts.iter().map(|p| p.sandbox_failures).sum(),
            timeouts: parts.iter().map(|p| p.timeouts).sum(),
            non_data: parts.iter().map(|p| p.non_data).sum(),
            tests_run: parts.iter().map(|p| p.tests_run).sum(),
            sandbox_seconds: parts.iter().map(|p| p.sandbox_seconds).sum(),
            jobs: parts.into_iter().flat_map(|p| p.jobs).collect(),
        }
    }
}

/// Scores `completions[i]` against `tests[i]` (token `lengths[i]`), running all code in
/// the pool in parallel.
pub fn score_batch(
    completions: &[String],
    lengths: &[usize],
    tests: &[Vec<String>],
    config: &RewardConfig,
    pool: &SandboxPool,
    limits: Limits,
) -> RewardBatch {
    let shaped: Vec<bool> = completions.iter().map(|c| format_matches(c)).collect();
    let started = std::time::Instant::now();
    let results = run_jobs(completions, tests, &shaped, config, pool, limits);
    let sandbox_seconds = started.elapsed().as_secs_f64();
    let format = format_rewards(&results, &shaped);
    let pass_rate = pass_rates(&results, &format);
    let per_function: Vec<(RewardKind, Vec<f64>)> = config
        .functions
        .iter()
        .map(|&(kind, _)| {
            let values = match kind {
                RewardKind::CodeFormat => format.clone(),
                RewardKind::Code => pass_rate.clone(),
                RewardKind::BinaryCode => pass_rate.iter().map(|&p| binary(p)).collect(),
                RewardKind::SoftOverlong => lengths
                    .iter()
                    .map(|&l| {
                        soft_overlong(l, config.max_completion_tokens, config.overlong_buffer)
                    })
                    .collect(),
            };
            (kind, values)
        })
        .collect();
    let total = (0..completions.len())
        .map(|i| {
            let terms = config.functions.iter().zip(&per_function);
            nansum(terms.map(|((_, w), (_, v))| w * v[i]))
        })
        .collect();
    let (means, nan_counts) = summarize(&per_function);
    let (sandbox_failures, timeouts, tests_run) = sandbox_counts(&results);
    RewardBatch {
        per_function,
        total,
        means,
        nan_counts,
        sandbox_failures,
        timeouts,
        non_data: NonDataCounts::of(results.iter().flatten()).total(),
        tests_run,
        sandbox_seconds,
        jobs: results,
    }
}

/// One job per well-shaped completion, when a reward needs the sandbox: the syntax check
/// and (for the pass-rate rewards) the tests together. `None` for the others.
fn run_jobs(
    completions: &[String],
    tests: &[Vec<String>],
    shaped: &[bool],
    config: &RewardConfig,
    pool: &SandboxPool,
    limits: Limits,
) -> Vec<Option<JobResult>> {
    let wants = |k: RewardKind| config.functions.iter().any(|(f, _)| *f == k);
    let run_tests = wants(RewardKind::Code) || wants(RewardKind::BinaryCode);
    let mut results: Vec<Option<JobResult>> = vec![None; completions.len()];
    if !(run_tests || wants(RewardKind::CodeFormat)) {
        return results;
    }
    let (index, jobs): (Vec<usize>, Vec<Job>) = (0..completions.len())
        .filter(|&i| shaped[i])
        .map(|i| {
            let job = Job {
                id: i.to_string(),
                solution: extract_code(&completions[i]).to_string(),
                tests: if run_tests {
                    tests[i].clone()
                } else {
                    Vec::new()
                },
                check_syntax: true,
                ..Default::default()
            };
            (i, job)
        })
        .unzip();
    for (i, result) in index.into_iter().zip(pool.run_all(jobs, limits)) {
        results[i] = Some(result);
    }
    results
}

/// `code_format`: 0 for a badly shaped answer, 0.5 when its code does not parse, 1 when it
/// does; NaN when the sandbox could not tell.
fn format_rewards(results: &[Option<JobResult>], shaped: &[bool]) -> Vec<f64> {
    results
        .iter()
        .zip(shaped)
        .map(|(result, &shaped)| match (result, shaped) {
            (_, false) => 0.0,
            (Some(r), true) if r.sandbox_error.is_some() => f64::NAN,
            (Some(r), true) => match r.syntax_ok {
                Some(true) => 1.0,
                Some(false) => 0.5,
                None => f64::NAN,
            },
            (None, true) => f64::NAN,
        })
        .collect()
}

/// `code`: the tests' pass rate of well-formatted answers (0 otherwise, NaN when unknown).
fn pass_rates(results: &[Option<JobResult>], format: &[f64]) -> Vec<f64> {
    results
        .iter()
        .zip(format)
        .map(|(result, &format)| {
            if format.is_nan() {
                return f64::NAN;
            }
            if format != 1.0 {
                return 0.0;
            }
            result
                .as_ref()
                .and_then(|r| r.pass_rate())
                .unwrap_or(f64::NAN)
        })
        .collect()
}

/// `binary_code` from a pass rate: 1 when every test passed.
fn binary(pass_rate: f64) -> f64 {
    if pass_rate.is_nan() {
        pass_rate
    } else {
        f64::from(u8::from(pass_rate > 0.99))
    }
}

/// (sandbox failures, timed-out tests, tests run) of the executed jobs.
fn sandbox_counts(results: &[Option<JobResult>]) -> (usize, usize, usize) {
    let executed: Vec<&JobResult> = results.iter().flatten().collect();
    let failures = executed
        .iter()
        .filter(|r| r.sandbox_error.is_some())
        .count();
    let tests_run = executed.iter().map(|r| r.tests.len()).sum();
    let timeouts = executed
        .iter()
        .flat_map(|r| &r.tests)
        .filter(|t| t.outcome == couplet_sandbox::Outcome::Timeout)
        .count();
    (failures, timeouts, tests_run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_shapes() {
        assert!(format_matches("Here:\n```python\nx = 1\n```\n"));
        assert!(format_matches("```python\nx = 1\n```\n"));
        assert!(
            !format_matches("```python\nx = 1\n```"),
            "needs the final newline"
        );
        assert!(!format_matches("```python\nx = 1\n"), "unterminated");
        assert!(!format_matches("no code"));
        assert!(
            !format_matches("```py\nx = 1\n```\n"),
            "```py is not ```python"
        );
        assert!(
            !format_matches("```python\r\nx = 1\n```\n"),
            "CRLF after the fence"
        );
        assert!(format_matches(
            "```python\r\nx = 1\r\n```\n"
                .replacen("\r\n", "\n", 1)
                .as_str()
        ));
        assert!(
            !format_matches("```python\nx = 1\n```\nThanks!"),
            "text right after the fence"
        );
        assert!(
            format_matches("```python\nx = 1\n```\n\nThanks!"),
            "MULTILINE $ before a newline"
        );
        assert!(
            !format_matches("```python\na\n```\n\n```python\nb\n```\n"),
            "two blocks"
        );
        assert!(
            !format_matches("```python\na\n```\n```python\nb\n```\n"),
            "two blocks"
        );
        assert!(
            format_matches("```python\n```\n"),
            "empty block has the shape"
        );
        assert!(!format_matches("````python\nx\n```\n"));
    }

    #[test]
    fn extraction_takes_the_first_block() {
        assert_eq!(
            extract_code("a```python\nx = 1\n```\n```python\ny\n```"),
            "x = 1\n"
        );
        assert_eq!(extract_code("```python\nunterminated"), "");
        assert_eq!(extract_code("none"), "");
    }

    #[test]
    fn overlong_by_hand() {
        assert_eq!(soft_overlong(192, 256, 64), 0.0);
        assert_eq!(soft_overlong(224, 256, 64), -0.5);
        assert_eq!(soft_overlong(256, 256, 64), -1.0);
        assert_eq!(soft_overlong(300, 256, 64), -1.0);
    }

    #[test]
    fn nansum_skips_nan() {
        assert_eq!(nansum([1.0, f64::NAN, 2.0]), 3.0);
        assert_eq!(nansum([f64::NAN]), 0.0);
    }
}
