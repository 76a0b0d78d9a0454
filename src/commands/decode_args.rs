//! Decoder options shared by `generate` and `eval`.

use anyhow::Result;
use couplet_rollout::{
    BlockDecodeConfig, DecoderConfig, DreamAlg, DreamDecodeConfig, Remasking, SamplingParams,
};

#[derive(clap::Args, Clone)]
pub struct DecodeArgs {
    #[arg(long, default_value_t = 64, allow_negative_numbers = true)]
    pub steps: i64,
    #[arg(long, default_value_t = 64, allow_negative_numbers = true)]
    pub max_new_tokens: i64,
    /// origin, maskgit_plus, topk_margin or entropy.
    #[arg(long, default_value = "entropy")]
    pub alg: String,
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub temperature: f64,
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
    pub remasking: String,
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
    pub device: String,
    /// f32 or bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

impl DecodeArgs {
    /// The decoder these options describe, validated.
    pub fn decoder(&self) -> Result<DecoderConfig> {
        let args = self;
        let sampling = SamplingParams {
            temperature: args.temperature,
            top_p: args.top_p,
            top_k: args.top_k,
        };
        couplet_rollout::validate_sampling(&sampling)?;
        let decoder = match args.block_length {
            Some(block_length) => DecoderConfig::Block(BlockDecodeConfig {
                steps: args.steps,
                max_new_tokens: args.max_new_tokens,
                block_length,
                temperature: args.temperature,
                remasking: Remasking::parse(&args.remasking)?,
            }),
            None => DecoderConfig::Dream(DreamDecodeConfig {
                steps: args.steps,
                max_new_tokens: args.max_new_tokens,
                alg: DreamAlg::parse(&args.alg)?,
                alg_temp: args.alg_temp,
                sampling,
                eps: 1e-3,
            }),
        };
        decoder.validate()?;
        Ok(decoder)
    }
}
