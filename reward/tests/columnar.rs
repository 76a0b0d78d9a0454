//! Columnar row sources: Parquet files with AceCode-87K's nested schema (several row
//! groups, a null and a wrong-typed field) and the Arrow IPC files of a `datasets` cache
//! read as the same rows as their JSON-lines twins, with errors naming the file, the row
//! (and row group) and the field. Every fixture is written here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{
    Float64Builder, Int64Builder, ListBuilder, StringBuilder, StructBuilder,
};
use arrow_array::{ArrayRef, BinaryArray, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Fields, Schema};
use couplet_reward::{load_rows, BadRows, LoadOptions, Row};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde_json::{json, Value};

/// AceCode-87K-like rows; row 3 has `test_cases = null`.
fn rows() -> Vec<Value> {
    (0..5)
        .map(|i| {
            let tests = if i == 3 {
                Value::Null
            } else {
                json!([format!("assert f({i}) == {i}"), "assert True"])
            };
            json!({
                "id": format!("oss_{i}"),
                "source": if i % 2 == 0 { json!("evol") } else { Value::Null },
                "question": format!("Write f returning its argument ({i})."),
                "test_cases": tests,
                "inferences": [
                    {"model_name": "qwen_coder_2.5", "completion_id": 0,
                     "completion": format!("def f(x):\n    return x  # {i}"), "pass_rate": 1.0},
                    {"model_name": "llama", "completion_id": 1,
                     "completion": "def f(x):\n    return 0", "pass_rate": 0.25},
                ],
            })
        })
        .collect()
}

fn inference_fields() -> Fields {
    Fields::from(vec![
        Field::new("model_name", DataType::Utf8, true),
        Field::new("completion_id", DataType::Int64, true),
        Field::new("completion", DataType::Utf8, true),
        Field::new("pass_rate", DataType::Float64, true),
    ])
}

/// `rows` as one record batch with AceCode's schema, plus a binary column no row can hold.
fn batch(rows: &[Value]) -> RecordBatch {
    let text = |key: &str| -> ArrayRef {
        Arc::new(StringArray::from(
            rows.iter().map(|r| r[key].as_str()).collect::<Vec<_>>(),
        ))
    };
    let mut tests = ListBuilder::new(StringBuilder::new());
    let mut inferences = ListBuilder::new(StructBuilder::from_fields(inference_fields(), 0));
    for r in rows {
        match r["test_cases"].as_array() {
            Some(items) => {
                for t in items {
                    tests.values().append_value(t.as_str().unwrap());
                }
                tests.append(true);
            }
            None => tests.append(false),
        }
        let structs = inferences.values();
        for inf in r["inferences"].as_array().unwrap() {
            structs
                .field_builder::<StringBuilder>(0)
                .unwrap()
                .append_value(inf["model_name"].as_str().unwrap());
            structs
                .field_builder::<Int64Builder>(1)
                .unwrap()
                .append_value(inf["completion_id"].as_i64().unwrap());
            structs
                .field_builder::<StringBuilder>(2)
                .unwrap()
                .append_value(inf["completion"].as_str().unwrap());
            structs
                .field_builder::<Float64Builder>(3)
                .unwrap()
                .append_value(inf["pass_rate"].as_f64().unwrap());
            structs.append(true);
        }
        inferences.append(true);
    }
    let blob: ArrayRef = Arc::new(BinaryArray::from(vec![&b"\x00\x01"[..]; rows.len()]));
    let tests: ArrayRef = Arc::new(tests.finish());
    let inferences: ArrayRef = Arc::new(inferences.finish());
    // Every column nullable, as `datasets` declares them (so batches share one schema).
    RecordBatch::try_from_iter_with_nullable(vec![
        ("id", text("id"), true),
        ("source", text("source"), true),
        ("question", text("question"), true),
        ("test_cases", tests, true),
        ("inferences", inferences, true),
        ("image", blob, true),
    ])
    .unwrap()
}

/// Writes `batch` as Parquet with `group_rows` rows per row group.
fn write_parquet(path: &Path, batch: &RecordBatch, group_rows: usize, codec: Compression) {
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(group_rows))
        .set_compression(codec)
        .build();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
}

fn write_arrow_stream(path: &Path, batches: &[RecordBatch]) {
    let file = std::fs::File::create(path).unwrap();
    let mut writer = arrow_ipc::writer::StreamWriter::try_new(file, &batches[0].schema()).unwrap();
    for b in batches {
        writer.write(b).unwrap();
    }
    writer.finish().unwrap();
}

fn write_arrow_file(path: &Path, batch: &RecordBatch) {
    let file = std::fs::File::create(path).unwrap();
    let mut writer = arrow_ipc::writer::FileWriter::try_new(file, &batch.schema()).unwrap();
    writer.write(batch).unwrap();
    writer.finish().unwrap();
}

/// The rows the JSON-lines twin of `rows` reads as (the reference).
fn jsonl_rows(dir: &Path, rows: &[Value]) -> Vec<Row> {
    let path = dir.join("twin.jsonl");
    let lines: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
    std::fs::write(&path, lines.join("\n")).unwrap();
    load_rows(&path, &LoadOptions::default()).unwrap().0
}

fn read(spec: &Path) -> Vec<Row> {
    load_rows(spec, &LoadOptions::default()).unwrap().0
}

fn fatal() -> LoadOptions {
    LoadOptions {
        bad_rows: BadRows::Fatal,
        ..LoadOptions::default()
    }
}

#[test]
fn parquet_with_acecode_schema_reads_as_its_jsonl_twin() {
    let tmp = tempfile::tempdir().unwrap();
    let expected = jsonl_rows(tmp.path(), &rows());
    assert_eq!(expected.len(), 4, "the null-tests row is skipped");
    for (name, codec) in [
        ("snappy.parquet", Compression::SNAPPY),
        ("plain.parquet", Compression::UNCOMPRESSED),
        ("zstd.parquet", Compression::ZSTD(Default::default())),
        ("gzip.parquet", Compression::GZIP(Default::default())),
    ] {
        let path = tmp.path().join(name);
        write_parquet(&path, &batch(&rows()), 2, codec);
        let meta =
            parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&path).unwrap())
                .unwrap();
        use parquet::file::reader::FileReader;
        assert_eq!(meta.metadata().num_row_groups(), 3, "{name}");
        let (got, summary) = load_rows(&path, &LoadOptions::default()).unwrap();
        assert_eq!(got, expected, "{name}");
        assert_eq!((summary.read, summary.kept, summary.skipped), (5, 4, 1));
        assert_eq!(summary.skipped_by_field.get("test_cases"), Some(&1));
        assert!(got[0].extra.is_empty(), "the binary column is left out");
        let inference = &got[1].inferences.as_ref().unwrap()[1];
        assert_eq!(
            (inference.pass_rate, &inference.model_name[..]),
            (0.25, "llama")
        );
    }
}

#[test]
fn a_null_field_names_its_file_row_and_row_group() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("train-00000-of-00001.parquet");
    write_parquet(&path, &batch(&rows()), 2, Compression::SNAPPY);
    let err = load_rows(&path, &fatal()).unwrap_err().to_string();
    assert!(
        err.contains("train-00000-of-00001.parquet:row 3 (row group 1): field `test_cases`"),
        "{err}"
    );
}

#[test]
fn a_wrong_typed_column_names_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let good = batch(&rows()[..2]);
    let numbers: ArrayRef = Arc::new(Int64Array::from(vec![1, 2]));
    let mut columns = good.columns().to_vec();
    columns[3] = numbers;
    let mut fields: Vec<Field> = good
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields[3] = Field::new("test_cases", DataType::Int64, true);
    let bad = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
    let path = tmp.path().join("typed.parquet");
    write_parquet(&path, &bad, 10, Compression::SNAPPY);
    let err = load_rows(&path, &fatal()).unwrap_err().to_string();
    assert!(
        err.contains("typed.parquet:row 0 (row group 0): field `test_cases`: must be a list"),
        "{err}"
    );
    // Inferences whose pass rate is text.
    let mut rows = rows();
    rows.truncate(1);
    let path = tmp.path().join("text-rate.jsonl");
    rows[0]["inferences"][0]["pass_rate"] = json!("high");
    std::fs::write(&path, rows[0].to_string()).unwrap();
    let err = load_rows(&path, &fatal()).unwrap_err().to_string();
    assert!(err.contains("field `inferences`"), "{err}");
}

#[test]
fn shards_of_parquet_read_as_one_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    let all = rows();
    write_parquet(
        &dir.join("train-00001-of-00002.parquet"),
        &batch(&all[2..]),
        2,
        Compression::SNAPPY,
    );
    write_parquet(
        &dir.join("train-00000-of-00002.parquet"),
        &batch(&all[..2]),
        1,
        Compression::SNAPPY,
    );
    std::fs::write(dir.join("README.md"), "# card").unwrap();
    let expected = jsonl_rows(tmp.path(), &all);
    assert_eq!(read(&dir), expected);
    assert_eq!(read(&dir.join("train-0000*-of-*.parquet")), expected);
}

#[test]
fn a_datasets_cache_folder_reads_its_arrow_files_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ace_code");
    std::fs::create_dir(&dir).unwrap();
    let all = rows();
    // `datasets` writes the IPC stream format, in several record batches.
    write_arrow_stream(
        &dir.join("data-00000-of-00001.arrow"),
        &[batch(&all[..3]), batch(&all[3..])],
    );
    std::fs::write(dir.join("state.json"), r#"{"_data_files": []}"#).unwrap();
    std::fs::write(dir.join("dataset_info.json"), "{}").unwrap();
    let expected = jsonl_rows(tmp.path(), &all);
    assert_eq!(read(&dir), expected);
    let err = load_rows(&dir, &fatal()).unwrap_err().to_string();
    assert!(
        err.contains("data-00000-of-00001.arrow:row 3: field `test_cases`"),
        "{err}"
    );
    // The random-access file format, told from the stream by its magic.
    let file_format = tmp.path().join("rows.arrow");
    write_arrow_file(&file_format, &batch(&all));
    assert_eq!(read(&file_format), expected);
}

#[test]
fn the_format_is_told_by_content_when_the_name_does_not_say() {
    let tmp = tempfile::tempdir().unwrap();
    let all = rows();
    let parquet = tmp.path().join("rows.bin");
    write_parquet(&parquet, &batch(&all), 2, Compression::SNAPPY);
    let expected = jsonl_rows(tmp.path(), &all);
    assert_eq!(read(&parquet), expected);
    let json = tmp.path().join("rows.txt");
    std::fs::copy(tmp.path().join("twin.jsonl"), &json).unwrap();
    assert_eq!(read(&json), expected);
    // A truncated Parquet file is an error naming the file, not a panic.
    let bytes = std::fs::read(&parquet).unwrap();
    let truncated = tmp.path().join("cut.parquet");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_rows(&truncated, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cut.parquet") && err.contains("Parquet"),
        "{err}"
    );
}

/// HumanEval from the Hub is Parquet too (`openai_humaneval`).
#[test]
fn humaneval_reads_from_parquet() {
    let tmp = tempfile::tempdir().unwrap();
    let column = |v: &[&str]| -> ArrayRef { Arc::new(StringArray::from(v.to_vec())) };
    let batch = RecordBatch::try_from_iter(vec![
        ("task_id", column(&["HumanEval/0", "HumanEval/1"])),
        ("prompt", column(&["def f():\n", "def g():\n"])),
        (
            "canonical_solution",
            column(&["    return 1\n", "    return 2\n"]),
        ),
        (
            "test",
            column(&[
                "def check(c):\n    assert c() == 1\n",
                "def check(c):\n    assert c() == 2\n",
            ]),
        ),
        ("entry_point", column(&["f", "g"])),
    ])
    .unwrap();
    let path: PathBuf = tmp.path().join("test-00000-of-00001.parquet");
    write_parquet(&path, &batch, 1, Compression::SNAPPY);
    let problems = couplet_reward::humaneval::load(&path).unwrap();
    assert_eq!(problems.len(), 2);
    assert_eq!(problems[1].entry_point, "g");
    assert_eq!(problems[1].canonical_solution, "    return 2\n");
}
