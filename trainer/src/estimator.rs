//! Token-likelihood estimators for masked-diffusion GRPO (SPEC section 5).
//!
//! Every estimator scores each completion token j of a sequence by log-probabilities
//! `lp(v)[b, j] = log softmax(shifted logits of version v)[b, P + j, token]` of one or
//! more *versions* of the input, in which some tokens are replaced by [MASK]:
//!
//! * `coupled` (DiffuCoder): v0 masks the whole completion; each of λ pairs draws
//!   `t ~ U(0.2, 0.8)` and masks the completion tokens with `u < t` in one version and the
//!   complement in the other, so every token is scored once partially masked:
//!   `lp_j = (lp(v0)_j + Σ_i [j ∈ M_i] lp(v1_i)_j / t_i + [j ∉ M_i] lp(v2_i)_j / (1 − t_i)) / (λ + 1)`
//!   (without v0: divided by λ);
//! * `d1`: one version, whole completion masked and each real prompt token masked with
//!   probability `p_mask_prompt`;
//! * `full_mask`: d1 with `p_mask_prompt = 0`;
//! * `decoupled`: like coupled with λ = 1, but v1 and v2 draw independent ratios and
//!   uniforms: `lp_j = ½ (lp(v0)_j + [m1_j] lp(v1)_j / t1 + [m2_j] lp(v2)_j / t2)`.
//!
//! Masks are a pure function of (seed, global sample index, completion offset) through the
//! counter RNG — never of the micro-batch split, the device or the prompt padding — and,
//! unlike the reference, t is drawn per sample. All versions are stacked into one forward
//! batch; only the masked completion positions that an estimate reads reach the
//! vocabulary projection.

use couplet_model::{random, DreamModel};

use crate::lean::{LeanConfig, LeanPass};
use couplet_rollout::Denoiser;
use tch::{Device, Kind, Tensor};

// RNG streams (see `couplet_model::random`); pair i uses `base + 2·i` and `base + 2·i + 1`.
use couplet_model::random::stream::ESTIMATOR_PROMPT as STREAM_PROMPT;
use couplet_model::random::stream::ESTIMATOR_RATIO as STREAM_RATIO;
use couplet_model::random::stream::ESTIMATOR_UNIFORM as STREAM_UNIFORM;
/// Draw index of (sample, offset): offsets below 2^20 never collide.
const OFFSET_BITS: u64 = 20;

/// Which estimator, with its knobs.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Estimator {
    /// Complementary mask pairs: every completion token scored once partially masked.
    Coupled {
        /// λ: complementary pairs per sample.
        pairs: usize,
        /// Also score the fully masked version v0.
        include_full_mask: bool,
    },
    /// d1 / diffu-GRPO: the completion fully masked, prompt tokens masked at random.
    D1 {
        /// Probability of masking each real prompt token.
        p_mask_prompt: f64,
    },
    /// The completion fully masked, the prompt intact.
    FullMask,
    /// Like coupled with λ = 1, but two independent masks instead of complements.
    Decoupled,
}

/// An estimator's name (`estimator.kind`); its knobs are separate settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EstimatorKind {
    /// Complementary mask pairs (+ optionally the fully masked version): coupled-GRPO.
    #[default]
    Coupled,
    /// d1 / diffu-GRPO: completion fully masked, prompt tokens masked at random.
    D1,
    /// One fully masked completion.
    FullMask,
    /// Two independent random masks instead of a complementary pair (the ablation).
    Decoupled,
}

couplet_model::from_str_by_name!(EstimatorKind);

impl EstimatorKind {
    /// The name in configs and flags.
    pub fn name(self) -> &'static str {
        match self {
            EstimatorKind::Coupled => "coupled",
            EstimatorKind::D1 => "d1",
            EstimatorKind::FullMask => "full_mask",
            EstimatorKind::Decoupled => "decoupled",
        }
    }

    /// The estimator with its knobs (each kind takes the ones it uses).
    pub fn with_knobs(
        self,
        pairs: usize,
        include_full_mask: bool,
        p_mask_prompt: f64,
    ) -> Estimator {
        match self {
            EstimatorKind::Coupled => Estimator::Coupled {
                pairs,
                include_full_mask,
            },
            EstimatorKind::D1 => Estimator::D1 { p_mask_prompt },
            EstimatorKind::FullMask => Estimator::FullMask,
            EstimatorKind::Decoupled => Estimator::Decoupled,
        }
    }
}

impl Estimator {
    /// Forward passes (versions) per sample.
    pub fn versions(&self) -> usize {
        match self {
            Estimator::Coupled {
                pairs,
                include_full_mask,
            } => 2 * pairs + usize::from(*include_full_mask),
            Estimator::D1 { .. } | Estimator::FullMask => 1,
            Estimator::Decoupled => 3,
        }
    }
}

/// A batch to score: `sequences [B, P + K]` (left-padded prompt, then completion).
pub struct EstimatorBatch<'a> {
    /// `[B, P + K]` token ids.
    pub sequences: &'a Tensor,
    /// `[B, P]`: 1 for real prompt tokens.
    pub prompt_mask: &'a Tensor,
    /// P: columns of the (left-padded) prompt.
    pub prompt_width: i64,
    /// Global sample index of each row (the key of its masks).
    pub samples: &'a [u64],
}

/// Consecutive rows of a batch, owned: what a micro-batch or a chunk scores. Row i is global
/// sample `first_sample + start + i`.
pub struct BatchRows {
    /// First row in the whole batch.
    pub start: i64,
    /// Rows.
    pub len: i64,
    sequences: Tensor,
    prompt_mask: Tensor,
    samples: Vec<u64>,
}

impl BatchRows {
    /// Rows `start .. start + len` of `sequences [N, P + K]` and `prompt_mask [N, P]`.
    pub fn new(
        sequences: &Tensor,
        prompt_mask: &Tensor,
        first_sample: u64,
        start: i64,
        len: i64,
    ) -> Self {
        BatchRows {
            start,
            len,
            sequences: sequences.narrow(0, start, len),
            prompt_mask: prompt_mask.narrow(0, start, len),
            samples: (start..start + len)
                .map(|i| first_sample + i as u64)
                .collect(),
        }
    }

    /// Consecutive slices of `size` rows covering the whole batch.
    pub fn split(
        sequences: &Tensor,
        prompt_mask: &Tensor,
        first_sample: u64,
        size: i64,
    ) -> Vec<Self> {
        let n = sequences.size()[0];
        (0..n)
            .step_by(size.max(1) as usize)
            .map(|start| {
                Self::new(
                    sequences,
                    prompt_mask,
                    first_sample,
                    start,
                    size.min(n - start),
                )
            })
            .collect()
    }

    /// The estimator's view of the rows.
    pub fn batch(&self) -> EstimatorBatch<'_> {
        EstimatorBatch {
            sequences: &self.sequences,
            prompt_mask: &self.prompt_mask,
            prompt_width: self.prompt_mask.size()[1],
            samples: &self.samples,
        }
    }
}

/// The versions of a batch: what is masked, and how each version's log-probs enter the
/// estimate.
#[derive(Debug)]
pub struct Versions {
    /// `[V, B, L]` bool: positions replaced by [MASK] in each version.
    pub masked: Tensor,
    /// `[V, B, K]` f64 coefficient of `lp(v)[b, j]` in the estimate (0 where unused).
    pub weights: Tensor,
    /// Per sample and pair, the mask ratio(s) drawn (for tests and logs).
    pub ratios: Vec<Vec<f64>>,
}

fn uniform01(seed: u64, stream: u64, sample: u64, offset: u64) -> f64 {
    random::uniform(seed, stream, (sample << OFFSET_BITS) | offset)
}

/// The flat mask and weight arrays of `nv` versions of a `[b, p + k]` batch, filled row by
/// row.
struct VersionGrid {
    masked: Vec<bool>, // [V, B, L]
    weights: Vec<f64>, // [V, B, K]
    b: usize,
    p: usize,
    k: usize,
}

impl VersionGrid {
    fn new(nv: usize, b: usize, p: usize, k: usize) -> Self {
        VersionGrid {
            masked: vec![false; nv * b * (p + k)],
            weights: vec![0f64; nv * b * k],
            b,
            p,
            k,
        }
    }

    /// Masks position `pos` (of the whole sequence) of `row` in version `v`.
    fn mask(&mut self, v: usize, row: usize, pos: usize) {
        let l = self.p + self.k;
        self.masked[v * self.b * l + row * l + pos] = true;
    }

    /// Masks completion token `j` of `row` in version `v`, with coefficient `w`.
    fn mask_token(&mut self, v: usize, row: usize, j: usize, w: f64) {
        self.mask(v, row, self.p + j);
        self.weights[v * self.b * self.k + row * self.k + j] = w;
    }

    /// Masks the whole completion of `row` in version `v`, every token with coefficient `w`.
    fn mask_completion(&mut self, v: usize, row: usize, w: f64) {
        for j in 0..self.k {
            self.mask_token(v, row, j, w);
        }
    }

    /// d1: each real prompt token of `row` masked with probability `p_mask` in version 0.
    /// Offsets count real prompt tokens from the first one, so padding never shifts the
    /// draws.
    fn mask_prompt(&mut self, row: usize, real: &[i64], p_mask: f64, seed: u64, sample: u64) {
        let first_real = real.iter().position(|&m| m == 1).unwrap_or(self.p);
        for (pos, &m) in real[..self.p].iter().enumerate().skip(first_real) {
            let offset = (pos - first_real) as u64;
            if m == 1 && uniform01(seed, STREAM_PROMPT, sample, offset) < p_mask {
                self.mask(0, row, pos);
            }
        }
    }

    /// Coupled: (v0 and) λ complementary pairs for `row`; returns the ratios drawn.
    fn coupled(
        &mut self,
        row: usize,
        pairs: usize,
        full: bool,
        seed: u64,
        sample: u64,
    ) -> Vec<f64> {
        let denom = (pairs + usize::from(full)) as f64;
        let mut v = 0;
        if full {
            self.mask_completion(0, row, 1.0 / denom);
            v = 1;
        }
        let mut drawn = Vec::with_capacity(pairs);
        for pair in 0..pairs as u64 {
            let t = 0.2 + 0.6 * uniform01(seed, STREAM_RATIO + 2 * pair, sample, 0);
            drawn.push(t);
            for j in 0..self.k {
                let u = uniform01(seed, STREAM_UNIFORM + 2 * pair, sample, j as u64);
                let (version, w) = if u < t {
                    (v, 1.0 / t)
                } else {
                    (v + 1, 1.0 / (1.0 - t))
                };
                self.mask_token(version, row, j, w / denom);
            }
            v += 2;
        }
        drawn
    }

    /// Decoupled: v0 plus two independent random masks for `row`; returns their ratios.
    fn decoupled(&mut self, row: usize, seed: u64, sample: u64) -> Vec<f64> {
        self.mask_completion(0, row, 0.5);
        let mut drawn = Vec::with_capacity(2);
        for half in 0..2u64 {
            let t = 0.2 + 0.6 * uniform01(seed, STREAM_RATIO + half, sample, 0);
            drawn.push(t);
            for j in 0..self.k {
                if uniform01(seed, STREAM_UNIFORM + half, sample, j as u64) < t {
                    self.mask_token(1 + half as usize, row, j, 0.5 / t);
                }
            }
        }
        drawn
    }
}

/// Builds the versions of `batch` for `estimator` with the iteration's mask seed.
pub fn build_versions(estimator: &Estimator, batch: &EstimatorBatch, seed: u64) -> Versions {
    let (b, l) = batch.sequences.size2().expect("sequences are [B, L]");
    let p = batch.prompt_width;
    let k = l - p;
    let prompt_real = Vec::<Vec<i64>>::try_from(
        &batch
            .prompt_mask
            .to_device(Device::Cpu)
            .to_kind(Kind::Int64),
    )
    .unwrap_or_default();
    let nv = estimator.versions();
    let mut grid = VersionGrid::new(nv, b as usize, p as usize, k as usize);
    let mut ratios = Vec::with_capacity(b as usize);
    for (row, &sample) in batch.samples.iter().enumerate().take(b as usize) {
        let drawn = match *estimator {
            Estimator::FullMask => {
                grid.mask_completion(0, row, 1.0);
                Vec::new()
            }
            Estimator::D1 { p_mask_prompt } => {
                grid.mask_completion(0, row, 1.0);
                grid.mask_prompt(row, &prompt_real[row], p_mask_prompt, seed, sample);
                Vec::new()
            }
            Estimator::Coupled {
                pairs,
                include_full_mask,
            } => grid.coupled(row, pairs, include_full_mask, seed, sample),
            Estimator::Decoupled => grid.decoupled(row, seed, sample),
        };
        ratios.push(drawn);
    }
    let nv = nv as i64;
    Versions {
        masked: Tensor::from_slice(&grid.masked).view([nv, b, l]),
        weights: Tensor::from_slice(&grid.weights).view([nv, b, k]),
        ratios,
    }
}

/// The stacked forward batch of all versions.
struct Stacked {
    inputs: Tensor,            // [V·B, L]
    attention: Option<Tensor>, // [V·B, L]
    select: Tensor,            // [V·B, L]: masked completion positions that are read
    used: Tensor,              // [V, B, K]
    weights: Tensor,           // [V, B, K] f32
    shape: (i64, i64, i64),    // (V, B, K)
}

fn stack(
    versions: &Versions,
    batch: &EstimatorBatch,
    mask_id: i64,
    device: tch::Device,
) -> Stacked {
    let (b, l) = batch.sequences.size2().expect("sequences are [B, L]");
    let p = batch.prompt_width;
    let k = l - p;
    let nv = versions.masked.size()[0];
    let masked = versions.masked.to_device(device);
    let weights = versions.weights.to_device(device);
    let seqs = batch.sequences.to_device(device);
    let inputs = seqs
        .unsqueeze(0)
        .expand([nv, b, l], false)
        .masked_fill(&masked, mask_id)
        .reshape([nv * b, l]);
    let prompt_mask = batch.prompt_mask.to_device(device).to_kind(Kind::Int64);
    let padded = bool::try_from(prompt_mask.eq(0).any()).unwrap_or(true);
    let attention = padded.then(|| {
        Tensor::cat(
            &[prompt_mask, Tensor::ones([b, k], (Kind::Int64, device))],
            1,
        )
        .unsqueeze(0)
        .expand([nv, b, l], false)
        .reshape([nv * b, l])
    });
    // Score only completion positions whose weight is non-zero.
    let used = weights.ne(0.0);
    let select = Tensor::cat(
        &[
            Tensor::zeros([nv, b, p], (Kind::Bool, device)),
            used.shallow_clone(),
        ],
        2,
    )
    .reshape([nv * b, l]);
    Stacked {
        inputs,
        attention,
        select,
        used,
        weights: weights.to_kind(Kind::Float),
        shape: (nv, b, k),
    }
}

impl Stacked {
    /// Σ_v weight · lp(v) from the selected tokens' log-probs `[N]`.
    fn combine(&self, token_lp: &Tensor) -> Tensor {
        let (nv, b, k) = self.shape;
        let lp = Tensor::zeros([nv, b, k], (Kind::Float, token_lp.device()))
            .masked_scatter(&self.used, token_lp);
        (lp * &self.weights).sum_dim_intlist(0, false, Kind::Float)
    }
}

/// Per-token estimates `[B, K]` (f32) for `batch`, differentiable through the model the
/// plain way (full `[N, V]` logits of the read positions kept for backward). The
/// reference path for tests and for scoring without gradients (old / reference policy).
pub fn estimate(
    model: &dyn Denoiser,
    mask_id: i64,
    estimator: &Estimator,
    batch: &EstimatorBatch,
    seed: u64,
) -> (Tensor, Versions) {
    let versions = build_versions(estimator, batch, seed);
    (
        estimate_versions(model, mask_id, &versions, batch),
        versions,
    )
}

/// Estimates `[B, K]` for explicitly given versions (e.g. masks pinned by a user).
pub fn estimate_versions(
    model: &dyn Denoiser,
    mask_id: i64,
    versions: &Versions,
    batch: &EstimatorBatch,
) -> Tensor {
    let st = stack(versions, batch, mask_id, model.device());
    let logits = model.score(&st.inputs, st.attention.as_ref(), &st.select); // [N, V]
    let l = st.inputs.size()[1];
    let truth = batch
        .sequences
        .to_device(model.device())
        .unsqueeze(0)
        .expand([st.shape.0, st.shape.1, l], false)
        .reshape([-1, l]);
    let targets = truth.masked_select(&st.select);
    let token_lp = logits
        .log_softmax(-1, Kind::Float)
        .gather(1, &targets.unsqueeze(1), false)
        .squeeze_dim(1); // [N]
    st.combine(&token_lp)
}

/// Estimates `[B, K]` through the memory-lean path: differentiable only up to a leaf of
/// token log-probs; after `loss.backward()`, call [`LeanEstimate::backward`] to push the
/// exact gradients into the model.
pub struct LeanEstimate<'m> {
    /// `[B, K]` estimates, differentiable up to the token log-prob leaf.
    pub estimate: Tensor,
    /// The versions that were scored.
    pub versions: Versions,
    leaf: Tensor,
    pass: LeanPass<'m>,
}

impl<'m> LeanEstimate<'m> {
    /// Scores `batch` under `model` with the iteration's mask `seed`.
    pub fn new(
        model: &'m DreamModel,
        mask_id: i64,
        estimator: &Estimator,
        batch: &EstimatorBatch,
        seed: u64,
        lean: LeanConfig,
    ) -> Self {
        let versions = build_versions(estimator, batch, seed);
        let st = stack(&versions, batch, mask_id, model.device());
        let truth = {
            let (nv, b, _) = st.shape;
            let l = st.inputs.size()[1];
            batch
                .sequences
                .to_device(model.device())
                .unsqueeze(0)
                .expand([nv, b, l], false)
                .reshape([nv * b, l])
        };
        // The pass scores `truth` tokens at the selected positions of the masked inputs.
        let pass = LeanPass::forward_with_targets(
            model,
            &st.inputs,
            st.attention.as_ref(),
            &st.select,
            &truth,
            lean,
        );
        let leaf = pass.logprobs.detach().set_requires_grad(true);
        let estimate = st.combine(&leaf);
        LeanEstimate {
            estimate,
            versions,
            leaf,
            pass,
        }
    }

    /// Call after the loss's backward reached the estimates.
    pub fn backward(self) {
        let g = self.leaf.grad();
        let g = if g.defined() {
            g
        } else {
            self.leaf.zeros_like()
        };
        self.pass.backward(&g);
    }
}

#[cfg(test)]
mod tests {
    use super::EstimatorKind;

    #[test]
    fn kind_names_are_the_config_names() {
        for kind in [
            EstimatorKind::Coupled,
            EstimatorKind::D1,
            EstimatorKind::FullMask,
            EstimatorKind::Decoupled,
        ] {
            assert_eq!(kind.name().parse::<EstimatorKind>(), Ok(kind));
        }
        assert!("magic"
            .parse::<EstimatorKind>()
            .unwrap_err()
            .contains("`full_mask`"));
    }
}
