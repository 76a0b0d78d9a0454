//! The "entropy sink" (DiffuCoder, section 4.1): on the first denoising step, with every
//! completion position masked, how confident is the model at each position? The paper
//! finds an L-shaped profile — high confidence right after the prompt — which pulls
//! confidence-ordered decoding towards the left.
//!
//! The profile is the model's own distribution (softmax of the raw logits, temperature 1,
//! no top-p), so it does not depend on decode settings; the first step is the decoders'
//! own first input (the prompt left-padded, then `max_new_tokens` mask tokens).

use couplet_model::{PromptBatch, TextTokenizer};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::canvas::Canvas;
use crate::worker::{PromptRows, RolloutConfig};
use crate::{Denoiser, RolloutError};

/// Confidence and entropy of the first step by completion position, one prompt per row.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FirstStepProfile {
    /// `[prompts][position]`: the largest token probability.
    pub confidence: Vec<Vec<f64>>,
    /// `[prompts][position]`: the entropy of the distribution, in nats.
    pub entropy: Vec<Vec<f64>>,
}

impl FirstStepProfile {
    /// The first step of decoding each of `prompts` (chat-formatted text) with `cfg`'s
    /// completion length, `cfg.generation_batch_size` prompts per forward.
    pub fn measure(
        model: &dyn Denoiser,
        tokenizer: &TextTokenizer,
        prompts: &[String],
        cfg: &RolloutConfig,
    ) -> Result<Self, RolloutError> {
        let one_each = RolloutConfig {
            group_size: 1,
            ..cfg.clone()
        };
        let rows = PromptRows::tokenize(tokenizer, prompts, &one_each)?.rows;
        let special = tokenizer.special();
        let k = cfg.decoder.max_new_tokens();
        let mut out = FirstStepProfile::default();
        for chunk in rows.chunks(cfg.generation_batch_size.max(1)) {
            let batch = PromptBatch::left_padded(chunk, special.pad, 0);
            let samples: Vec<u64> = (0..chunk.len() as u64).collect();
            let canvas = Canvas::new(&batch, &samples, special.mask, k, model.device())?;
            let masked = canvas.masked();
            let logits =
                tch::no_grad(|| model.score(&canvas.x, canvas.attention.as_ref(), &masked));
            let logp = logits.to_kind(Kind::Double).log_softmax(-1, Kind::Double);
            let confidence = logp.max_dim(-1, false).0.exp().view([-1, k]);
            let entropy =
                (-(logp.exp() * &logp).sum_dim_intlist(-1, false, Kind::Double)).view([-1, k]);
            let rows = |t: &Tensor| Vec::<Vec<f64>>::try_from(&t.to_device(tch::Device::Cpu));
            out.confidence
                .extend(rows(&confidence).map_err(RolloutError::torch("first-step confidence"))?);
            out.entropy
                .extend(rows(&entropy).map_err(RolloutError::torch("first-step entropy"))?);
        }
        Ok(out)
    }

    /// Mean over prompts, per position: (confidence, entropy).
    pub fn mean(&self) -> (Vec<f64>, Vec<f64>) {
        (column_mean(&self.confidence), column_mean(&self.entropy))
    }
}

/// Mean of each column over rows.
fn column_mean(rows: &[Vec<f64>]) -> Vec<f64> {
    let width = rows.first().map_or(0, Vec::len);
    (0..width)
        .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / rows.len() as f64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_mean_by_hand() {
        let rows = vec![vec![1.0, 0.0], vec![0.5, 1.0]];
        assert_eq!(column_mean(&rows), vec![0.75, 0.5]);
        assert!(column_mean(&[]).is_empty());
    }
}
