//! Run checkpoints: `RUN/checkpoint-<step>/`, written atomically (a temporary folder,
//! fsync, rename; `COMPLETE` last), the newest named in `RUN/latest`, the oldest pruned
//! beyond `save_total_limit`. [`RunCheckpoint`] owns the layout:
//!
//! ```text
//! checkpoint-<step>/
//!   policy/                      the policy as a Hugging Face folder (full fine-tuning)
//!   adapter/                     LoRA runs instead: the adapters in PEFT's layout
//!   optimizer.safetensors        AdamW moments (exp_avg/<name>, exp_avg_sq/<name>) and,
//!                                under bf16 mixed precision, f32 masters (master/<name>)
//!   trainer_state.json           the Manifest
//!   round_buffer.safetensors     mid-round only: rank 0's rollout buffer
//!   round_buffer-rank<r>.safetensors   … and rank r's
//!   round_metrics.json           mid-round only: the round's statistics
//!   reference/                   a synced reference model (when it has synced)
//!   COMPLETE
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use couplet_model::{save_model, SaveOptions};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use super::round::RoundBuffer;
use super::{TrainError, Trainer, TrainerState};
use crate::optim::AdamW;
use crate::reference::ReferenceModel;

/// The manifest of a run checkpoint (`trainer_state.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Ranks that wrote it (a resume must use as many: buffers and shards are per rank).
    pub world_size: usize,
    /// AdamW's step counter (bias correction).
    pub optimizer_step: u64,
    /// Step, iteration and history of the run.
    pub trainer: TrainerState,
    /// The resolved config of the run, as TOML.
    pub config: String,
}

/// The folder of one run checkpoint and the files in it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunCheckpoint {
    /// `RUN/checkpoint-<step>`.
    pub dir: PathBuf,
}

impl RunCheckpoint {
    /// The checkpoint of step `step` in `run_dir`.
    pub fn of_step(run_dir: &Path, step: u64) -> Self {
        RunCheckpoint {
            dir: run_dir.join(format!("checkpoint-{step}")),
        }
    }

    /// `dir` when it holds a run checkpoint's manifest.
    pub fn at(dir: &Path) -> Option<Self> {
        dir.join("trainer_state.json")
            .is_file()
            .then(|| RunCheckpoint {
                dir: dir.to_path_buf(),
            })
    }

    /// The policy's Hugging Face folder (full fine-tuning).
    pub fn policy(&self) -> PathBuf {
        self.dir.join("policy")
    }

    /// The policy's LoRA adapters in PEFT's layout (LoRA runs, instead of `policy/`).
    pub fn adapter(&self) -> PathBuf {
        self.dir.join("adapter")
    }

    fn manifest_path(&self) -> PathBuf {
        self.dir.join("trainer_state.json")
    }

    fn optimizer(&self) -> PathBuf {
        self.dir.join("optimizer.safetensors")
    }

    fn round_buffer(&self, rank: usize) -> PathBuf {
        match rank {
            0 => self.dir.join("round_buffer.safetensors"),
            r => self.dir.join(format!("round_buffer-rank{r}.safetensors")),
        }
    }

    fn round_metrics(&self) -> PathBuf {
        self.dir.join("round_metrics.json")
    }

    fn reference(&self) -> PathBuf {
        self.dir.join("reference")
    }

    fn complete_marker(&self) -> PathBuf {
        self.dir.join("COMPLETE")
    }

    /// The error of a failed read or write of this checkpoint.
    fn error(&self, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> TrainError {
        TrainError::Checkpoint {
            path: self.dir.clone(),
            source: source.into(),
        }
    }

    /// Reads the manifest; the error names the file.
    pub fn manifest(&self) -> Result<Manifest, TrainError> {
        let path = self.manifest_path();
        let text = std::fs::read_to_string(&path).map_err(|e| self.error(e))?;
        serde_json::from_str(&text).map_err(|e| self.error(format!("{}: {e}", path.display())))
    }
}

/// Steps of the complete checkpoints in `run_dir` (half-written ones lack `COMPLETE`).
pub fn complete_checkpoints(run_dir: &Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("checkpoint-")?.parse::<u64>().ok()?;
            e.path().join("COMPLETE").exists().then_some(step)
        })
        .collect()
}

/// The newest complete checkpoint of a run directory, warning about incomplete ones.
pub fn latest_checkpoint(run_dir: &Path) -> Option<PathBuf> {
    if let Ok(entries) = std::fs::read_dir(run_dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if (name.starts_with("checkpoint-") && !e.path().join("COMPLETE").exists())
                || name.starts_with(".tmp-checkpoint-")
            {
                eprintln!(
                    "warning: ignoring incomplete checkpoint {}",
                    e.path().display()
                );
            }
        }
    }
    complete_checkpoints(run_dir)
        .into_iter()
        .max()
        .map(|s| RunCheckpoint::of_step(run_dir, s).dir)
}

/// Removes the oldest complete checkpoints beyond `keep` (never the newest).
fn prune(run_dir: &Path, keep: usize) {
    let mut steps = complete_checkpoints(run_dir);
    steps.sort();
    while steps.len() > keep.max(1) {
        let step = steps.remove(0);
        let _ = std::fs::remove_dir_all(RunCheckpoint::of_step(run_dir, step).dir);
    }
}

impl Trainer {
    /// Writes `run_dir/checkpoint-<step>` atomically, updates `latest`, and prunes beyond
    /// `save_total_limit`.
    ///
    /// With several ranks this is collective: rank 0 writes the checkpoint (gathering
    /// ZeRO-1 optimizer shards first), every other rank adds only its part of a mid-round
    /// rollout buffer, and all ranks return the same result.
    pub fn save_checkpoint(&self) -> Result<PathBuf, TrainError> {
        let rank = self.parallel.rank();
        let moments = self.parallel.full_moments(&self.optimizer)?;
        let run = &self.config.checkpointing.run_dir;
        let done = RunCheckpoint::of_step(run, self.state.step);
        let tmp = RunCheckpoint {
            dir: run.join(format!(".tmp-checkpoint-{}", self.state.step)),
        };
        let prepared = if rank == 0 {
            let _ = std::fs::remove_dir_all(&tmp.dir);
            std::fs::create_dir_all(&tmp.dir).map_err(|e| tmp.error(e))
        } else {
            Ok(())
        };
        self.parallel.all_ok(prepared, &tmp.dir)?;
        let shard = match (&self.buffer, rank) {
            (Some(buffer), r) if r > 0 => {
                Tensor::write_safetensors(&buffer.tensors(), tmp.round_buffer(r))
                    .map_err(|e| tmp.error(e))
            }
            _ => Ok(()),
        };
        if let Err(e) = self.parallel.all_ok(shard, &tmp.dir) {
            if rank == 0 {
                let _ = std::fs::remove_dir_all(&tmp.dir);
            }
            return Err(e);
        }
        if rank != 0 {
            self.parallel.all_ok(Ok(()), &done.dir)?;
            return Ok(done.dir);
        }
        let result = self.write_checkpoint(&tmp, &moments).and_then(|()| {
            let _ = std::fs::remove_dir_all(&done.dir);
            std::fs::rename(&tmp.dir, &done.dir).map_err(|e| done.error(e))
        });
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&tmp.dir);
        }
        let result = result.and_then(|()| {
            let latest = format!("checkpoint-{}\n", self.state.step);
            std::fs::write(run.join("latest"), latest).map_err(|source| TrainError::Checkpoint {
                path: run.clone(),
                source: source.into(),
            })
        });
        if result.is_ok() {
            prune(run, self.config.checkpointing.save_total_limit);
        }
        self.parallel.all_ok(result, &done.dir)?;
        Ok(done.dir)
    }

    /// Rank 0's files of a checkpoint, into the (temporary) folder `to`; `COMPLETE` last.
    fn write_checkpoint(
        &self,
        to: &RunCheckpoint,
        moments: &[(String, Tensor)],
    ) -> Result<(), TrainError> {
        let assets = SaveOptions {
            assets_from: Some(self.policy.dir.clone()),
            ..Default::default()
        };
        if self.policy.model.lora().is_some() {
            let base = Some(self.config.model.path.as_path());
            couplet_model::save_adapter(&self.policy.model, &to.adapter(), base)
                .map_err(|e| to.error(e))?;
        } else {
            save_model(&self.policy.model, &to.policy(), &assets).map_err(|e| to.error(e))?;
        }
        Tensor::write_safetensors(moments, to.optimizer()).map_err(|e| to.error(e))?;
        if let Some(buffer) = &self.buffer {
            Tensor::write_safetensors(&buffer.tensors(), to.round_buffer(0))
                .map_err(|e| to.error(e))?;
            let metrics = serde_json::to_string(&buffer.metrics).map_err(|e| to.error(e))?;
            std::fs::write(to.round_metrics(), metrics).map_err(|e| to.error(e))?;
        }
        let synced = self.reference.as_ref().and_then(|r| r.copy());
        if let Some(reference) = synced.filter(|r| r.syncs > 0) {
            save_model(&reference.model, &to.reference(), &SaveOptions::default())
                .map_err(|e| to.error(e))?;
        }
        let manifest = Manifest {
            world_size: self.parallel.world(),
            optimizer_step: self.optimizer.step,
            trainer: self.state.clone(),
            config: self.config.to_toml(),
        };
        let manifest = serde_json::to_string_pretty(&manifest).map_err(|e| to.error(e))?;
        std::fs::write(to.manifest_path(), manifest).map_err(|e| to.error(e))?;
        std::fs::write(to.complete_marker(), b"ok").map_err(|e| to.error(e))?;
        if let Ok(dir) = std::fs::File::open(&to.dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

/// What a checkpoint restores besides the weights (loaded with the policy).
pub struct Restored {
    /// The trainer's state at the checkpoint.
    pub state: TrainerState,
    /// This rank's rollout buffer, when saved mid-round.
    pub buffer: Option<RoundBuffer>,
}

impl RunCheckpoint {
    /// Restores the optimizer (this rank's owned moments), a synced reference, and the
    /// state and mid-round buffer of rank `rank` of `world`.
    pub fn restore(
        &self,
        optimizer: &mut AdamW,
        reference: Option<&mut ReferenceModel>,
        (rank, world): (usize, usize),
        mu: usize,
        device: Device,
    ) -> Result<Restored, TrainError> {
        let manifest = self.manifest()?;
        if manifest.world_size != world {
            return Err(self.error(format!(
                "written by {} rank(s), resumed with {world}: resume with the same world size (the rollout buffer and data shards are per rank)",
                manifest.world_size
            )));
        }
        optimizer.step = manifest.optimizer_step;
        self.restore_moments(optimizer, device)?;
        if let Some(reference) = reference {
            if self.reference().exists() {
                couplet_model::hf_folder::load_weights_into(&reference.model, &self.reference())
                    .map_err(|e| self.error(e))?;
            }
        }
        Ok(Restored {
            state: manifest.trainer,
            buffer: self.restore_buffer(rank, mu, device)?,
        })
    }

    fn restore_moments(&self, optimizer: &mut AdamW, device: Device) -> Result<(), TrainError> {
        let moments: HashMap<String, Tensor> = Tensor::read_safetensors(self.optimizer())
            .map_err(|e| self.error(e))?
            .into_iter()
            .collect();
        for p in optimizer.params.iter_mut().filter(|p| p.owned) {
            let a = moments.get(&format!("exp_avg/{}", p.name));
            let b = moments.get(&format!("exp_avg_sq/{}", p.name));
            let (Some(a), Some(b)) = (a, b) else {
                return Err(self.error(format!(
                    "optimizer.safetensors has no moments for {}",
                    p.name
                )));
            };
            let saved_master = moments.get(&format!("master/{}", p.name));
            for (what, t) in [
                ("exp_avg", Some(a)),
                ("exp_avg_sq", Some(b)),
                ("master", saved_master),
            ] {
                if let Some(t) = t.filter(|t| t.size() != p.param.size()) {
                    return Err(self.error(format!(
                        "optimizer.safetensors: {what}/{} has shape {:?}, the parameter {:?}",
                        p.name,
                        t.size(),
                        p.param.size()
                    )));
                }
            }
            p.exp_avg = a.to_device(device);
            p.exp_avg_sq = b.to_device(device);
            // Mixed precision: the f32 masters, not the bf16 weights they round to. A
            // checkpoint of an f32 run has none: its weights are the masters.
            if let (Some(master), Some(saved)) = (p.master.as_mut(), saved_master) {
                tch::no_grad(|| master.copy_(saved));
            }
        }
        Ok(())
    }

    fn restore_buffer(
        &self,
        rank: usize,
        mu: usize,
        device: Device,
    ) -> Result<Option<RoundBuffer>, TrainError> {
        let file = self.round_buffer(rank);
        if !file.exists() {
            return Ok(None);
        }
        let tensors: HashMap<String, Tensor> = Tensor::read_safetensors(&file)
            .map_err(|e| self.error(e))?
            .into_iter()
            .collect();
        let metrics = std::fs::read_to_string(self.round_metrics())
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        RoundBuffer::from_tensors(tensors, mu, metrics, device)
            .map(Some)
            .map_err(|e| self.error(e))
    }
}
