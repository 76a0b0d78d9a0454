//! A decoder as users describe it (`[rollout]` keys, `generate`/`eval` flags): every knob
//! in one flat struct, and the one place that turns it into a [`DecoderConfig`], so the
//! config file and the command line cannot drift apart (defaults such as Dream's `eps`
//! live here once).

use serde::{Deserialize, Serialize};

use crate::{
    BlockDecodeConfig, DecoderConfig, DreamAlg, DreamDecodeConfig, FastDecoding, Remasking,
    RolloutError, SamplingParams,
};

/// Which decoder turns masks into tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecoderKind {
    /// Dream's global-order decoder (DiffuCoder's rollouts).
    #[default]
    Dream,
    /// LLaDA / d1 semi-autoregressive block decoder.
    Block,
}

couplet_model::from_str_by_name!(DecoderKind);

/// Lower bound of Dream's time grid `linspace(1, eps, steps + 1)` (Dream's default).
pub const DREAM_EPS: f64 = 1e-3;

/// Every decoder knob; the ones the chosen decoder does not use are ignored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecoderSettings {
    /// Which decoder.
    pub kind: DecoderKind,
    /// Diffusion steps (an upper bound of forwards per chunk).
    pub steps: i64,
    /// Completion canvas length.
    pub max_new_tokens: i64,
    /// Token sampling (temperature, top-p, top-k); the block decoder uses the temperature.
    pub sampling: SamplingParams,
    /// Dream: which positions are revealed at a step.
    pub alg: DreamAlg,
    /// Dream: temperature of the position choice (0: the most confident).
    pub alg_temp: f64,
    /// Block: block size (must divide `max_new_tokens`).
    pub block_length: Option<i64>,
    /// Block: how the positions to reveal are chosen.
    pub remasking: Remasking,
    /// Threshold reveals and key/value caching.
    pub fast: FastDecoding,
}

impl DecoderSettings {
    /// The decoder these settings describe, validated; errors name the option
    /// (`steps`, `block_length`, `top_p`, ...).
    pub fn build(&self) -> Result<DecoderConfig, RolloutError> {
        crate::validate_sampling(&self.sampling)?;
        let decoder = match self.kind {
            DecoderKind::Dream => DecoderConfig::Dream(DreamDecodeConfig {
                steps: self.steps,
                max_new_tokens: self.max_new_tokens,
                alg: self.alg,
                alg_temp: self.alg_temp,
                sampling: self.sampling,
                eps: DREAM_EPS,
                fast: self.fast,
            }),
            DecoderKind::Block => {
                let block_length = self.block_length.ok_or_else(|| RolloutError::Invalid {
                    option: "block_length".into(),
                    message: "the block decoder needs a positive block_length".into(),
                })?;
                DecoderConfig::Block(BlockDecodeConfig {
                    steps: self.steps,
                    max_new_tokens: self.max_new_tokens,
                    block_length,
                    temperature: self.sampling.temperature,
                    remasking: self.remasking,
                    fast: self.fast,
                })
            }
        };
        decoder.validate()?;
        Ok(decoder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(kind: DecoderKind) -> DecoderSettings {
        DecoderSettings {
            kind,
            steps: 8,
            max_new_tokens: 8,
            sampling: SamplingParams {
                temperature: 0.5,
                top_p: None,
                top_k: None,
            },
            alg: DreamAlg::Entropy,
            alg_temp: 0.0,
            block_length: Some(4),
            remasking: Remasking::Random,
            fast: FastDecoding::EXACT,
        }
    }

    #[test]
    fn each_kind_builds_its_decoder() {
        match settings(DecoderKind::Dream).build().unwrap() {
            DecoderConfig::Dream(c) => assert_eq!((c.alg, c.eps), (DreamAlg::Entropy, DREAM_EPS)),
            other => panic!("{other:?}"),
        }
        match settings(DecoderKind::Block).build().unwrap() {
            DecoderConfig::Block(c) => assert_eq!((c.block_length, c.temperature), (4, 0.5)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_name_the_option() {
        let mut s = settings(DecoderKind::Block);
        s.block_length = None;
        assert!(s
            .build()
            .unwrap_err()
            .to_string()
            .contains("`block_length`"));
        let mut s = settings(DecoderKind::Dream);
        s.sampling.top_p = Some(1.5);
        assert!(s.build().unwrap_err().to_string().contains("`top_p`"));
        let mut s = settings(DecoderKind::Dream);
        s.fast.cache.mode = crate::CacheMode::Dual;
        assert!(s.build().unwrap_err().to_string().contains("`cache`"));
        let mut s = settings(DecoderKind::Block);
        s.fast.cache.refresh_every = Some(0);
        assert!(s
            .build()
            .unwrap_err()
            .to_string()
            .contains("`refresh_every`"));
        s.fast.cache.refresh_every = None;
        s.fast.threshold = Some(f64::NAN);
        assert!(s.build().unwrap_err().to_string().contains("`threshold`"));
    }
}
