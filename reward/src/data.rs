//! AceCoder-style datasets (SPEC section 8): rows of `id`, `question`, `test_cases` and
//! optionally `source`, `inferences`, `context_messages`, read from JSON lines, a JSON
//! array (plain or gzip), Parquet or Arrow IPC, from one file, a directory or a glob of
//! shards ([`crate::sources`]) — streamed, one batch in memory at a time, so a 90k-row
//! file is never slurped.
//!
//! Every bad row is reported with its file, line (or array index) and field; the
//! [`BadRows`] policy says whether it is skipped or fatal, and a [`LoadSummary`] counts
//! rows read, kept and skipped by reason.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One generated solution recorded in the full AceCode release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inference {
    /// The model that wrote the completion.
    pub model_name: String,
    /// Its id within the row (any JSON value).
    #[serde(default)]
    pub completion_id: Value,
    /// The completion text.
    pub completion: String,
    /// Its pass rate on the row's tests.
    pub pass_rate: f64,
}

/// A validated row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Row id (the file's `id`, else its position).
    pub id: String,
    /// The question (from the prompt column).
    pub question: String,
    /// Test statements, one assert each.
    pub test_cases: Vec<String>,
    /// Where the question comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Reference models' completions with their pass rates (for the difficulty split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inferences: Option<Vec<Inference>>,
    /// Chat messages of the row, kept verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_messages: Option<Value>,
    /// Any other column, kept verbatim (e.g. a canonical `solution`).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What to do with a bad row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BadRows {
    /// Report it, count it, go on.
    #[default]
    Skip,
    /// Stop with its error.
    Fatal,
}

/// A row that failed validation: where, which field, why.
#[derive(Debug, Clone, PartialEq)]
pub struct RowError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line of a JSON-lines file, or 0-based index in a JSON array.
    pub location: String,
    /// The field.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: field `{}`: {}",
            self.file.display(),
            self.location,
            self.field,
            self.message
        )
    }
}

/// Why rows could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be read.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        error: std::io::Error,
    },
    /// A row failed validation (with `bad_rows = fatal`).
    #[error("{0}")]
    Row(RowError),
    /// The file is neither JSON lines nor a JSON array of rows.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Counts of a load.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LoadSummary {
    /// Rows read.
    pub read: usize,
    /// Rows kept.
    pub kept: usize,
    /// Rows skipped as invalid.
    pub skipped: usize,
    /// Skipped rows by field.
    pub skipped_by_field: BTreeMap<String, usize>,
}

impl fmt::Display for LoadSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} rows read, {} kept, {} skipped",
            self.read, self.kept, self.skipped
        )?;
        if !self.skipped_by_field.is_empty() {
            let parts: Vec<String> = self
                .skipped_by_field
                .iter()
                .map(|(k, v)| format!("{v} for `{k}`"))
                .collect();
            write!(f, " ({})", parts.join(", "))?;
        }
        Ok(())
    }
}

/// How rows are read.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Column holding the question (prompt text).
    pub prompt_column: String,
    /// What to do with a row that fails validation.
    pub bad_rows: BadRows,
    /// Require `inferences` (the difficulty split needs them).
    pub require_inferences: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            prompt_column: "question".into(),
            bad_rows: BadRows::Skip,
            require_inferences: false,
        }
    }
}

/// Validates one parsed value into a row.
pub fn validate_row(
    value: Value,
    options: &LoadOptions,
    file: &Path,
    location: &str,
) -> Result<Row, RowError> {
    let err = |field: &str, message: String| RowError {
        file: file.to_path_buf(),
        location: location.to_string(),
        field: field.to_string(),
        message,
    };
    let Value::Object(mut obj) = value else {
        return Err(err("<row>", "not a JSON object".into()));
    };
    let id = match obj.remove("id") {
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => return Err(err("id", "must be a non-empty string or a number".into())),
        None => return Err(err("id", "missing".into())),
    };
    let question = match obj.remove(&options.prompt_column) {
        Some(Value::String(s)) if !s.trim().is_empty() => s,
        Some(Value::String(_)) => return Err(err(&options.prompt_column, "empty".into())),
        Some(_) => return Err(err(&options.prompt_column, "must be a string".into())),
        None => return Err(err(&options.prompt_column, "missing".into())),
    };
    if options.prompt_column != "question" {
        obj.remove("question");
    }
    let test_cases = match obj.remove("test_cases") {
        Some(Value::Array(items)) => {
            let mut tests = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                match item {
                    Value::String(s) => tests.push(s),
                    other => {
                        return Err(err(
                            "test_cases",
                            format!("item {i} is not a string: {other}"),
                        ))
                    }
                }
            }
            if tests.is_empty() {
                return Err(err("test_cases", "no tests".into()));
            }
            tests
        }
        Some(_) => return Err(err("test_cases", "must be a list of strings".into())),
        None => return Err(err("test_cases", "missing".into())),
    };
    let source = match obj.remove("source") {
        Some(Value::String(s)) => Some(s),
        Some(Value::Null) | None => None,
        Some(_) => return Err(err("source", "must be a string".into())),
    };
    let inferences = match obj.remove("inferences") {
        Some(Value::Null) | None => None,
        Some(v) => Some(
            serde_json::from_value::<Vec<Inference>>(v)
                .map_err(|e| err("inferences", e.to_string()))?,
        ),
    };
    if options.require_inferences && inferences.as_ref().is_none_or(|v| v.is_empty()) {
        return Err(err(
            "inferences",
            "missing (the difficulty split needs them)".into(),
        ));
    }
    let context_messages = obj.remove("context_messages").filter(|v| !v.is_null());
    Ok(Row {
        id,
        question,
        test_cases,
        source,
        inferences,
        context_messages,
        extra: obj,
    })
}

/// Streams the rows of `path` into `on_row`, validating each. `path` is a file (JSON lines
/// or a JSON array, optionally gzip-compressed as `.gz`; Parquet; Arrow IPC), a directory
/// of such files, or a glob of shards (`train-0000*-of-*.parquet`); shards are read in name
/// order as one dataset, and every row error names its own shard.
pub fn for_each_row(
    path: &Path,
    options: &LoadOptions,
    mut on_row: impl FnMut(Row) -> Result<(), DataError>,
) -> Result<LoadSummary, DataError> {
    let mut summary = LoadSummary::default();
    crate::sources::for_each_value(path, |shard, parsed, location| {
        summary.read += 1;
        let row = parsed
            .map_err(|message| RowError {
                file: shard.path.clone(),
                location: location.clone(),
                field: "<row>".into(),
                message,
            })
            .and_then(|value| validate_row(value, options, &shard.path, &location));
        match row {
            Ok(row) => {
                summary.kept += 1;
                on_row(row).map(|()| ControlFlow::Continue(()))
            }
            Err(e) if options.bad_rows == BadRows::Skip => {
                eprintln!("skipping bad row: {e}");
                summary.skipped += 1;
                *summary.skipped_by_field.entry(e.field.clone()).or_default() += 1;
                Ok(ControlFlow::Continue(()))
            }
            Err(e) => Err(DataError::Row(e)),
        }
    })?;
    Ok(summary)
}

/// Reads all rows into memory (for small files: task sets, tests).
pub fn load_rows(path: &Path, options: &LoadOptions) -> Result<(Vec<Row>, LoadSummary), DataError> {
    let mut rows = Vec::new();
    let summary = for_each_row(path, options, |row| {
        rows.push(row);
        Ok(())
    })?;
    Ok((rows, summary))
}
