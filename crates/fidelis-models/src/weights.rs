//! Reading named f32 weights from checkpoint files, one tensor at a time.
//!
//! A [`WeightSource`] hands out one tensor as an f32 vector in row-major (PyTorch) order. The
//! model builder converts each into a Burn tensor before asking for the next, and the file pages
//! a tensor was read from are handed back to the kernel once it is converted
//! (`release_pages`), so loading holds one tensor's pages and one converted tensor beyond the
//! weights already on the device rather than the whole mapped file.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::error::{ModelError, Result};

/// A named tensor in row-major order: its shape and its values as f32.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Shape, outermost dimension first.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

impl HostTensor {
    /// Checks the shape against what the config implies.
    pub fn expect_shape(self, name: &str, expected: &[usize]) -> Result<Self> {
        if self.shape != expected {
            return Err(ModelError::ShapeMismatch {
                tensor: name.to_string(),
                expected: expected.to_vec(),
                found: self.shape,
            });
        }
        Ok(self)
    }

    /// The transpose of a 2-D tensor (`[r, c]` becomes `[c, r]`).
    pub fn transposed(&self) -> Self {
        let (rows, cols) = (self.shape[0], self.shape[1]);
        let mut data = vec![0.0; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                data[c * rows + r] = self.data[r * cols + c];
            }
        }
        Self {
            shape: vec![cols, rows],
            data,
        }
    }

    /// Columns `start..end` of a 2-D tensor.
    pub fn columns(&self, start: usize, end: usize) -> Self {
        let (rows, cols) = (self.shape[0], self.shape[1]);
        let mut data = Vec::with_capacity(rows * (end - start));
        for r in 0..rows {
            data.extend_from_slice(&self.data[r * cols + start..r * cols + end]);
        }
        Self {
            shape: vec![rows, end - start],
            data,
        }
    }
}

/// Something that can hand out named weights.
pub trait WeightSource {
    /// Whether a tensor of this name exists.
    fn contains(&self, name: &str) -> bool;
    /// Reads one tensor as f32.
    fn tensor(&self, name: &str) -> Result<HostTensor>;

    /// Reads one tensor and checks that it has the shape the config implies.
    fn tensor_shaped(&self, name: &str, shape: &[usize]) -> Result<HostTensor> {
        self.tensor(name)?.expect_shape(name, shape)
    }
}

/// Random weights of any shape (for benchmarks and tests that need a model's size, not its
/// skill): matrices uniform with standard deviation `std`, norm scales 1, biases absent.
#[derive(Debug, Clone)]
pub struct RandomWeights {
    /// Seed of the generator; each tensor's values depend on the seed and its name.
    pub seed: u64,
    /// Standard deviation of matrix entries.
    pub std: f32,
    /// Whether bias tensors exist (GPT-2 needs them).
    pub biases: bool,
    /// Whether a separate `lm_head.weight` exists.
    pub untied_head: bool,
}

impl WeightSource for RandomWeights {
    fn contains(&self, name: &str) -> bool {
        if name.ends_with(".bias") {
            return self.biases;
        }
        name != "lm_head.weight" || self.untied_head
    }

    fn tensor(&self, name: &str) -> Result<HostTensor> {
        Err(ModelError::MissingTensor(format!(
            "{name} (random weights need a shape)"
        )))
    }

    fn tensor_shaped(&self, name: &str, shape: &[usize]) -> Result<HostTensor> {
        use rand::{Rng, SeedableRng};
        let n: usize = shape.iter().product();
        let is_norm = name.contains("norm") || name.contains("ln_");
        let data = if is_norm && name.ends_with(".weight") {
            vec![1.0; n]
        } else if name.ends_with(".bias") {
            vec![0.0; n]
        } else {
            let name_hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
            let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed ^ name_hash);
            // Uniform on [-a, a] has standard deviation a / sqrt(3).
            let a = self.std * 3f32.sqrt();
            (0..n).map(|_| rng.random_range(-a..a)).collect()
        };
        Ok(HostTensor {
            shape: shape.to_vec(),
            data,
        })
    }
}

/// Memory-mapped safetensors files: one `model.safetensors` or the shards named by
/// `model.safetensors.index.json`.
pub struct SafetensorsSource {
    files: Vec<(PathBuf, Mmap)>,
    /// tensor name -> index into `files`.
    index: BTreeMap<String, usize>,
}

impl SafetensorsSource {
    /// Opens the weights of a Hugging Face model folder.
    pub fn open_folder(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        if single.exists() {
            Self::open_files(&[single])
        } else if index.exists() {
            let text = read_text(&index)?;
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| ModelError::Safetensors {
                    path: index.clone(),
                    message: e.to_string(),
                })?;
            let map = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| ModelError::Safetensors {
                    path: index.clone(),
                    message: "no `weight_map` object".into(),
                })?;
            // Shards in order of first mention, each once (a set makes this linear in the
            // number of entries, not quadratic).
            let mut shards: Vec<PathBuf> = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for file in map.values() {
                let name = file.as_str().ok_or_else(|| ModelError::Safetensors {
                    path: index.clone(),
                    message: "weight_map values must be file names".into(),
                })?;
                if seen.insert(name) {
                    shards.push(dir.join(shard_name(&index, name)?));
                }
            }
            Self::open_files(&shards)
        } else {
            Err(ModelError::MissingFile {
                path: single,
                what: "model weights (model.safetensors or model.safetensors.index.json)",
            })
        }
    }

    /// Opens and validates a list of safetensors files.
    pub fn open_files(paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::new();
        let mut index = BTreeMap::new();
        for path in paths {
            let file = File::open(path).map_err(io_error(path, "safetensors shard"))?;
            // SAFETY: the file is opened read-only and not modified by Fidelis while mapped;
            // a concurrent external write is the same hazard every mmap-based loader accepts.
            let mmap = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::Io {
                path: path.clone(),
                source: e,
            })?;
            let parsed = SafeTensors::deserialize(&mmap).map_err(|e| ModelError::Safetensors {
                path: path.clone(),
                message: e.to_string(),
            })?;
            for name in parsed.names() {
                index.insert(name.to_string(), files.len());
            }
            drop(parsed);
            files.push((path.clone(), mmap));
        }
        Ok(Self { files, index })
    }

    /// Names of all tensors.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }
}

impl WeightSource for SafetensorsSource {
    fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    fn tensor(&self, name: &str) -> Result<HostTensor> {
        let &file = self
            .index
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        let (path, mmap) = &self.files[file];
        let bad = |message: String| ModelError::Safetensors {
            path: path.clone(),
            message,
        };
        let parsed = SafeTensors::deserialize(mmap).map_err(|e| bad(e.to_string()))?;
        let view = parsed.tensor(name).map_err(|e| bad(e.to_string()))?;
        let bytes = view.data();
        let data = match view.dtype() {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::F64 => bytes
                .chunks_exact(8)
                .map(|b| {
                    f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
                })
                .collect(),
            other => {
                return Err(bad(format!(
                    "tensor {name} has unsupported dtype {other:?}"
                )));
            }
        };
        release_pages(mmap, bytes);
        Ok(HostTensor {
            shape: view.shape().to_vec(),
            data,
        })
    }
}

/// `name`, a shard file named in the index at `index`, checked to stay inside the model folder:
/// a relative path of plain components (no root, drive prefix, `.` or `..`), so that a hostile
/// index cannot make the loader open, or name in an error, a file elsewhere.
fn shard_name<'a>(index: &Path, name: &'a str) -> Result<&'a Path> {
    use std::path::Component;
    let path = Path::new(name);
    let plain = !name.is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)));
    if !plain {
        return Err(ModelError::Safetensors {
            path: index.to_path_buf(),
            message: format!(
                "weight_map names the shard {name:?}; shards must be relative paths inside the \
                 model folder (no absolute path, no `..`)"
            ),
        });
    }
    Ok(path)
}

/// Drops the pages of `bytes`, a slice of `mmap` whose values have been copied out, from this
/// process's resident set (`madvise(MADV_DONTNEED)`; Unix only, a no-op elsewhere or on
/// failure). The mapping is a read-only view of an unchanged file, so a later read of the same
/// bytes faults them back in from the page cache with the same contents.
pub(crate) fn release_pages(mmap: &Mmap, bytes: &[u8]) {
    #[cfg(unix)]
    {
        let offset = (bytes.as_ptr() as usize).wrapping_sub(mmap.as_ptr() as usize);
        if bytes.is_empty() || offset.saturating_add(bytes.len()) > mmap.len() {
            return;
        }
        // SAFETY: `mmap` maps a file read-only and Fidelis never writes through it; dropping
        // the pages only makes the next access re-read them from the file, so any live borrow
        // of these bytes still sees the same values.
        let _ = unsafe {
            mmap.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, bytes.len())
        };
    }
    #[cfg(not(unix))]
    let _ = (mmap, bytes);
}

/// Maps an I/O error on `path` to `MissingFile` (naming `what` the file holds) or `Io`.
pub(crate) fn io_error(
    path: &Path,
    what: &'static str,
) -> impl FnOnce(std::io::Error) -> ModelError {
    let path = path.to_path_buf();
    move |e| match e.kind() {
        std::io::ErrorKind::NotFound => ModelError::MissingFile { path, what },
        _ => ModelError::Io { path, source: e },
    }
}

/// Reads a whole text file with a clear error if it is missing.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(io_error(path, "text file"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Released pages read back with the same contents (the kernel refaults them from the file),
    /// including a range that starts mid-page, and out-of-map slices are ignored.
    #[test]
    fn released_pages_read_back_unchanged() {
        let path = std::env::temp_dir().join(format!("fidelis-release-{}", std::process::id()));
        let data: Vec<u8> = (0..3 * 4096 + 100).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        // SAFETY: a private temporary file nothing else writes.
        let mmap = unsafe { Mmap::map(&file) }.unwrap();
        let before: Vec<u8> = mmap.to_vec();
        release_pages(&mmap, &mmap[5000..9000]);
        release_pages(&mmap, &mmap[..]);
        release_pages(&mmap, &data[..10]);
        assert_eq!(&mmap[..], &before[..]);
        assert_eq!(before, data);
        drop(mmap);
        let _ = std::fs::remove_file(path);
    }
}
