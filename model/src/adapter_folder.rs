//! LoRA adapter folders in PEFT's layout: `adapter_config.json` + `adapter_model.safetensors`
//! (f32 tensors named `base_model.model.<module>.lora_{A,B}.weight`).

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::Path;

use tch::{Kind, Tensor};

use crate::dream::DreamModel;
use crate::error::{ModelError, Result, TensorProblem};
use crate::lora::{LoraConfig, PeftConfig};
use crate::{dtype, hf_folder};

/// The adapter config file of a folder.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// The adapter weights file of a folder.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// Whether `dir` holds a PEFT adapter.
pub fn is_adapter_folder(dir: &Path) -> bool {
    dir.join(ADAPTER_CONFIG).is_file()
}

/// Writes `model`'s adapters to `dir` (PEFT layout, f32); `base` is recorded as the base
/// model's path. Fails when the model has no adapters.
pub fn save_adapter(model: &DreamModel, dir: &Path, base: Option<&Path>) -> Result<()> {
    let Some((lora, vs)) = model.lora() else {
        return Err(ModelError::Parse {
            path: dir.to_path_buf(),
            message: "the model has no LoRA adapters to save".into(),
        });
    };
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let llada = model.config().is_llada();
    let mut peft = PeftConfig::of(lora, base);
    if llada {
        // PEFT on a LLaDA base names modules as LLaDA's code does.
        peft.target_modules = lora
            .target_modules
            .iter()
            .map(|&t| crate::llada::target_module(t).to_string())
            .collect();
    }
    let config = serde_json::to_string_pretty(&peft).map_err(|e| ModelError::Parse {
        path: dir.join(ADAPTER_CONFIG),
        message: e.to_string(),
    })?;
    let path = dir.join(ADAPTER_CONFIG);
    std::fs::write(&path, config).map_err(|e| ModelError::io(&path, e))?;
    let vars = vs.variables();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    hf_folder::write_safetensors(
        &dir.join(ADAPTER_WEIGHTS),
        &names,
        &vars,
        Kind::Float,
        &|name| adapter_stored_name(llada, name),
    )
}

/// The name adapter tensor `name` is stored under on a base of this layout.
fn adapter_stored_name(llada: bool, name: &str) -> String {
    if llada {
        crate::llada::adapter_tensor_name(name)
    } else {
        name.to_string()
    }
}

/// Reads the adapter shape of a folder's `adapter_config.json` (module names of a Qwen2
/// base).
pub fn read_adapter_config(dir: &Path) -> Result<LoraConfig> {
    read_adapter_config_for(dir, false)
}

/// Reads `adapter_config.json` for a base of LLaDA's layout (`llada`) or Qwen2's.
fn read_adapter_config_for(dir: &Path, llada: bool) -> Result<LoraConfig> {
    let path = dir.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&path).map_err(|e| ModelError::io(&path, e))?;
    let mut peft: PeftConfig = serde_json::from_str(&text).map_err(|e| ModelError::Parse {
        path: path.clone(),
        message: e.to_string(),
    })?;
    if llada {
        for name in &mut peft.target_modules {
            match crate::llada::parse_target_module(name) {
                Some(target) => *name = target.name().to_string(),
                None => {
                    return Err(ModelError::field(
                        &path,
                        "target_modules",
                        format!("{name:?} is not a LoRA target of a LLaDA base (q_proj, k_proj, v_proj, attn_out, ff_proj, up_proj, ff_out)"),
                    ))
                }
            }
        }
    }
    peft.lora(&path)
}

/// Attaches the adapters of the folder `dir` to `model` (which must have none yet) and
/// loads their weights, checking every name and shape.
pub fn load_adapter(model: &mut DreamModel, dir: &Path) -> Result<LoraConfig> {
    let llada = model.config().is_llada();
    let lora = read_adapter_config_for(dir, llada)?;
    model.attach_lora(&lora);
    let vars: HashMap<String, Tensor> = model
        .lora()
        .map(|(_, vs)| vs.variables())
        .unwrap_or_default()
        .into_iter()
        .map(|(name, t)| (adapter_stored_name(llada, &name), t))
        .collect();
    load_tensors(&vars, &dir.join(ADAPTER_WEIGHTS), dir)?;
    Ok(lora)
}

/// Copies every tensor of the safetensors `file` into `vars`, listing all problems
/// (missing, unexpected, wrong shape) in one error.
pub fn load_tensors(vars: &HashMap<String, Tensor>, file: &Path, dir: &Path) -> Result<()> {
    let handle = File::open(file).map_err(|e| ModelError::io(file, e))?;
    // SAFETY: read-only mapping, dropped before returning.
    let mmap = unsafe { memmap2::Mmap::map(&handle) }.map_err(|e| ModelError::io(file, e))?;
    let tensors =
        safetensors::SafeTensors::deserialize(&mmap).map_err(|e| ModelError::Safetensors {
            path: file.to_path_buf(),
            message: e.to_string(),
        })?;
    let (mut seen, mut unexpected, mut wrong) = (BTreeSet::new(), Vec::new(), Vec::new());
    let _guard = tch::no_grad_guard();
    for (name, view) in tensors.tensors() {
        let problem = |problem: String| TensorProblem {
            name: name.clone(),
            file: file.to_path_buf(),
            problem,
        };
        let Some(var) = vars.get(&name) else {
            unexpected.push(problem("not a tensor of this adapter config".into()));
            continue;
        };
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let kind = dtype::kind_from_safetensors(view.dtype());
        match kind {
            _ if shape != var.size() => wrong.push(problem(format!(
                "shape {shape:?}, expected {:?}",
                var.size()
            ))),
            None => wrong.push(problem(format!(
                "dtype {:?} is not floating-point",
                view.dtype()
            ))),
            Some(kind) => {
                let src = Tensor::f_from_data_size(view.data(), &shape, kind).map_err(
                    ModelError::torch(format!("{}: reading {name}", file.display())),
                )?;
                var.shallow_clone().copy_(&src);
                seen.insert(name.clone());
            }
        }
    }
    let mut missing: Vec<String> = vars
        .keys()
        .filter(|k| !seen.contains(*k))
        .cloned()
        .collect();
    if missing.is_empty() && unexpected.is_empty() && wrong.is_empty() {
        return Ok(());
    }
    missing.sort();
    Err(ModelError::Tensors {
        dir: dir.to_path_buf(),
        missing,
        unexpected,
        wrong,
    })
}
