//! The rollout stage: sample completions from the current policy with diffusion decoding.
//!
//! Decoders take a [`couplet_model::DreamModel`] and left-padded prompts and return the
//! sequences plus, for every completion position, the step that revealed it (the raw
//! material of the AR-ness telemetry, SPEC 2.4). They only ever ask the model for logits at
//! still-masked positions. All randomness is keyed by (seed, sample index, step, position)
//! through [`couplet_model::random`], so a rollout is reproducible.
//!
//! Not for: scoring completions (`reward`) or likelihoods for training (`trainer`).
#![deny(missing_docs)]

mod canvas;
pub mod denoiser;
pub mod dream_decoder;
pub mod fast;
pub mod llada_decoder;
pub mod order;
pub mod progress;
pub mod sampling;
pub mod settings;
pub mod sink;
pub mod worker;

pub use canvas::Decoded;
pub use denoiser::Denoiser;
pub use dream_decoder::{dream_generate, DreamAlg, DreamDecodeConfig};
pub use fast::{CacheMode, CachePolicy, DecodeStats, FastDecoding};
pub use llada_decoder::{block_generate, BlockDecodeConfig, Remasking};
pub use order::ArNess;
pub use progress::progress_bar;
pub use sampling::{Confidence, Proposal, SamplingParams};
pub use settings::{DecoderKind, DecoderSettings, DREAM_EPS};
pub use sink::FirstStepProfile;
pub use worker::{generate_rollout, DecoderConfig, Rollout, RolloutConfig};

/// Why decoding could not run.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// A decoding setting out of range.
    #[error("invalid decoding option `{option}`: {message}")]
    Invalid {
        /// The option, e.g. `top_p`.
        option: String,
        /// The rule it breaks.
        message: String,
    },
    /// A libtorch operation failed.
    #[error("{context}: {error}")]
    Torch {
        /// What was being done.
        context: String,
        /// libtorch's error.
        error: tch::TchError,
    },
    /// The tokenizer or model.
    #[error(transparent)]
    Model(#[from] couplet_model::ModelError),
}

impl RolloutError {
    pub(crate) fn torch(context: &str) -> impl FnOnce(tch::TchError) -> Self + '_ {
        move |error| RolloutError::Torch {
            context: context.to_string(),
            error,
        }
    }
}

/// Checks temperature, top-p and top-k ranges.
pub fn validate_sampling(s: &SamplingParams) -> Result<(), RolloutError> {
    let bad = |option: &str, message: String| {
        Err(RolloutError::Invalid {
            option: option.into(),
            message,
        })
    };
    if !(s.temperature >= 0.0 && s.temperature.is_finite()) {
        return bad("temperature", format!("must be ≥ 0, got {}", s.temperature));
    }
    if let Some(p) = s.top_p {
        if !(p > 0.0 && p <= 1.0) {
            return bad("top_p", format!("must be in (0, 1], got {p}"));
        }
    }
    if let Some(k) = s.top_k {
        if k < 1 {
            return bad("top_k", format!("must be at least 1, got {k}"));
        }
    }
    Ok(())
}
