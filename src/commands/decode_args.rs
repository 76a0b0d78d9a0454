//! Decoder options shared by `generate`, `eval` and `analyze`.

use anyhow::Result;
use couplet_model::{DeviceSpec, Precision};
use couplet_rollout::{
    CacheMode, CachePolicy, DecoderConfig, DecoderKind, DecoderSettings, DreamAlg, FastDecoding,
    Remasking, RolloutConfig, SamplingParams,
};

#[derive(clap::Args, Clone)]
pub struct DecodeArgs {
    /// Denoising steps (default: 64; `analyze`: --max-new-tokens, one token per step).
    #[arg(long, allow_negative_numbers = true)]
    pub steps: Option<i64>,
    #[arg(long, default_value_t = 64, allow_negative_numbers = true)]
    pub max_new_tokens: i64,
    /// origin, maskgit_plus, topk_margin or entropy (default: entropy; `analyze`:
    /// maskgit_plus, i.e. low-confidence remasking).
    #[arg(long)]
    pub alg: Option<DreamAlg>,
    /// Sampling temperature (default: 0, greedy; `analyze` takes --temperatures).
    #[arg(long, allow_negative_numbers = true)]
    pub temperature: Option<f64>,
    #[arg(long, allow_negative_numbers = true)]
    pub top_p: Option<f64>,
    #[arg(long, allow_negative_numbers = true)]
    pub top_k: Option<i64>,
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub alg_temp: f64,
    /// Use the LLaDA/d1 block decoder with blocks of this many tokens (must divide
    /// --max-new-tokens; --steps must be a multiple of the number of blocks).
    #[arg(long, allow_negative_numbers = true)]
    pub block_length: Option<i64>,
    /// Block decoder only: low_confidence or random.
    #[arg(long, default_value = "low_confidence")]
    pub remasking: Remasking,
    /// Sequences decoded together.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep only the last N prompt tokens.
    #[arg(long)]
    pub max_prompt_length: Option<usize>,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// f32 or bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: Precision,
    /// Key/value caching: none (exact), prefix, dual (block decoder only) or delayed.
    #[arg(long, default_value = "none")]
    pub cache: CacheMode,
    /// With --cache: a full forward every N forwards (default: only at the start and at
    /// each block boundary).
    #[arg(long, allow_negative_numbers = true)]
    pub refresh_every: Option<i64>,
    /// Reveal every masked position whose proposal probability exceeds this (at least one
    /// per row); --steps becomes an upper bound.
    #[arg(long, allow_negative_numbers = true)]
    pub threshold: Option<f64>,
    /// Also run the exact forward on every cached step and report the mean |Δ log p| of
    /// the revealed tokens (measures a cache mode; doubles the cost).
    #[arg(long)]
    pub audit_cache: bool,
    /// LoRA adapters (a PEFT folder: adapter_config.json + adapter_model.safetensors, e.g.
    /// a LoRA run's RUN/checkpoint-N/adapter) applied on top of --model.
    #[arg(long)]
    pub adapter: Option<std::path::PathBuf>,
}

impl DecodeArgs {
    /// The decoder these options describe, validated: the block decoder when
    /// `--block-length` is given, else Dream's.
    pub fn decoder(&self) -> Result<DecoderConfig> {
        let kind = match self.block_length {
            Some(_) => DecoderKind::Block,
            None => DecoderKind::Dream,
        };
        let sampling = SamplingParams {
            temperature: self.temperature.unwrap_or(0.0),
            top_p: self.top_p,
            top_k: self.top_k,
        };
        let alg = self.alg.unwrap_or(DreamAlg::Entropy);
        let (alg_temp, remasking) = (self.alg_temp, self.remasking);
        let settings = DecoderSettings {
            kind,
            steps: self.steps.unwrap_or(64),
            max_new_tokens: self.max_new_tokens,
            block_length: self.block_length,
            sampling,
            alg,
            alg_temp,
            remasking,
            fast: FastDecoding {
                cache: CachePolicy {
                    mode: self.cache,
                    refresh_every: self.refresh_every,
                },
                threshold: self.threshold,
                audit: self.audit_cache,
            },
        };
        settings
            .build()
            .map_err(|e| super::Usage(e.to_string()).into())
    }

    /// The rollout settings of `group_size` samples per prompt with these options.
    pub fn rollout(&self, group_size: usize) -> Result<RolloutConfig> {
        Ok(RolloutConfig::new(
            self.decoder()?,
            group_size,
            self.batch_size.max(1),
            self.max_prompt_length,
        ))
    }
}
