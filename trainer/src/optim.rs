//! AdamW with decoupled weight decay, global-norm clipping and learning-rate schedules
//! (SPEC section 7).
//!
//! Written out rather than taken from `tch::nn` so that the state is ours to checkpoint
//! and shard, decay is applied per parameter (not to norms and biases by default), and the
//! pre-clip gradient norm is reported.

use std::f64::consts::PI;

use tch::{Kind, Tensor};

/// AdamW hyperparameters; also the `[optimizer]` section of a training config, so unknown
/// keys are refused and missing ones take the recipe defaults.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamWConfig {
    /// Learning rate.
    pub lr: f64,
    /// β₁ of the first moment.
    pub beta1: f64,
    /// β₂ of the second moment.
    pub beta2: f64,
    /// ε of the denominator.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Also decay 1-D parameters (norm weights, biases).
    pub decay_norms_and_biases: bool,
    /// Clip the global gradient norm to this (0 = no clipping).
    pub max_grad_norm: f64,
}

impl Default for AdamWConfig {
    /// The DiffuCoder recipe: lr 1e-6, betas (0.9, 0.99), weight decay 0.1, clip 0.2.
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-6,
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            weight_decay: 0.1,
            decay_norms_and_biases: false,
            max_grad_norm: 0.2,
        }
    }
}

/// Learning-rate schedules with linear warmup.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    /// lr throughout (after warmup).
    Constant,
    /// Linear decay to 0.
    Linear,
    /// Cosine decay to 0.
    Cosine,
    /// Cosine decay to `min_lr_rate` · lr.
    CosineWithMinLr {
        /// The floor as a fraction of lr.
        min_lr_rate: f64,
    },
}

/// A schedule's name (`schedule.kind`, `sft --schedule`); the floor of
/// `cosine_with_min_lr` is a separate setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// lr throughout (after warmup).
    Constant,
    /// Linear decay to 0.
    Linear,
    /// Cosine decay to 0.
    Cosine,
    /// Cosine decay to `min_lr_rate` · lr (DiffuCoder's choice).
    #[default]
    CosineWithMinLr,
}

couplet_model::from_str_by_name!(ScheduleKind);

impl ScheduleKind {
    /// The schedule, with the floor `min_lr_rate` · lr where the kind has one.
    pub fn with_floor(self, min_lr_rate: f64) -> Schedule {
        match self {
            ScheduleKind::Constant => Schedule::Constant,
            ScheduleKind::Linear => Schedule::Linear,
            ScheduleKind::Cosine => Schedule::Cosine,
            ScheduleKind::CosineWithMinLr => Schedule::CosineWithMinLr { min_lr_rate },
        }
    }
}

/// `lr · factor(step)` for a run of `total` optimizer steps with `warmup` warmup steps
/// (transformers' definitions).
pub fn lr_factor(schedule: Schedule, step: u64, total: u64, warmup: u64) -> f64 {
    if step < warmup {
        return step as f64 / warmup.max(1) as f64;
    }
    let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
    let progress = progress.min(1.0);
    match schedule {
        Schedule::Constant => 1.0,
        Schedule::Linear => (1.0 - progress).max(0.0),
        Schedule::Cosine => 0.5 * (1.0 + (PI * progress).cos()),
        Schedule::CosineWithMinLr { min_lr_rate } => {
            min_lr_rate + (1.0 - min_lr_rate) * 0.5 * (1.0 + (PI * progress).cos())
        }
    }
}

/// Warmup steps from a ratio of the total, as transformers rounds it (ceil).
pub fn warmup_steps(total: u64, ratio: f64) -> u64 {
    (total as f64 * ratio).ceil() as u64
}

/// One parameter with its Adam moments (and, for a bf16 parameter, its f32 master copy).
pub struct ParamState {
    /// Its name in the model.
    pub name: String,
    /// The parameter (the model's working copy: f32, or bf16 under mixed precision).
    pub param: Tensor,
    /// First moment (empty when not owned).
    pub exp_avg: Tensor,
    /// Second moment (empty when not owned).
    pub exp_avg_sq: Tensor,
    /// The f32 master weights of a non-f32 parameter this rank owns: the update is computed
    /// and accumulated here, then rounded into `param`. Small updates that would vanish
    /// below one bf16 ulp of the weight still add up in the master. `None` for f32
    /// parameters (the parameter is its own master) and for parameters owned elsewhere.
    pub master: Option<Tensor>,
    /// Under ZeRO-2: the gradient summed over ranks, in f32, held only by the owner (the
    /// model's own `.grad()` is zeroed once it has been reduced).
    pub reduced_grad: Option<Tensor>,
    /// Whether weight decay applies.
    pub decay: bool,
    /// This rank updates the parameter (always, except under ZeRO sharding, where the
    /// moments and masters of parameters owned by other ranks are not even allocated).
    pub owned: bool,
}

impl ParamState {
    /// The gradient the update uses: the reduced shard under ZeRO-2, else the parameter's.
    fn gradient(&self) -> Option<Tensor> {
        if let Some(g) = &self.reduced_grad {
            return Some(g.shallow_clone());
        }
        let g = self.param.grad();
        g.defined().then_some(g)
    }

    /// Bytes of optimizer-owned state (moments, master, reduced gradient).
    pub fn state_bytes(&self) -> i64 {
        let bytes = |t: &Tensor| t.numel() as i64 * kind_bytes(t.kind());
        bytes(&self.exp_avg)
            + bytes(&self.exp_avg_sq)
            + self.master.as_ref().map_or(0, bytes)
            + self.reduced_grad.as_ref().map_or(0, bytes)
    }
}

/// Bytes per element of a floating-point kind.
pub(crate) fn kind_bytes(kind: Kind) -> i64 {
    couplet_model::dtype::element_size(kind) as i64
}

/// AdamW over a model's parameters, with state we own (checkpointed, shardable).
pub struct AdamW {
    /// Hyperparameters.
    pub config: AdamWConfig,
    /// Every parameter with its moments.
    pub params: Vec<ParamState>,
    /// Optimizer steps taken.
    pub step: u64,
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct StepReport {
    /// Pre-clip global gradient norm.
    pub grad_norm: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Whether the gradients were clipped.
    pub clipped: bool,
}

/// Greedy longest-processing-time assignment of parameters (by element count) to `world`
/// ranks: largest first, each to the least-loaded rank (ties: lower rank; equal sizes in
/// name order). Deterministic, so every rank computes the same owners; the heaviest rank
/// carries at most the average plus one parameter.
pub fn assign_owners(sizes: &[i64], world: usize) -> Vec<usize> {
    let world = world.max(1);
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(sizes[i]), i));
    let mut load = vec![0i64; world];
    let mut owners = vec![0; sizes.len()];
    for i in order {
        let owner = (0..world).min_by_key(|&r| (load[r], r)).unwrap_or(0);
        load[owner] += sizes[i];
        owners[i] = owner;
    }
    owners
}

impl AdamW {
    /// State for `params` (name, tensor), in a stable (sorted) order; moments in f32, and
    /// an f32 master copy of every parameter that is not f32.
    pub fn new(params: Vec<(String, Tensor)>, config: AdamWConfig) -> Self {
        Self::sharded(params, config, 0, 1).0
    }

    /// ZeRO-1/2: like [`AdamW::new`], but each parameter belongs to one of `world` ranks
    /// ([`assign_owners`]) and this `rank` allocates moments and masters only for its own
    /// (never a full set, not even for a moment). Returns the owner of every parameter.
    pub fn sharded(
        mut params: Vec<(String, Tensor)>,
        config: AdamWConfig,
        rank: usize,
        world: usize,
    ) -> (Self, Vec<usize>) {
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let sizes: Vec<i64> = params.iter().map(|(_, p)| p.numel() as i64).collect();
        let owners = assign_owners(&sizes, world);
        let params = params
            .into_iter()
            .zip(&owners)
            .map(|((name, param), &owner)| {
                let owned = owner == rank;
                let decay = config.decay_norms_and_biases || param.dim() > 1;
                let shape = if owned { param.size() } else { vec![0] };
                let zeros = || Tensor::zeros(shape.as_slice(), (Kind::Float, param.device()));
                let master = (owned && param.kind() != Kind::Float)
                    .then(|| tch::no_grad(|| param.detach().to_kind(Kind::Float)));
                ParamState {
                    exp_avg: zeros(),
                    exp_avg_sq: zeros(),
                    master,
                    reduced_grad: None,
                    name,
                    param,
                    decay,
                    owned,
                }
            })
            .collect();
        let optimizer = AdamW {
            config,
            params,
            step: 0,
        };
        (optimizer, owners)
    }

    /// Sum of squared gradients (f64) over every parameter (`owned_only`: over the ones
    /// this rank owns — under ZeRO-2 the others hold no reduced gradient here).
    pub fn grad_square_sum(&self, owned_only: bool) -> f64 {
        let mut total = 0f64;
        for p in self.params.iter().filter(|p| p.owned || !owned_only) {
            if let Some(g) = p.gradient() {
                total += g
                    .to_kind(Kind::Double)
                    .pow_tensor_scalar(2)
                    .sum(Kind::Double)
                    .double_value(&[]);
            }
        }
        total
    }

    /// Global L2 norm of all gradients (before clipping), when every gradient is here.
    pub fn grad_norm(&self) -> f64 {
        self.grad_square_sum(false).sqrt()
    }

    /// Clips, then applies one AdamW update with learning rate `lr`, then zeroes grads.
    pub fn step(&mut self, lr: f64) -> StepReport {
        let norm = self.grad_norm();
        self.step_with_norm(lr, norm)
    }

    /// [`AdamW::step`] with the global pre-clip norm computed by the caller (under ZeRO-2
    /// it is a sum over ranks).
    pub fn step_with_norm(&mut self, lr: f64, grad_norm: f64) -> StepReport {
        let c = self.config;
        let scale = if c.max_grad_norm > 0.0 && grad_norm > c.max_grad_norm {
            c.max_grad_norm / (grad_norm + 1e-6)
        } else {
            1.0
        };
        self.step += 1;
        let t = self.step as i32;
        let bias = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        let _guard = tch::no_grad_guard();
        for p in &mut self.params {
            if let Some(grad) = p.gradient() {
                if p.owned {
                    update_parameter(p, &grad, scale, lr, bias, &c);
                }
            }
            p.reduced_grad = None;
            let mut grad = p.param.grad();
            if grad.defined() {
                let _ = grad.zero_();
            }
        }
        StepReport {
            grad_norm,
            lr,
            clipped: scale < 1.0,
        }
    }

    /// Drops every gradient (a skipped step).
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.reduced_grad = None;
            let mut g = p.param.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
    }

    /// Bytes of optimizer state this rank holds (moments, masters, reduced gradients).
    pub fn state_bytes(&self) -> i64 {
        self.params.iter().map(ParamState::state_bytes).sum()
    }
}

/// One AdamW update of an owned parameter, computed in f32 on its master (the parameter
/// itself when f32), then written to the working copy.
fn update_parameter(
    p: &mut ParamState,
    grad: &Tensor,
    scale: f64,
    lr: f64,
    (bc1, bc2): (f64, f64),
    c: &AdamWConfig,
) {
    let g = grad.to_kind(Kind::Float) * scale;
    // In place: a second copy of the moments would exist for the length of the step (and
    // the allocator keeps it). Same operations, same rounding, as `m·β₁ + g·(1 − β₁)`.
    let _ = p
        .exp_avg
        .g_mul_scalar_(c.beta1)
        .g_add_(&(&g * (1.0 - c.beta1)));
    let _ = p
        .exp_avg_sq
        .g_mul_scalar_(c.beta2)
        .g_add_(&((&g * &g) * (1.0 - c.beta2)));
    let denom = (&p.exp_avg_sq / bc2).sqrt() + c.eps;
    let mut update = (&p.exp_avg / bc1) / denom;
    let master = match &p.master {
        Some(m) => m.shallow_clone(),
        None => p.param.to_kind(Kind::Float),
    };
    if p.decay && c.weight_decay > 0.0 {
        update += &master * c.weight_decay;
    }
    let new = master - update * lr;
    if let Some(m) = &mut p.master {
        m.copy_(&new);
    }
    p.param.copy_(&new.to_kind(p.param.kind()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_by_hand() {
        assert_eq!(lr_factor(Schedule::Constant, 5, 10, 2), 1.0);
        assert_eq!(lr_factor(Schedule::Linear, 1, 10, 2), 0.5, "warmup");
        assert_eq!(lr_factor(Schedule::Linear, 6, 10, 2), 0.5);
        assert!((lr_factor(Schedule::Cosine, 6, 10, 2) - 0.5).abs() < 1e-12);
        assert!(
            (lr_factor(Schedule::CosineWithMinLr { min_lr_rate: 0.1 }, 10, 10, 2) - 0.1).abs()
                < 1e-12
        );
        assert_eq!(warmup_steps(10_000, 1e-4), 1);
    }

    #[test]
    fn adamw_matches_the_formula_and_skips_decay_on_vectors() {
        let w = Tensor::from_slice2(&[[1.0f32, -2.0]]).set_requires_grad(true);
        let b = Tensor::from_slice(&[0.5f32]).set_requires_grad(true);
        let mut opt = AdamW::new(
            vec![
                ("w".into(), w.shallow_clone()),
                ("b".into(), b.shallow_clone()),
            ],
            AdamWConfig {
                lr: 0.1,
                weight_decay: 0.5,
                max_grad_norm: 0.0,
                ..Default::default()
            },
        );
        (w.sum(Kind::Float) * 2.0 + b.sum(Kind::Float)).backward();
        let report = opt.step(0.1);
        assert!((report.grad_norm - 3.0).abs() < 1e-6); // sqrt(2² + 2² + 1²)
                                                        // First step: m̂ = g, v̂ = g², update = sign(g) (+ decay for the matrix).
        let w1 = Vec::<f32>::try_from(&w.reshape([-1])).unwrap();
        assert!(
            (w1[0] - (1.0 - 0.1 * (1.0 + 0.5 * 1.0))).abs() < 1e-5,
            "{w1:?}"
        );
        assert!(
            (w1[1] - (-2.0 - 0.1 * (1.0 + 0.5 * -2.0))).abs() < 1e-5,
            "{w1:?}"
        );
        assert!(
            (b.double_value(&[0]) - 0.4).abs() < 1e-6,
            "no decay on a bias"
        );
        assert_eq!(
            w.grad().abs().sum(Kind::Float).double_value(&[]),
            0.0,
            "grads zeroed"
        );
    }

    #[test]
    fn clipping_reports_the_pre_clip_norm() {
        let w = Tensor::from_slice(&[3.0f32, 4.0]).set_requires_grad(true);
        let mut opt = AdamW::new(
            vec![("w".into(), w.shallow_clone())],
            AdamWConfig {
                max_grad_norm: 1.0,
                ..Default::default()
            },
        );
        (&w * &w).sum(Kind::Float).backward(); // grad (6, 8), norm 10
        let r = opt.step(1e-3);
        assert!((r.grad_norm - 10.0).abs() < 1e-5 && r.clipped);
    }
}
