//! Names of tensor element types as they appear in `config.json` and safetensors headers.

use safetensors::Dtype;
use tch::Kind;

/// `torch_dtype` strings of Hugging Face configs.
pub fn kind_from_name(name: &str) -> Option<Kind> {
    match name {
        "float32" | "f32" | "fp32" => Some(Kind::Float),
        "bfloat16" | "bf16" => Some(Kind::BFloat16),
        "float16" | "f16" | "fp16" => Some(Kind::Half),
        _ => None,
    }
}

/// The `torch_dtype` name of `kind` written to `config.json`.
pub fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::BFloat16 => "bfloat16",
        Kind::Half => "float16",
        Kind::Double => "float64",
        _ => "float32",
    }
}

/// Floating-point safetensors dtypes we can load weights from (converted on copy).
pub fn kind_from_safetensors(dtype: Dtype) -> Option<Kind> {
    match dtype {
        Dtype::F32 => Some(Kind::Float),
        Dtype::BF16 => Some(Kind::BFloat16),
        Dtype::F16 => Some(Kind::Half),
        Dtype::F64 => Some(Kind::Double),
        _ => None,
    }
}

/// The safetensors header name of `kind`.
pub fn safetensors_name(kind: Kind) -> &'static str {
    match kind {
        Kind::BFloat16 => "BF16",
        Kind::Half => "F16",
        Kind::Double => "F64",
        Kind::Int64 => "I64",
        Kind::Int => "I32",
        Kind::Uint8 => "U8",
        Kind::Bool => "BOOL",
        _ => "F32",
    }
}

/// Bytes per element of `kind`.
pub fn element_size(kind: Kind) -> usize {
    match kind {
        Kind::BFloat16 | Kind::Half => 2,
        Kind::Double | Kind::Int64 => 8,
        Kind::Uint8 | Kind::Bool | Kind::Int8 => 1,
        _ => 4,
    }
}
