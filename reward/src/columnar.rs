//! Columnar shards: Parquet files (AceCode-87K as the Hub serves it) and Arrow IPC files
//! (the `.arrow` files of a `datasets` cache or `save_to_disk` folder, stream or file
//! format). Both are read one record batch at a time and each row is turned into the same
//! JSON object a JSON-lines file would hold, so every format shares one validator and one
//! error shape (file, row, field).

use std::fs::File;
use std::io::BufReader;
use std::ops::ControlFlow;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type,
    UInt64Type, UInt8Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{ArrowError, DataType, Schema};
use serde_json::{Map, Value};

use crate::data::DataError;

/// Rows per record batch: small enough that a batch of AceCode rows (each with its
/// reference completions) stays a few MiB.
const BATCH_ROWS: usize = 256;

/// What a shard reader hands each row to: the row (or why it could not be built) and where
/// it is.
/// It breaks to stop the read early.
pub type RowHandler<'a> =
    &'a mut dyn FnMut(Result<Value, String>, String) -> Result<ControlFlow<()>, DataError>;

/// Which columnar container a shard is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// Apache Parquet.
    Parquet,
    /// Arrow IPC file format (`ARROW1` magic, random access).
    ArrowFile,
    /// Arrow IPC stream format (what `datasets` writes).
    ArrowStream,
}

impl Container {
    /// The container whose magic `head` (a file's first bytes) starts with, if any.
    pub fn sniff(head: &[u8]) -> Option<Container> {
        if head.starts_with(b"PAR1") {
            Some(Container::Parquet)
        } else if head.starts_with(b"ARROW1") {
            Some(Container::ArrowFile)
        } else if head.starts_with(&[0xFF, 0xFF, 0xFF, 0xFF]) {
            Some(Container::ArrowStream)
        } else {
            None
        }
    }
}

/// Feeds every row of the columnar shard at `path` to `handle`.
pub(crate) fn read_rows(
    path: &Path,
    container: Container,
    handle: RowHandler<'_>,
) -> Result<ControlFlow<()>, DataError> {
    let file = File::open(path).map_err(|error| DataError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    let format_error = |what: &str, e: &dyn std::fmt::Display| DataError::Format {
        path: path.to_path_buf(),
        message: format!("not a readable {what} file: {e}"),
    };
    match container {
        Container::Parquet => {
            use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
            let builder = ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(|e| format_error("Parquet", &e))?;
            // Cumulative row counts name the row group of a row in errors.
            let group_ends: Vec<usize> = builder
                .metadata()
                .row_groups()
                .iter()
                .scan(0usize, |end, g| {
                    *end += g.num_rows().max(0) as usize;
                    Some(*end)
                })
                .collect();
            let reader = builder
                .with_batch_size(BATCH_ROWS)
                .build()
                .map_err(|e| format_error("Parquet", &e))?;
            let locate = |row: usize| {
                let group = group_ends.partition_point(|&end| end <= row);
                format!("row {row} (row group {group})")
            };
            read_batches(path, reader, "Parquet", &locate, handle)
        }
        Container::ArrowFile | Container::ArrowStream => {
            let file = BufReader::new(file);
            let reader: Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>>> =
                if container == Container::ArrowFile {
                    Box::new(
                        arrow_ipc::reader::FileReader::try_new(file, None)
                            .map_err(|e| format_error("Arrow IPC", &e))?,
                    )
                } else {
                    Box::new(
                        arrow_ipc::reader::StreamReader::try_new(file, None)
                            .map_err(|e| format_error("Arrow IPC", &e))?,
                    )
                };
            let locate = |row: usize| format!("row {row}");
            read_batches(path, reader, "Arrow IPC", &locate, handle)
        }
    }
}

/// Converts each batch's rows to JSON objects, row by row, in file order.
fn read_batches(
    path: &Path,
    batches: impl Iterator<Item = Result<RecordBatch, ArrowError>>,
    what: &str,
    locate: &dyn Fn(usize) -> String,
    handle: RowHandler<'_>,
) -> Result<ControlFlow<()>, DataError> {
    let mut row = 0usize;
    let mut warned = false;
    for batch in batches {
        let batch = batch.map_err(|e| DataError::Format {
            path: path.to_path_buf(),
            message: format!("{what} data after row {row} cannot be read: {e}"),
        })?;
        let columns = usable_columns(&batch.schema(), path, &mut warned);
        for i in 0..batch.num_rows() {
            if handle(Ok(row_object(&batch, &columns, i)), locate(row))?.is_break() {
                return Ok(ControlFlow::Break(()));
            }
            row += 1;
        }
    }
    Ok(ControlFlow::Continue(()))
}

/// The indices of the columns a row can hold; the others are reported once per shard and
/// left out (a row keeps every column it can, verbatim).
fn usable_columns(schema: &Schema, path: &Path, warned: &mut bool) -> Vec<usize> {
    let mut usable = Vec::new();
    for (i, field) in schema.fields().iter().enumerate() {
        if representable(field.data_type()) {
            usable.push(i);
        } else if !*warned {
            eprintln!(
                "{}: column `{}` has Arrow type {}, which a row cannot hold; it is left out",
                path.display(),
                field.name(),
                field.data_type()
            );
        }
    }
    *warned = true;
    usable
}

/// Whether every value of `data_type` converts to JSON.
fn representable(data_type: &DataType) -> bool {
    match data_type {
        DataType::Null
        | DataType::Boolean
        | DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Float32
        | DataType::Float64
        | DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View => true,
        DataType::List(item) | DataType::LargeList(item) | DataType::FixedSizeList(item, _) => {
            representable(item.data_type())
        }
        DataType::Struct(fields) => fields.iter().all(|f| representable(f.data_type())),
        DataType::Dictionary(key, value) => key.is_integer() && representable(value),
        _ => false,
    }
}

/// Row `i` of `batch` as a JSON object of the `columns`.
fn row_object(batch: &RecordBatch, columns: &[usize], i: usize) -> Value {
    let schema = batch.schema();
    let mut object = Map::new();
    for &c in columns {
        let name = schema.field(c).name().clone();
        object.insert(name, cell(batch.column(c).as_ref(), i));
    }
    Value::Object(object)
}

/// Value `i` of `array` (of a [`representable`] type) as JSON; a null is `null`, and so
/// is a float JSON cannot hold (NaN, ±inf).
fn cell(array: &dyn Array, i: usize) -> Value {
    if array.is_null(i) {
        return Value::Null;
    }
    let float = |x: f64| serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number);
    match array.data_type() {
        DataType::Boolean => Value::Bool(array.as_boolean().value(i)),
        DataType::Int8 => array.as_primitive::<Int8Type>().value(i).into(),
        DataType::Int16 => array.as_primitive::<Int16Type>().value(i).into(),
        DataType::Int32 => array.as_primitive::<Int32Type>().value(i).into(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(i).into(),
        DataType::UInt8 => array.as_primitive::<UInt8Type>().value(i).into(),
        DataType::UInt16 => array.as_primitive::<UInt16Type>().value(i).into(),
        DataType::UInt32 => array.as_primitive::<UInt32Type>().value(i).into(),
        DataType::UInt64 => array.as_primitive::<UInt64Type>().value(i).into(),
        DataType::Float32 => float(f64::from(array.as_primitive::<Float32Type>().value(i))),
        DataType::Float64 => float(array.as_primitive::<Float64Type>().value(i)),
        DataType::Utf8 => array.as_string::<i32>().value(i).into(),
        DataType::LargeUtf8 => array.as_string::<i64>().value(i).into(),
        DataType::Utf8View => array.as_string_view().value(i).into(),
        DataType::List(_) => items(array.as_list::<i32>().value(i).as_ref()),
        DataType::LargeList(_) => items(array.as_list::<i64>().value(i).as_ref()),
        DataType::FixedSizeList(..) => items(array.as_fixed_size_list().value(i).as_ref()),
        DataType::Struct(fields) => {
            let array = array.as_struct();
            let object = fields
                .iter()
                .zip(array.columns())
                .map(|(f, column)| (f.name().clone(), cell(column.as_ref(), i)))
                .collect();
            Value::Object(object)
        }
        DataType::Dictionary(..) => {
            let dictionary = array.as_any_dictionary();
            match cell(dictionary.keys(), i).as_u64() {
                Some(key) => cell(dictionary.values().as_ref(), key as usize),
                None => Value::Null,
            }
        }
        // `representable` admitted nothing else.
        _ => Value::Null,
    }
}

/// Every value of `array` as a JSON array.
fn items(array: &dyn Array) -> Value {
    Value::Array((0..array.len()).map(|j| cell(array, j)).collect())
}
