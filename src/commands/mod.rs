//! One module per subcommand, plus the option parsing they share.

/// Returns a [`Usage`] error (exit code 2): a flag's value is wrong.
macro_rules! usage {
    ($($arg:tt)*) => {
        return Err($crate::commands::Usage(format!($($arg)*)).into())
    };
}

pub mod ablate;
pub mod analyze;
pub mod data;
pub mod decode_args;
pub mod demo;
pub mod eval;
pub mod generate;
pub mod init_model;
pub mod launch;
pub mod logprobs;
pub mod memory;
pub mod merge_lora;
pub mod sandbox;
pub mod sft;
pub mod summary;
pub mod train;

use anyhow::{Context, Result};
use couplet_model::{DeviceSpec, DeviceUnavailable, LoadedModel, Precision};
use couplet_trainer::{ConfigError, TrainError};

/// A usage error: a flag or config key the user gave is wrong or names what this machine
/// does not have. `couplet` exits with 2 for these (clap's code for bad arguments), 1 for
/// failures of the job itself.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// Whether `err` is a usage error: [`Usage`], a config error, or a missing device.
pub fn is_usage(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.is::<Usage>()
            || e.is::<ConfigError>()
            || e.is::<DeviceUnavailable>()
            || matches!(e.downcast_ref::<TrainError>(), Some(TrainError::Config(_)))
    })
}

/// Loads a model folder onto `device` in `precision`, with an error that names the folder.
/// Besides a Hugging Face folder, `path` may be a training checkpoint (`RUN/checkpoint-N`:
/// its `policy/`) or a run directory (its latest complete checkpoint's policy), so a run's
/// result is evaluated or sampled without digging.
pub fn load_model(
    path: &std::path::Path,
    device: DeviceSpec,
    precision: Precision,
) -> Result<LoadedModel> {
    let options = couplet_model::LoadOptions {
        device: device
            .resolve()
            .map_err(|e| Usage(format!("--device {e}")))?,
        kind: Some(precision.kind()),
    };
    if !path.exists() {
        usage!(
            "--model {}: no such model folder, checkpoint or run directory",
            path.display()
        );
    }
    let folder = model_folder(path);
    if folder != path {
        eprintln!("model: {}", folder.display());
    }
    LoadedModel::load(&folder, options)
        .with_context(|| format!("loading model {}", folder.display()))
}

/// [`load_model`], then the LoRA adapters of the PEFT folder `adapter` on top.
pub fn load_with_adapter(
    path: &std::path::Path,
    adapter: Option<&std::path::Path>,
    device: DeviceSpec,
    precision: Precision,
) -> Result<LoadedModel> {
    let mut loaded = load_model(path, device, precision)?;
    if let Some(dir) = adapter {
        let lora = couplet_model::load_adapter(&mut loaded.model, dir)
            .with_context(|| format!("loading LoRA adapters {}", dir.display()))?;
        eprintln!(
            "adapters: {} (rank {}, alpha {}, {} target modules)",
            dir.display(),
            lora.rank,
            lora.alpha,
            lora.target_modules.len()
        );
    }
    Ok(loaded)
}

/// The Hugging Face folder that `path` names: itself, a checkpoint's `policy/`, or the
/// policy of a run directory's newest complete checkpoint (the one `--resume` would take).
fn model_folder(path: &std::path::Path) -> std::path::PathBuf {
    use couplet_trainer::{latest_checkpoint, RunCheckpoint};
    let policy = RunCheckpoint {
        dir: path.to_path_buf(),
    }
    .policy();
    if path.join("config.json").is_file() {
        path.to_path_buf()
    } else if policy.join("config.json").is_file() {
        policy
    } else {
        latest_checkpoint(path)
            .map_or_else(|| path.to_path_buf(), |dir| RunCheckpoint { dir }.policy())
    }
}

pub fn devices() -> Result<()> {
    let cuda = tch::Cuda::is_available();
    println!("cuda available: {cuda}");
    println!("cuda devices: {}", tch::Cuda::device_count());
    println!("cudnn available: {}", tch::Cuda::cudnn_is_available());
    Ok(())
}
