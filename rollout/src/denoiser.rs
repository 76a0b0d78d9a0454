//! What a decoder needs from a model: logits for the tokens at chosen positions, with or
//! without a key/value cache.
//!
//! [`DreamModel`] implements it by running the trunk and projecting only the selected rows
//! (with its shift convention); tests implement it with fixed logits so that the exact
//! reveal order of each algorithm can be computed by hand.

use couplet_model::{DreamModel, KvCache};
use tch::{Device, Tensor};

/// What a decoder needs of a model: logits at selected positions (so decoders can be tested on stubs).
pub trait Denoiser {
    /// f32 logits `[N, V]` scoring the tokens at the true entries of `select [B, L]`, in
    /// row-major order, for the input `x [B, L]` with its `attention_mask [B, L]`.
    fn score(&self, x: &Tensor, attention_mask: Option<&Tensor>, select: &Tensor) -> Tensor;
    /// Where inputs must live.
    fn device(&self) -> Device;

    /// [`Self::score`] on a full forward that also keeps what [`Self::score_cached`]
    /// reuses. A model without keys and values (a stub) keeps nothing.
    fn score_refresh(
        &self,
        x: &Tensor,
        attention_mask: Option<&Tensor>,
        select: &Tensor,
    ) -> (Tensor, KvCache) {
        (self.score(x, attention_mask, select), KvCache::empty())
    }

    /// [`Self::score`] recomputing only the positions in `compute [B, L]` (and the rows
    /// that score `select`), everything else read from `cache`. A stub scores exactly.
    fn score_cached(
        &self,
        x: &Tensor,
        attention_mask: Option<&Tensor>,
        compute: &Tensor,
        select: &Tensor,
        cache: &mut KvCache,
    ) -> Tensor {
        let _ = (compute, cache);
        self.score(x, attention_mask, select)
    }
}

impl Denoiser for DreamModel {
    fn score(&self, x: &Tensor, attention_mask: Option<&Tensor>, select: &Tensor) -> Tensor {
        self.forward(x, attention_mask, Some(select))
    }

    fn device(&self) -> Device {
        DreamModel::device(self)
    }

    fn score_refresh(
        &self,
        x: &Tensor,
        attention_mask: Option<&Tensor>,
        select: &Tensor,
    ) -> (Tensor, KvCache) {
        self.forward_refresh(x, attention_mask, select)
    }

    fn score_cached(
        &self,
        x: &Tensor,
        _attention_mask: Option<&Tensor>,
        compute: &Tensor,
        select: &Tensor,
        cache: &mut KvCache,
    ) -> Tensor {
        self.forward_cached(x, compute, select, cache)
    }
}
