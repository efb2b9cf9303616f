//! Shared helpers for the integration tests: the CPU device, fixture paths, tensor readers.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::prelude::*;
use burn::tensor::TensorData;
use fidelis_models::Model;

/// The test device: Burn's flex CPU backend (ndarray when only that is compiled), or the GPU
/// backend named by `FIDELIS_TEST_DEVICE=wgpu|cuda` when that feature is compiled in, so the
/// same tests run on a GPU.
pub fn device() -> Device {
    match std::env::var("FIDELIS_TEST_DEVICE").as_deref() {
        #[cfg(feature = "wgpu")]
        Ok("wgpu") => return Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        #[cfg(feature = "cuda")]
        Ok("cuda") => return Device::cuda(0),
        Ok(other) if !other.is_empty() && other != "cpu" => {
            panic!("FIDELIS_TEST_DEVICE={other} is not compiled into this test build")
        }
        _ => {}
    }
    #[cfg(feature = "flex")]
    return Device::flex();
    #[cfg(all(not(feature = "flex"), feature = "ndarray"))]
    #[allow(deprecated)]
    return Device::ndarray();
    #[cfg(not(any(feature = "flex", feature = "ndarray")))]
    return Device::default();
}

/// Path of a committed fixture.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Loads a fixture model on the test device.
pub fn load(name: &str) -> Model {
    Model::load(&fixture(name), &device()).unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

/// The values of a float tensor.
pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 data")
}

/// A `[1, n]` token tensor.
pub fn tokens(ids: &[u32], device: &Device) -> Tensor<2, Int> {
    let ids: Vec<i64> = ids.iter().map(|&t| i64::from(t)).collect();
    let n = ids.len();
    Tensor::from_data(TensorData::new(ids, [1, n]), device)
}

/// Largest absolute difference between two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
