//! Faster, approximate decoding: confidence-threshold parallel reveals, and key/value
//! caching — which positions a step recomputes and when a full forward refreshes the
//! cache (the model's side is [`couplet_model::kv_cache`]).
//!
//! **Threshold.** With `threshold = τ` a step reveals every eligible masked position whose
//! proposal has probability > τ (at least the best-ranked one per row) instead of the
//! decoder's schedule, and the last step reveals the rest: `steps` becomes an upper bound
//! on the forwards (Fast-dLLM's parallel decoding).
//!
//! A step of either decoder changes only the tokens it reveals, yet the exact decoder
//! recomputes every position. With a cache, a step recomputes a small set of positions
//! (the *compute set*, chosen by [`CacheMode`]) and reads everyone else's keys and values
//! from the last refresh. That is an approximation — in bidirectional attention every
//! position's keys depend on every token — which a full forward every `refresh_every`
//! forwards (and at each block boundary) bounds. The likelihood estimators never use the
//! cache: training scores whatever the (cached) sampler produced, exactly.

use couplet_model::KvCache;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::canvas::{suppress_mask, Canvas};
use crate::denoiser::Denoiser;
use crate::settings::DecoderKind;
use crate::RolloutError;

/// Which keys and values a step reuses from the last refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheMode {
    /// No cache: every step is a full forward (the exact decoder, bitwise).
    #[default]
    None,
    /// Reuse the prompt's keys and values (and, for the block decoder, those of finished
    /// blocks); recompute the completion (from the current block on).
    Prefix,
    /// Block decoder: also reuse the masked suffix beyond the current block (Fast-dLLM's
    /// dual cache); recompute only the current block.
    Dual,
    /// Recompute the still-masked positions and the tokens revealed on the previous
    /// forward, then cache those (dKV-Cache's delayed caching): global-order decoding
    /// keeps its order and a revealed token's keys are refreshed once, with its token.
    Delayed,
}

couplet_model::from_str_by_name!(CacheMode);

/// A cache mode and its refresh period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    /// What a step reuses.
    pub mode: CacheMode,
    /// A full forward every this many forwards (`None`: only the first forward and, for
    /// the block decoder, the first of each block).
    pub refresh_every: Option<i64>,
}

impl CachePolicy {
    /// No cache.
    pub const NONE: CachePolicy = CachePolicy {
        mode: CacheMode::None,
        refresh_every: None,
    };

    /// Checks the period and that the mode exists for `decoder`; errors name the option.
    pub fn validate(&self, decoder: DecoderKind) -> Result<(), RolloutError> {
        if let Some(r) = self.refresh_every.filter(|&r| r < 1) {
            return Err(RolloutError::Invalid {
                option: "refresh_every".into(),
                message: format!("must be at least 1, got {r}"),
            });
        }
        if decoder == DecoderKind::Dream && self.mode == CacheMode::Dual {
            return Err(RolloutError::Invalid {
                option: "cache".into(),
                message: "`dual` reuses the masked suffix beyond the current block and the \
                          Dream decoder has no blocks: use `prefix` or `delayed`, or the block \
                          decoder"
                    .into(),
            });
        }
        Ok(())
    }
}

/// The approximations a decoding run may take, and whether to measure them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FastDecoding {
    /// Key/value reuse between steps.
    pub cache: CachePolicy,
    /// Reveal every position whose proposal probability exceeds this (`None`: the
    /// decoder's own schedule).
    pub threshold: Option<f64>,
    /// On cached steps also run the exact forward and record |Δ log p| of the revealed
    /// tokens (doubles the cost; for measuring a mode, never for training).
    pub audit: bool,
}

impl FastDecoding {
    /// The exact decoder.
    pub const EXACT: FastDecoding = FastDecoding {
        cache: CachePolicy::NONE,
        threshold: None,
        audit: false,
    };

    /// Checks the cache policy for `decoder` and the threshold's range.
    pub fn validate(&self, decoder: DecoderKind) -> Result<(), RolloutError> {
        self.cache.validate(decoder)?;
        match self.threshold {
            Some(t) if !(t >= 0.0 && t.is_finite()) => Err(RolloutError::Invalid {
                option: "threshold".into(),
                message: format!("must be a finite number ≥ 0, got {t}"),
            }),
            _ => Ok(()),
        }
    }
}

/// `[B, L]` bool: what a threshold step reveals. `probability` and `ranking` are `[B, L]`
/// (f64, read only where `eligible`): every eligible position with probability > `tau`;
/// in a row with none, its best-ranked eligible position; on the `last` step all of them.
pub(crate) fn threshold_reveal(
    probability: &Tensor,
    ranking: &Tensor,
    eligible: &Tensor,
    tau: f64,
    last: bool,
) -> Tensor {
    if last {
        return eligible.shallow_clone();
    }
    let above = probability.gt(tau).logical_and(eligible);
    let (b, _) = eligible.size2().expect("[B, L]");
    let none = above.any_dim(1, true).logical_not(); // [B, 1]
    let best = crate::canvas::top_n_per_row(ranking, &vec![1; b as usize], eligible);
    above.logical_or(&best.logical_and(&none))
}

/// What a decoding run cost, and (when audited) how far the cache moved its log-probs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DecodeStats {
    /// Forward passes run (steps that reveal nothing are skipped).
    pub forward_passes: i64,
    /// Of which full forwards (all of them without a cache).
    pub refreshes: i64,
    /// Query positions computed over all forwards and rows.
    pub computed_positions: i64,
    /// Σ |log p_cached(x) − log p_exact(x)| over the revealed tokens of cached steps.
    pub audit_abs_dlogp: f64,
    /// Tokens in that sum.
    pub audit_tokens: i64,
}

impl DecodeStats {
    /// Adds another run's counts.
    pub fn add(&mut self, other: &DecodeStats) {
        self.forward_passes += other.forward_passes;
        self.refreshes += other.refreshes;
        self.computed_positions += other.computed_positions;
        self.audit_abs_dlogp += other.audit_abs_dlogp;
        self.audit_tokens += other.audit_tokens;
    }

    /// Mean |Δ log p| of the audited tokens (`None` without an audit).
    pub fn mean_abs_dlogp(&self) -> Option<f64> {
        (self.audit_tokens > 0).then(|| self.audit_abs_dlogp / self.audit_tokens as f64)
    }
}

/// Runs a decoder's forwards under a [`CachePolicy`], keeping the cache and the counts.
pub(crate) struct Scorer<'m> {
    model: &'m dyn Denoiser,
    mask_id: i64,
    policy: CachePolicy,
    cache: Option<KvCache>,
    since_refresh: i64,
    /// Also run the exact forward on cached steps and measure the difference.
    audit: bool,
    pub stats: DecodeStats,
}

/// One forward's logits `[N, V]`, and the exact ones when an audited step was cached.
pub(crate) struct Scored {
    pub logits: Tensor,
    pub exact: Option<Tensor>,
}

impl<'m> Scorer<'m> {
    pub fn new(model: &'m dyn Denoiser, mask_id: i64, policy: CachePolicy, audit: bool) -> Self {
        Scorer {
            model,
            mask_id,
            policy,
            cache: None,
            since_refresh: 0,
            audit,
            stats: DecodeStats::default(),
        }
    }

    /// Logits for the true entries of `select [B, L]` on the current canvas, [MASK]
    /// suppressed (see [`suppress_mask`]). `boundary`
    /// forces a refresh (a new block); `compute` names the positions a cached step
    /// recomputes, and is only called on such a step.
    pub fn score(
        &mut self,
        canvas: &Canvas,
        select: &Tensor,
        boundary: bool,
        compute: impl FnOnce() -> Tensor,
    ) -> Scored {
        self.stats.forward_passes += 1;
        let attention = canvas.attention.as_ref();
        if self.policy.mode == CacheMode::None {
            self.stats.refreshes += 1;
            self.stats.computed_positions += canvas.b * (canvas.p + canvas.k);
            let logits =
                suppress_mask(self.model.score(&canvas.x, attention, select), self.mask_id);
            return Scored {
                logits,
                exact: None,
            };
        }
        let stale = self
            .policy
            .refresh_every
            .is_some_and(|r| self.since_refresh >= r);
        match self.cache.as_mut().filter(|_| !boundary && !stale) {
            Some(cache) => {
                self.since_refresh += 1;
                let compute = compute();
                self.stats.computed_positions += compute.sum(Kind::Int64).int64_value(&[]);
                let logits = self
                    .model
                    .score_cached(&canvas.x, attention, &compute, select, cache);
                let exact = self
                    .audit
                    .then(|| self.model.score(&canvas.x, attention, select));
                let (logits, exact) = (
                    suppress_mask(logits, self.mask_id),
                    exact.map(|e| suppress_mask(e, self.mask_id)),
                );
                Scored { logits, exact }
            }
            None => {
                self.stats.refreshes += 1;
                self.stats.computed_positions += canvas.b * (canvas.p + canvas.k);
                let (logits, cache) = self.model.score_refresh(&canvas.x, attention, select);
                let logits = suppress_mask(logits, self.mask_id);
                self.cache = Some(cache);
                self.since_refresh = 1;
                Scored {
                    logits,
                    exact: None,
                }
            }
        }
    }

    /// Adds the audit of one step: `tokens [N]` proposed for the scored rows, `revealed
    /// [N]` bool, the cached and exact logits `[N, V]`.
    pub fn audit(&mut self, scored: &Scored, tokens: &Tensor, revealed: &Tensor) {
        let Some(exact) = &scored.exact else { return };
        let logp = |l: &Tensor| {
            l.to_kind(Kind::Double)
                .log_softmax(-1, Kind::Double)
                .gather(-1, &tokens.unsqueeze(-1), false)
                .squeeze_dim(-1)
        };
        let diff = (logp(&scored.logits) - logp(exact)).abs();
        let diff = diff.masked_select(revealed);
        self.stats.audit_abs_dlogp += diff.sum(Kind::Double).double_value(&[]);
        self.stats.audit_tokens += diff.numel() as i64;
    }
}
