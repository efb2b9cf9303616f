//! Turning checked host tensors into device tensors, one weight at a time.

use burn::prelude::*;
use burn::tensor::TensorData;

use crate::error::{ModelError, Result};
use crate::weights::{HostTensor, WeightSource};

/// Reads weights from a [`WeightSource`], checks their shapes and uploads them to `device`.
pub(crate) struct Loader<'a> {
    pub src: &'a dyn WeightSource,
    pub device: &'a Device,
    /// Called after each tensor with its number of elements (progress reporting); an error
    /// (a cancelled load) stops loading.
    pub on_tensor: &'a dyn Fn(usize) -> Result<()>,
}

impl Loader<'_> {
    /// The host tensor `name`, checked to have `shape`.
    pub fn host(&self, name: &str, shape: &[usize]) -> Result<HostTensor> {
        let t = self.src.tensor_shaped(name, shape)?;
        (self.on_tensor)(t.data.len())?;
        Ok(t)
    }

    /// Errors unless the checkpoint holds `last_layer_tensor`, a tensor of the last block the
    /// config declares: a config (or GGUF `block_count`) claiming more layers than the file
    /// holds is named before anything is sized by the layer count.
    pub fn expect_layers(&self, n_layers: usize, last_layer_tensor: &str) -> Result<()> {
        if self.src.contains(last_layer_tensor) {
            return Ok(());
        }
        Err(ModelError::MissingTensor(format!(
            "{last_layer_tensor} (the config declares {n_layers} layers; the checkpoint has no \
             tensor of the last one)"
        )))
    }

    /// A rank-1 weight.
    pub fn vector(&self, name: &str, len: usize) -> Result<Tensor<1>> {
        Ok(self.upload1(self.host(name, &[len])?))
    }

    /// A rank-1 weight that may be absent.
    pub fn optional_vector(&self, name: &str, len: usize) -> Result<Option<Tensor<1>>> {
        if self.src.contains(name) {
            self.vector(name, len).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A rank-2 weight stored as in the file.
    pub fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Tensor<2>> {
        Ok(self.upload2(self.host(name, &[rows, cols])?))
    }

    /// A rank-2 weight stored `[out, in]` in the file (a `torch.nn.Linear`), returned `[in, out]`.
    pub fn linear(&self, name: &str, d_in: usize, d_out: usize) -> Result<Tensor<2>> {
        Ok(self.upload2(self.host(name, &[d_out, d_in])?.transposed()))
    }

    /// Uploads a rank-1 host tensor.
    pub fn upload1(&self, t: HostTensor) -> Tensor<1> {
        let n = t.data.len();
        Tensor::from_data(TensorData::new(t.data, [n]), self.device)
    }

    /// Uploads a rank-2 host tensor.
    pub fn upload2(&self, t: HostTensor) -> Tensor<2> {
        let shape = [t.shape[0], t.shape[1]];
        Tensor::from_data(TensorData::new(t.data, shape), self.device)
    }
}
