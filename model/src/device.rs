//! Where a model runs and in which precision, as users name them (`model.device`,
//! `--device`, `model.dtype`, `--dtype`): parsed once, here, for every command and config.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tch::{Device, Kind};

/// `cpu`, `cuda` (the first GPU), `cuda:N`, or `auto` (the first GPU when CUDA is
/// available, else the CPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// The CPU.
    #[default]
    Cpu,
    /// The first GPU when CUDA is available, else the CPU.
    Auto,
    /// GPU number N.
    Cuda(usize),
}

/// A device that was named but does not exist on this machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{spec}: {reason}")]
pub struct DeviceUnavailable {
    /// What was asked for.
    pub spec: DeviceSpec,
    /// What this machine has instead.
    pub reason: String,
}

impl DeviceSpec {
    /// The libtorch device (`Auto` is resolved now), after checking that it exists here:
    /// libtorch would otherwise abort on the first tensor placed on a missing GPU.
    pub fn resolve(self) -> Result<Device, DeviceUnavailable> {
        self.resolve_among(cuda_devices())
    }

    /// [`resolve`](Self::resolve) on a machine with `visible` CUDA devices.
    fn resolve_among(self, visible: usize) -> Result<Device, DeviceUnavailable> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Auto if visible > 0 => Ok(Device::Cuda(0)),
            DeviceSpec::Auto => Ok(Device::Cpu),
            DeviceSpec::Cuda(i) if i < visible => Ok(Device::Cuda(i)),
            DeviceSpec::Cuda(_) => Err(DeviceUnavailable {
                spec: self,
                reason: if visible == 0 {
                    "CUDA is not available here (`couplet devices` lists 0 CUDA devices); use \
                     cpu, or auto to take the first GPU where there is one"
                        .into()
                } else {
                    format!(
                        "only {visible} CUDA device(s) are visible (cuda:0 … cuda:{}; `couplet devices` lists them)",
                        visible - 1
                    )
                },
            }),
        }
    }
}

/// CUDA devices libtorch can use (0 without CUDA).
pub fn cuda_devices() -> usize {
    if tch::Cuda::is_available() {
        tch::Cuda::device_count().max(0) as usize
    } else {
        0
    }
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "cpu" => Ok(DeviceSpec::Cpu),
            "auto" => Ok(DeviceSpec::Auto),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(i)) => Ok(DeviceSpec::Cuda(i)),
                _ => Err(format!("expected cpu, cuda, cuda:N or auto, got {other:?}")),
            },
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Auto => f.write_str("auto"),
            DeviceSpec::Cuda(0) => f.write_str("cuda"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl Serialize for DeviceSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Working precision of weights and activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// f32 throughout (the default, and the only choice that is bitwise reproducible on
    /// the CPU).
    #[default]
    F32,
    /// bf16 weights and activations; in training, the optimizer keeps f32 master weights
    /// and moments and writes each update back rounded to bf16.
    Bf16,
}

impl Precision {
    /// The element type weights are loaded in for inference (`generate`, `eval`).
    pub fn kind(self) -> Kind {
        match self {
            Precision::F32 => Kind::Float,
            Precision::Bf16 => Kind::BFloat16,
        }
    }

    /// Whether weights and activations are bf16.
    pub fn is_bf16(self) -> bool {
        self == Precision::Bf16
    }
}

impl FromStr for Precision {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "f32" | "float32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            other => Err(format!("expected f32 or bf16, got {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_round_trip() {
        for name in ["cpu", "auto", "cuda", "cuda:3"] {
            let spec: DeviceSpec = name.parse().unwrap();
            assert_eq!(spec.to_string(), name);
        }
        assert_eq!("cuda:0".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(0)));
        assert!("gpu".parse::<DeviceSpec>().unwrap_err().contains("cuda:N"));
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
    }

    #[test]
    fn a_missing_gpu_is_an_error_that_says_what_exists() {
        assert_eq!(DeviceSpec::Cpu.resolve_among(0), Ok(Device::Cpu));
        assert_eq!(DeviceSpec::Auto.resolve_among(0), Ok(Device::Cpu));
        assert_eq!(DeviceSpec::Auto.resolve_among(2), Ok(Device::Cuda(0)));
        assert_eq!(DeviceSpec::Cuda(1).resolve_among(2), Ok(Device::Cuda(1)));
        let none = DeviceSpec::Cuda(0).resolve_among(0).unwrap_err();
        assert!(
            none.to_string().starts_with("cuda: CUDA is not available"),
            "{none}"
        );
        let two = DeviceSpec::Cuda(2).resolve_among(2).unwrap_err();
        assert!(two.to_string().contains("only 2 CUDA device(s)"), "{two}");
    }

    #[test]
    fn precision_accepts_both_spellings() {
        assert_eq!("bfloat16".parse::<Precision>(), Ok(Precision::Bf16));
        assert_eq!("f32".parse::<Precision>(), Ok(Precision::F32));
        assert!("f16".parse::<Precision>().is_err());
    }
}
