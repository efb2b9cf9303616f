//! Writing small GGUF v3 files: metadata plus F32/F16 (or pre-encoded) tensors.
//!
//! Meant for tests and fixture tools that need tiny GGUF models; it keeps everything in memory.

use std::path::Path;

use half::f16;

use super::{DEFAULT_ALIGNMENT, GGUF_MAGIC, GgmlType, GgufValue, tag};
use crate::error::{ModelError, Result};

/// A tensor waiting to be written.
#[derive(Debug, Clone)]
struct PendingTensor {
    name: String,
    /// Row-major (PyTorch) shape; written reversed as GGUF `ne`.
    shape: Vec<usize>,
    ty: GgmlType,
    data: Vec<u8>,
}

/// Builds a GGUF v3 file in memory.
///
/// Metadata keys keep the order they were first added in; adding a key again replaces its value.
/// Tensors are given in row-major (PyTorch) shape and written with GGUF's reversed `ne`, each one
/// starting at a multiple of the alignment.
///
/// ```
/// use fidelis_models::gguf::{GgufFile, GgufWriter};
///
/// # fn main() -> fidelis_models::error::Result<()> {
/// let mut w = GgufWriter::new();
/// w.add_string("general.architecture", "llama").add_u32("llama.block_count", 2);
/// // A torch-shaped [2, 3] weight; the file stores ne = [3, 2].
/// w.add_tensor_f32("output.weight", &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])?;
/// let path = std::env::temp_dir().join(format!("doc-{}.gguf", std::process::id()));
/// w.write(&path)?;
/// let file = GgufFile::open(&path)?;
/// assert_eq!(file.get_u64("llama.block_count")?, 2);
/// assert_eq!(file.tensor_f32("output.weight")?.0, [2, 3]);
/// # drop(file);
/// # std::fs::remove_file(&path).ok();
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct GgufWriter {
    alignment: usize,
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<PendingTensor>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        GgufWriter::new()
    }
}

impl GgufWriter {
    /// An empty writer with the default alignment (32).
    pub fn new() -> Self {
        GgufWriter {
            alignment: DEFAULT_ALIGNMENT,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// Uses `alignment` (a power of two) for the data section and records it as
    /// `general.alignment`.
    pub fn set_alignment(&mut self, alignment: u32) -> Result<&mut Self> {
        if !alignment.is_power_of_two() {
            return Err(ModelError::InvalidInput(format!(
                "GGUF alignment {alignment} is not a power of two"
            )));
        }
        self.alignment = alignment as usize;
        Ok(self.add("general.alignment", GgufValue::U32(alignment)))
    }

    /// Sets metadata `key` to `value` (arrays must hold values of one type; checked on writing).
    pub fn add(&mut self, key: &str, value: GgufValue) -> &mut Self {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key.to_string(), value)),
        }
        self
    }

    /// Sets a `u32` value.
    pub fn add_u32(&mut self, key: &str, value: u32) -> &mut Self {
        self.add(key, GgufValue::U32(value))
    }

    /// Sets an `i32` value.
    pub fn add_i32(&mut self, key: &str, value: i32) -> &mut Self {
        self.add(key, GgufValue::I32(value))
    }

    /// Sets a `u64` value.
    pub fn add_u64(&mut self, key: &str, value: u64) -> &mut Self {
        self.add(key, GgufValue::U64(value))
    }

    /// Sets an `f32` value.
    pub fn add_f32(&mut self, key: &str, value: f32) -> &mut Self {
        self.add(key, GgufValue::F32(value))
    }

    /// Sets a bool value.
    pub fn add_bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.add(key, GgufValue::Bool(value))
    }

    /// Sets a string value.
    pub fn add_string(&mut self, key: &str, value: &str) -> &mut Self {
        self.add(key, GgufValue::String(value.to_string()))
    }

    /// Sets an array of strings.
    pub fn add_string_array<S: AsRef<str>>(&mut self, key: &str, values: &[S]) -> &mut Self {
        let items = values
            .iter()
            .map(|s| GgufValue::String(s.as_ref().to_string()))
            .collect();
        self.add(key, GgufValue::Array(items))
    }

    /// Sets an array of `i32`.
    pub fn add_i32_array(&mut self, key: &str, values: &[i32]) -> &mut Self {
        let items = values.iter().copied().map(GgufValue::I32).collect();
        self.add(key, GgufValue::Array(items))
    }

    /// Sets an array of `f32`.
    pub fn add_f32_array(&mut self, key: &str, values: &[f32]) -> &mut Self {
        let items = values.iter().copied().map(GgufValue::F32).collect();
        self.add(key, GgufValue::Array(items))
    }

    /// Adds an `F32` tensor of row-major `shape` holding `data`.
    pub fn add_tensor_f32(
        &mut self,
        name: &str,
        shape: &[usize],
        data: &[f32],
    ) -> Result<&mut Self> {
        let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.add_tensor_raw(name, shape, GgmlType::F32, bytes)
    }

    /// Adds an `F16` tensor of row-major `shape`, rounding `data` to f16.
    pub fn add_tensor_f16(
        &mut self,
        name: &str,
        shape: &[usize],
        data: &[f32],
    ) -> Result<&mut Self> {
        let bytes = data
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect();
        self.add_tensor_raw(name, shape, GgmlType::F16, bytes)
    }

    /// Adds a tensor of row-major `shape` whose data is already encoded as `ty` (e.g. hand-built
    /// `Q8_0` blocks). The byte length must match the shape.
    pub fn add_tensor_raw(
        &mut self,
        name: &str,
        shape: &[usize],
        ty: GgmlType,
        data: Vec<u8>,
    ) -> Result<&mut Self> {
        let expected = expected_bytes(name, shape, ty)?;
        if data.len() != expected {
            return Err(ModelError::InvalidInput(format!(
                "tensor {name}: shape {shape:?} of {ty} needs {expected} bytes, got {}",
                data.len()
            )));
        }
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(ModelError::InvalidInput(format!(
                "tensor {name} added twice"
            )));
        }
        self.tensors.push(PendingTensor {
            name: name.to_string(),
            shape: shape.to_vec(),
            ty,
            data,
        });
        Ok(self)
    }

    /// The complete file.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        out.extend(GGUF_MAGIC);
        out.extend(3u32.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_string(&mut out, key);
            out.extend(value.type_tag().to_le_bytes());
            put_value(&mut out, value)
                .map_err(|m| ModelError::InvalidInput(format!("GGUF metadata `{key}`: {m}")))?;
        }
        let mut offset = 0usize;
        for t in &self.tensors {
            put_tensor_info(&mut out, t, offset);
            offset += t.data.len().next_multiple_of(self.alignment);
        }
        self.pad(&mut out);
        for t in &self.tensors {
            out.extend(&t.data);
            self.pad(&mut out);
        }
        Ok(out)
    }

    /// Writes the file to `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        let bytes = self.to_bytes()?;
        std::fs::write(path, bytes).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Zero-pads `out` to a multiple of the alignment.
    fn pad(&self, out: &mut Vec<u8>) {
        out.resize(out.len().next_multiple_of(self.alignment), 0);
    }
}

/// Bytes a tensor of `shape` and type `ty` takes, checking rows are whole blocks.
fn expected_bytes(name: &str, shape: &[usize], ty: GgmlType) -> Result<usize> {
    let bad = |m: String| ModelError::InvalidInput(format!("tensor {name}: {m}"));
    if shape.len() > super::MAX_DIMS {
        return Err(bad(format!("{} dimensions (GGUF allows 4)", shape.len())));
    }
    let row = shape.last().copied().unwrap_or(1);
    if !row.is_multiple_of(ty.block_size()) {
        return Err(bad(format!(
            "row length {row} is not a multiple of the {ty} block size"
        )));
    }
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .and_then(|n| ty.bytes_for(n))
        .ok_or_else(|| bad(format!("shape {shape:?} overflows")))
}

/// Appends a GGUF string (u64 length, bytes).
fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// Appends a value without its type tag.
fn put_value(out: &mut Vec<u8>, value: &GgufValue) -> std::result::Result<(), String> {
    match value {
        GgufValue::U8(v) => out.extend(v.to_le_bytes()),
        GgufValue::I8(v) => out.extend(v.to_le_bytes()),
        GgufValue::U16(v) => out.extend(v.to_le_bytes()),
        GgufValue::I16(v) => out.extend(v.to_le_bytes()),
        GgufValue::U32(v) => out.extend(v.to_le_bytes()),
        GgufValue::I32(v) => out.extend(v.to_le_bytes()),
        GgufValue::F32(v) => out.extend(v.to_le_bytes()),
        GgufValue::Bool(v) => out.push(u8::from(*v)),
        GgufValue::String(s) => put_string(out, s),
        GgufValue::Array(items) => put_array(out, items)?,
        GgufValue::U64(v) => out.extend(v.to_le_bytes()),
        GgufValue::I64(v) => out.extend(v.to_le_bytes()),
        GgufValue::F64(v) => out.extend(v.to_le_bytes()),
    }
    Ok(())
}

/// Appends an array: element type (u8 for an empty array), count, elements.
fn put_array(out: &mut Vec<u8>, items: &[GgufValue]) -> std::result::Result<(), String> {
    let elem = items.first().map_or(tag::U8, GgufValue::type_tag);
    if let Some(odd) = items.iter().find(|v| v.type_tag() != elem) {
        return Err(format!(
            "array mixes {} and {} elements",
            items[0].type_name(),
            odd.type_name()
        ));
    }
    out.extend(elem.to_le_bytes());
    out.extend((items.len() as u64).to_le_bytes());
    items.iter().try_for_each(|v| put_value(out, v))
}

/// Appends a tensor info: name, n_dims, `ne` (reversed shape), type id, offset.
fn put_tensor_info(out: &mut Vec<u8>, t: &PendingTensor, offset: usize) {
    put_string(out, &t.name);
    out.extend((t.shape.len() as u32).to_le_bytes());
    for &d in t.shape.iter().rev() {
        out.extend((d as u64).to_le_bytes());
    }
    out.extend(t.ty.id().to_le_bytes());
    out.extend((offset as u64).to_le_bytes());
}

/// A file under the system temp directory, removed when dropped (tests only).
#[cfg(test)]
pub(crate) struct TempFile(pub(crate) std::path::PathBuf);

#[cfg(test)]
impl TempFile {
    /// Writes `bytes` to a fresh temp file whose name contains `tag`.
    pub(crate) fn new(tag: &str, bytes: &[u8]) -> TempFile {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("fidelis-gguf-{}-{n}-{tag}.gguf", std::process::id());
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, bytes).expect("write temp file");
        TempFile(path)
    }
}

#[cfg(test)]
impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{GgufFile, parse};
    use super::*;

    fn open(tag: &str, bytes: &[u8]) -> Result<GgufFile> {
        let file = TempFile::new(tag, bytes);
        GgufFile::open(&file.0)
    }

    fn parse_err(bytes: &[u8]) -> String {
        match parse(Path::new("t.gguf"), bytes) {
            Ok(_) => panic!("parse accepted a malformed file"),
            Err(e) => e.to_string(),
        }
    }

    /// Q8_0 blocks for 64 values: block 0 has d = 0.5, block 1 d = 2, q = i - 16 in both.
    fn q8_0_fixture() -> (Vec<u8>, Vec<f32>) {
        let mut bytes = Vec::new();
        let mut values = Vec::new();
        for d in [0.5f32, 2.0] {
            bytes.extend(f16::from_f32(d).to_le_bytes());
            for i in 0..32 {
                bytes.push((i as i8 - 16) as u8);
                values.push(d * (i as f32 - 16.0));
            }
        }
        (bytes, values)
    }

    /// A writer with metadata of every type and three tensors; the last one (F32 [2, 4], 32
    /// bytes) ends exactly at the end of the file, so every truncation cuts real data.
    fn sample() -> GgufWriter {
        let mut w = GgufWriter::new();
        w.add_string("general.architecture", "llama")
            .add_u32("llama.block_count", 2)
            .add_i32("test.i32", -7)
            .add_u64("test.u64", u64::MAX)
            .add_f32("test.f32", 1e-5)
            .add_bool("test.bool", true)
            .add_string_array("test.strings", &["a", "bc", ""])
            .add_i32_array("test.i32s", &[1, -2, 3])
            .add_f32_array("test.f32s", &[0.5, -1.5])
            .add("test.u8", GgufValue::U8(200))
            .add("test.i8", GgufValue::I8(-100))
            .add("test.u16", GgufValue::U16(60000))
            .add("test.i16", GgufValue::I16(-30000))
            .add("test.i64", GgufValue::I64(-5))
            .add("test.f64", GgufValue::F64(0.25))
            .add("test.empty", GgufValue::Array(vec![]))
            .add(
                "test.nested",
                GgufValue::Array(vec![
                    GgufValue::Array(vec![GgufValue::U8(1)]),
                    GgufValue::Array(vec![GgufValue::String("x".into())]),
                ]),
            );
        let (q8, _) = q8_0_fixture();
        w.add_tensor_f16("f16", &[3], &[1.0, -0.5, 65504.0])
            .unwrap();
        w.add_tensor_raw("q8", &[2, 32], GgmlType::Q8_0, q8)
            .unwrap();
        w.add_tensor_f32("last", &[2, 4], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
            .unwrap();
        w
    }

    #[test]
    fn round_trip() {
        let w = sample();
        let file = open("round-trip", &w.to_bytes().unwrap()).unwrap();
        assert_eq!(file.version(), 3);
        assert_eq!(file.alignment(), 32);
        assert_eq!(file.data_start() % 32, 0);
        for (key, value) in &w.metadata {
            assert_eq!(file.get(key), Some(value), "{key}");
        }
        assert_eq!(file.metadata().len(), w.metadata.len());
        assert_eq!(file.architecture().unwrap(), "llama");
        let names: Vec<_> = file.tensors().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["f16", "q8", "last"]);
        assert!(file.tensors().iter().all(|t| t.offset % 32 == 0));
        let (shape, data) = file.tensor_f32("last").unwrap();
        assert_eq!(shape, [2, 4]);
        assert_eq!(data, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
        assert_eq!(
            file.tensor_f32("f16").unwrap(),
            (vec![3], vec![1.0, -0.5, 65504.0])
        );
        let info = file.tensor_info("q8").unwrap();
        assert_eq!(
            (info.ggml_type, info.n_elements, info.n_bytes),
            (GgmlType::Q8_0, 64, 68)
        );
        assert_eq!(
            file.tensor_f32("q8").unwrap(),
            (vec![2, 32], q8_0_fixture().1)
        );
    }

    #[test]
    fn shape_is_reversed_ne() {
        let mut w = GgufWriter::new();
        w.add_tensor_f32("w", &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
            .unwrap();
        let bytes = w.to_bytes().unwrap();
        // Header 24 bytes, then: name length (8) + "w" (1), n_dims (4), ne[0], ne[1].
        let ne0 = u64::from_le_bytes(bytes[37..45].try_into().unwrap());
        let ne1 = u64::from_le_bytes(bytes[45..53].try_into().unwrap());
        assert_eq!((ne0, ne1), (3, 2));
        let file = open("shape", &bytes).unwrap();
        assert_eq!(file.tensor_info("w").unwrap().shape, [2, 3]);
    }

    #[test]
    fn typed_getters() {
        let file = open("getters", &sample().to_bytes().unwrap()).unwrap();
        assert_eq!(file.get_u64("llama.block_count").unwrap(), 2);
        assert_eq!(file.get_u64("test.u8").unwrap(), 200);
        assert_eq!(file.get_u64("test.u64").unwrap(), u64::MAX);
        assert_eq!(file.get_usize("test.u16").unwrap(), 60000);
        assert_eq!(file.get_f32("test.f32").unwrap(), 1e-5);
        assert_eq!(file.get_f32("test.i32").unwrap(), -7.0);
        assert_eq!(file.get_f32("test.f64").unwrap(), 0.25);
        assert!(file.get_bool("test.bool").unwrap());
        assert_eq!(file.get_str_array("test.strings").unwrap(), ["a", "bc", ""]);
        assert_eq!(file.get_i64_array("test.i32s").unwrap(), [1, -2, 3]);
        assert_eq!(file.get_f32_array("test.f32s").unwrap(), [0.5, -1.5]);
        let err = file.get_u64("no.such.key").unwrap_err().to_string();
        assert!(err.contains("missing metadata key `no.such.key`"), "{err}");
        let err = file.get_u64("test.i32").unwrap_err().to_string();
        assert!(
            err.contains("`test.i32` is i32 -7, expected a non-negative"),
            "{err}"
        );
        let err = file.get_str("test.u8").unwrap_err().to_string();
        assert!(err.contains("expected a string"), "{err}");
        assert!(file.get_str_array("test.i32s").is_err());
        let err = file.tensor_f32("nope").unwrap_err();
        assert!(matches!(err, ModelError::MissingTensor(ref n) if n == "nope"));
    }

    #[test]
    fn custom_alignment() {
        let mut w = GgufWriter::new();
        w.set_alignment(64).unwrap();
        w.add_tensor_f32("a", &[3], &[1.0, 2.0, 3.0]).unwrap();
        w.add_tensor_f32("b", &[1], &[4.0]).unwrap();
        let file = open("align", &w.to_bytes().unwrap()).unwrap();
        assert_eq!(file.alignment(), 64);
        assert_eq!(file.data_start() % 64, 0);
        assert_eq!(file.tensor_info("b").unwrap().offset, 64);
        assert_eq!(file.tensor_f32("b").unwrap().1, [4.0]);
        assert!(GgufWriter::new().set_alignment(48).is_err());
    }

    #[test]
    fn writer_rejects_bad_input() {
        let mut w = GgufWriter::new();
        assert!(w.add_tensor_f32("x", &[2, 2], &[1.0; 3]).is_err());
        assert!(
            w.add_tensor_raw("q", &[2, 16], GgmlType::Q8_0, vec![0; 34])
                .is_err()
        );
        w.add_tensor_f32("x", &[1], &[1.0]).unwrap();
        assert!(w.add_tensor_f32("x", &[1], &[1.0]).is_err());
        w.add(
            "mixed",
            GgufValue::Array(vec![GgufValue::U8(1), GgufValue::I8(1)]),
        );
        let err = w.to_bytes().unwrap_err().to_string();
        assert!(err.contains("mixes u8 and i8"), "{err}");
    }

    #[test]
    fn bad_magic_and_version() {
        let mut bytes = sample().to_bytes().unwrap();
        bytes[0] = b'X';
        let err = open("magic", &bytes).unwrap_err().to_string();
        assert!(err.contains("bad magic"), "{err}");
        assert!(err.contains("fidelis-gguf"), "error names the file: {err}");
        let mut bytes = sample().to_bytes().unwrap();
        bytes[4] = 1;
        assert!(parse_err(&bytes).contains("unsupported GGUF version 1"));
        bytes[4..8].copy_from_slice(&3u32.to_be_bytes());
        assert!(parse_err(&bytes).contains("big-endian"));
        bytes[4..8].copy_from_slice(&2u32.to_le_bytes()); // v2 has the same layout as v3
        assert!(parse(Path::new("t"), &bytes).is_ok());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = sample().to_bytes().unwrap();
        assert!(parse(Path::new("t"), &bytes).is_ok());
        for cut in 0..bytes.len() {
            assert!(
                parse(Path::new("t"), &bytes[..cut]).is_err(),
                "cut at {cut} accepted"
            );
        }
        for cut in [0, 3, 7, 30, bytes.len() / 2, bytes.len() - 1] {
            let err = open("cut", &bytes[..cut]).unwrap_err();
            assert!(matches!(err, ModelError::Gguf { .. }), "{cut}: {err}");
        }
    }

    /// The position of tensor `name`'s type id in `bytes` (written by [`GgufWriter`]).
    fn type_id_pos(bytes: &[u8], name: &str, n_dims: usize) -> usize {
        let mut needle = (name.len() as u64).to_le_bytes().to_vec();
        needle.extend(name.as_bytes());
        let at = bytes
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap();
        at + needle.len() + 4 + 8 * n_dims
    }

    #[test]
    fn unknown_tensor_type() {
        let mut bytes = sample().to_bytes().unwrap();
        let pos = type_id_pos(&bytes, "last", 2);
        bytes[pos..pos + 4].copy_from_slice(&99u32.to_le_bytes());
        let err = open("type", &bytes).unwrap_err();
        assert!(
            matches!(err, ModelError::UnknownTensorType { ref tensor, type_id: 99, type_name: "unknown" } if tensor == "last"),
            "{err}"
        );
        // A known type of the same size that cannot be dequantized opens, but fails on read.
        bytes[pos..pos + 4].copy_from_slice(&26u32.to_le_bytes()); // I32
        let file = open("type", &bytes).unwrap();
        let err = file.tensor_f32("last").unwrap_err();
        assert!(
            matches!(err, ModelError::UnknownTensorType { ref tensor, type_id: 26, type_name: "I32" } if tensor == "last"),
            "{err}"
        );
        assert_eq!(file.tensor_bytes("last").unwrap().len(), 32);
    }

    #[test]
    fn tensor_data_out_of_bounds() {
        let bytes = sample().to_bytes().unwrap();
        let offset_pos = type_id_pos(&bytes, "last", 2) + 4;
        let mut patched = bytes.clone();
        patched[offset_pos..offset_pos + 8].copy_from_slice(&(1u64 << 20).to_le_bytes());
        assert!(parse_err(&patched).contains("out of bounds"));
        patched[offset_pos..offset_pos + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse_err(&patched).contains("tensor `last`"));
        patched[offset_pos..offset_pos + 8].copy_from_slice(&33u64.to_le_bytes());
        assert!(parse_err(&patched).contains("not a multiple of the alignment"));
        // A dimension so large the element count overflows.
        let ne_pos = type_id_pos(&bytes, "last", 0);
        let mut patched = bytes.clone();
        patched[ne_pos..ne_pos + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse_err(&patched).contains("overflow"));
        patched[ne_pos..ne_pos + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(parse_err(&patched).contains("out of bounds"));
    }

    #[test]
    fn absurd_counts_and_lengths() {
        let bytes = sample().to_bytes().unwrap();
        let patch = |at: usize, v: u64| {
            let mut b = bytes.clone();
            b[at..at + 8].copy_from_slice(&v.to_le_bytes());
            parse_err(&b)
        };
        assert!(patch(8, u64::MAX).contains("tensor count"));
        assert!(patch(16, 1 << 60).contains("metadata count"));
        // The first key's length.
        assert!(patch(24, u64::MAX - 3).contains("truncated"));
        // The string array's length: after its key, value type and element type.
        let key = b"test.strings";
        let at = bytes.windows(key.len()).position(|w| w == key).unwrap() + key.len() + 8;
        assert!(patch(at, 1 << 50).contains("array length"));
        // Too many dimensions.
        let mut b = bytes.clone();
        let dims = type_id_pos(&bytes, "last", 0) - 4;
        b[dims..dims + 4].copy_from_slice(&9u32.to_le_bytes());
        assert!(parse_err(&b).contains("9 dimensions"));
    }

    #[test]
    fn malformed_metadata() {
        let mut w = GgufWriter::new();
        w.add_u32("key.a", 1).add_u32("key.b", 2);
        let bytes = w.to_bytes().unwrap();
        let mut dup = bytes.clone();
        let at = dup.windows(5).position(|x| x == b"key.b").unwrap();
        dup[at + 4] = b'a';
        assert!(parse_err(&dup).contains("duplicate metadata key `key.a`"));
        let mut bad_type = bytes.clone();
        bad_type[at - 8 - 4 - 4] = 77; // the value type of key.a
        assert!(parse_err(&bad_type).contains("unknown metadata value type 77"));
        // Arrays nested past the limit.
        let mut deep = GgufValue::U8(0);
        for _ in 0..10 {
            deep = GgufValue::Array(vec![deep]);
        }
        let mut w = GgufWriter::new();
        w.add("deep", deep);
        assert!(parse_err(&w.to_bytes().unwrap()).contains("nested"));
        let mut w = GgufWriter::new();
        w.add_string("general.alignment", "x");
        assert!(parse_err(&w.to_bytes().unwrap()).contains("general.alignment"));
    }

    #[test]
    fn tiny_and_missing_files() {
        let err = open("empty", b"").unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
        let err = GgufFile::open(Path::new("/nonexistent/x.gguf")).unwrap_err();
        assert!(matches!(err, ModelError::Io { .. }));
        // A file with no tensors and no metadata is valid.
        let file = open("no-tensors", &GgufWriter::new().to_bytes().unwrap()).unwrap();
        assert!(file.tensors().is_empty());
    }
}
