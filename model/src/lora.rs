//! LoRA adapters on the linear projections, in PEFT's layout.
//!
//! A target projection `y = W·x (+ b)` becomes `y = W·x (+ b) + s · B·A·dropout(x)` with
//! `A [r, in]`, `B [out, r]` in f32 and `s = alpha / r`; `B = 0` at init, so the adapted
//! model equals the base until the first update. The base weights are frozen (and may be
//! bf16); switching the adapters off gives the base model back, which is what the KL term's
//! reference is under LoRA — no second copy of the weights.
//!
//! Tensor names are PEFT's (`base_model.model.<module>.lora_A.weight`), so an adapter folder
//! (`adapter_config.json` + `adapter_model.safetensors`) loads in PEFT and back.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::{ModelError, Result};

/// A projection LoRA can adapt, by its module name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraTarget {
    /// Attention query projection.
    QProj,
    /// Attention key projection.
    KProj,
    /// Attention value projection.
    VProj,
    /// Attention output projection.
    OProj,
    /// MLP gate projection.
    GateProj,
    /// MLP up projection.
    UpProj,
    /// MLP down projection.
    DownProj,
}

impl LoraTarget {
    /// Every target, in layer order.
    pub const ALL: [LoraTarget; 7] = [
        LoraTarget::QProj,
        LoraTarget::KProj,
        LoraTarget::VProj,
        LoraTarget::OProj,
        LoraTarget::GateProj,
        LoraTarget::UpProj,
        LoraTarget::DownProj,
    ];

    /// The module's name in the checkpoint (`q_proj`, …).
    pub fn name(self) -> &'static str {
        match self {
            LoraTarget::QProj => "q_proj",
            LoraTarget::KProj => "k_proj",
            LoraTarget::VProj => "v_proj",
            LoraTarget::OProj => "o_proj",
            LoraTarget::GateProj => "gate_proj",
            LoraTarget::UpProj => "up_proj",
            LoraTarget::DownProj => "down_proj",
        }
    }

    /// `self_attn` or `mlp`: the block holding the module.
    pub fn block(self) -> &'static str {
        match self {
            LoraTarget::GateProj | LoraTarget::UpProj | LoraTarget::DownProj => "mlp",
            _ => "self_attn",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        LoraTarget::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// How `A` is initialised (`B` is always zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraInit {
    /// Kaiming-uniform `A` (PEFT's default, `init_lora_weights = true`).
    #[default]
    Default,
    /// `A ~ N(0, 1/r)` (PEFT's `"gaussian"`).
    Gaussian,
}

/// The adapters' shape; also the `[lora]` section of a training config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraConfig {
    /// Rank r of every adapter (0: no adapters, full fine-tuning).
    pub rank: i64,
    /// The update is scaled by alpha / r.
    pub alpha: f64,
    /// Dropout on the adapter's input during the policy update.
    pub dropout: f64,
    /// The projections to adapt.
    pub target_modules: Vec<LoraTarget>,
    /// Initialisation of `A`.
    pub init: LoraInit,
}

impl Default for LoraConfig {
    /// Off (rank 0); when turned on: alpha = 2r is set by the user, all seven projections.
    fn default() -> Self {
        LoraConfig {
            rank: 0,
            alpha: 16.0,
            dropout: 0.0,
            target_modules: LoraTarget::ALL.to_vec(),
            init: LoraInit::Default,
        }
    }
}

impl LoraConfig {
    /// Whether adapters are configured at all.
    pub fn enabled(&self) -> bool {
        self.rank > 0
    }

    /// `alpha / r`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank.max(1) as f64
    }

    /// Positive rank and alpha, dropout in [0, 1), at least one target: `(field, why)`.
    pub fn check(&self) -> std::result::Result<(), (&'static str, String)> {
        if self.rank < 0 {
            return Err(("rank", "must be ≥ 0 (0: no adapters)".into()));
        }
        if !(self.alpha > 0.0 && self.alpha.is_finite()) {
            return Err(("alpha", "must be > 0".into()));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(("dropout", "must be in [0, 1)".into()));
        }
        if self.enabled() && self.target_modules.is_empty() {
            return Err(("target_modules", "name at least one projection".into()));
        }
        Ok(())
    }
}

/// One adapter: `s · B·A·dropout(x)`, f32.
#[derive(Debug)]
pub struct Adapter {
    /// `[r, in]`.
    pub a: Tensor,
    /// `[out, r]`.
    pub b: Tensor,
    /// alpha / r.
    pub scale: f64,
    /// Dropout probability of the input.
    pub dropout: f64,
}

impl Adapter {
    /// The adapter's contribution for `xs [.., in]`, in `xs`'s dtype. `dropout_seed` (the
    /// policy update only) makes the dropout mask a function of the seed, so a recomputed
    /// layer (checkpointing) and a resumed run draw the same masks.
    pub fn delta(&self, xs: &Tensor, dropout_seed: Option<u64>) -> Tensor {
        let mut x = xs.to_kind(Kind::Float);
        if let (Some(seed), true) = (dropout_seed, self.dropout > 0.0) {
            x = crate::random::with_torch_seed((seed >> 1) as i64, || {
                x.dropout(self.dropout, true)
            });
        }
        (x.matmul(&self.a.tr()).matmul(&self.b.tr()) * self.scale).to_kind(xs.kind())
    }

    /// `s · B·A` `[out, in]`, f32: what merging adds to the base weight.
    pub fn merged_delta(&self) -> Tensor {
        self.b.matmul(&self.a) * self.scale
    }
}

/// PEFT's name of an adapter tensor: `base_model.model.model.layers.<i>.<block>.<module>.lora_<A|B>.weight`.
pub fn tensor_name(layer: usize, target: LoraTarget, which: char) -> String {
    format!(
        "base_model.model.model.layers.{layer}.{}.{}.lora_{which}.weight",
        target.block(),
        target.name()
    )
}

/// `adapter_config.json` as PEFT writes it (the fields Couplet reads and writes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeftConfig {
    /// Must be `LORA`.
    pub peft_type: String,
    /// `CAUSAL_LM` when written by Couplet.
    #[serde(default)]
    pub task_type: Option<String>,
    /// Rank.
    pub r: i64,
    /// Alpha.
    pub lora_alpha: f64,
    /// Dropout.
    #[serde(default)]
    pub lora_dropout: f64,
    /// Module names.
    pub target_modules: Vec<String>,
    /// Must be `none`.
    #[serde(default = "bias_none")]
    pub bias: String,
    /// Must be false (Couplet's weights are `[out, in]`).
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// rsLoRA scaling (alpha / √r) is not supported.
    #[serde(default)]
    pub use_rslora: bool,
    /// DoRA is not supported.
    #[serde(default)]
    pub use_dora: bool,
    /// `true` or `"gaussian"`.
    #[serde(default)]
    pub init_lora_weights: serde_json::Value,
    /// The base model's folder.
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    /// PEFT's flag for adapters saved for inference.
    #[serde(default)]
    pub inference_mode: bool,
    /// Per-module ranks are not supported.
    #[serde(default)]
    pub rank_pattern: serde_json::Map<String, serde_json::Value>,
    /// Per-module alphas are not supported.
    #[serde(default)]
    pub alpha_pattern: serde_json::Map<String, serde_json::Value>,
    /// Extra trained modules are not supported.
    #[serde(default)]
    pub modules_to_save: Option<serde_json::Value>,
}

fn bias_none() -> String {
    "none".into()
}

impl PeftConfig {
    /// The PEFT config of `lora` adapters on the base model `base`.
    pub fn of(lora: &LoraConfig, base: Option<&Path>) -> Self {
        PeftConfig {
            peft_type: "LORA".into(),
            task_type: Some("CAUSAL_LM".into()),
            r: lora.rank,
            lora_alpha: lora.alpha,
            lora_dropout: lora.dropout,
            target_modules: lora
                .target_modules
                .iter()
                .map(|t| t.name().into())
                .collect(),
            bias: bias_none(),
            fan_in_fan_out: false,
            use_rslora: false,
            use_dora: false,
            init_lora_weights: match lora.init {
                LoraInit::Default => serde_json::Value::Bool(true),
                LoraInit::Gaussian => serde_json::Value::String("gaussian".into()),
            },
            base_model_name_or_path: base.map(|p| p.display().to_string()),
            inference_mode: true,
            rank_pattern: Default::default(),
            alpha_pattern: Default::default(),
            modules_to_save: None,
        }
    }

    /// The adapters this config describes, or the field that Couplet cannot honour.
    pub fn lora(&self, path: &Path) -> Result<LoraConfig> {
        let refuse =
            |field: &'static str, message: String| Err(ModelError::field(path, field, message));
        if self.peft_type != "LORA" {
            return refuse(
                "peft_type",
                format!("{:?}: only LORA adapters load", self.peft_type),
            );
        }
        if self.bias != "none" {
            return refuse(
                "bias",
                format!("{:?}: only bias = \"none\" is supported", self.bias),
            );
        }
        for (field, on) in [
            ("fan_in_fan_out", self.fan_in_fan_out),
            ("use_rslora", self.use_rslora),
            ("use_dora", self.use_dora),
            ("rank_pattern", !self.rank_pattern.is_empty()),
            ("alpha_pattern", !self.alpha_pattern.is_empty()),
            (
                "modules_to_save",
                self.modules_to_save.as_ref().is_some_and(|m| !m.is_null()),
            ),
        ] {
            if on {
                return refuse(field, "is not supported by Couplet's LoRA".into());
            }
        }
        let mut targets = Vec::new();
        for name in &self.target_modules {
            match LoraTarget::parse(name) {
                Some(t) => targets.push(t),
                None => {
                    return refuse(
                        "target_modules",
                        format!("{name:?} is not one of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj"),
                    )
                }
            }
        }
        let init = match &self.init_lora_weights {
            serde_json::Value::String(s) if s == "gaussian" => LoraInit::Gaussian,
            _ => LoraInit::Default,
        };
        let lora = LoraConfig {
            rank: self.r,
            alpha: self.lora_alpha,
            dropout: self.lora_dropout,
            target_modules: targets,
            init,
        };
        if let Err((field, message)) = lora.check() {
            let field = match field {
                "rank" => "r",
                "alpha" => "lora_alpha",
                "dropout" => "lora_dropout",
                other => other,
            };
            return refuse(field, message);
        }
        if !lora.enabled() {
            return refuse("r", "must be at least 1".into());
        }
        Ok(lora)
    }
}
