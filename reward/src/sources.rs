//! Where a dataset's rows live — one file, a directory of shards, or a glob of shards —
//! and how each shard is read: JSON lines or a JSON array (plain or gzip), Parquet, or
//! Arrow IPC ([`crate::columnar`]). The format comes from the extension, else from the
//! file's first bytes, and every format yields the same JSON objects, so `data prepare`,
//! `train` and `eval` share one reader ([`for_each_value`]).

use std::fmt;
use std::io::{BufRead, Read};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::columnar::{self, Container, RowHandler};
use crate::data::DataError;

/// How a text shard's bytes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// As is.
    None,
    /// gzip (`.gz`).
    Gzip,
}

/// What a shard holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardFormat {
    /// JSON lines, or one JSON array of rows.
    Json(Compression),
    /// Parquet or Arrow IPC.
    Columnar(Container),
}

/// One file of a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// The file.
    pub path: PathBuf,
    /// What it holds.
    pub format: ShardFormat,
}

/// Extensions of the text files a directory contributes (after stripping `.gz`).
const TEXT_EXTENSIONS: [&str; 2] = ["jsonl", "json"];
/// Extensions of the columnar files a directory contributes (these win when present, so a
/// `datasets` folder's `state.json` and `dataset_info.json` are not read as rows).
const COLUMNAR_EXTENSIONS: [&str; 3] = ["parquet", "arrow", "feather"];

impl Shard {
    /// The shard at `path`: its format from the extension, else from its first bytes.
    pub fn of(path: PathBuf) -> Result<Self, DataError> {
        let name = file_name(&path);
        let format = if name.ends_with(".parquet") {
            ShardFormat::Columnar(Container::Parquet)
        } else if name.ends_with(".jsonl") || name.ends_with(".json") {
            ShardFormat::Json(Compression::None)
        } else if name.ends_with(".gz") {
            ShardFormat::Json(Compression::Gzip)
        } else {
            // `.arrow` is either IPC format; anything else is told by its magic.
            let head = read_head(&path)?;
            match Container::sniff(&head) {
                Some(container) => ShardFormat::Columnar(container),
                None if head.starts_with(&[0x1f, 0x8b]) => ShardFormat::Json(Compression::Gzip),
                None => ShardFormat::Json(Compression::None),
            }
        };
        Ok(Shard { path, format })
    }

    /// A buffered reader of a text shard's decompressed bytes.
    pub fn open(&self) -> Result<Box<dyn BufRead>, DataError> {
        let ShardFormat::Json(compression) = self.format else {
            return Err(DataError::Format {
                path: self.path.clone(),
                message: "a columnar file has no text lines".into(),
            });
        };
        let file = std::fs::File::open(&self.path).map_err(|error| DataError::Io {
            path: self.path.clone(),
            error,
        })?;
        let reader: Box<dyn Read> = match compression {
            Compression::None => Box::new(file),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(file)),
        };
        Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, reader)))
    }

    /// Feeds each row of the shard to `handle(row, location)`: the line of a JSON-lines
    /// file, the index in a JSON array, the row (and row group) of a columnar file.
    pub fn for_each_value(&self, handle: RowHandler<'_>) -> Result<ControlFlow<()>, DataError> {
        match self.format {
            ShardFormat::Json(_) => read_json_rows(self.open()?, &self.path, handle),
            ShardFormat::Columnar(container) => columnar::read_rows(&self.path, container, handle),
        }
    }

    /// A row location of this shard in words (`line 3`, `row 7 (row group 1)`).
    pub fn describe(&self, location: &str) -> String {
        match self.format {
            ShardFormat::Json(_) => format!("line {location}"),
            ShardFormat::Columnar(_) => location.to_string(),
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// Up to the first 8 bytes of `path`.
fn read_head(path: &Path) -> Result<Vec<u8>, DataError> {
    let io = |error| DataError::Io {
        path: path.to_path_buf(),
        error,
    };
    let mut head = Vec::with_capacity(8);
    std::fs::File::open(path)
        .map_err(io)?
        .take(8)
        .read_to_end(&mut head)
        .map_err(io)?;
    Ok(head)
}

fn has_extension(path: &Path, extensions: &[&str]) -> bool {
    let name = file_name(path);
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    extensions.iter().any(|ext| {
        name.strip_suffix(ext)
            .is_some_and(|stem| stem.ends_with('.'))
    })
}

/// The shards of `spec`, in name order: the file itself, the row files of a directory
/// (its Parquet/Arrow files when it has any, else its JSON ones), or the matches of a glob
/// (`*`, `?`, `[...]` in the last components).
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
        let files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        let columnar: Vec<PathBuf> = files
            .iter()
            .filter(|p| has_extension(p, &COLUMNAR_EXTENSIONS))
            .cloned()
            .collect();
        if columnar.is_empty() {
            files
                .into_iter()
                .filter(|p| has_extension(p, &TEXT_EXTENSIONS))
                .collect()
        } else {
            columnar
        }
    } else if !spec.exists() && text.contains(['*', '?', '[']) {
        glob::glob(&text)
            .map_err(|e| format_error(format!("not a valid glob pattern: {e}")))?
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
            .collect()
    } else {
        return Ok(vec![Shard::of(spec.to_path_buf())?]);
    };
    if paths.is_empty() {
        let what = if spec.is_dir() {
            format!(
                "no {} files (or .gz of them) and no {} files in this directory",
                TEXT_EXTENSIONS.join("/"),
                COLUMNAR_EXTENSIONS.join("/")
            )
        } else {
            "the pattern matches no file".to_string()
        };
        return Err(format_error(what));
    }
    paths.sort();
    paths.into_iter().map(Shard::of).collect()
}

/// Feeds every row of every shard of `spec` to `handle(shard, row, location)`, shard by
/// shard in name order, until it breaks.
pub fn for_each_value(
    spec: &Path,
    mut handle: impl FnMut(&Shard, Result<Value, String>, String) -> Result<ControlFlow<()>, DataError>,
) -> Result<(), DataError> {
    for shard in shards(spec)? {
        let flow = shard.for_each_value(&mut |row, location| handle(&shard, row, location))?;
        if flow.is_break() {
            break;
        }
    }
    Ok(())
}

/// The first row of `spec` (to tell a benchmark's format), if it has one.
pub fn first_value(spec: &Path) -> Result<Option<Value>, DataError> {
    let mut first = None;
    for_each_value(spec, |shard, row, location| {
        first = Some(row.map_err(|message| DataError::Format {
            path: shard.path.clone(),
            message: format!("{location}: {message}"),
        })?);
        Ok(ControlFlow::Break(()))
    })?;
    Ok(first)
}

/// Feeds each row of a JSON-lines or JSON-array stream to `handle(row, location)`; the
/// location is the line number, or the array index.
fn read_json_rows(
    mut reader: Box<dyn BufRead>,
    path: &Path,
    handle: RowHandler<'_>,
) -> Result<ControlFlow<()>, DataError> {
    let io = |e| DataError::Io {
        path: path.to_path_buf(),
        error: e,
    };
    // Peek at the first non-space byte: '[' means one JSON array.
    let first = loop {
        let buf = reader.fill_buf().map_err(io)?;
        match buf.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) => {
                let b = buf[i];
                reader.consume(i);
                break Some(b);
            }
            None if buf.is_empty() => break None,
            None => {
                let n = buf.len();
                reader.consume(n);
            }
        }
    };
    if first == Some(b'[') {
        return stream_array(reader, path, |index, value| {
            handle(Ok(value), index.to_string())
        });
    }
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed =
            serde_json::from_str::<Value>(&line).map_err(|e| format!("not valid JSON: {e}"));
        if handle(parsed, (i + 1).to_string())?.is_break() {
            return Ok(ControlFlow::Break(()));
        }
    }
    Ok(ControlFlow::Continue(()))
}

/// Calls `on_item(index, value)` for each element of a top-level JSON array, parsing one
/// element at a time, until it breaks.
fn stream_array(
    reader: impl Read,
    path: &Path,
    on_item: impl FnMut(usize, Value) -> Result<ControlFlow<()>, DataError>,
) -> Result<ControlFlow<()>, DataError> {
    use serde::de::{Deserializer, SeqAccess, Visitor};
    /// The callback, and why it stopped the parse (an error, or a break).
    struct Each<F>(F, Option<Result<(), DataError>>);
    impl<'de, F> Visitor<'de> for &mut Each<F>
    where
        F: FnMut(usize, Value) -> Result<ControlFlow<()>, DataError>,
    {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON array of rows")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut index = 0;
            while let Some(value) = seq.next_element::<Value>()? {
                let stop = match (self.0)(index, value) {
                    Ok(ControlFlow::Continue(())) => None,
                    Ok(ControlFlow::Break(())) => Some(Ok(())),
                    Err(e) => Some(Err(e)),
                };
                if stop.is_some() {
                    self.1 = stop;
                    return Err(serde::de::Error::custom("stopped"));
                }
                index += 1;
            }
            Ok(())
        }
    }
    let mut each = Each(on_item, None);
    let mut de = serde_json::Deserializer::from_reader(reader);
    let result = de.deserialize_seq(&mut each);
    match each.1 {
        Some(Ok(())) => return Ok(ControlFlow::Break(())),
        Some(Err(e)) => return Err(e),
        None => {}
    }
    result
        .map(|()| ControlFlow::Continue(()))
        .map_err(|e| DataError::Format {
            path: path.to_path_buf(),
            message: format!("not a valid JSON array: {e}"),
        })
}
