//! The reward stage: turns completions into numbers, and AceCoder-style files into rows.
//!
//! Here live code extraction and the DiffuCoder rewards (`code` pass rate, `binary_code`,
//! `code_format`, `soft_overlong`) with their weights and NaN-skipping sum (SPEC section 3,
//! [`rewards`]), the AceCoder dataset reader ([`data`]) over every row source ([`sources`], [`columnar`]) and difficulty split ([`split`],
//! SPEC section 8), HumanEval ([`humaneval`]), EvalPlus's HumanEval+/MBPP+ ([`evalplus`]), MBPP ([`mbpp`]), the bundled task set and the pass@k estimator ([`pass_at_k`]). Test execution
//! itself is delegated to the `sandbox` crate.
//!
//! Not for: sampling completions (`rollout`), tokenising prompts (`model`), or advantages
//! and losses (`trainer`).
#![deny(missing_docs)]

pub mod columnar;
pub mod data;
pub mod evalplus;
pub mod humaneval;
pub mod mbpp;
pub mod pass_at_k;
pub mod rewards;
pub mod sources;
pub mod split;

pub use data::{
    for_each_row, load_rows, BadRows, DataError, LoadOptions, LoadSummary, Row, RowError,
};
pub use pass_at_k::pass_at_k;
pub use rewards::{
    extract_code, format_matches, score_batch, RewardBatch, RewardConfig, RewardKind,
};
pub use split::{prepare, Difficulty, SplitReport};
