//! Data parallelism as one type: [`DataParallel`] wraps the c10d process group, and for a
//! single process every collective is the identity, so the training step reads the same for
//! 1 or N ranks (no `if let Some(group)` in the algorithm).
//!
//! Ranks hold the same weights (broadcast from rank 0 and checked by checksum at start),
//! roll out disjoint prompt groups, and sum gradients in flattened buckets before every
//! optimizer step; under ZeRO-1 each rank updates only the parameters it owns and
//! broadcasts them.

use std::path::Path;
use std::time::Duration;

use couplet_dist::{Backend, DistError, ProcessGroup, Rendezvous};
use couplet_model::DreamModel;
use serde::{de::DeserializeOwned, Serialize};
use tch::{Device, Kind, Tensor};

use super::TrainError;
use crate::config::{TrainConfig, ZeroStage};
use crate::optim::{AdamW, AdamWConfig, ParamState};

/// The ranks of a run (one, without a process group).
pub struct DataParallel {
    group: Option<ProcessGroup>,
    /// Under ZeRO-1/2: the rank that owns (updates) each optimizer parameter.
    owners: Option<Vec<usize>>,
    /// The ZeRO stage in effect.
    stage: ZeroStage,
}

fn dist(context: &'static str) -> impl FnOnce(DistError) -> TrainError {
    move |source| TrainError::Distributed { context, source }
}

impl DataParallel {
    /// One process.
    pub fn single() -> Self {
        DataParallel {
            group: None,
            owners: None,
            stage: ZeroStage::Replicated,
        }
    }

    /// Joins the group `distributed.backend` asks for (ranks from torchrun's environment
    /// variables), or stays single.
    pub fn join(config: &TrainConfig) -> Result<Self, TrainError> {
        let Some(backend) = config.distributed.backend.group_backend() else {
            return Ok(DataParallel::single());
        };
        let rv = Rendezvous::from_env()
            .map_err(dist("distributed"))?
            .ok_or_else(|| {
                TrainError::Setup(format!(
                    "distributed.backend = {:?} needs the ranks in the environment (WORLD_SIZE, RANK, MASTER_ADDR, MASTER_PORT): launch with `torchrun --no-python --nproc-per-node N couplet train ...` or `couplet launch --nproc N -- train ...`",
                    backend_name(backend)
                ))
            })?;
        let timeout = Duration::from_secs_f64(config.distributed.timeout_seconds);
        let group = ProcessGroup::new(backend, &rv, timeout).map_err(dist("distributed"))?;
        Ok(DataParallel {
            group: Some(group),
            owners: None,
            stage: ZeroStage::Replicated,
        })
    }

    /// This process's rank: rank 0 alone logs, evaluates and writes checkpoints.
    pub fn rank(&self) -> usize {
        self.group.as_ref().map_or(0, |g| g.rank)
    }

    /// The number of ranks.
    pub fn world(&self) -> usize {
        self.group.as_ref().map_or(1, |g| g.world_size)
    }

    /// The device this rank trains on: NCCL pins one GPU per rank, else `configured`.
    pub fn device(&self, configured: Device) -> Device {
        match &self.group {
            Some(g) if g.backend == Backend::Nccl => g.device(),
            _ => configured,
        }
    }

    /// Sums `values` over ranks (f64; Gloo carries CPU tensors, NCCL device ones).
    pub fn sum(&self, values: &[f64]) -> Result<Vec<f64>, TrainError> {
        let Some(g) = &self.group else {
            return Ok(values.to_vec());
        };
        let mut t = Tensor::from_slice(values).to_device(g.device());
        g.all_reduce_sum(&mut t).map_err(dist("all-reduce"))?;
        Vec::<f64>::try_from(t.to_device(Device::Cpu)).map_err(|source| TrainError::Torch {
            context: "all-reduce",
            source,
        })
    }

    /// Whether any rank says yes (every rank then takes the same branch).
    pub fn any(&self, local: bool) -> Result<bool, TrainError> {
        Ok(self.sum(&[f64::from(u8::from(local))])?[0] > 0.0)
    }

    /// Every rank's `mine`, in rank order (exchanged as JSON; a single process keeps its
    /// value untouched).
    pub fn gather<T: Serialize + DeserializeOwned>(&self, mine: T) -> Result<Vec<T>, TrainError> {
        let Some(g) = &self.group else {
            return Ok(vec![mine]);
        };
        let bytes = serde_json::to_vec(&mine).map_err(TrainError::Json)?;
        let parts = g.all_gather_bytes(&bytes).map_err(dist("gathering"))?;
        parts
            .iter()
            .map(|b| serde_json::from_slice(b).map_err(TrainError::Json))
            .collect()
    }

    /// Every rank learns whether every rank's `local` part succeeded: its own error, or an
    /// error naming `path` when another rank failed.
    pub fn all_ok(&self, local: Result<(), TrainError>, path: &Path) -> Result<(), TrainError> {
        if self.group.is_none() {
            return local;
        }
        let failed = self.any(local.is_err())?;
        match local {
            Err(e) => Err(e),
            Ok(()) if failed => Err(TrainError::Checkpoint {
                path: path.to_path_buf(),
                source: "another rank failed to write its part (see its error)".into(),
            }),
            Ok(()) => Ok(()),
        }
    }

    /// Rank 0's weights for everyone, then a checksum every rank must agree on.
    pub fn sync_weights(&self, model: &DreamModel) -> Result<(), TrainError> {
        let Some(g) = &self.group else {
            return Ok(());
        };
        let mut vars = sorted_variables(model);
        let checksum = tch::no_grad(|| -> Result<f64, TrainError> {
            let mut sum = 0.0;
            for (_, t) in vars.iter_mut() {
                g.broadcast(t, 0)
                    .map_err(dist("broadcasting initial weights"))?;
                sum += t
                    .to_kind(Kind::Double)
                    .abs()
                    .sum(Kind::Double)
                    .double_value(&[]);
            }
            Ok(sum)
        })?;
        let all = g
            .all_gather(&Tensor::from_slice(&[checksum]).to_device(g.device()))
            .map_err(dist("weight checksum"))?;
        let all =
            Vec::<f64>::try_from(all.view([-1]).to_device(Device::Cpu)).map_err(|source| {
                TrainError::Torch {
                    context: "weight checksum",
                    source,
                }
            })?;
        if all.iter().any(|c| *c != all[0]) {
            return Err(TrainError::Setup(format!(
                "ranks disagree on the initial weights after the broadcast (checksums {all:?})"
            )));
        }
        Ok(())
    }

    /// The optimizer of this rank for `params`: under ZeRO-1/2 (with a group) the
    /// parameters are split between the ranks and only this rank's state is allocated;
    /// otherwise every rank updates everything.
    pub fn optimizer(
        &mut self,
        params: Vec<(String, Tensor)>,
        config: AdamWConfig,
        stage: ZeroStage,
    ) -> AdamW {
        self.stage = stage;
        match (stage.shards_optimizer(), &self.group) {
            (true, Some(g)) => {
                let (optimizer, owners) = AdamW::sharded(params, config, g.rank, g.world_size);
                self.owners = Some(owners);
                optimizer
            }
            _ => AdamW::new(params, config),
        }
    }

    /// Sums every gradient over ranks in flattened buckets of about `bucket_mb` MiB,
    /// travelling in `dtype`. ZeRO 0/1: all-reduced into every rank's `.grad()`. ZeRO-2:
    /// each bucket's parameters are reduced into their owner, who keeps the sum in f32
    /// ([`ParamState::reduced_grad`]); the other ranks zero theirs, so no rank holds a
    /// full reduced f32 gradient.
    pub fn reduce_grads(
        &self,
        optimizer: &mut AdamW,
        bucket_mb: usize,
        dtype: Kind,
    ) -> Result<(), TrainError> {
        let Some(g) = &self.group else {
            return Ok(());
        };
        // Every rank must send the same layout: a parameter without a gradient here (unused
        // in this rank's batch) gets an explicit zero one.
        for p in &optimizer.params {
            if !p.param.grad().defined() {
                (p.param.sum(Kind::Float) * 0.0).backward();
            }
        }
        let limit = (bucket_mb << 20) as i64;
        match (&self.owners, self.stage.shards_gradients()) {
            (Some(owners), true) => {
                for bucket in owner_buckets(owners, &optimizer.params, limit) {
                    reduce_bucket(g, &mut optimizer.params, &bucket, dtype)?;
                }
            }
            _ => {
                let grads: Vec<Tensor> = optimizer.params.iter().map(|p| p.param.grad()).collect();
                for bucket in buckets(&grads, limit) {
                    all_reduce_bucket(g, bucket, dtype)?;
                }
            }
        }
        Ok(())
    }

    /// The global pre-clip gradient norm: local under ZeRO 0/1 (every rank holds every
    /// reduced gradient), a sum of the owners' squares under ZeRO-2.
    pub fn grad_norm(&self, optimizer: &AdamW) -> Result<f64, TrainError> {
        if self.group.is_some() && self.stage.shards_gradients() {
            let local = optimizer.grad_square_sum(true);
            return Ok(self.sum(&[local])?[0].sqrt());
        }
        Ok(optimizer.grad_norm())
    }

    /// Under ZeRO-1/2, each parameter was updated by its owner only: share the results
    /// (in the working dtype: bf16 under mixed precision).
    pub fn share_updates(&self, optimizer: &mut AdamW) -> Result<(), TrainError> {
        let (Some(g), Some(owners)) = (&self.group, &self.owners) else {
            return Ok(());
        };
        tch::no_grad(|| {
            for (p, &owner) in optimizer.params.iter_mut().zip(owners) {
                g.broadcast(&mut p.param, owner)
                    .map_err(dist("broadcasting updated parameters"))?;
            }
            Ok(())
        })
    }

    /// Every parameter's AdamW moments (and f32 masters, under mixed precision) as one
    /// process would hold them — gathered from their owners under ZeRO, one tensor at a
    /// time — on rank 0; empty elsewhere. Collective under ZeRO.
    pub fn full_moments(&self, optimizer: &AdamW) -> Result<Vec<(String, Tensor)>, TrainError> {
        let mixed = optimizer
            .params
            .iter()
            .any(|p| p.param.kind() != Kind::Float);
        let mut out = Vec::new();
        for (i, p) in optimizer.params.iter().enumerate() {
            let mut parts = vec![
                ("exp_avg", Some(&p.exp_avg)),
                ("exp_avg_sq", Some(&p.exp_avg_sq)),
            ];
            if mixed {
                parts.push(("master", p.master.as_ref()));
            }
            for (prefix, tensor) in parts {
                let full = self.owners_copy(p, i, tensor)?;
                if self.rank() == 0 {
                    out.push((format!("{prefix}/{}", p.name), full.to_device(Device::Cpu)));
                }
            }
        }
        Ok(out)
    }

    /// `tensor` of parameter `i` as its owner holds it (an f32 tensor of the parameter's
    /// shape; a master that does not exist — an f32 parameter — is the parameter itself).
    fn owners_copy(
        &self,
        p: &ParamState,
        i: usize,
        tensor: Option<&Tensor>,
    ) -> Result<Tensor, TrainError> {
        let local = || match tensor {
            Some(t) => t.shallow_clone(),
            None => p.param.detach().to_kind(Kind::Float),
        };
        match (&self.group, &self.owners) {
            (Some(g), Some(owners)) => {
                let mut t = if p.owned {
                    local()
                } else {
                    Tensor::zeros(p.param.size(), (Kind::Float, p.param.device()))
                };
                g.broadcast(&mut t, owners[i])
                    .map_err(dist("gathering optimizer state"))?;
                Ok(t)
            }
            _ => Ok(local()),
        }
    }
}

fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Gloo => "gloo",
        Backend::Nccl => "nccl",
    }
}

/// Every tensor of the model (base, then LoRA adapters), each in name order.
fn sorted_variables(model: &DreamModel) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = model.var_store().variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    if model.lora().is_some() {
        vars.extend(model.trainable_parameters());
    }
    vars
}

/// Consecutive runs of `grads` of at most `limit` bytes (f32) each (at least one tensor).
fn buckets(grads: &[Tensor], limit: i64) -> Vec<&[Tensor]> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < grads.len() {
        let (mut end, mut bytes) = (start, 0);
        while end < grads.len() && (end == start || bytes + grads[end].numel() as i64 * 4 <= limit)
        {
            bytes += grads[end].numel() as i64 * 4;
            end += 1;
        }
        out.push(&grads[start..end]);
        start = end;
    }
    out
}

/// Sums one bucket of gradients over ranks, flattened into one tensor of `dtype`.
fn all_reduce_bucket(g: &ProcessGroup, bucket: &[Tensor], dtype: Kind) -> Result<(), TrainError> {
    let flat: Vec<Tensor> = bucket.iter().map(|t| t.to_kind(dtype).view([-1])).collect();
    let mut flat = Tensor::cat(&flat, 0);
    g.all_reduce_sum(&mut flat)
        .map_err(dist("all-reducing gradients"))?;
    let mut offset = 0;
    tch::no_grad(|| {
        for grad in bucket {
            let n = grad.numel() as i64;
            let mut grad = grad.shallow_clone();
            grad.copy_(
                &flat
                    .narrow(0, offset, n)
                    .view(grad.size().as_slice())
                    .to_kind(grad.kind()),
            );
            offset += n;
        }
    });
    Ok(())
}

/// ZeRO-2's buckets: consecutive runs (in parameter order) of parameters with the same
/// owner, each at most `limit` bytes in f32 (at least one parameter): `(owner, indices)`.
fn owner_buckets(owners: &[usize], params: &[ParamState], limit: i64) -> Vec<(usize, Vec<usize>)> {
    let mut out: Vec<(usize, Vec<usize>, i64)> = Vec::new();
    for (i, p) in params.iter().enumerate() {
        let bytes = p.param.numel() as i64 * 4;
        match out.last_mut() {
            Some((owner, members, size)) if *owner == owners[i] && *size + bytes <= limit => {
                members.push(i);
                *size += bytes;
            }
            _ => out.push((owners[i], vec![i], bytes)),
        }
    }
    out.into_iter().map(|(o, m, _)| (o, m)).collect()
}

/// Reduces one owner's bucket into the owner, who keeps each parameter's sum in f32 as its
/// reduced gradient; every rank then zeroes its local gradients of the bucket.
fn reduce_bucket(
    g: &ProcessGroup,
    params: &mut [ParamState],
    (owner, members): &(usize, Vec<usize>),
    dtype: Kind,
) -> Result<(), TrainError> {
    let flat: Vec<Tensor> = members
        .iter()
        .map(|&i| params[i].param.grad().to_kind(dtype).view([-1]))
        .collect();
    let mut flat = Tensor::cat(&flat, 0);
    g.reduce_sum(&mut flat, *owner)
        .map_err(dist("reducing gradients"))?;
    let mut offset = 0;
    tch::no_grad(|| {
        for &i in members {
            let p = &mut params[i];
            let n = p.param.numel() as i64;
            if p.owned {
                let sum = flat.narrow(0, offset, n).view(p.param.size().as_slice());
                p.reduced_grad = Some(sum.to_kind(Kind::Float));
            }
            couplet_dist::free_grad(&p.param);
            offset += n;
        }
    });
    Ok(())
}
