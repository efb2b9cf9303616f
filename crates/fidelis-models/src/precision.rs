//! `--dtype f32|f16|bf16`: the float type weights and activations are stored and computed in.
//!
//! Burn gives every device a default float type, which every tensor created on it without an
//! explicit type takes (weights as they are uploaded, activations, probes, masks). Setting it
//! once, before anything is created on the device, therefore runs the whole model in that
//! precision; [`to_f32`] widens the values where precision matters (metrics, score
//! contractions and their sums, which `fidelis-circuit` computes in f32 whatever the model's
//! type). f32 is the default. flex, wgpu and CUDA have f16 and bf16; ndarray has f32 only.

use burn::prelude::*;
use burn::tensor::FloatDType;

use crate::error::{ModelError, Result};

/// The float type a model runs in.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    strum::Display,
    strum::VariantNames,
    strum::VariantArray,
    strum::IntoStaticStr,
    serde::Serialize,
    serde::Deserialize,
)]
#[strum(serialize_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// 32-bit IEEE floats (the default).
    #[default]
    F32,
    /// 16-bit IEEE floats (5 exponent bits: values past ±65,504 overflow).
    F16,
    /// bfloat16 (f32's exponent range with 8 bits of mantissa).
    Bf16,
}

impl std::str::FromStr for Dtype {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        use strum::VariantNames;
        match s {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "bf16" => Ok(Self::Bf16),
            other => Err(format!(
                "unknown dtype `{other}` (expected one of {})",
                Self::VARIANTS.join(", ")
            )),
        }
    }
}

impl Dtype {
    /// Bytes per element.
    pub fn bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::Bf16 => 2,
        }
    }

    fn burn(self) -> FloatDType {
        match self {
            Self::F32 => FloatDType::F32,
            Self::F16 => FloatDType::F16,
            Self::Bf16 => FloatDType::BF16,
        }
    }
}

/// Makes `dtype` the float type of every tensor later created on `device` without an explicit
/// type. Call it before loading anything onto the device. Asking for the type the device already
/// has is not an error; asking for another once tensors exist, or for one the backend lacks, is.
pub fn set_dtype(device: &mut Device, dtype: Dtype) -> Result<()> {
    let current = device.settings().float_dtype;
    if current == dtype.burn() {
        return Ok(());
    }
    device.configure(dtype.burn()).map_err(|e| {
        ModelError::Unsupported(format!(
            "--dtype {dtype} on {device:?}: {e} (f16 and bf16 run on the flex, wgpu and cuda \
             backends; ndarray has f32 only)"
        ))
    })
}

/// The float type tensors on `device` are created in.
pub fn dtype_of(device: &Device) -> Dtype {
    match device.settings().float_dtype {
        FloatDType::F16 => Dtype::F16,
        FloatDType::BF16 => Dtype::Bf16,
        _ => Dtype::F32,
    }
}

/// `t` in f32 (a no-op for a tensor that already is).
pub fn to_f32<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    t.cast(FloatDType::F32)
}
