//! EvalPlus benchmarks (HumanEval+ and MBPP+ JSONL: `task_id`, `prompt`, `entry_point`,
//! `canonical_solution`, `base_input`, `plus_input`, `atol`): a sample is judged on its
//! outputs against the canonical solution's outputs on the same inputs, as EvalPlus
//! judges — equality, or for float outputs of the same type closeness within `atol` (1e-6
//! when it is 0) with `rtol = 1e-7`, HumanEval/32's root oracle and MBPP+'s oracles.
//!
//! Each test program runs in the sandbox's trusted interpreter: it executes the canonical
//! solution (benchmark code, trusted) in a namespace of its own, computes the expected
//! output of every input there, and calls the sample's entry point, whose results cross
//! back as plain data only. MBPP+ inputs are re-typed as EvalPlus deserialises them (JSON
//! has no tuples, sets or complex numbers) and MBPP+'s special oracles apply
//! (`evalplus_harness.py`); the evaluation also writes EvalPlus's `samples.jsonl` for
//! rescoring with the official tool.

use std::ops::ControlFlow;
use std::path::Path;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::data::DataError;
use crate::sources::{self, ShardFormat};

/// Inputs per test program: a failing input ends its program, and the per-test time budget
/// covers a program's inputs (HumanEval+ has hundreds of plus inputs per task).
pub const INPUTS_PER_TEST: usize = 50;

/// One task of `HumanEvalPlus.jsonl` or `MbppPlus.jsonl`.
#[derive(Debug, Clone, Deserialize)]
pub struct Problem {
    /// `HumanEval/N` or `Mbpp/N`.
    pub task_id: String,
    /// Signature and docstring (HumanEval+), or MBPP+'s docstring prompt.
    pub prompt: String,
    /// The function the tests call.
    pub entry_point: String,
    /// The reference: a body continuing `prompt` (HumanEval+) or a whole program (MBPP+).
    pub canonical_solution: String,
    /// The original tests' inputs, one argument list each (verbatim JSON).
    pub base_input: Box<RawValue>,
    /// EvalPlus's extra inputs (verbatim JSON).
    #[serde(default)]
    pub plus_input: Option<Box<RawValue>>,
    /// Absolute tolerance for float outputs (0: EvalPlus's 1e-6 applies to floats).
    #[serde(default)]
    pub atol: f64,
}

/// Reads EvalPlus tasks — JSON lines (plain or `.gz`) or a columnar file, a directory or a
/// glob of shards; an error names the shard, the line (or row) and what is wrong. Inputs
/// are kept verbatim, so integers beyond 64 bits reach Python unchanged.
pub fn load(path: &Path) -> Result<Vec<Problem>, DataError> {
    let mut problems = Vec::new();
    for shard in sources::shards(path)? {
        let mut push = |text: &str, location: &str| {
            let problem: Problem = serde_json::from_str(text).map_err(|e| DataError::Format {
                path: shard.path.clone(),
                message: format!("{}: {e}", shard.describe(location)),
            })?;
            problem.check().map_err(|message| DataError::Format {
                path: shard.path.clone(),
                message: format!("{}: {message}", shard.describe(location)),
            })?;
            problems.push(problem);
            Ok::<_, DataError>(())
        };
        match shard.format {
            ShardFormat::Json(_) => {
                for (i, line) in std::io::BufRead::lines(shard.open()?).enumerate() {
                    let line = line.map_err(|error| DataError::Io {
                        path: shard.path.clone(),
                        error,
                    })?;
                    if !line.trim().is_empty() {
                        push(&line, &(i + 1).to_string())?;
                    }
                }
            }
            ShardFormat::Columnar(_) => {
                // The handler never breaks, so the flow is always `Continue`.
                let _flow = shard.for_each_value(&mut |row, location| {
                    let row = row.map_err(|message| DataError::Format {
                        path: shard.path.clone(),
                        message,
                    })?;
                    push(&row.to_string(), &location)?;
                    Ok(ControlFlow::Continue(()))
                })?;
            }
        }
    }
    Ok(problems)
}

/// Whether a row looks like an EvalPlus task (what `eval --benchmark` sniffs).
pub fn is_evalplus_row(row: &serde_json::Value) -> bool {
    row.get("base_input").is_some() && row.get("entry_point").is_some()
}

impl Problem {
    fn check(&self) -> Result<(), String> {
        if !is_identifier(&self.entry_point) {
            return Err(format!(
                "field `entry_point`: {:?} is not a Python identifier",
                self.entry_point
            ));
        }
        if !(self.atol.is_finite() && self.atol >= 0.0) {
            return Err(format!("field `atol`: {} is not a tolerance", self.atol));
        }
        for (field, raw) in [
            ("base_input", Some(&self.base_input)),
            ("plus_input", self.plus_input.as_ref()),
        ] {
            if let Some(raw) = raw {
                serde_json::from_str::<Vec<Vec<Box<RawValue>>>>(raw.get())
                    .map_err(|_| format!("field `{field}`: must be a list of argument lists"))?;
            }
        }
        Ok(())
    }

    /// The user message for instruct models: the prompt in a code block, asking for a
    /// self-contained script (EvalPlus's and DiffuCoder's instruction).
    pub fn instruct_question(&self) -> String {
        crate::humaneval::instruct_question(&self.prompt)
    }

    /// The canonical solution as a whole program.
    pub fn reference(&self) -> String {
        if defines(&self.canonical_solution, &self.entry_point) {
            self.canonical_solution.clone()
        } else {
            format!("{}{}", self.prompt, self.canonical_solution)
        }
    }

    /// Test programs over the base inputs.
    pub fn base_tests(&self) -> Vec<String> {
        self.tests_over(&self.base_input)
    }

    /// Test programs over the plus inputs (none when the task has none).
    pub fn plus_tests(&self) -> Vec<String> {
        self.plus_input
            .as_ref()
            .map_or_else(Vec::new, |raw| self.tests_over(raw))
    }

    fn tests_over(&self, inputs: &RawValue) -> Vec<String> {
        // `check` made sure this parses.
        let inputs: Vec<Box<RawValue>> = serde_json::from_str(inputs.get()).unwrap_or_default();
        inputs
            .chunks(INPUTS_PER_TEST)
            .map(|chunk| {
                let items: Vec<&str> = chunk.iter().map(|r| r.get()).collect();
                self.test_program(&format!("[{}]", items.join(",")))
            })
            .collect()
    }

    /// `mbpp` for MBPP+ tasks (`Mbpp/N`), else `humaneval`: which of EvalPlus's rules apply.
    fn dataset(&self) -> &'static str {
        if self.task_id.starts_with("Mbpp/") {
            "mbpp"
        } else {
            "humaneval"
        }
    }

    /// N of `Mbpp/N` (-1 when the id has no number): the key of MBPP+'s input re-typing.
    fn task_number(&self) -> i64 {
        self.task_id
            .rsplit('/')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(-1)
    }

    /// A trusted test program judging the entry point on the inputs of `inputs_json`.
    fn test_program(&self, inputs_json: &str) -> String {
        let literal = |s: &str| serde_json::to_string(s).expect("a string serialises");
        format!(
            "{HARNESS}\n_check({reference}, {entry}, {entry_name}, {inputs}, {atol:?}, {dataset}, {task})\n",
            reference = literal(&self.reference()),
            entry = self.entry_point,
            entry_name = literal(&self.entry_point),
            inputs = literal(inputs_json),
            atol = self.atol,
            dataset = literal(self.dataset()),
            task = self.task_number(),
        )
    }
}

/// Whether `source` defines `def name(` at the top level.
fn defines(source: &str, name: &str) -> bool {
    source.lines().any(|l| {
        l.strip_prefix("def ")
            .is_some_and(|rest| rest.trim_start().starts_with(&format!("{name}(")))
    })
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_')
}

/// The judging code shared by every EvalPlus test program (EvalPlus's rules, run in the
/// trusted interpreter).
const HARNESS: &str = include_str!("evalplus_harness.py");
