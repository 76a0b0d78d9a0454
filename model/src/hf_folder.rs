//! Hugging Face checkpoint folders: load a Dream model from `config.json` + safetensors
//! (single file or sharded with `model.safetensors.index.json`) and save one back in the
//! same layout, so a trained policy loads in Couplet and, as Qwen2 weights, in Python.
//!
//! Loading memory-maps each safetensors file and copies one tensor at a time into the
//! parameters, so RAM never holds a second full copy of the model. Every tensor name, shape
//! and dtype is checked; all problems are collected and reported together.
//! Saving streams tensors one at a time into the file (our own writer of the simple
//! safetensors layout), for the same reason.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tch::{Device, Kind, Tensor};

use crate::config::{write_json, DreamConfig, GenerationConfig};
use crate::dream::{DreamModel, Init};
use crate::dtype;
use crate::error::{ModelError, Result, TensorProblem};
use crate::fsutil::temp_sibling;

/// Weights file of an unsharded folder.
pub const SINGLE_FILE: &str = "model.safetensors";
/// Index of a sharded folder (tensor name → shard file).
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// Tokenizer and generation files copied along when a model folder is saved.
pub const ASSET_FILES: [&str; 5] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
    "chat_template.jinja",
];

/// Where the model goes and in which precision.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// Where the parameters are created.
    pub device: Device,
    /// Parameter dtype; `None` keeps f32 (weights stored in bf16 are upcast).
    pub kind: Option<Kind>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            device: Device::Cpu,
            kind: None,
        }
    }
}

#[derive(Debug, Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

/// Loads the model of a Hugging Face folder.
pub fn load_model(dir: &Path, options: LoadOptions) -> Result<DreamModel> {
    let config = DreamConfig::from_file(&dir.join("config.json"))?;
    let kind = options.kind.unwrap_or(Kind::Float);
    let model = DreamModel::new(&config, options.device, kind, Init::Zeros);
    load_weights_into(&model, dir)?;
    Ok(model)
}

/// The safetensors files of a folder and, for sharded ones, which file holds which tensor.
/// Tensor name → shard file name, from `model.safetensors.index.json`.
type WeightMap = BTreeMap<String, String>;

fn weight_files(dir: &Path) -> Result<(Vec<PathBuf>, Option<WeightMap>)> {
    let index_path = dir.join(INDEX_FILE);
    if index_path.exists() {
        let text =
            std::fs::read_to_string(&index_path).map_err(|e| ModelError::io(&index_path, e))?;
        let index: ShardIndex = crate::config::parse_json(&index_path, &text)?;
        let files: BTreeSet<&String> = index.weight_map.values().collect();
        for file in &files {
            if file.contains('/') || file.contains("..") {
                return Err(ModelError::field(
                    &index_path,
                    "weight_map",
                    format!("shard name {file:?} is not a plain file name"),
                ));
            }
        }
        let paths = files.iter().map(|f| dir.join(f)).collect();
        return Ok((paths, Some(index.weight_map)));
    }
    let single = dir.join(SINGLE_FILE);
    if single.exists() {
        return Ok((vec![single], None));
    }
    if !dir.is_dir() {
        return Err(ModelError::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "model folder not found"),
        ));
    }
    Err(ModelError::Parse {
        path: dir.to_path_buf(),
        message: format!("no {SINGLE_FILE} and no {INDEX_FILE} in the model folder"),
    })
}

/// Copies the checkpoint's tensors into `model`'s parameters, checking names and shapes.
pub fn load_weights_into(model: &DreamModel, dir: &Path) -> Result<()> {
    let (files, weight_map) = weight_files(dir)?;
    let vars: HashMap<String, Tensor> = model.var_store().variables();
    let tied = model.config().tie_word_embeddings;
    // Checkpoint names ↔ parameter names (the same, except for LLaDA folders).
    let llada = model.config().is_llada();
    let to_var = |stored: &str| {
        if llada {
            crate::llada::var_name(stored)
        } else {
            Some(stored.to_string())
        }
    };
    let mut seen = BTreeSet::new();
    let mut unexpected = Vec::new();
    let mut wrong = Vec::new();
    let _guard = tch::no_grad_guard();
    for path in &files {
        let file = File::open(path).map_err(|e| ModelError::io(path, e))?;
        // SAFETY: the mapping is read-only and lives only for this loop iteration; a file
        // truncated by another process while we read it is outside what we defend against.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| ModelError::io(path, e))?;
        let tensors =
            safetensors::SafeTensors::deserialize(&mmap).map_err(|e| ModelError::Safetensors {
                path: path.clone(),
                message: e.to_string(),
            })?;
        for (name, view) in tensors.tensors() {
            let problem = |problem: String| TensorProblem {
                name: name.clone(),
                file: path.clone(),
                problem,
            };
            if let Some(map) = &weight_map {
                let listed = map.get(&name).map(|f| dir.join(f));
                if listed.as_ref() != Some(path) {
                    unexpected.push(problem(format!(
                        "not listed for this file in {INDEX_FILE} (listed: {})",
                        listed
                            .map(|p| p.display().to_string())
                            .unwrap_or_else(|| "nowhere".into())
                    )));
                    continue;
                }
            }
            let Some(var_name) = to_var(&name) else {
                unexpected.push(problem("not a tensor name of LLaDA's layout".into()));
                continue;
            };
            let Some(var) = vars.get(&var_name) else {
                if tied && var_name == "lm_head.weight" {
                    continue; // tied checkpoints may still carry the duplicate
                }
                unexpected.push(problem("not a parameter of this architecture".into()));
                continue;
            };
            let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            if shape != var.size() {
                wrong.push(problem(format!(
                    "shape {:?}, expected {:?}",
                    shape,
                    var.size()
                )));
                continue;
            }
            let Some(kind) = dtype::kind_from_safetensors(view.dtype()) else {
                wrong.push(problem(format!(
                    "dtype {:?} is not a floating-point weight type",
                    view.dtype()
                )));
                continue;
            };
            if !seen.insert(var_name) {
                wrong.push(problem("appears in more than one file".into()));
                continue;
            }
            let src = Tensor::f_from_data_size(view.data(), &shape, kind).map_err(
                ModelError::torch(format!("{}: reading tensor {name}", path.display())),
            )?;
            let mut dst = var.shallow_clone();
            dst.f_copy_(&src).map_err(ModelError::torch(format!(
                "{}: copying tensor {name}",
                path.display()
            )))?;
        }
    }
    let missing: Vec<String> = vars
        .keys()
        .filter(|k| !seen.contains(*k))
        .map(|k| stored_name(model.config(), k))
        .collect();
    if !missing.is_empty() || !unexpected.is_empty() || !wrong.is_empty() {
        let mut missing = missing;
        missing.sort();
        return Err(ModelError::Tensors {
            dir: dir.to_path_buf(),
            missing,
            unexpected,
            wrong,
        });
    }
    Ok(())
}

/// How a model folder is written.
#[derive(Debug, Clone)]
pub struct SaveOptions {
    /// Storage dtype; `None` keeps the parameters' dtype.
    pub kind: Option<Kind>,
    /// Shard when the weights exceed this many bytes (Hugging Face uses a few GB).
    pub max_shard_bytes: u64,
    /// Folder whose tokenizer / generation files are copied along (usually the one the
    /// policy was loaded from).
    pub assets_from: Option<PathBuf>,
}

impl Default for SaveOptions {
    fn default() -> Self {
        SaveOptions {
            kind: None,
            max_shard_bytes: 4 << 30,
            assets_from: None,
        }
    }
}

/// Writes `model` as a Hugging Face folder: config.json, safetensors (sharded above the
/// threshold, with the index), and the asset files of `assets_from`.
pub fn save_model(model: &DreamModel, dir: &Path, options: &SaveOptions) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let kind = options.kind.unwrap_or_else(|| model.kind());
    let mut config = model.config().clone();
    config.torch_dtype = Some(dtype::kind_name(kind).to_string());
    config.write(&dir.join("config.json"))?;

    let vars = model.var_store().variables();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    let size_of = |name: &String| vars[name].numel() as u64 * dtype::element_size(kind) as u64;
    let total: u64 = names.iter().map(|n| size_of(n)).sum();

    // Greedy shard assignment in name order, like transformers' split.
    let mut shards: Vec<Vec<&String>> = vec![Vec::new()];
    let mut current = 0u64;
    for name in names {
        let size = size_of(name);
        let last = shards.last_mut().expect("at least one shard");
        if !last.is_empty() && current + size > options.max_shard_bytes {
            shards.push(vec![name]);
            current = size;
        } else {
            last.push(name);
            current += size;
        }
    }

    // Remove weight files of an earlier save so the folder never mixes layouts.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == INDEX_FILE || (name.starts_with("model") && name.ends_with(".safetensors")) {
                std::fs::remove_file(entry.path()).map_err(|e| ModelError::io(entry.path(), e))?;
            }
        }
    }

    let stored = |name: &str| stored_name(model.config(), name);
    if shards.len() == 1 {
        write_safetensors(&dir.join(SINGLE_FILE), &shards[0], &vars, kind, &stored)?;
    } else {
        let n = shards.len();
        let mut weight_map = BTreeMap::new();
        for (i, shard) in shards.iter().enumerate() {
            let file = format!("model-{:05}-of-{:05}.safetensors", i + 1, n);
            write_safetensors(&dir.join(&file), shard, &vars, kind, &stored)?;
            for name in shard {
                weight_map.insert(stored(name), file.clone());
            }
        }
        let index = serde_json::json!({
            "metadata": { "total_size": total },
            "weight_map": weight_map,
        });
        write_json(&dir.join(INDEX_FILE), &index)?;
    }

    if let Some(src) = &options.assets_from {
        if src != dir {
            for file in ASSET_FILES {
                let from = src.join(file);
                if from.exists() {
                    let to = dir.join(file);
                    std::fs::copy(&from, &to).map_err(|e| ModelError::io(&to, e))?;
                }
            }
        }
    }
    Ok(())
}

/// The name parameter `name` is stored under in `config`'s layout.
fn stored_name(config: &DreamConfig, name: &str) -> String {
    if config.is_llada() {
        crate::llada::stored_name(name)
    } else {
        name.to_string()
    }
}

/// Streams `names` into one safetensors file (header, then raw little-endian data), one
/// tensor in memory at a time, each under `stored(name)`. Written under a temp name and
/// renamed when complete.
pub(crate) fn write_safetensors(
    path: &Path,
    names: &[&String],
    vars: &HashMap<String, Tensor>,
    kind: Kind,
    stored: &dyn Fn(&str) -> String,
) -> Result<()> {
    let elem = dtype::element_size(kind);
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({ "format": "pt" }));
    let mut offset = 0usize;
    for name in names {
        let t = &vars[*name];
        let bytes = t.numel() * elem;
        header.insert(
            stored(name),
            serde_json::json!({
                "dtype": dtype::safetensors_name(kind),
                "shape": t.size(),
                "data_offsets": [offset, offset + bytes],
            }),
        );
        offset += bytes;
    }
    let mut header_bytes = serde_json::to_vec(&header).map_err(|e| ModelError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    while header_bytes.len() % 8 != 0 {
        header_bytes.push(b' ');
    }

    let tmp = temp_sibling(path);
    let write = || -> std::result::Result<(), ModelError> {
        let io = |e| ModelError::io(path, e);
        let mut out = BufWriter::new(File::create(&tmp).map_err(io)?);
        out.write_all(&(header_bytes.len() as u64).to_le_bytes())
            .map_err(io)?;
        out.write_all(&header_bytes).map_err(io)?;
        let mut buf = Vec::new();
        for name in names {
            let t = vars[*name]
                .to_device(Device::Cpu)
                .to_kind(kind)
                .contiguous();
            let numel = t.numel();
            buf.resize(numel * elem, 0);
            t.f_copy_data_u8(&mut buf, numel)
                .map_err(ModelError::torch(format!(
                    "{}: writing tensor {name}",
                    path.display()
                )))?;
            out.write_all(&buf).map_err(io)?;
        }
        let file = out.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    };
    let result = write();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The generation config to write for a fresh model, from its special tokens.
pub fn write_generation_config(dir: &Path, generation: &GenerationConfig) -> Result<()> {
    write_json(&dir.join("generation_config.json"), generation)
}
