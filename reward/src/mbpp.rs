//! MBPP in its own format (`mbpp.jsonl` or the Hub's Parquet: `task_id`, `text`, `code`,
//! `test_list`, `test_setup_code`, `challenge_test_list`; the sanitized release's `prompt`
//! and `test_imports` too). The prompt is built as EvalPlus builds MBPP+'s — the task text
//! and its first test in a docstring — and asked for with the same instruction as
//! HumanEval; each assert is one test program, after the task's setup code and imports.
//! `challenge_test_list` are the harder tests, reported as the plus set.

use std::ops::ControlFlow;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::data::DataError;

/// One MBPP task.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Problem {
    /// The task number (an int in `mbpp.jsonl`).
    pub task_id: Value,
    /// The task description (`text`; the sanitized release calls it `prompt`).
    #[serde(alias = "prompt")]
    pub text: String,
    /// The reference solution.
    pub code: String,
    /// Assert statements.
    pub test_list: Vec<String>,
    /// Code run before each test (imports, helpers).
    #[serde(default)]
    pub test_setup_code: String,
    /// Harder asserts (mostly empty).
    #[serde(default)]
    pub challenge_test_list: Vec<String>,
    /// Import lines the tests need (sanitized MBPP).
    #[serde(default)]
    pub test_imports: Vec<String>,
}

/// Reads MBPP tasks from JSON lines, a JSON array, Parquet or Arrow (one file, a directory
/// or a glob of shards); an error names the shard, the row and the field.
pub fn load(path: &Path) -> Result<Vec<Problem>, DataError> {
    let mut problems = Vec::new();
    crate::sources::for_each_value(path, |shard, row, location| {
        let problem =
            row.and_then(|v| serde_json::from_value::<Problem>(v).map_err(|e| e.to_string()));
        let problem =
            problem
                .and_then(|p| p.check().map(|()| p))
                .map_err(|e| DataError::Format {
                    path: shard.path.clone(),
                    message: format!("{}: {e}", shard.describe(&location)),
                })?;
        problems.push(problem);
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(problems)
}

/// Whether a row looks like an MBPP task (what `eval --benchmark` sniffs).
pub fn is_mbpp_row(row: &Value) -> bool {
    row.get("test_list").is_some() && row.get("code").is_some()
}

impl Problem {
    fn check(&self) -> Result<(), String> {
        if self.test_list.is_empty() {
            return Err("field `test_list`: no tests".into());
        }
        match &self.task_id {
            Value::Number(_) => Ok(()),
            Value::String(s) if !s.is_empty() => Ok(()),
            _ => Err("field `task_id`: must be a number or a non-empty string".into()),
        }
    }

    /// `Mbpp/N`, EvalPlus's name of the task.
    pub fn id(&self) -> String {
        match &self.task_id {
            Value::String(s) if s.contains('/') => s.clone(),
            Value::String(s) => format!("Mbpp/{s}"),
            other => format!("Mbpp/{other}"),
        }
    }

    /// The code prompt: the description and the first test in a docstring (how EvalPlus
    /// writes MBPP+'s `prompt`).
    pub fn prompt(&self) -> String {
        format!(
            "\"\"\"\n{}\n{}\n\"\"\"\n",
            self.text.trim(),
            self.test_list[0].trim()
        )
    }

    /// The user message for instruct models.
    pub fn instruct_question(&self) -> String {
        crate::humaneval::instruct_question(&self.prompt())
    }

    /// One test program per assert of `test_list`.
    pub fn base_tests(&self) -> Vec<String> {
        self.tests_of(&self.test_list)
    }

    /// One test program per assert of `challenge_test_list`.
    pub fn plus_tests(&self) -> Vec<String> {
        self.tests_of(&self.challenge_test_list)
    }

    /// MBPP's harness runs the test imports and `test_setup_code` in the same program as
    /// the solution, before it: they are the job's trusted setup code (run before the
    /// solution, and before each test on the trusted side), so a canonical solution may use
    /// a name they define and a solution cannot redefine it for the tests.
    pub fn setup(&self) -> String {
        let mut setup = self.test_imports.join("\n");
        if !self.test_setup_code.trim().is_empty() {
            setup = format!("{setup}\n{}", self.test_setup_code);
        }
        setup.trim().to_string()
    }

    fn tests_of(&self, asserts: &[String]) -> Vec<String> {
        asserts.iter().map(|a| format!("{}\n", a.trim())).collect()
    }
}
