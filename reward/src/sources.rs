//! Where a dataset's rows live: one file, a directory of shards, or a glob of shards, and
//! how each shard is opened (plain, or gzip by its `.gz` extension).

use std::io::BufRead;
use std::path::{Path, PathBuf};

use crate::data::DataError;

/// How a shard's bytes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// As is.
    None,
    /// gzip (`.gz`).
    Gzip,
}

/// One file of a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// The file.
    pub path: PathBuf,
    /// How it is compressed.
    pub compression: Compression,
}

/// Extensions of the files a directory contributes (after stripping `.gz`).
const ROW_EXTENSIONS: [&str; 2] = ["jsonl", "json"];

impl Shard {
    fn of(path: PathBuf) -> Self {
        let gz = path.extension().is_some_and(|e| e == "gz");
        Shard {
            path,
            compression: if gz {
                Compression::Gzip
            } else {
                Compression::None
            },
        }
    }

    /// A buffered reader of the decompressed bytes.
    pub fn open(&self) -> Result<Box<dyn BufRead>, DataError> {
        let file = std::fs::File::open(&self.path).map_err(|error| DataError::Io {
            path: self.path.clone(),
            error,
        })?;
        let reader: Box<dyn std::io::Read> = match self.compression {
            Compression::None => Box::new(file),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(file)),
        };
        Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, reader)))
    }

    /// Whether a directory listing should include this file.
    fn is_rows_file(path: &Path) -> bool {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let name = name.strip_suffix(".gz").unwrap_or(name);
        ROW_EXTENSIONS.iter().any(|ext| {
            name.strip_suffix(ext)
                .is_some_and(|stem| stem.ends_with('.'))
        })
    }
}

/// The shards of `spec`, in name order: the file itself, the row files of a directory, or
/// the matches of a glob (`*`, `?`, `[...]` in the last components).
pub fn shards(spec: &Path) -> Result<Vec<Shard>, DataError> {
    let format_error = |message: String| DataError::Format {
        path: spec.to_path_buf(),
        message,
    };
    let text = spec.to_string_lossy();
    let mut paths: Vec<PathBuf> = if spec.is_dir() {
        let entries = std::fs::read_dir(spec).map_err(|error| DataError::Io {
            path: spec.to_path_buf(),
            error,
        })?;
        entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && Shard::is_rows_file(p))
            .collect()
    } else if !spec.exists() && text.contains(['*', '?', '[']) {
        glob::glob(&text)
            .map_err(|e| format_error(format!("not a valid glob pattern: {e}")))?
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
            .collect()
    } else {
        return Ok(vec![Shard::of(spec.to_path_buf())]);
    };
    if paths.is_empty() {
        let what = if spec.is_dir() {
            format!(
                "no {} files (or .gz of them) in this directory",
                ROW_EXTENSIONS.join("/")
            )
        } else {
            "the pattern matches no file".to_string()
        };
        return Err(format_error(what));
    }
    paths.sort();
    Ok(paths.into_iter().map(Shard::of).collect())
}
