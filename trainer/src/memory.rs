//! The memory planner behind `couplet memory`: a per-rank budget of a training config,
//! by component, from the model's `config.json` alone (no weights needed).
//!
//! The model is the one this trainer implements, phase by phase. What stays resident all
//! run: working weights, the reference copy, and the optimizer's state (AdamW moments and
//! f32 masters, divided by the world size under ZeRO). On top of it, the largest of three
//! phases: *rollout* (no-grad decoding of a generation batch), *backward* (the micro-
//! batch's saved activations and the full working-dtype gradients autograd accumulates)
//! and *step* (the reduced gradients the update reads, plus the update's temporaries).
//! Activations are counted from the tensors the layer code saves for backward, per token;
//! the `[chunk, V]` logit blocks of the lean log-prob path are counted separately.

use couplet_model::{DreamConfig, LoraConfig, LoraTarget};
use serde::Serialize;

use crate::config::{TrainConfig, ZeroStage};

const GIB: f64 = (1u64 << 30) as f64;

/// What the planner needs to know about a run.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanInput {
    /// The architecture.
    pub model: DreamConfig,
    /// Bytes per working weight / activation (4 for f32, 2 for bf16).
    pub weight_bytes: f64,
    /// Ranks of the run.
    pub world: usize,
    /// ZeRO stage.
    pub zero: ZeroStage,
    /// Bytes per reference weight, when a reference copy is held on this device.
    pub reference_bytes: Option<f64>,
    /// Rows of one training micro-batch.
    pub micro_batch: usize,
    /// Versions per sample in one forward/backward of the policy (the method's masks,
    /// stacked; one chunk of them for a method run in chunks).
    pub versions: usize,
    /// Prompt + completion tokens of a training row.
    pub sequence: usize,
    /// Completion tokens of a training row (the scored positions).
    pub completion: usize,
    /// Rows of `[rows, V]` logits at once in the lean log-prob path.
    pub logits_chunk_rows: usize,
    /// Layer activations recomputed in backward.
    pub checkpointing: bool,
    /// Rows decoded at once in rollouts.
    pub generation_batch: usize,
    /// Rollouts keep every layer's keys and values (`rollout.cache` other than `none`).
    pub decode_cache: bool,
    /// Gradient bucket size (bytes).
    pub bucket_bytes: f64,
    /// LoRA adapters on a frozen base (only they are trained).
    pub lora: Option<LoraConfig>,
    /// Attention runs in a fused kernel (CUDA: flash / memory-efficient, nothing of size
    /// L² is kept); on the CPU, padded batches take PyTorch's math path, which keeps the
    /// probabilities and the GQA-expanded keys and values for backward.
    pub fused_attention: bool,
    /// Memory that is not tensors of the model: on the CPU the tokenizer, the rows, the
    /// sandbox pool and kernel workspaces (70–100 MiB measured by `scripts/bench-memory`);
    /// on CUDA the context, cuBLAS workspaces and allocator slack (an estimate).
    pub runtime_bytes: f64,
}

impl PlanInput {
    /// The input for a training config, its model's architecture and `world` ranks.
    pub fn from_config(config: &TrainConfig, model: DreamConfig, world: usize) -> Self {
        // Versions the policy's backward holds at once: all of a sample's, or one chunk for a
        // method run one backward per Monte-Carlo sample / position (BGPO, JustGRPO).
        let method = config.algorithm.method();
        let all = method.versions_per_sample(
            config.rollout.max_new_tokens.max(0) as usize,
            config.rollout.steps.max(0) as usize,
        );
        let versions = method.versions_per_backward().map_or(all, |c| c.min(all));
        let lora = config.lora.enabled().then(|| config.lora.clone());
        let held = config.holds_reference()
            && lora.is_none()
            && config
                .reference
                .device
                .is_none_or(|d| d == config.model.device);
        let reference = config.reference.dtype.unwrap_or(config.model.dtype);
        let bytes = |p: couplet_model::Precision| if p.is_bf16() { 2.0 } else { 4.0 };
        PlanInput {
            model,
            weight_bytes: bytes(config.model.dtype),
            world: world.max(1),
            zero: config.distributed.zero_stage(),
            reference_bytes: held.then(|| bytes(reference)),
            micro_batch: config.schedule.micro_batch_size,
            versions,
            sequence: config.data.max_prompt_length + config.rollout.max_new_tokens as usize,
            completion: config.rollout.max_new_tokens as usize,
            logits_chunk_rows: config.model.logits_chunk_rows as usize,
            checkpointing: config.model.gradient_checkpointing,
            generation_batch: config.rollout.generation_batch_size,
            decode_cache: config.rollout.cache != couplet_rollout::CacheMode::None,
            bucket_bytes: (config.distributed.bucket_mb << 20) as f64,
            lora,
            fused_attention: config.model.device != couplet_model::DeviceSpec::Cpu,
            runtime_bytes: if config.model.device == couplet_model::DeviceSpec::Cpu {
                100.0 * (1 << 20) as f64
            } else {
                GIB
            },
        }
    }
}

/// Parameter counts of an architecture.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ParameterCount {
    /// Every parameter (a tied LM head counted once).
    pub total: f64,
    /// The largest single tensor (what one update's temporaries scale with).
    pub largest: f64,
    /// Vocabulary × hidden: one embedding or LM-head matrix.
    pub vocab_matrix: f64,
}

/// Counts the parameters of `c` (q/k/v biases unless the config has none, as LLaDA; an
/// untied head unless tied).
pub fn parameter_count(c: &DreamConfig) -> ParameterCount {
    let (h, i) = (c.hidden_size as f64, c.intermediate_size as f64);
    let q = (c.num_attention_heads * c.head_dim()) as f64;
    let kv = (c.num_kv_heads() * c.head_dim()) as f64;
    let bias = if c.attention_bias() { 1.0 } else { 0.0 };
    let attention = h * q + bias * q + 2.0 * (h * kv + bias * kv) + q * h;
    let mlp = 3.0 * h * i;
    let layer = attention + mlp + 2.0 * h;
    let vocab_matrix = (c.vocab_size as f64) * h;
    let heads = if c.tie_word_embeddings { 1.0 } else { 2.0 };
    ParameterCount {
        total: c.num_hidden_layers as f64 * layer + heads * vocab_matrix + h,
        largest: vocab_matrix.max(h * i),
        vocab_matrix,
    }
}

/// Parameters of the adapters `lora` adds to `c`: `r · (in + out)` per adapted projection.
pub fn adapter_parameters(c: &DreamConfig, lora: &LoraConfig) -> (f64, f64) {
    let (h, i) = (c.hidden_size as f64, c.intermediate_size as f64);
    let q = (c.num_attention_heads * c.head_dim()) as f64;
    let kv = (c.num_kv_heads() * c.head_dim()) as f64;
    let r = lora.rank as f64;
    let mut per_layer = 0.0;
    let mut largest: f64 = 0.0;
    for target in &lora.target_modules {
        let (inp, out) = match target {
            LoraTarget::QProj => (h, q),
            LoraTarget::KProj | LoraTarget::VProj => (h, kv),
            LoraTarget::OProj => (q, h),
            LoraTarget::GateProj | LoraTarget::UpProj => (h, i),
            LoraTarget::DownProj => (i, h),
        };
        per_layer += r * (inp + out);
        largest = largest.max(r * inp.max(out));
    }
    (per_layer * c.num_hidden_layers as f64, largest)
}

/// Per token and layer: the elements of every adapter's output and rank-r projection.
fn adapter_outputs(c: &DreamConfig, lora: &LoraConfig) -> f64 {
    let (h, i) = (c.hidden_size as f64, c.intermediate_size as f64);
    let q = (c.num_attention_heads * c.head_dim()) as f64;
    let kv = (c.num_kv_heads() * c.head_dim()) as f64;
    let r = lora.rank as f64;
    lora.target_modules
        .iter()
        .map(|t| match t {
            LoraTarget::QProj => q,
            LoraTarget::KProj | LoraTarget::VProj => kv,
            LoraTarget::OProj | LoraTarget::DownProj => h,
            LoraTarget::GateProj | LoraTarget::UpProj => i,
        } + r)
        .sum()
}

/// One line of the budget.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Component {
    /// What it is.
    pub name: &'static str,
    /// Bytes per rank.
    pub bytes: f64,
    /// How it was counted.
    pub how: String,
}

/// A per-rank memory budget.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryPlan {
    /// Parameters of the model.
    pub parameters: ParameterCount,
    /// Held all run.
    pub resident: Vec<Component>,
    /// The three phases' transient memory; the peak takes the largest.
    pub rollout: Vec<Component>,
    /// Backward of one micro-batch.
    pub backward: Vec<Component>,
    /// The optimizer step.
    pub step: Vec<Component>,
}

fn total(parts: &[Component]) -> f64 {
    parts.iter().map(|c| c.bytes).sum()
}

impl MemoryPlan {
    /// Bytes held all run.
    pub fn resident_bytes(&self) -> f64 {
        total(&self.resident)
    }

    /// The phase with the most transient memory and its bytes.
    pub fn peak_phase(&self) -> (&'static str, f64) {
        [
            ("rollout", total(&self.rollout)),
            ("backward", total(&self.backward)),
            ("step", total(&self.step)),
        ]
        .into_iter()
        .fold(("rollout", f64::MIN), |a, b| if b.1 > a.1 { b } else { a })
    }

    /// Planned peak bytes per rank.
    pub fn peak_bytes(&self) -> f64 {
        self.resident_bytes() + self.peak_phase().1
    }

    /// The budget as a table, with whether it fits `capacity_gib` (when given).
    pub fn render(&self, capacity_gib: Option<f64>) -> String {
        let mut out = format!(
            "parameters: {:.3} B ({:.1} M in the largest tensor)\n",
            self.parameters.total / 1e9,
            self.parameters.largest / 1e6
        );
        let (phase, _) = self.peak_phase();
        let sections = [
            ("resident", &self.resident),
            ("rollout", &self.rollout),
            ("backward", &self.backward),
            ("step", &self.step),
        ];
        for (name, parts) in sections {
            let tag = if name == phase { "  <- peak phase" } else { "" };
            out += &format!("{name:<9} {:>9.2} GiB{tag}\n", total(parts) / GIB);
            for c in parts.iter() {
                out += &format!("  {:<24} {:>9.2} GiB  {}\n", c.name, c.bytes / GIB, c.how);
            }
        }
        let peak = self.peak_bytes() / GIB;
        out += &format!("peak per rank: {peak:.2} GiB (resident + {phase})\n");
        if let Some(cap) = capacity_gib {
            let verdict = if peak <= cap { "fits" } else { "does NOT fit" };
            out += &format!("{verdict} in {cap:.0} GiB per device\n");
        }
        out
    }
}

/// Saved-for-backward elements per token of one layer, in working dtype, and the extra
/// f32 elements (RMSNorm upcasts) when the working dtype is not f32. `math_attention`
/// adds what the unfused attention keeps: the scaled queries, keys and values expanded to
/// every head, and the `[heads, L]` probabilities of each query (`sequence` = L).
fn layer_saved_per_token(c: &DreamConfig, math_attention: bool, sequence: f64) -> (f64, f64) {
    let (h, i) = (c.hidden_size as f64, c.intermediate_size as f64);
    let q = (c.num_attention_heads * c.head_dim()) as f64;
    let kv = (c.num_kv_heads() * c.head_dim()) as f64;
    // Layer input and normed input (norm 1), q/k/v projections, rotary (q·cos, rotate-half
    // q, rotated q; the same for k), attention output and its reshaped copy (o_proj's
    // input), the residual and its norm (norm 2), gate / up / silu(gate) / product.
    let mut working = 2.0 * h + q + 2.0 * kv + 3.0 * q + 3.0 * kv + 2.0 * q + 2.0 * h + 4.0 * i;
    if math_attention {
        working += 3.0 * q + c.num_attention_heads as f64 * sequence;
    }
    // Each RMSNorm keeps its input upcast to f32 and the normalised f32 product.
    let upcast = 4.0 * h;
    (working, upcast)
}

/// The plan of `input`.
pub fn plan(input: &PlanInput) -> MemoryPlan {
    let c = &input.model;
    let params = parameter_count(c);
    let p = params.total;
    let w = input.weight_bytes;
    let world = input.world as f64;
    let trained = Trained::of(input, &params);
    let mixed = trained.bytes < 4.0;
    let shard = if input.zero.shards_optimizer() {
        1.0 / world
    } else {
        1.0
    };
    let shard_note = if shard < 1.0 {
        format!(" / {} ranks", input.world)
    } else {
        String::new()
    };
    let mut resident = vec![
        Component {
            name: "runtime",
            bytes: input.runtime_bytes,
            how: "not model tensors: CUDA context / tokenizer, data, sandbox pool".into(),
        },
        Component {
            name: "weights",
            bytes: p * w,
            how: format!("{:.3} B × {w} B", p / 1e9),
        },
    ];
    if input.lora.is_some() {
        resident.push(Component {
            name: "LoRA adapters",
            bytes: trained.count * 4.0,
            how: format!("{:.1} M × f32 (the base is frozen)", trained.count / 1e6),
        });
    }
    if let Some(r) = input.reference_bytes {
        resident.push(Component {
            name: "reference model",
            bytes: p * r,
            how: format!("{:.3} B × {r} B (β > 0 or logging.kl_to_start)", p / 1e9),
        });
    }
    resident.push(Component {
        name: "AdamW moments",
        bytes: trained.count * 8.0 * shard,
        how: format!("{:.3} B trained × 2 × f32{shard_note}", trained.count / 1e9),
    });
    if mixed {
        resident.push(Component {
            name: "f32 master weights",
            bytes: trained.count * 4.0 * shard,
            how: format!("f32{shard_note}"),
        });
    }
    MemoryPlan {
        parameters: params,
        resident,
        rollout: rollout_phase(input),
        backward: backward_phase(input, &params, &trained),
        step: step_phase(input, &trained),
    }
}

/// What the optimizer trains: every parameter in the working dtype, or the f32 adapters.
struct Trained {
    count: f64,
    largest: f64,
    bytes: f64,
}

impl Trained {
    fn of(input: &PlanInput, params: &ParameterCount) -> Self {
        match &input.lora {
            Some(lora) => {
                let (count, largest) = adapter_parameters(&input.model, lora);
                Trained {
                    count,
                    largest,
                    bytes: 4.0,
                }
            }
            None => Trained {
                count: params.total,
                largest: params.largest,
                bytes: input.weight_bytes,
            },
        }
    }
}

/// No-grad decoding of a generation batch: one layer's intermediates for every row, and
/// f32 logits with their softmax for the completion positions.
fn rollout_phase(input: &PlanInput) -> Vec<Component> {
    let c = &input.model;
    let tokens = (input.generation_batch * input.sequence) as f64;
    let (h, i, v) = (
        c.hidden_size as f64,
        c.intermediate_size as f64,
        c.vocab_size as f64,
    );
    let rows = (input.generation_batch * input.completion) as f64;
    let mut parts = vec![
        Component {
            name: "decode activations",
            bytes: tokens * (4.0 * h + 3.0 * i) * input.weight_bytes,
            how: format!("{tokens:.0} tokens × one layer's intermediates"),
        },
        Component {
            name: "decode logits",
            bytes: rows * v * 4.0 * 3.0,
            how: format!("{rows:.0} masked rows × V × f32 × 3 (logits, probs, scores)"),
        },
    ];
    if input.decode_cache {
        let kv = (c.num_kv_heads() * c.head_dim()) as f64;
        let layers = c.num_hidden_layers as f64;
        parts.push(Component {
            name: "decode KV cache",
            bytes: 2.0 * layers * tokens * kv * input.weight_bytes,
            how: format!("keys + values × {layers:.0} layers × {tokens:.0} tokens × {kv:.0}"),
        });
    }
    parts
}

/// Backward of one micro-batch: the full working-dtype gradients, the saved activations
/// (all layers, or layer inputs plus one recomputed layer under checkpointing) and the lean
/// log-prob path's `[chunk, V]` blocks and f32 LM-head gradient. The activation gradients
/// in flight are not counted on top: backward releases each layer's saved tensors as it
/// passes, and the measured peaks (scripts/bench-memory) stay within the saved set.
fn backward_phase(input: &PlanInput, params: &ParameterCount, trained: &Trained) -> Vec<Component> {
    let c = &input.model;
    let w = input.weight_bytes;
    let rows = (input.micro_batch * input.versions) as f64;
    let tokens = rows * input.sequence as f64;
    let (saved, upcast) = layer_saved_per_token(c, !input.fused_attention, input.sequence as f64);
    let upcast = if w < 4.0 { upcast * 4.0 } else { 0.0 };
    // LoRA: each adapter's f32 output [tokens, out] and projection [tokens, r] stay alive
    // for backward (measured by scripts/bench-memory: about one f32 output per target).
    let adapter = input
        .lora
        .as_ref()
        .map_or(0.0, |l| adapter_outputs(c, l) * 4.0);
    let per_layer = tokens * (saved * w + upcast + adapter);
    let h = c.hidden_size as f64;
    let layers = c.num_hidden_layers as f64;
    let activations = if input.checkpointing {
        Component {
            name: "activations",
            bytes: tokens * h * w * (layers + 3.0) + per_layer,
            how: format!("{tokens:.0} tokens: every layer's input + one recomputed layer"),
        }
    } else {
        Component {
            name: "activations",
            bytes: per_layer * layers + tokens * h * w * 3.0,
            how: format!("{tokens:.0} tokens × {layers} layers × saved tensors"),
        }
    };
    let chunk = (input.logits_chunk_rows as f64).min(rows * input.completion as f64);
    let v = c.vocab_size as f64;
    // The f32 LM-head gradient (not under LoRA: the head is frozen), and the head's f32
    // upcast when the weights are bf16.
    let head_grad = if input.lora.is_some() { 0.0 } else { 1.0 };
    let head_upcast = if w < 4.0 { 1.0 } else { 0.0 };
    let head = params.vocab_matrix * 4.0 * (head_grad + head_upcast);
    vec![
        Component {
            name: "gradients",
            bytes: trained.count * trained.bytes,
            how: format!("{:.3} B trained × {} B", trained.count / 1e9, trained.bytes),
        },
        activations,
        Component {
            name: "log-prob blocks",
            bytes: chunk * v * 4.0 * 3.0 + head,
            how: format!("{chunk:.0} rows × V × f32 × 3, f32 LM-head gradient / upcast"),
        },
    ]
}

/// The optimizer step: the reduced gradients it reads (full working-dtype ones under
/// ZeRO 0/1; the owner's f32 shard under ZeRO-2, whose full gradients are freed once
/// reduced), one communication bucket, and per-tensor update temporaries.
fn step_phase(input: &PlanInput, trained: &Trained) -> Vec<Component> {
    let p = trained.count;
    let w = trained.bytes;
    let world = input.world as f64;
    let grads = if input.zero.shards_gradients() && input.world > 1 {
        Component {
            name: "reduced gradients",
            bytes: p * 4.0 / world,
            how: format!("f32 shard / {} ranks (ZeRO-2)", input.world),
        }
    } else {
        Component {
            name: "gradients",
            bytes: p * w,
            how: format!("full, in the working dtype ({w} B)"),
        }
    };
    let bucket = if input.world > 1 {
        input.bucket_bytes.min(p * 4.0) * 2.0
    } else {
        0.0
    };
    vec![
        grads,
        Component {
            name: "bucket",
            bytes: bucket,
            how: "flattened gradient bucket and its cast".into(),
        },
        Component {
            name: "update temporaries",
            bytes: trained.largest * 4.0 * 4.0,
            how: "4 f32 copies of the largest tensor".into(),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use couplet_model::Preset;

    #[test]
    fn parameter_count_matches_the_model() {
        for (tied, llada) in [(false, false), (true, false), (false, true)] {
            let mut cfg = Preset::Tiny.config(97);
            cfg.tie_word_embeddings = tied;
            if llada {
                cfg = couplet_model::llada::fresh(cfg);
            }
            let model = couplet_model::DreamModel::new(
                &cfg,
                tch::Device::Cpu,
                tch::Kind::Float,
                couplet_model::Init::Zeros,
            );
            let counted = parameter_count(&cfg).total;
            assert_eq!(
                counted,
                model.num_parameters() as f64,
                "tied = {tied}, llada = {llada}"
            );
        }
    }

    fn hand_config() -> DreamConfig {
        let mut cfg = Preset::Tiny.config(1000);
        cfg.vocab_size = 1000;
        cfg.hidden_size = 64;
        cfg.intermediate_size = 128;
        cfg.num_hidden_layers = 2;
        cfg.num_attention_heads = 4;
        cfg.num_key_value_heads = Some(2);
        cfg.tie_word_embeddings = false;
        cfg
    }

    fn component(parts: &[Component], name: &str) -> f64 {
        parts
            .iter()
            .find(|c| c.name == name)
            .map_or(f64::NAN, |c| c.bytes)
    }

    #[test]
    fn the_component_arithmetic_by_hand() {
        // Per layer: q 64·64 + 64, k and v 64·32 + 32 each, o 64·64, MLP 3·64·128, two norms
        // of 64 = 37,120; two layers, embedding and head 1000·64 each, final norm 64.
        let cfg = hand_config();
        let p = 2.0 * 37_120.0 + 2.0 * 64_000.0 + 64.0;
        assert_eq!(parameter_count(&cfg).total, p);
        let input = PlanInput {
            model: cfg.clone(),
            weight_bytes: 2.0,
            world: 4,
            zero: ZeroStage::Gradients,
            reference_bytes: Some(2.0),
            micro_batch: 2,
            versions: 3,
            sequence: 10,
            completion: 4,
            logits_chunk_rows: 8,
            checkpointing: false,
            generation_batch: 4,
            decode_cache: false,
            bucket_bytes: 1024.0,
            lora: None,
            fused_attention: true,
            runtime_bytes: 0.0,
        };
        let budget = plan(&input);
        let r = &budget.resident;
        assert_eq!(component(r, "weights"), p * 2.0);
        assert_eq!(component(r, "reference model"), p * 2.0);
        assert_eq!(component(r, "AdamW moments"), p * 8.0 / 4.0);
        assert_eq!(component(r, "f32 master weights"), p * 4.0 / 4.0);
        assert_eq!(component(&budget.step, "reduced gradients"), p * 4.0 / 4.0);
        assert_eq!(component(&budget.backward, "gradients"), p * 2.0);
        // Activations: 2 rows × 3 versions × 10 tokens = 60 tokens; per token and layer
        // 4h + 6q + 5kv + 4i = 256 + 384 + 160 + 512 = 1312 bf16 elements, plus the two
        // norms' f32 upcasts (4h = 256 f32), over 2 layers, plus 3 hidden-state copies.
        let per_layer = 60.0 * (1312.0 * 2.0 + 256.0 * 4.0);
        let activations = per_layer * 2.0 + 60.0 * 64.0 * 2.0 * 3.0;
        assert_eq!(component(&budget.backward, "activations"), activations);
        // Log-prob blocks: min(8, 2·3·4 = 24) = 8 rows × V × f32 × 3, the f32 head gradient
        // and the head's f32 upcast (bf16 weights).
        let blocks = 8.0 * 1000.0 * 4.0 * 3.0 + 64_000.0 * 4.0 * 2.0;
        assert_eq!(component(&budget.backward, "log-prob blocks"), blocks);
        let backward = p * 2.0 + activations + blocks;
        let resident = p * 2.0 * 2.0 + p * 3.0;
        assert_eq!(budget.peak_phase(), ("backward", backward));
        assert_eq!(budget.peak_bytes(), resident + backward);

        // LoRA r = 2 on q and v: 2·(64 + 64) + 2·(64 + 32) = 448 per layer; no reference
        // copy, no masters (adapters are f32), moments and gradients of the adapters only.
        let mut lora_input = input.clone();
        lora_input.reference_bytes = None;
        lora_input.zero = ZeroStage::Replicated;
        lora_input.world = 1;
        lora_input.lora = Some(LoraConfig {
            rank: 2,
            target_modules: vec![LoraTarget::QProj, LoraTarget::VProj],
            ..LoraConfig::default()
        });
        let lora = plan(&lora_input);
        assert_eq!(component(&lora.resident, "LoRA adapters"), 896.0 * 4.0);
        assert_eq!(component(&lora.resident, "AdamW moments"), 896.0 * 8.0);
        assert!(component(&lora.resident, "f32 master weights").is_nan());
        assert_eq!(component(&lora.backward, "gradients"), 896.0 * 4.0);
        let lora_blocks = 8.0 * 1000.0 * 4.0 * 3.0 + 64_000.0 * 4.0;
        assert_eq!(component(&lora.backward, "log-prob blocks"), lora_blocks);
        // Each adapter's f32 output and projection: q (64 + 2) and v (32 + 2) per token.
        let lora_layer = 60.0 * (1312.0 * 2.0 + 256.0 * 4.0 + (66.0 + 34.0) * 4.0);
        assert_eq!(
            component(&lora.backward, "activations"),
            lora_layer * 2.0 + 60.0 * 64.0 * 2.0 * 3.0
        );
    }

    #[test]
    fn recipe_targets_fit() {
        // Dream-7B shape, the recipe's batch: ZeRO-2 + bf16 on 8 ranks fits 80 GB; LoRA on one.
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../configs/diffucoder_coupled.toml"
        ))
        .unwrap();
        let model: DreamConfig = serde_json::from_str(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../configs/shapes/dream-7b.json"
            ))
            .unwrap(),
        )
        .unwrap();
        let gib = |b: f64| b / GIB;
        let zero2 =
            TrainConfig::from_toml(&text, "recipe", &["distributed.zero=2".into()]).unwrap();
        let eight = plan(&PlanInput::from_config(&zero2, model.clone(), 8)).peak_bytes();
        assert!(
            gib(eight) < 80.0,
            "7B ZeRO-2 bf16 plans at {} GiB",
            gib(eight)
        );
        let recipe = TrainConfig::from_toml(&text, "recipe", &[]).unwrap();
        let one_f32 = {
            let mut c = recipe.clone();
            c.model.dtype = couplet_model::Precision::F32;
            c.reference.dtype = Some(couplet_model::Precision::F32);
            plan(&PlanInput::from_config(&c, model.clone(), 8)).peak_bytes()
        };
        assert!(
            gib(one_f32) > 80.0,
            "f32 + ZeRO-1 did not fit: {}",
            gib(one_f32)
        );
        let lora = TrainConfig::from_toml(
            &text,
            "recipe",
            &[
                "distributed.backend=\"none\"".into(),
                "distributed.zero=0".into(),
                "lora.rank=128".into(),
                "lora.alpha=256.0".into(),
                "reference.sync=false".into(),
            ],
        )
        .unwrap();
        let single = plan(&PlanInput::from_config(&lora, model, 1)).peak_bytes();
        assert!(gib(single) < 80.0, "7B LoRA plans at {} GiB", gib(single));
    }
}
