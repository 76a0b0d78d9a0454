//! The reference model of the KL term: a frozen copy of the initial policy, optionally
//! pulled towards the policy every N optimizer steps (`ref ← α·policy + (1 − α)·ref`),
//! kept on its own device and dtype — or, under LoRA, the policy's own frozen base with
//! the adapters switched off (no second copy). With β = 0 one is held only for the
//! KL-to-start telemetry (`logging.kl_to_start`); it then never enters the loss.

use couplet_model::{DreamModel, Init};
use tch::{Device, Kind};

/// Where the KL term's reference log-probs come from.
pub enum Reference {
    /// A frozen copy of the starting policy.
    Copy(Box<ReferenceModel>),
    /// The policy with its LoRA adapters switched off: the frozen base.
    BaseWithoutAdapters,
}

impl Reference {
    /// The copy, when there is one.
    pub fn copy_mut(&mut self) -> Option<&mut ReferenceModel> {
        match self {
            Reference::Copy(r) => Some(r),
            Reference::BaseWithoutAdapters => None,
        }
    }

    /// The copy, when there is one.
    pub fn copy(&self) -> Option<&ReferenceModel> {
        match self {
            Reference::Copy(r) => Some(r),
            Reference::BaseWithoutAdapters => None,
        }
    }
}

/// The frozen reference model of the KL term, optionally synced towards the policy.
pub struct ReferenceModel {
    /// The copy.
    pub model: DreamModel,
    /// Sync every this many optimizer steps (`None`: never).
    pub sync_every: Option<u64>,
    /// α of the sync: reference ← α · policy + (1 − α) · reference.
    pub mixup_alpha: f64,
    /// Syncs so far (a synced reference is saved with checkpoints).
    pub syncs: u64,
}

impl ReferenceModel {
    /// A frozen copy of `policy` on `device` in `kind`.
    pub fn from_policy(
        policy: &DreamModel,
        device: Device,
        kind: Kind,
        sync_every: Option<u64>,
        mixup_alpha: f64,
    ) -> Self {
        let mut model = DreamModel::new(policy.config(), device, kind, Init::Zeros);
        let _guard = tch::no_grad_guard();
        let src = policy.var_store().variables();
        for (name, mut dst) in model.var_store().variables() {
            if let Some(s) = src.get(&name) {
                dst.copy_(&s.to_device(device).to_kind(kind));
            }
        }
        model.var_store_mut().freeze();
        ReferenceModel {
            model,
            sync_every,
            mixup_alpha,
            syncs: 0,
        }
    }

    /// Applies the mixup sync when `optimizer_step` is a multiple of `sync_every`.
    /// Returns whether it synced.
    pub fn maybe_sync(&mut self, policy: &DreamModel, optimizer_step: u64) -> bool {
        let Some(every) = self.sync_every.filter(|&e| e > 0) else {
            return false;
        };
        if optimizer_step == 0 || optimizer_step % every != 0 {
            return false;
        }
        let _guard = tch::no_grad_guard();
        let src = policy.var_store().variables();
        let a = self.mixup_alpha;
        for (name, mut dst) in self.model.var_store().variables() {
            if let Some(s) = src.get(&name) {
                let mixed = s.to_device(dst.device()).to_kind(Kind::Float) * a
                    + dst.to_kind(Kind::Float) * (1.0 - a);
                dst.copy_(&mixed.to_kind(dst.kind()));
            }
        }
        self.syncs += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use couplet_model::Preset;

    #[test]
    fn copy_is_frozen_and_sync_mixes() {
        let policy = couplet_model::random::with_torch_seed(0, || {
            DreamModel::new(
                &Preset::Tiny.config(64),
                Device::Cpu,
                Kind::Float,
                Init::Random,
            )
        });
        let mut reference =
            ReferenceModel::from_policy(&policy, Device::Cpu, Kind::Float, Some(2), 0.6);
        let name = "model.norm.weight";
        let r = reference.model.var_store().variables()[name].shallow_clone();
        assert!(!r.requires_grad());
        assert_eq!(
            (&r - &policy.var_store().variables()[name])
                .abs()
                .max()
                .double_value(&[]),
            0.0
        );
        // Move the policy, then sync at step 2 (not at 1).
        tch::no_grad(|| {
            let mut p = policy.var_store().variables()[name].shallow_clone();
            let _ = p.fill_(2.0);
        });
        assert!(!reference.maybe_sync(&policy, 1));
        assert!(reference.maybe_sync(&policy, 2));
        // ref = 0.6 · 2 + 0.4 · 1 = 1.6
        assert!((r.double_value(&[0]) - 1.6).abs() < 1e-6);
    }
}
