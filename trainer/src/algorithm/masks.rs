//! Masked versions of a batch, built row by row from the counter RNG.
//!
//! A *version* of a `[B, P + K]` batch replaces some positions by [MASK]; a method reads
//! the log-probabilities of some completion tokens of each version (`read`) and, for
//! methods whose score is a weighted sum of those log-probabilities, gives each a
//! coefficient (`weights`). Every draw is a pure function of (seed, stream, global sample
//! index, offset), so a sample's masks never depend on the micro-batch split, the device
//! or the prompt padding.

use couplet_model::random;
use tch::{Device, Kind, Tensor};

use super::EstimatorBatch;

/// Draw index of (sample, offset): offsets below 2^20 never collide.
const OFFSET_BITS: u64 = 20;

/// A uniform draw in [0, 1) for (`seed`, `stream`, `sample`, `offset`).
pub fn uniform01(seed: u64, stream: u64, sample: u64, offset: u64) -> f64 {
    random::uniform(seed, stream, (sample << OFFSET_BITS) | offset)
}

/// The versions of a batch: what is masked, which tokens are read and how they combine.
#[derive(Debug)]
pub struct Versions {
    /// `[V, B, L]` bool: positions replaced by [MASK] in each version.
    pub masked: Tensor,
    /// `[V, B, K]` f64 coefficient of `lp(v)[b, j]` in a linear estimate (0 where unused).
    pub weights: Tensor,
    /// `[V, B, K]` bool: the completion tokens whose log-probabilities are computed.
    pub read: Tensor,
    /// Per sample, the mask ratio(s) or timesteps drawn (for tests, logs and the
    /// sequence-level combinations that divide by them).
    pub ratios: Vec<Vec<f64>>,
}

impl Versions {
    /// How many versions.
    pub fn count(&self) -> i64 {
        self.masked.size()[0]
    }

    /// Versions `start .. start + len` (the per-sample ratios are kept whole).
    pub fn narrow(&self, start: i64, len: i64) -> Versions {
        Versions {
            masked: self.masked.narrow(0, start, len),
            weights: self.weights.narrow(0, start, len),
            read: self.read.narrow(0, start, len),
            ratios: self.ratios.clone(),
        }
    }

    /// No versions at all (for a loss that does not read them, e.g. on stub scores).
    pub fn none() -> Self {
        let empty = |kind| Tensor::zeros([0, 0, 0], (kind, Device::Cpu));
        Versions {
            masked: empty(Kind::Bool),
            weights: empty(Kind::Double),
            read: empty(Kind::Bool),
            ratios: Vec::new(),
        }
    }
}

/// The flat mask, read and weight arrays of `nv` versions of a `[b, p + k]` batch, filled
/// row by row.
pub struct VersionGrid {
    masked: Vec<bool>, // [V, B, L]
    read: Vec<bool>,   // [V, B, K]
    weights: Vec<f64>, // [V, B, K]
    nv: usize,
    /// Per row, the real (1) and padding (0) prompt positions.
    prompt_real: Vec<Vec<i64>>,
    /// Rows.
    pub b: usize,
    /// Prompt width P.
    pub p: usize,
    /// Completion width K.
    pub k: usize,
}

impl VersionGrid {
    /// An unmasked grid of `nv` versions of the batch's shape.
    pub fn new(nv: usize, batch: &EstimatorBatch) -> Self {
        let (b, l) = batch.sequences.size2().expect("sequences are [B, L]");
        let (b, p) = (b as usize, batch.prompt_width as usize);
        let k = l as usize - p;
        let prompt_real = Vec::<Vec<i64>>::try_from(
            &batch
                .prompt_mask
                .to_device(Device::Cpu)
                .to_kind(Kind::Int64),
        )
        .unwrap_or_default();
        VersionGrid {
            prompt_real,
            masked: vec![false; nv * b * (p + k)],
            read: vec![false; nv * b * k],
            weights: vec![0f64; nv * b * k],
            nv,
            b,
            p,
            k,
        }
    }

    /// Masks position `pos` (of the whole sequence) of `row` in version `v`.
    pub fn mask(&mut self, v: usize, row: usize, pos: usize) {
        let l = self.p + self.k;
        self.masked[v * self.b * l + row * l + pos] = true;
    }

    /// Masks completion token `j` of `row` in version `v` and reads it with coefficient `w`.
    pub fn mask_token(&mut self, v: usize, row: usize, j: usize, w: f64) {
        self.mask(v, row, self.p + j);
        self.read_token(v, row, j, w);
    }

    /// Reads completion token `j` of `row` in version `v` (masked or not) with coefficient
    /// `w`.
    pub fn read_token(&mut self, v: usize, row: usize, j: usize, w: f64) {
        let at = v * self.b * self.k + row * self.k + j;
        self.read[at] = true;
        self.weights[at] = w;
    }

    /// Masks the whole completion of `row` in version `v`, every token read with
    /// coefficient `w`.
    pub fn mask_completion(&mut self, v: usize, row: usize, w: f64) {
        for j in 0..self.k {
            self.mask_token(v, row, j, w);
        }
    }

    /// Each real prompt token of `row` masked with probability `p_mask` in version `v`
    /// (`draw(offset)`). Offsets count real prompt tokens from the first one, so padding
    /// never shifts the draws.
    pub fn mask_prompt(&mut self, v: usize, row: usize, p_mask: f64, draw: impl Fn(u64) -> f64) {
        let real = std::mem::take(&mut self.prompt_real[row]);
        let first_real = real.iter().position(|&m| m == 1).unwrap_or(self.p);
        for (pos, &m) in real[..self.p].iter().enumerate().skip(first_real) {
            if m == 1 && draw((pos - first_real) as u64) < p_mask {
                self.mask(v, row, pos);
            }
        }
        self.prompt_real[row] = real;
    }

    /// The grid as tensors, with the ratios drawn per sample.
    pub fn finish(self, ratios: Vec<Vec<f64>>) -> Versions {
        let (nv, b, p, k) = (self.nv as i64, self.b as i64, self.p as i64, self.k as i64);
        Versions {
            masked: Tensor::from_slice(&self.masked).view([nv, b, p + k]),
            weights: Tensor::from_slice(&self.weights).view([nv, b, k]),
            read: Tensor::from_slice(&self.read).view([nv, b, k]),
            ratios,
        }
    }
}

/// `count` of the `positions`, chosen uniformly at random: the ones whose draws
/// `draw(position)` are smallest (a uniform random subset, as `randperm(n)[:count]` is).
pub fn random_subset(count: usize, positions: &[usize], draw: impl Fn(u64) -> f64) -> Vec<usize> {
    let mut keyed: Vec<(f64, usize)> = positions.iter().map(|&j| (draw(j as u64), j)).collect();
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    keyed.into_iter().take(count).map(|(_, j)| j).collect()
}

/// Rounds half to even, as `torch.round` does.
pub fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torch_rounding_and_random_subsets() {
        let rounded: Vec<f64> = [0.5, 1.5, 2.5, -0.5, 2.4, 2.6]
            .into_iter()
            .map(round_half_even)
            .collect();
        assert_eq!(rounded, [0.0, 2.0, 2.0, 0.0, 2.0, 3.0]);
        let subset = random_subset(2, &[3, 5, 7, 9], |j| {
            [0.9, 0.1, 0.5, 0.3][(j as usize - 3) / 2]
        });
        assert_eq!(subset, [5, 9]);
    }
}
