//! The reward stage: turns completions into numbers, and AceCoder-style files into prompts.
//!
//! Here live code extraction and the DiffuCoder rewards (`code` pass rate, `binary_code`,
//! `code_format`, `soft_overlong`) with their weights and NaN-skipping sum (SPEC section 3),
//! the AceCoder dataset reader and difficulty split (SPEC section 8), HumanEval, and the
//! bundled task set. Test execution itself is delegated to the `sandbox` crate.
//!
//! Not for: sampling completions (`rollout`) or advantages and losses (`trainer`).
