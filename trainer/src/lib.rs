//! The trainer stage: one GRPO round after another.
//!
//! It orchestrates a round — sample prompts, roll out G completions each (`rollout`), score
//! them (`reward`), then hand the rest to the configured RL method ([`algorithm`]: its
//! advantages, its likelihood estimate — coupled-GRPO's complementary masks or another
//! method's — and its loss) for μ optimizer steps — then logs and checkpoints (SPEC
//! sections 4–7, 9). Multi-GPU data
//! parallelism on PyTorch's c10d engine hangs off it too.
//!
//! Not for: the transformer itself (`model`), decoding (`rollout`) or test execution
//! (`sandbox`).
#![deny(missing_docs)]

pub mod advantages;
pub mod algorithm;
pub mod analysis;
pub mod config;
pub mod eval;
pub mod lean;
pub mod logging;
pub mod memory;
pub mod objective;
pub mod optim;
pub mod reference;
pub mod sft;
pub mod train;

pub use advantages::{compute_advantages, Advantages, Baseline};
pub use algorithm::{
    policy_backward, score, score_versions, Algorithm, BatchRows, Coupled, Decoupled,
    EstimatorBatch, FullMask, LeanScore, LossContext, LossInput, Method, Versions, D1,
};
pub use config::{ConfigError, TrainConfig};
pub use eval::{
    check_completions, evaluate, load_benchmark, EvalProblem, EvalReport, EvalSettings,
    ProblemResult,
};
pub use lean::{LeanConfig, LeanPass};
pub use logging::RunLog;
pub use objective::{grpo_loss, ObjectiveConfig, ObjectiveError, ObjectiveMetrics};
pub use optim::{
    assign_owners, lr_factor, warmup_steps, AdamW, AdamWConfig, Schedule, ScheduleKind, StepReport,
};
pub use reference::{Reference, ReferenceModel};
pub use sft::{
    build_example, examples_from_rows, run_sft, sft_loss, sft_step, ExampleShape, SftError,
    SftEvent, SftExample, SftPlan, SftSettings,
};
pub use train::checkpoint::{latest_checkpoint, Manifest, RunCheckpoint};
pub use train::metrics::{RoundCost, StepMetrics};
pub use train::order::PromptOrder;
pub use train::{CompletionSample, Flow, TrainError, Trainer, TrainerState};
