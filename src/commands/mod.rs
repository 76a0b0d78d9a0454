//! One module per subcommand, plus the option parsing they share.

pub mod ablate;
pub mod data;
pub mod decode_args;
pub mod demo;
pub mod eval;
pub mod generate;
pub mod init_model;
pub mod launch;
pub mod logprobs;
pub mod sandbox;
pub mod sft;
pub mod train;

use anyhow::{bail, Result};
use tch::{Device, Kind};

/// `--device`: cpu, cuda, cuda:N, or auto (the first GPU when CUDA is available).
pub fn parse_device(name: &str) -> Result<Device> {
    Ok(match name {
        "cpu" => Device::Cpu,
        "auto" => Device::cuda_if_available(),
        "cuda" => Device::Cuda(0),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => Device::Cuda(i),
            _ => bail!("--device: expected cpu, cuda, cuda:N or auto, got {other:?}"),
        },
    })
}

/// `--dtype`: f32 or bf16 (bf16 only makes sense on GPUs).
pub fn parse_kind(name: &str) -> Result<Kind> {
    match name {
        "f32" | "float32" => Ok(Kind::Float),
        "bf16" | "bfloat16" => Ok(Kind::BFloat16),
        other => bail!("--dtype: expected f32 or bf16, got {other:?}"),
    }
}

/// Loads a model folder onto `device` (a `--device` string) in `dtype` (a `--dtype` string),
/// with an error that names the folder. Besides a Hugging Face folder, `path` may be a
/// training checkpoint (`RUN/checkpoint-N`: its `policy/`) or a run directory (its latest
/// complete checkpoint's policy), so a run's result is evaluated or sampled without digging.
pub fn load_checkpoint(
    path: &std::path::Path,
    device: &str,
    dtype: &str,
) -> Result<couplet_model::Checkpoint> {
    use anyhow::Context;
    let options = couplet_model::LoadOptions {
        device: parse_device(device)?,
        kind: Some(parse_kind(dtype)?),
    };
    let folder = model_folder(path);
    if folder != path {
        eprintln!("model: {}", folder.display());
    }
    couplet_model::Checkpoint::load(&folder, options)
        .with_context(|| format!("loading model {}", folder.display()))
}

/// The Hugging Face folder that `path` names: itself, a checkpoint's `policy/`, or the
/// policy of a run directory's newest complete checkpoint (the one `--resume` would take).
fn model_folder(path: &std::path::Path) -> std::path::PathBuf {
    let policy = path.join("policy");
    if path.join("config.json").is_file() {
        path.to_path_buf()
    } else if policy.join("config.json").is_file() {
        policy
    } else {
        couplet_trainer::latest_checkpoint(path).map_or_else(
            || path.to_path_buf(),
            |checkpoint| checkpoint.join("policy"),
        )
    }
}

pub fn devices() -> Result<()> {
    let cuda = tch::Cuda::is_available();
    println!("cuda available: {cuda}");
    println!("cuda devices: {}", tch::Cuda::device_count());
    println!("cudnn available: {}", tch::Cuda::cudnn_is_available());
    Ok(())
}
