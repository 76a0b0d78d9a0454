//! Errors of the model crate. Every variant names the file, field or tensor involved, so a
//! user with a broken checkpoint folder knows what to fix without reading our code.

use std::path::PathBuf;

/// One tensor that did not fit the architecture described by `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorProblem {
    pub name: String,
    pub file: PathBuf,
    pub problem: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    // The cause is part of the message, not a `source`, so `{:#}` chains print it once.
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: field `{field}`: {message}")]
    Field {
        path: PathBuf,
        field: String,
        message: String,
    },
    #[error("{path}: not a valid safetensors file: {message}")]
    Safetensors { path: PathBuf, message: String },
    #[error("checkpoint {dir} does not match its config.json:\n{}", format_problems(.missing, .unexpected, .wrong))]
    Tensors {
        dir: PathBuf,
        missing: Vec<String>,
        unexpected: Vec<TensorProblem>,
        wrong: Vec<TensorProblem>,
    },
    #[error("{path}: tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("{context}: {error}")]
    Torch {
        context: String,
        error: tch::TchError,
    },
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            error: source,
        }
    }

    pub(crate) fn field(
        path: impl Into<PathBuf>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ModelError::Field {
            path: path.into(),
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn torch(context: impl Into<String>) -> impl FnOnce(tch::TchError) -> Self {
        let context = context.into();
        move |error| ModelError::Torch { context, error }
    }
}

fn format_problems(
    missing: &[String],
    unexpected: &[TensorProblem],
    wrong: &[TensorProblem],
) -> String {
    let mut out = String::new();
    const SHOW: usize = 20;
    if !missing.is_empty() {
        out.push_str(&format!("  missing tensors ({}):\n", missing.len()));
        for name in missing.iter().take(SHOW) {
            out.push_str(&format!("    {name}\n"));
        }
        if missing.len() > SHOW {
            out.push_str(&format!("    ... and {} more\n", missing.len() - SHOW));
        }
    }
    for (title, list) in [("unexpected tensors", unexpected), ("wrong tensors", wrong)] {
        if list.is_empty() {
            continue;
        }
        out.push_str(&format!("  {title} ({}):\n", list.len()));
        for p in list.iter().take(SHOW) {
            out.push_str(&format!(
                "    {} in {}: {}\n",
                p.name,
                p.file.display(),
                p.problem
            ));
        }
        if list.len() > SHOW {
            out.push_str(&format!("    ... and {} more\n", list.len() - SHOW));
        }
    }
    out.trim_end().to_string()
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
