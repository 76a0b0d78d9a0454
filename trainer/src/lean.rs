//! Memory-lean log-probabilities with exact gradients, and gradient checkpointing.
//!
//! The reference materialises full-vocabulary f32 logits for every position of every
//! version and keeps them alive for backward. Here the trunk runs once to the hidden rows
//! that score the needed tokens; log-probs of the target tokens are computed from those
//! rows chunk by chunk **without** autograd; the objective's gradient with respect to each
//! log-prob (`g`, from a tiny graph on a leaf) is turned into gradients of the rows and of
//! the vocabulary projection in closed form, chunk by chunk again:
//!
//! `lp = h·w_t − logsumexp(h·Wᵀ)`  ⇒  `∂lp/∂h = w_t − softmax(h·Wᵀ)·W`,
//! `∂lp/∂W = (e_t − softmax(h·Wᵀ)) ⊗ h`,
//!
//! and backpropagated through the trunk with one surrogate `Σ rows·∂L/∂rows + Σ W·∂L/∂W`.
//! At most one `[chunk, V]` block of logits exists at a time. With checkpointing, the
//! trunk keeps only each layer's input during the forward pass and recomputes the layer
//! during backward, layer by layer.

use couplet_model::DreamModel;
use tch::{Kind, Tensor};

/// How the trunk and the vocabulary projection are run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeanConfig {
    /// Rows of `[rows, V]` logits computed at once.
    pub chunk_rows: i64,
    /// Recompute layer activations during backward instead of storing them.
    pub recompute_layers: bool,
}

impl Default for LeanConfig {
    fn default() -> Self {
        LeanConfig {
            chunk_rows: 1024,
            recompute_layers: false,
        }
    }
}

/// Log-probs `[N]` (f32, no grad) of `targets [N]` under `rows [N, H]`, chunked.
fn chunked_logprobs(rows: &Tensor, weight: &Tensor, targets: &Tensor, chunk: i64) -> Tensor {
    let _guard = tch::no_grad_guard();
    let n = rows.size()[0];
    let mut out = Vec::new();
    let mut start = 0;
    while start < n {
        let len = chunk.min(n - start);
        let h = rows.narrow(0, start, len);
        let logits = h.matmul(&weight.tr()).to_kind(Kind::Float); // [c, V]
        let t = targets.narrow(0, start, len).unsqueeze(1);
        out.push(logits.gather(1, &t, false).squeeze_dim(1) - logits.logsumexp([1], false));
        start += len;
    }
    if out.is_empty() {
        Tensor::zeros([0], (Kind::Float, rows.device()))
    } else {
        Tensor::cat(&out, 0)
    }
}

/// Closed-form gradients of `Σ g_n lp_n` with respect to the rows `[N, H]` and (when the
/// projection is trained: not under LoRA) the projection `[V, H]`, chunked.
fn closed_form_grads(
    rows: &Tensor,
    weight: &Tensor,
    targets: &Tensor,
    g: &Tensor,
    chunk: i64,
) -> (Tensor, Option<Tensor>) {
    let need_w = weight.requires_grad();
    let _guard = tch::no_grad_guard();
    let n = rows.size()[0];
    let wf = weight.to_kind(Kind::Float);
    let mut grad_rows = Vec::new();
    let mut grad_w = need_w.then(|| Tensor::zeros_like(&wf));
    let mut start = 0;
    while start < n {
        let len = chunk.min(n - start);
        let h = rows.narrow(0, start, len).to_kind(Kind::Float);
        let probs = h.matmul(&wf.tr()).softmax(-1, Kind::Float); // [c, V]
        let t = targets.narrow(0, start, len);
        let gc = g.narrow(0, start, len).unsqueeze(1); // [c, 1]
                                                       // G = g ⊙ (onehot(t) − p), [c, V]
        let coef = (probs.zeros_like().scatter_value(1, &t.unsqueeze(1), 1.0) - probs) * gc;
        grad_rows.push(coef.matmul(&wf)); // [c, H]
        if let Some(gw) = grad_w.as_mut() {
            *gw += coef.tr().matmul(&h); // [V, H]
        }
        start += len;
    }
    let grad_rows = if grad_rows.is_empty() {
        Tensor::zeros_like(rows)
    } else {
        Tensor::cat(&grad_rows, 0)
    };
    (
        grad_rows.to_kind(rows.kind()),
        grad_w.map(|gw| gw.to_kind(weight.kind())),
    )
}

/// Token log-probs `[N]` at the true entries of `select [B, L]` of `ids`, plus a function
/// that, given `∂L/∂lp [N]`, accumulates the exact parameter gradients into `.grad`.
pub struct LeanPass<'m> {
    model: &'m DreamModel,
    config: LeanConfig,
    ids: Tensor,
    attention: Option<Tensor>,
    positions: Tensor,
    targets: Tensor,
    /// Final-normed rows with graph (no checkpointing) or detached (checkpointing).
    rows: Tensor,
    /// Checkpointing: each layer's input, and the last layer's output as a leaf.
    layer_inputs: Vec<Tensor>,
    top: Option<Tensor>,
    /// `[N]` log-probs of the selected tokens (a leaf when checkpointing).
    pub logprobs: Tensor,
}

impl<'m> LeanPass<'m> {
    /// Forward of `ids` keeping only what backward needs for the `select`ed rows.
    pub fn forward(
        model: &'m DreamModel,
        ids: &Tensor,
        attention: Option<&Tensor>,
        select: &Tensor,
        config: LeanConfig,
    ) -> Self {
        Self::forward_with_targets(model, ids, attention, select, ids, config)
    }

    /// Like [`LeanPass::forward`], scoring the tokens of `truth` (the unmasked sequences)
    /// at the selected positions of the (masked) input `ids`.
    pub fn forward_with_targets(
        model: &'m DreamModel,
        ids: &Tensor,
        attention: Option<&Tensor>,
        select: &Tensor,
        truth: &Tensor,
        config: LeanConfig,
    ) -> Self {
        let positions = select.nonzero();
        let targets = truth.index(&[Some(positions.select(1, 0)), Some(positions.select(1, 1))]);
        let (rows, layer_inputs, top) = if config.recompute_layers {
            let ctx = model.layer_context(ids, attention);
            let mut inputs = Vec::with_capacity(model.layers().len());
            let mut x = tch::no_grad(|| model.embed(ids));
            for layer in model.layers() {
                inputs.push(x.shallow_clone());
                x = tch::no_grad(|| layer.forward(&x, &ctx));
            }
            let top = x.detach().set_requires_grad(true);
            let rows = model.scoring_rows(&model.final_norm(&top), &positions);
            (rows, inputs, Some(top))
        } else {
            let hidden = model.hidden_states(ids, attention);
            (model.scoring_rows(&hidden, &positions), Vec::new(), None)
        };
        let logprobs = chunked_logprobs(
            &rows.detach(),
            model.lm_head_weight(),
            &targets,
            config.chunk_rows,
        );
        LeanPass {
            model,
            config,
            ids: ids.shallow_clone(),
            attention: attention.map(|a| a.shallow_clone()),
            positions,
            targets,
            rows,
            layer_inputs,
            top,
            logprobs,
        }
    }

    /// Accumulates `∂(Σ_n g_n lp_n)/∂θ` into the parameters' `.grad`.
    pub fn backward(self, g: &Tensor) {
        let weight = self.model.lm_head_weight();
        let (grad_rows, grad_w) = closed_form_grads(
            &self.rows.detach(),
            weight,
            &self.targets,
            g,
            self.config.chunk_rows,
        );
        let mut surrogate = (&self.rows * &grad_rows).sum(Kind::Float);
        if let Some(grad_w) = &grad_w {
            surrogate += (weight * grad_w).sum(Kind::Float);
        }
        if surrogate.requires_grad() {
            surrogate.backward();
        }
        let Some(top) = self.top else { return };
        // Checkpointing: walk the layers backwards, recomputing each one.
        let ctx = self.model.layer_context(&self.ids, self.attention.as_ref());
        let mut grad = top.grad();
        for (layer, input) in self.model.layers().iter().zip(&self.layer_inputs).rev() {
            let x = input.detach().set_requires_grad(true);
            let out = layer.forward(&x, &ctx);
            (out * &grad).sum(Kind::Float).backward();
            grad = x.grad();
        }
        let embedded = self.model.embed(&self.ids);
        (embedded * grad).sum(Kind::Float).backward();
        let _ = &self.positions;
    }
}
