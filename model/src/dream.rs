//! The Dream / DiffuCoder transformer (SPEC section 1).
//!
//! Architecture = Qwen2's decoder stack with **bidirectional** attention:
//! embeddings → N × [RMSNorm → GQA attention (q/k/v bias, rotary) → residual → RMSNorm →
//! SwiGLU MLP → residual] → RMSNorm → lm_head (optionally tied to the embedding).
//!
//! Tensor names are exactly Hugging Face Qwen2's, built from the `VarStore` path, so the file
//! reads next to SPEC section 1 and a checkpoint maps onto it name for name.
//!
//! Logits are never computed for the whole vocabulary at every position unless a caller
//! asks for it ([`DreamModel::forward_logits`], used by tests and references): decoders and
//! estimators call [`DreamModel::hidden_states`] and then [`DreamModel::token_logits`] for
//! only the positions they score, which also applies the shifted-prediction convention.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

use crate::config::DreamConfig;
use crate::kv_cache::{KvSlot, LayerKv};
use crate::lora::{tensor_name, Adapter, LoraConfig, LoraInit, LoraTarget};

/// How freshly built parameters are filled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Zeros: the caller overwrites every tensor from a checkpoint (cheap for 7B models).
    Zeros,
    /// Normal(0, initializer_range) for matrices, zero biases, unit norms, like transformers.
    Random,
}

/// Root-mean-square layer norm, computed in f32 as transformers' Qwen2RMSNorm does.
#[derive(Debug)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn new(vs: nn::Path, size: i64, eps: f64) -> Self {
        RmsNorm {
            weight: vs.var("weight", &[size], nn::Init::Const(1.0)),
            eps,
        }
    }
}

impl Module for RmsNorm {
    fn forward(&self, xs: &Tensor) -> Tensor {
        let dtype = xs.kind();
        let x = xs.to_kind(Kind::Float);
        let variance = x.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
        let x = x * (variance + self.eps).rsqrt();
        &self.weight * x.to_kind(dtype)
    }
}

/// Rotary position embedding in the rotate-half form.
#[derive(Debug)]
pub struct RotaryEmbedding {
    inv_freq: Tensor, // [D/2], f32
}

impl RotaryEmbedding {
    fn new(cfg: &DreamConfig, device: Device) -> Self {
        let dim = cfg.head_dim();
        let inv_freq: Vec<f32> = (0..dim)
            .step_by(2)
            .map(|i| 1.0 / cfg.rope_theta.powf(i as f64 / dim as f64) as f32)
            .collect();
        RotaryEmbedding {
            inv_freq: Tensor::from_slice(&inv_freq).to_device(device),
        }
    }

    /// cos and sin for `position_ids [B, L]`, shaped `[B, 1, L, D]` to broadcast over heads.
    fn cos_sin(&self, position_ids: &Tensor, dtype: Kind) -> (Tensor, Tensor) {
        let freqs = position_ids.to_kind(Kind::Float).unsqueeze(-1) * &self.inv_freq; // [B, L, D/2]
        let emb = Tensor::cat(&[&freqs, &freqs], -1).unsqueeze(1); // [B, 1, L, D]
        (emb.cos().to_kind(dtype), emb.sin().to_kind(dtype))
    }
}

fn rotate_half(x: &Tensor) -> Tensor {
    let half = x.size().last().copied().unwrap_or(0) / 2;
    let x1 = x.narrow(-1, 0, half);
    let x2 = x.narrow(-1, half, half);
    Tensor::cat(&[&(-x2), &x1], -1)
}

fn apply_rotary(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    x * cos + rotate_half(x) * sin
}

/// Bidirectional grouped-query self-attention, with q/k/v biases unless the config has
/// none (LLaDA).
#[derive(Debug)]
pub struct Attention {
    q_proj: Proj,
    k_proj: Proj,
    v_proj: Proj,
    o_proj: Proj,
    num_heads: i64,
    num_kv_heads: i64,
    head_dim: i64,
}

fn linear(vs: nn::Path, inp: i64, out: i64, bias: bool, init: Init, std: f64) -> nn::Linear {
    let ws_init = match init {
        Init::Zeros => nn::Init::Const(0.0),
        Init::Random => nn::Init::Randn {
            mean: 0.0,
            stdev: std,
        },
    };
    let cfg = nn::LinearConfig {
        ws_init,
        bs_init: Some(nn::Init::Const(0.0)),
        bias,
    };
    nn::linear(vs, inp, out, cfg)
}

/// A linear projection with an optional LoRA adapter.
#[derive(Debug)]
pub struct Proj {
    linear: nn::Linear,
    adapter: Option<Adapter>,
    /// Key of this projection's dropout masks (layer × target).
    site: u64,
}

impl Proj {
    fn new(linear: nn::Linear) -> Self {
        Proj {
            linear,
            adapter: None,
            site: 0,
        }
    }

    fn forward(&self, xs: &Tensor, ctx: &LayerContext) -> Tensor {
        let y = self.linear.forward(xs);
        match (&self.adapter, ctx.adapters) {
            (Some(adapter), true) => {
                let seed = ctx
                    .dropout_seed
                    .map(|s| crate::random::bits(s, self.site, 0));
                y + adapter.delta(xs, seed)
            }
            _ => y,
        }
    }
}

impl Attention {
    fn new(vs: nn::Path, cfg: &DreamConfig, init: Init) -> Self {
        let (h, d) = (cfg.hidden_size, cfg.head_dim());
        let (nh, nkv) = (cfg.num_attention_heads, cfg.num_kv_heads());
        let (std, bias) = (cfg.initializer_range, cfg.attention_bias());
        Attention {
            q_proj: Proj::new(linear(&vs / "q_proj", h, nh * d, bias, init, std)),
            k_proj: Proj::new(linear(&vs / "k_proj", h, nkv * d, bias, init, std)),
            v_proj: Proj::new(linear(&vs / "v_proj", h, nkv * d, bias, init, std)),
            o_proj: Proj::new(linear(&vs / "o_proj", nh * d, h, false, init, std)),
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: d,
        }
    }

    /// Self-attention over `xs [B, L, H]`; with `kv`, also records (a refresh) or reuses
    /// (a cached step) keys and values. The plain and recording paths run the same ops, so
    /// a refresh's output is bitwise the uncached forward's.
    fn forward(&self, xs: &Tensor, ctx: &LayerContext, kv: KvSlot) -> Tensor {
        let (b, q_len, _) = xs.size3().expect("hidden states are [B, L, H]");
        let heads = |t: Tensor, n: i64| t.view([b, q_len, n, self.head_dim]).transpose(1, 2);
        let q = heads(self.q_proj.forward(xs, ctx), self.num_heads); // [B, nh, Q, D]
        let k = heads(self.k_proj.forward(xs, ctx), self.num_kv_heads); // [B, nkv, Q, D]
        let v = heads(self.v_proj.forward(xs, ctx), self.num_kv_heads);
        let (cos, sin) = &ctx.rope;
        let q = apply_rotary(&q, cos, sin);
        let k = apply_rotary(&k, cos, sin);
        let (k, v) = match kv {
            KvSlot::Off => (k, v),
            KvSlot::Record(slot) => {
                *slot = Some(LayerKv::record(&k, &v));
                (k, v)
            }
            KvSlot::Reuse(slot, columns) => slot.update(&k, &v, columns),
        };
        // Grouped-query attention inside SDPA (`enable_gqa`): kv heads are never copied.
        let gqa = self.num_kv_heads != self.num_heads;
        let mask = ctx.mask.as_ref();
        let attn = Tensor::scaled_dot_product_attention(&q, &k, &v, mask, 0.0, false, None, gqa);
        let attn = attn
            .transpose(1, 2)
            .reshape([b, q_len, self.num_heads * self.head_dim]);
        self.o_proj.forward(&attn, ctx)
    }
}

/// SwiGLU feed-forward: `down(silu(gate(x)) * up(x))`.
#[derive(Debug)]
pub struct Mlp {
    gate_proj: Proj,
    up_proj: Proj,
    down_proj: Proj,
}

impl Mlp {
    fn new(vs: nn::Path, cfg: &DreamConfig, init: Init) -> Self {
        let (h, i, std) = (
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.initializer_range,
        );
        Mlp {
            gate_proj: Proj::new(linear(&vs / "gate_proj", h, i, false, init, std)),
            up_proj: Proj::new(linear(&vs / "up_proj", h, i, false, init, std)),
            down_proj: Proj::new(linear(&vs / "down_proj", i, h, false, init, std)),
        }
    }

    fn forward(&self, xs: &Tensor, ctx: &LayerContext) -> Tensor {
        let inner = self.gate_proj.forward(xs, ctx).silu() * self.up_proj.forward(xs, ctx);
        self.down_proj.forward(&inner, ctx)
    }
}

/// One pre-norm transformer block.
#[derive(Debug)]
pub struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl DecoderLayer {
    fn new(vs: nn::Path, cfg: &DreamConfig, init: Init) -> Self {
        DecoderLayer {
            input_layernorm: RmsNorm::new(
                &vs / "input_layernorm",
                cfg.hidden_size,
                cfg.rms_norm_eps,
            ),
            self_attn: Attention::new(&vs / "self_attn", cfg, init),
            post_attention_layernorm: RmsNorm::new(
                &vs / "post_attention_layernorm",
                cfg.hidden_size,
                cfg.rms_norm_eps,
            ),
            mlp: Mlp::new(&vs / "mlp", cfg, init),
        }
    }

    /// `xs [B, L, H]` → `[B, L, H]`.
    pub fn forward(&self, xs: &Tensor, ctx: &LayerContext) -> Tensor {
        self.forward_kv(xs, ctx, KvSlot::Off)
    }

    /// [`Self::forward`], recording or reusing this layer's keys and values.
    pub(crate) fn forward_kv(&self, xs: &Tensor, ctx: &LayerContext, kv: KvSlot) -> Tensor {
        let h = xs
            + self
                .self_attn
                .forward(&self.input_layernorm.forward(xs), ctx, kv);
        &h + self
            .mlp
            .forward(&self.post_attention_layernorm.forward(&h), ctx)
    }
}

/// What every layer of one forward pass shares: rotary tables and the attention mask.
#[derive(Debug)]
pub struct LayerContext {
    rope: (Tensor, Tensor),
    /// Boolean key mask `[B, 1, 1, L]` (true = attend), `None` when nothing is padded.
    mask: Option<Tensor>,
    /// Apply the LoRA adapters (off: the base model).
    adapters: bool,
    /// Key of the adapters' dropout masks (the policy update only; `None`: no dropout).
    dropout_seed: Option<u64>,
}

/// The Dream transformer with its parameters.
#[derive(Debug)]
pub struct DreamModel {
    config: DreamConfig,
    vs: nn::VarStore,
    embed_tokens: Tensor, // [V, H]
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Tensor, // [V, H]; shares storage with embed_tokens when tied
    rotary: RotaryEmbedding,
    /// LoRA adapters: their shape and their (f32, trainable) parameters.
    lora: Option<(LoraConfig, nn::VarStore)>,
    /// Whether forward passes apply the adapters (the reference switches them off).
    adapters_on: AtomicBool,
    /// Dropout key of the adapters in the current policy update ([`NO_DROPOUT`]: none).
    dropout_seed: AtomicU64,
}

/// `dropout_seed` value meaning no adapter dropout.
const NO_DROPOUT: u64 = u64::MAX;

impl DreamModel {
    /// Builds the parameters on `device` in `kind` (f32 or bf16) for `config`.
    ///
    /// `Init::Random` consumes torch's global RNG: build it inside
    /// [`crate::random::with_torch_seed`] for a reproducible model.
    pub fn new(config: &DreamConfig, device: Device, kind: Kind, init: Init) -> Self {
        let mut vs = nn::VarStore::new(device);
        let root = vs.root();
        let model = &root / "model";
        let (v, h) = (config.vocab_size, config.hidden_size);
        let emb_init = match init {
            Init::Zeros => nn::Init::Const(0.0),
            Init::Random => nn::Init::Randn {
                mean: 0.0,
                stdev: config.initializer_range,
            },
        };
        let embed_tokens = (&model / "embed_tokens").var("weight", &[v, h], emb_init);
        let layers = (0..config.num_hidden_layers)
            .map(|i| DecoderLayer::new(&model / "layers" / i, config, init))
            .collect();
        let norm = RmsNorm::new(&model / "norm", h, config.rms_norm_eps);
        let lm_head = if config.tie_word_embeddings {
            embed_tokens.shallow_clone()
        } else {
            (&root / "lm_head").var("weight", &[v, h], emb_init)
        };
        if kind != Kind::Float {
            vs.set_kind(kind);
        }
        DreamModel {
            config: config.clone(),
            vs,
            embed_tokens,
            layers,
            norm,
            lm_head,
            rotary: RotaryEmbedding::new(config, device),
            lora: None,
            adapters_on: AtomicBool::new(true),
            dropout_seed: AtomicU64::new(NO_DROPOUT),
        }
    }

    /// The architecture it was built from.
    pub fn config(&self) -> &DreamConfig {
        &self.config
    }

    /// The parameter store: names are Hugging Face tensor names.
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// The parameters, mutably (to freeze or load into them).
    pub fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }

    /// Where the parameters live.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Element type of the parameters.
    pub fn kind(&self) -> Kind {
        self.vs.kind()
    }

    /// The decoder layers, in order (for layer-wise recomputation).
    pub fn layers(&self) -> &[DecoderLayer] {
        &self.layers
    }

    /// Whether logit row i scores token i+1 (see [`DreamConfig::shift_logits`]).
    pub fn shifted(&self) -> bool {
        self.config.shift_logits()
    }

    /// Token embeddings `[B, L, H]` for `ids [B, L]`.
    pub fn embed(&self, ids: &Tensor) -> Tensor {
        Tensor::embedding(&self.embed_tokens, ids, -1, false, false)
    }

    /// Rotary tables and attention mask for a batch; `attention_mask [B, L]` is 1 for real
    /// tokens (prompt, completion or [MASK]) and 0 for left padding.
    ///
    /// With padding, position ids are `cumsum(mask) − 1` (pads set to 1) and keys at pad
    /// positions are hidden from every query. Pad *queries* still attend to the real keys:
    /// their outputs are never read, and this keeps them finite (a fully masked softmax row
    /// would be NaN and could poison gradients through `0 · NaN`).
    pub fn layer_context(&self, ids: &Tensor, attention_mask: Option<&Tensor>) -> LayerContext {
        let (position_ids, mask) = self.positions(ids, attention_mask);
        self.context_at(&position_ids, mask)
    }

    /// Position ids `[B, L]` and boolean key mask `[B, 1, 1, L]` (`None`: nothing padded).
    pub(crate) fn positions(
        &self,
        ids: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> (Tensor, Option<Tensor>) {
        let (b, l) = ids.size2().expect("ids are [B, L]");
        let device = ids.device();
        let padded = attention_mask.filter(|m| {
            let real: i64 = m.sum(Kind::Int64).int64_value(&[]);
            real != b * l
        });
        match padded {
            Some(m) => {
                let m = m.to_device(device);
                let pos = (m.cumsum(-1, Kind::Int64) - 1).masked_fill(&m.eq(0), 1);
                (pos, Some(m.ne(0).view([b, 1, 1, l])))
            }
            None => (
                Tensor::arange(l, (Kind::Int64, device))
                    .unsqueeze(0)
                    .expand([b, l], false),
                None,
            ),
        }
    }

    /// The layer context of queries at `position_ids [B, Q]` attending under `mask`.
    pub(crate) fn context_at(&self, position_ids: &Tensor, mask: Option<Tensor>) -> LayerContext {
        LayerContext {
            rope: self.rotary.cos_sin(position_ids, self.kind()),
            mask,
            adapters: self.adapters_on.load(Ordering::Relaxed),
            dropout_seed: match self.dropout_seed.load(Ordering::Relaxed) {
                NO_DROPOUT => None,
                seed => Some(seed),
            },
        }
    }

    /// Final-normed hidden states `[B, L, H]`.
    pub fn hidden_states(&self, ids: &Tensor, attention_mask: Option<&Tensor>) -> Tensor {
        let ctx = self.layer_context(ids, attention_mask);
        let mut xs = self.embed(ids);
        for layer in &self.layers {
            xs = layer.forward(&xs, &ctx);
        }
        self.norm.forward(&xs)
    }

    /// Applies the final norm; for callers that run the layers themselves (checkpointing).
    pub fn final_norm(&self, xs: &Tensor) -> Tensor {
        self.norm.forward(xs)
    }

    /// Vocabulary logits for arbitrary rows of hidden states: `[..., H]` → `[..., V]`, f32.
    pub fn lm_logits(&self, hidden: &Tensor) -> Tensor {
        hidden.matmul(&self.lm_head.tr()).to_kind(Kind::Float)
    }

    /// The hidden-state rows that score the tokens at `positions [N, 2]` (batch, position):
    /// row `p − 1` for shifted models (row 0 scores token 0), row `p` otherwise. `[N, H]`.
    pub fn scoring_rows(&self, hidden: &Tensor, positions: &Tensor) -> Tensor {
        let batch = positions.select(1, 0);
        let mut pos = positions.select(1, 1);
        if self.shifted() {
            pos = (pos - 1).clamp_min(0);
        }
        hidden.index(&[Some(batch), Some(pos)])
    }

    /// f32 logits `[N, V]` scoring the tokens at the true entries of `select [B, L]`, in
    /// row-major order; only those N rows ever reach the vocabulary projection.
    pub fn token_logits(&self, hidden: &Tensor, select: &Tensor) -> Tensor {
        let positions = select.nonzero(); // [N, 2]
        self.lm_logits(&self.scoring_rows(hidden, &positions))
    }

    /// The forward pass as callers usually want it: `ids [B, L]`, optional
    /// `attention_mask [B, L]` (left padding), and optionally `select [B, L]` (bool), the
    /// positions whose tokens to score. With `select`, returns f32 logits `[N, V]` for only
    /// those N tokens (shift applied); without, raw logits `[B, L, V]`.
    pub fn forward(
        &self,
        ids: &Tensor,
        attention_mask: Option<&Tensor>,
        select: Option<&Tensor>,
    ) -> Tensor {
        let hidden = self.hidden_states(ids, attention_mask);
        match select {
            Some(select) => self.token_logits(&hidden, select),
            None => self.lm_logits(&hidden),
        }
    }

    /// Raw (unshifted) logits at every position `[B, L, V]`, f32, as transformers returns
    /// them. Memory-hungry at real vocabulary sizes: for tests and reference paths only.
    pub fn forward_logits(&self, ids: &Tensor, attention_mask: Option<&Tensor>) -> Tensor {
        self.forward(ids, attention_mask, None)
    }

    /// The vocabulary projection `[V, H]` (the embedding itself when tied).
    pub fn lm_head_weight(&self) -> &Tensor {
        &self.lm_head
    }

    /// Number of parameters (tied weights counted once).
    pub fn num_parameters(&self) -> i64 {
        self.vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum()
    }

    /// Adds LoRA adapters (`B = 0`, `A` initialised from torch's global RNG: seed it first)
    /// to the configured projections of every layer, and freezes the base weights.
    pub fn attach_lora(&mut self, config: &LoraConfig) {
        let vs = nn::VarStore::new(self.device());
        let root = vs.root();
        let rank = config.rank;
        for (i, layer) in self.layers.iter_mut().enumerate() {
            for (t, &target) in LoraTarget::ALL.iter().enumerate() {
                if !config.target_modules.contains(&target) {
                    continue;
                }
                let proj = layer.proj_mut(target);
                let ws = proj.linear.ws.size();
                let (out, inp) = (ws[0], ws[1]);
                let a_init = match config.init {
                    LoraInit::Default => {
                        let bound = 1.0 / (inp as f64).sqrt();
                        nn::Init::Uniform {
                            lo: -bound,
                            up: bound,
                        }
                    }
                    LoraInit::Gaussian => nn::Init::Randn {
                        mean: 0.0,
                        stdev: 1.0 / rank as f64,
                    },
                };
                let a = lora_var(&root, &tensor_name(i, target, 'A'), &[rank, inp], a_init);
                let b = lora_var(
                    &root,
                    &tensor_name(i, target, 'B'),
                    &[out, rank],
                    nn::Init::Const(0.0),
                );
                proj.adapter = Some(Adapter {
                    a,
                    b,
                    scale: config.scale(),
                    dropout: config.dropout,
                });
                proj.site = (i * LoraTarget::ALL.len() + t) as u64;
            }
        }
        self.vs.freeze();
        self.lora = Some((config.clone(), vs));
    }

    /// The adapters' shape and parameter store, when LoRA is attached.
    pub fn lora(&self) -> Option<(&LoraConfig, &nn::VarStore)> {
        self.lora.as_ref().map(|(c, vs)| (c, vs))
    }

    /// What training updates: the adapters under LoRA, else every parameter (by name).
    pub fn trainable_parameters(&self) -> Vec<(String, Tensor)> {
        let vs = self.lora.as_ref().map_or(&self.vs, |(_, vs)| vs);
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }

    /// Runs `f` with the adapters switched off: the base model (the reference under LoRA).
    pub fn without_adapters<T>(&self, f: impl FnOnce() -> T) -> T {
        let before = self.adapters_on.swap(false, Ordering::Relaxed);
        let out = f();
        self.adapters_on.store(before, Ordering::Relaxed);
        out
    }

    /// Runs `f` with adapter dropout keyed by `seed` (the policy update's forward and its
    /// recomputation draw the same masks).
    pub fn with_adapter_dropout<T>(&self, seed: u64, f: impl FnOnce() -> T) -> T {
        let key = if seed == NO_DROPOUT { seed - 1 } else { seed };
        let before = self.dropout_seed.swap(key, Ordering::Relaxed);
        let out = f();
        self.dropout_seed.store(before, Ordering::Relaxed);
        out
    }

    /// Folds every adapter into its base weight (`W += s·B·A`, in f32, then rounded to the
    /// weight's dtype) and removes the adapters: a plain model again.
    pub fn merge_lora(&mut self) {
        let _guard = tch::no_grad_guard();
        for layer in &mut self.layers {
            for target in LoraTarget::ALL {
                let proj = layer.proj_mut(target);
                if let Some(adapter) = proj.adapter.take() {
                    let w = &mut proj.linear.ws;
                    let merged =
                        w.to_kind(Kind::Float) + adapter.merged_delta().to_device(w.device());
                    w.copy_(&merged.to_kind(w.kind()));
                }
            }
        }
        self.lora = None;
    }
}

fn lora_var(root: &nn::Path, name: &str, shape: &[i64], init: nn::Init) -> Tensor {
    // Var names may not contain '.': walk the path segment by segment.
    let mut parts: Vec<&str> = name.split('.').collect();
    let leaf = parts.pop().unwrap_or("weight");
    let path = parts.iter().fold(root.clone(), |p, part| &p / *part);
    path.var(leaf, shape, init)
}

impl DecoderLayer {
    fn proj_mut(&mut self, target: LoraTarget) -> &mut Proj {
        match target {
            LoraTarget::QProj => &mut self.self_attn.q_proj,
            LoraTarget::KProj => &mut self.self_attn.k_proj,
            LoraTarget::VProj => &mut self.self_attn.v_proj,
            LoraTarget::OProj => &mut self.self_attn.o_proj,
            LoraTarget::GateProj => &mut self.mlp.gate_proj,
            LoraTarget::UpProj => &mut self.mlp.up_proj,
            LoraTarget::DownProj => &mut self.mlp.down_proj,
        }
    }
}
