//! Reading (and, for fixtures, writing) GGUF files: the single-file checkpoint format of llama.cpp.
//!
//! A GGUF file is a header (magic `GGUF`, version, tensor and metadata counts), metadata key/value
//! pairs, tensor infos (name, dims, ggml type, offset), padding to the alignment, then the tensor
//! data. [`GgufFile::open`] memory-maps the file, parses and validates everything up to the data
//! section against the file length, and leaves the tensor data in the map until a tensor is asked
//! for with [`GgufFile::tensor_f32`].
//!
//! Supported: GGUF versions 2 and 3, little-endian files.

pub mod dequant;
mod sentencepiece;
pub mod tokenizer;
pub mod writer;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

pub use dequant::{GgmlType, dequantize};
pub use tokenizer::GgufSpecialTokens;
pub use writer::GgufWriter;

use crate::error::{ModelError, Result};

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// The alignment of the data section and of tensor offsets when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: usize = 32;
/// The most dimensions a ggml tensor can have.
const MAX_DIMS: usize = 4;
/// How deeply metadata arrays may nest; real files use at most 1.
const MAX_ARRAY_DEPTH: usize = 8;

/// The type tags of metadata values, as numbered by the GGUF format.
mod tag {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// One metadata value of a GGUF file.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// Unsigned 8-bit integer.
    U8(u8),
    /// Signed 8-bit integer.
    I8(i8),
    /// Unsigned 16-bit integer.
    U16(u16),
    /// Signed 16-bit integer.
    I16(i16),
    /// Unsigned 32-bit integer.
    U32(u32),
    /// Signed 32-bit integer.
    I32(i32),
    /// 32-bit float.
    F32(f32),
    /// Boolean (one byte in the file).
    Bool(bool),
    /// UTF-8 string (invalid UTF-8 in a file is replaced by U+FFFD).
    String(String),
    /// Array of values, all of one type in a well-formed file (may nest).
    Array(Vec<GgufValue>),
    /// Unsigned 64-bit integer.
    U64(u64),
    /// Signed 64-bit integer.
    I64(i64),
    /// 64-bit float.
    F64(f64),
}

impl std::fmt::Display for GgufValue {
    /// Scalars as their value, strings quoted, arrays as `[a, b, ...]`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GgufValue::U8(v) => write!(f, "{v}"),
            GgufValue::I8(v) => write!(f, "{v}"),
            GgufValue::U16(v) => write!(f, "{v}"),
            GgufValue::I16(v) => write!(f, "{v}"),
            GgufValue::U32(v) => write!(f, "{v}"),
            GgufValue::I32(v) => write!(f, "{v}"),
            GgufValue::F32(v) => write!(f, "{v}"),
            GgufValue::Bool(v) => write!(f, "{v}"),
            GgufValue::String(s) => write!(f, "{s:?}"),
            GgufValue::Array(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            GgufValue::U64(v) => write!(f, "{v}"),
            GgufValue::I64(v) => write!(f, "{v}"),
            GgufValue::F64(v) => write!(f, "{v}"),
        }
    }
}

impl GgufValue {
    /// The GGUF name of the value's type, e.g. `"u32"` or `"array"`, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            GgufValue::U8(_) => "u8",
            GgufValue::I8(_) => "i8",
            GgufValue::U16(_) => "u16",
            GgufValue::I16(_) => "i16",
            GgufValue::U32(_) => "u32",
            GgufValue::I32(_) => "i32",
            GgufValue::F32(_) => "f32",
            GgufValue::Bool(_) => "bool",
            GgufValue::String(_) => "string",
            GgufValue::Array(_) => "array",
            GgufValue::U64(_) => "u64",
            GgufValue::I64(_) => "i64",
            GgufValue::F64(_) => "f64",
        }
    }

    /// The GGUF type tag written before this value in a file.
    pub fn type_tag(&self) -> u32 {
        match self {
            GgufValue::U8(_) => tag::U8,
            GgufValue::I8(_) => tag::I8,
            GgufValue::U16(_) => tag::U16,
            GgufValue::I16(_) => tag::I16,
            GgufValue::U32(_) => tag::U32,
            GgufValue::I32(_) => tag::I32,
            GgufValue::F32(_) => tag::F32,
            GgufValue::Bool(_) => tag::BOOL,
            GgufValue::String(_) => tag::STRING,
            GgufValue::Array(_) => tag::ARRAY,
            GgufValue::U64(_) => tag::U64,
            GgufValue::I64(_) => tag::I64,
            GgufValue::F64(_) => tag::F64,
        }
    }

    /// The value as a signed integer if it is an integer of any width that fits `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::I8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::I16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::I32(v) => Some(v.into()),
            GgufValue::U64(v) => i64::try_from(v).ok(),
            GgufValue::I64(v) => Some(v),
            _ => None,
        }
    }

    /// The value as an unsigned integer if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U64(v) => Some(v),
            _ => self.as_i64().and_then(|v| u64::try_from(v).ok()),
        }
    }

    /// The value as a float if it is a float or an integer.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::F64(v) => Some(v),
            GgufValue::U64(v) => Some(v as f64),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// The value if it is a bool.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// The value if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The elements if the value is an array.
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(v) => Some(v),
            _ => None,
        }
    }
}

/// Where one tensor lives in a GGUF file and what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    /// The tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// The shape in row-major (PyTorch) order: GGUF's `ne` reversed, so the last dimension is the
    /// contiguous one. A torch `Linear` weight `[out, in]` is stored with `ne = [in, out]` and has
    /// `shape == [out, in]` here.
    pub shape: Vec<usize>,
    /// The element type.
    pub ggml_type: GgmlType,
    /// The offset of the tensor data from the start of the data section, as stored in the file.
    pub offset: usize,
    /// The number of elements (product of `shape`).
    pub n_elements: usize,
    /// The number of bytes of tensor data.
    pub n_bytes: usize,
}

/// An opened, validated GGUF file. The tensor data stays memory-mapped.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    mmap: Mmap,
    version: u32,
    metadata: BTreeMap<String, GgufValue>,
    tensors: Vec<GgufTensorInfo>,
    by_name: HashMap<String, usize>,
    alignment: usize,
    data_start: usize,
}

/// Everything parsed from the bytes before the data section.
struct Layout {
    version: u32,
    metadata: BTreeMap<String, GgufValue>,
    tensors: Vec<GgufTensorInfo>,
    alignment: usize,
    data_start: usize,
}

impl GgufFile {
    /// Opens and validates the GGUF file at `path`, memory-mapping it.
    ///
    /// Fails with [`ModelError::Io`] if the file cannot be read, [`ModelError::Gguf`] if it is not a
    /// well-formed GGUF v2/v3 file (bad magic, unsupported version, truncated, absurd counts,
    /// tensor data outside the file), and [`ModelError::UnknownTensorType`] if a tensor has a type
    /// id ggml does not define (its size cannot be known).
    ///
    /// ```no_run
    /// use fidelis_models::gguf::GgufFile;
    ///
    /// # fn main() -> fidelis_models::error::Result<()> {
    /// let file = GgufFile::open("model.gguf".as_ref())?;
    /// println!("{} with {} tensors", file.architecture()?, file.tensors().len());
    /// let (shape, weights) = file.tensor_f32("token_embd.weight")?;
    /// assert_eq!(shape.iter().product::<usize>(), weights.len());
    /// let tokenizer = file.tokenizer()?;
    /// # Ok(()) }
    /// ```
    pub fn open(path: &Path) -> Result<GgufFile> {
        let io_err = |source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        if len < 8 {
            return Err(gguf_err(
                path,
                format!("truncated: the file is only {len} bytes"),
            ));
        }
        // SAFETY: the map is read-only and private to this value. Like every mmap-based loader we
        // rely on the file not being truncated or rewritten by another process while it is open.
        let mmap = unsafe { Mmap::map(&file) }.map_err(io_err)?;
        let layout = parse(path, &mmap)?;
        let by_name = layout
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(GgufFile {
            path: path.to_path_buf(),
            mmap,
            version: layout.version,
            metadata: layout.metadata,
            tensors: layout.tensors,
            by_name,
            alignment: layout.alignment,
            data_start: layout.data_start,
        })
    }

    /// The path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The GGUF format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The alignment of tensor data (`general.alignment`, default 32).
    pub fn alignment(&self) -> usize {
        self.alignment
    }

    /// The file offset where the data section (tensor offset 0) starts.
    pub fn data_start(&self) -> usize {
        self.data_start
    }

    /// All metadata, by key.
    pub fn metadata(&self) -> &BTreeMap<String, GgufValue> {
        &self.metadata
    }

    /// The metadata value under `key`, if present.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    /// The value under `key`, or an error naming the missing key.
    fn require(&self, key: &str) -> Result<&GgufValue> {
        self.get(key)
            .ok_or_else(|| self.error(format!("missing metadata key `{key}`")))
    }

    /// The error for a value of the wrong type under `key`.
    fn wrong_type(&self, key: &str, value: &GgufValue, expected: &str) -> ModelError {
        self.error(format!(
            "metadata key `{key}` is {}, expected {expected}",
            describe(value)
        ))
    }

    /// The value under `key` as an unsigned integer; any integer type is accepted.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        let value = self.require(key)?;
        value
            .as_u64()
            .ok_or_else(|| self.wrong_type(key, value, "a non-negative integer"))
    }

    /// The value under `key` as a `usize`; any integer type is accepted.
    pub fn get_usize(&self, key: &str) -> Result<usize> {
        let value = self.get_u64(key)?;
        usize::try_from(value)
            .map_err(|_| self.error(format!("metadata key `{key}` = {value} does not fit usize")))
    }

    /// The value under `key` as an `f32`; floats and integers are accepted.
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        let value = self.require(key)?;
        value
            .as_f64()
            .map(|v| v as f32)
            .ok_or_else(|| self.wrong_type(key, value, "a number"))
    }

    /// The bool under `key`.
    pub fn get_bool(&self, key: &str) -> Result<bool> {
        let value = self.require(key)?;
        value
            .as_bool()
            .ok_or_else(|| self.wrong_type(key, value, "a bool"))
    }

    /// The string under `key`.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        let value = self.require(key)?;
        value
            .as_str()
            .ok_or_else(|| self.wrong_type(key, value, "a string"))
    }

    /// The array of strings under `key`.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        let value = self.require(key)?;
        let items = value.as_array().and_then(|items| {
            items
                .iter()
                .map(GgufValue::as_str)
                .collect::<Option<Vec<_>>>()
        });
        items.ok_or_else(|| self.wrong_type(key, value, "an array of strings"))
    }

    /// The array of integers (of any integer type) under `key`, widened to `i64`.
    pub fn get_i64_array(&self, key: &str) -> Result<Vec<i64>> {
        let value = self.require(key)?;
        let items = value.as_array().and_then(|items| {
            items
                .iter()
                .map(GgufValue::as_i64)
                .collect::<Option<Vec<_>>>()
        });
        items.ok_or_else(|| self.wrong_type(key, value, "an array of integers"))
    }

    /// The array of numbers (floats or integers) under `key`, as `f32`.
    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>> {
        let value = self.require(key)?;
        let items = value.as_array().and_then(|items| {
            items
                .iter()
                .map(|v| v.as_f64().map(|x| x as f32))
                .collect::<Option<Vec<_>>>()
        });
        items.ok_or_else(|| self.wrong_type(key, value, "an array of numbers"))
    }

    /// The model architecture (`general.architecture`), e.g. `"llama"`.
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")
    }

    /// All tensor infos, in file order.
    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    /// The info of the tensor called `name`, if present.
    pub fn tensor_info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw (possibly quantized) bytes of tensor `name`, borrowed from the memory map.
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8]> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        let start = self.data_start + info.offset;
        // `parse` checked that every tensor lies inside the file.
        self.mmap
            .get(start..start + info.n_bytes)
            .ok_or_else(|| self.error(format!("tensor {name} lies outside the file")))
    }

    /// Tensor `name` dequantized to `f32`, with its row-major shape.
    ///
    /// Fails with [`ModelError::MissingTensor`] if there is no such tensor and
    /// [`ModelError::UnknownTensorType`] if its type cannot be dequantized.
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        let bytes = self.tensor_bytes(name)?;
        let values = dequantize(info.ggml_type, bytes, info.n_elements).map_err(|e| match e {
            ModelError::UnknownTensorType { .. } => dequant::unsupported(info.ggml_type, name),
            other => self.error(format!("tensor {name}: {other}")),
        })?;
        crate::weights::release_pages(&self.mmap, bytes);
        Ok((info.shape.clone(), values))
    }

    /// A [`ModelError::Gguf`] about this file.
    fn error(&self, message: String) -> ModelError {
        gguf_err(&self.path, message)
    }
}

/// A [`ModelError::Gguf`] about the file at `path`.
fn gguf_err(path: &Path, message: String) -> ModelError {
    ModelError::Gguf {
        path: path.to_path_buf(),
        message,
    }
}

/// A short description of a value for error messages: its type and, for scalars, the value.
fn describe(value: &GgufValue) -> String {
    match value {
        GgufValue::Array(items) => format!("an array of {} values", items.len()),
        GgufValue::String(s) if s.len() > 40 => format!("a string ({} bytes)", s.len()),
        other => format!("{} {other}", other.type_name()),
    }
}

/// A cursor over the file bytes that turns every short read into a "truncated" error.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    /// Bytes left after the cursor.
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// An error about the file, located at the cursor.
    fn error(&self, message: String) -> ModelError {
        gguf_err(self.path, format!("{message} (at byte {})", self.pos))
    }

    /// The next `n` bytes; `what` names them in the error if the file ends first.
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.error(format!(
                "truncated: {what} needs {n} bytes but only {} remain of {}",
                self.remaining(),
                self.bytes.len()
            )));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// The next `N` bytes as an array.
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A u64 count or length that must fit `usize`.
    fn len(&mut self, what: &str) -> Result<usize> {
        let v = self.u64(what)?;
        usize::try_from(v).map_err(|_| self.error(format!("{what} {v} is too large")))
    }

    /// A count of items that each take at least `min_item_bytes` bytes, checked against what is
    /// left of the file so that no absurd allocation follows.
    fn count(&mut self, what: &str, min_item_bytes: usize) -> Result<usize> {
        let n = self.len(what)?;
        if n > self.remaining() / min_item_bytes {
            return Err(self.error(format!(
                "{what} {n} is impossible: only {} bytes remain (truncated or corrupt file)",
                self.remaining()
            )));
        }
        Ok(n)
    }

    /// A GGUF string: u64 length then bytes.
    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.len(what)?;
        let bytes = self.take(n, what)?;
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }

    /// A metadata value of type `tag`, nested `depth` arrays deep.
    fn value(&mut self, tag: u32, depth: usize) -> Result<GgufValue> {
        Ok(match tag {
            tag::U8 => GgufValue::U8(u8::from_le_bytes(self.array("u8")?)),
            tag::I8 => GgufValue::I8(i8::from_le_bytes(self.array("i8")?)),
            tag::U16 => GgufValue::U16(u16::from_le_bytes(self.array("u16")?)),
            tag::I16 => GgufValue::I16(i16::from_le_bytes(self.array("i16")?)),
            tag::U32 => GgufValue::U32(self.u32("u32")?),
            tag::I32 => GgufValue::I32(i32::from_le_bytes(self.array("i32")?)),
            tag::F32 => GgufValue::F32(f32::from_le_bytes(self.array("f32")?)),
            tag::BOOL => GgufValue::Bool(self.array::<1>("bool")?[0] != 0),
            tag::STRING => GgufValue::String(self.string("string")?),
            tag::ARRAY => self.array_value(depth)?,
            tag::U64 => GgufValue::U64(self.u64("u64")?),
            tag::I64 => GgufValue::I64(i64::from_le_bytes(self.array("i64")?)),
            tag::F64 => GgufValue::F64(f64::from_le_bytes(self.array("f64")?)),
            other => return Err(self.error(format!("unknown metadata value type {other}"))),
        })
    }

    /// An array value: element type, count, elements.
    fn array_value(&mut self, depth: usize) -> Result<GgufValue> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(self.error(format!(
                "metadata arrays nested over {MAX_ARRAY_DEPTH} deep"
            )));
        }
        let elem = self.u32("array element type")?;
        let n = self.count("array length", min_value_bytes(elem))?;
        // The count only bounds the loop: the vector grows with the values actually read, so
        // a count that the rest of the file cannot back costs no memory up front (a value in
        // memory is several times its size in the file).
        let mut items = Vec::new();
        for _ in 0..n {
            items.push(self.value(elem, depth + 1)?);
        }
        Ok(GgufValue::Array(items))
    }
}

/// The fewest bytes a value of type `tag` can take in a file (at least 1).
fn min_value_bytes(tag: u32) -> usize {
    match tag {
        tag::U16 | tag::I16 => 2,
        tag::U32 | tag::I32 | tag::F32 => 4,
        tag::U64 | tag::I64 | tag::F64 | tag::STRING => 8,
        tag::ARRAY => 12,
        _ => 1,
    }
}

/// Parses and validates everything before the data section of a GGUF file held in `bytes`.
fn parse(path: &Path, bytes: &[u8]) -> Result<Layout> {
    let mut r = Reader {
        bytes,
        pos: 0,
        path,
    };
    let magic: [u8; 4] = r.array("magic")?;
    if magic != GGUF_MAGIC {
        return Err(gguf_err(
            path,
            format!("bad magic {magic:02x?}, expected \"GGUF\""),
        ));
    }
    let version = r.u32("version")?;
    if !(2..=3).contains(&version) {
        let hint = if (2..=3).contains(&version.swap_bytes()) {
            "; big-endian GGUF files are not supported"
        } else {
            ""
        };
        return Err(gguf_err(
            path,
            format!("unsupported GGUF version {version} (supported: 2, 3){hint}"),
        ));
    }
    // A tensor info takes at least 24 bytes (name length, n_dims, type, offset); a key/value pair
    // at least 13 (key length, type, one byte of value).
    let n_tensors = r.count("tensor count", 24)?;
    let n_kv = r.count("metadata count", 13)?;
    let metadata = parse_metadata(&mut r, n_kv)?;
    let alignment = alignment(path, &metadata)?;
    // Grown with the infos actually read, not reserved from the header's count.
    let mut tensors = Vec::new();
    for _ in 0..n_tensors {
        tensors.push(parse_tensor_info(&mut r)?);
    }
    let data_start = r.pos.div_ceil(alignment) * alignment;
    check_tensors(path, &tensors, alignment, data_start, bytes.len())?;
    Ok(Layout {
        version,
        metadata,
        tensors,
        alignment,
        data_start,
    })
}

/// Reads `n` key/value pairs; a repeated key is an error.
fn parse_metadata(r: &mut Reader<'_>, n: usize) -> Result<BTreeMap<String, GgufValue>> {
    let mut metadata = BTreeMap::new();
    for _ in 0..n {
        let key = r.string("metadata key")?;
        let ty = r.u32("metadata value type")?;
        let value = r
            .value(ty, 0)
            .map_err(|e| context(e, &format!("metadata `{key}`")))?;
        if metadata.insert(key.clone(), value).is_some() {
            return Err(r.error(format!("duplicate metadata key `{key}`")));
        }
    }
    Ok(metadata)
}

/// Prefixes a GGUF error message with `what` (other errors pass through).
fn context(err: ModelError, what: &str) -> ModelError {
    match err {
        ModelError::Gguf { path, message } => ModelError::Gguf {
            path,
            message: format!("{what}: {message}"),
        },
        other => other,
    }
}

/// `general.alignment` if present (a non-zero power of two), else the default.
fn alignment(path: &Path, metadata: &BTreeMap<String, GgufValue>) -> Result<usize> {
    let Some(value) = metadata.get("general.alignment") else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    match value.as_u64().and_then(|v| usize::try_from(v).ok()) {
        Some(a) if a.is_power_of_two() => Ok(a),
        _ => Err(gguf_err(
            path,
            format!(
                "general.alignment is {}, expected a power of two",
                describe(value)
            ),
        )),
    }
}

/// Reads one tensor info: name, dims (`ne`, innermost first), type id, offset.
fn parse_tensor_info(r: &mut Reader<'_>) -> Result<GgufTensorInfo> {
    let name = r.string("tensor name")?;
    let ctx = |e| context(e, &format!("tensor `{name}`"));
    let n_dims = r.u32("tensor dimension count").map_err(ctx)? as usize;
    if n_dims > MAX_DIMS {
        return Err(ctx(
            r.error(format!("{n_dims} dimensions (at most {MAX_DIMS})"))
        ));
    }
    if n_dims == 0 {
        return Err(ctx(
            r.error("0 dimensions (a tensor has between 1 and 4)".into())
        ));
    }
    let mut ne = Vec::with_capacity(n_dims);
    for _ in 0..n_dims {
        let dim = r.len("tensor dimension").map_err(ctx)?;
        if dim == 0 {
            return Err(ctx(r.error(format!(
                "a dimension of size 0 (dimensions so far {ne:?}); every dimension must be \
                 at least 1"
            ))));
        }
        ne.push(dim);
    }
    let type_id = r.u32("tensor type").map_err(ctx)?;
    let offset = r.len("tensor offset").map_err(ctx)?;
    let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| ModelError::UnknownTensorType {
        tensor: name.clone(),
        type_id,
        type_name: dequant::type_name(type_id),
    })?;
    let sizes = tensor_sizes(&ne, ggml_type).map_err(|m| ctx(r.error(m)))?;
    ne.reverse();
    Ok(GgufTensorInfo {
        name,
        shape: ne,
        ggml_type,
        offset,
        n_elements: sizes.0,
        n_bytes: sizes.1,
    })
}

/// Element count and byte size of a tensor with dims `ne` (innermost first) of type `ty`.
fn tensor_sizes(ne: &[usize], ty: GgmlType) -> std::result::Result<(usize, usize), String> {
    let n = ne
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("dimensions {ne:?} overflow"))?;
    let row = ne.first().copied().unwrap_or(1);
    if !row.is_multiple_of(ty.block_size()) {
        return Err(format!(
            "row length {row} is not a multiple of the {ty} block size {}",
            ty.block_size()
        ));
    }
    let bytes = ty
        .bytes_for(n)
        .ok_or_else(|| format!("dimensions {ne:?} overflow"))?;
    Ok((n, bytes))
}

/// Checks that tensor names are unique, offsets aligned, and all data inside the file.
fn check_tensors(
    path: &Path,
    tensors: &[GgufTensorInfo],
    alignment: usize,
    data_start: usize,
    file_len: usize,
) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for t in tensors {
        let fail = |m: String| Err(gguf_err(path, format!("tensor `{}`: {m}", t.name)));
        if !seen.insert(t.name.as_str()) {
            return fail("duplicate tensor name".into());
        }
        if !t.offset.is_multiple_of(alignment) {
            return fail(format!(
                "offset {} is not a multiple of the alignment {alignment}",
                t.offset
            ));
        }
        let end = data_start
            .checked_add(t.offset)
            .and_then(|s| s.checked_add(t.n_bytes));
        if end.is_none_or(|end| end > file_len) {
            return fail(format!(
                "data out of bounds: {} bytes at offset {} after the data start {data_start}, \
                 but the file is {file_len} bytes",
                t.n_bytes, t.offset
            ));
        }
    }
    Ok(())
}
