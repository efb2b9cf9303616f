//! Reading tensors back to the host, with an error instead of an empty result.

use burn::prelude::*;

use crate::{CircuitError, Result};

/// The values of a float tensor, row-major, as `f32`.
///
/// A tensor whose data cannot be read as `f32` is an error ([`CircuitError::Readback`]), never
/// an empty vector.
pub fn to_vec<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.try_into_vec_as::<f32>()
        .map_err(|e| CircuitError::Readback(format!("{e:?}")))
}
