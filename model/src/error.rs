//! Errors of the model crate. Every variant names the file, field or tensor involved, so a
//! user with a broken checkpoint folder knows what to fix without reading our code.

use std::path::PathBuf;

/// One tensor that did not fit the architecture described by `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorProblem {
    /// The tensor's name.
    pub name: String,
    /// The safetensors file holding it.
    pub file: PathBuf,
    /// What is wrong (shape, dtype, unknown name).
    pub problem: String,
}

/// Why a model folder, tokenizer or tensor operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read or written.
    // The cause is part of the message, not a `source`, so `{:#}` chains print it once.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        error: std::io::Error,
    },
    /// A file is not valid JSON (or not the expected shape).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A field of `config.json` (or another JSON file) is missing or wrong.
    #[error("{path}: field `{field}`: {message}")]
    Field {
        /// The file.
        path: PathBuf,
        /// The field.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A weights file is not valid safetensors.
    #[error("{path}: not a valid safetensors file: {message}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The weights do not match the architecture: every problem, listed together.
    #[error("checkpoint {dir} does not match its config (config.json, or adapter_config.json for adapters):\n{}", format_problems(.missing, .unexpected, .wrong))]
    Tensors {
        /// The model folder.
        dir: PathBuf,
        /// Tensors the architecture needs that no file has.
        missing: Vec<String>,
        /// Tensors the architecture has no place for.
        unexpected: Vec<TensorProblem>,
        /// Tensors with the wrong shape or dtype.
        wrong: Vec<TensorProblem>,
    },
    /// The tokenizer file or its special tokens.
    #[error("{path}: tokenizer: {message}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A libtorch operation failed.
    #[error("{context}: {error}")]
    Torch {
        /// What was being done.
        context: String,
        /// libtorch's error.
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

/// The model crate's result type.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
