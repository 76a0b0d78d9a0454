//! What a decoder needs from a model: logits for the tokens at chosen positions.
//!
//! [`DreamModel`] implements it by running the trunk and projecting only the selected rows
//! (with its shift convention); tests implement it with fixed logits so that the exact
//! reveal order of each algorithm can be computed by hand.

use couplet_model::DreamModel;
use tch::{Device, Tensor};

/// What a decoder needs of a model: logits at selected positions (so decoders can be tested on stubs).
pub trait Denoiser {
    /// f32 logits `[N, V]` scoring the tokens at the true entries of `select [B, L]`, in
    /// row-major order, for the input `x [B, L]` with its `attention_mask [B, L]`.
    fn score(&self, x: &Tensor, attention_mask: Option<&Tensor>, select: &Tensor) -> Tensor;
    /// Where inputs must live.
    fn device(&self) -> Device;
}

impl Denoiser for DreamModel {
    fn score(&self, x: &Tensor, attention_mask: Option<&Tensor>, select: &Tensor) -> Tensor {
        self.forward(x, attention_mask, Some(select))
    }

    fn device(&self) -> Device {
        DreamModel::device(self)
    }
}
