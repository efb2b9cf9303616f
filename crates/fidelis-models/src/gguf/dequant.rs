//! GGML tensor types and their dequantization to `f32`.
//!
//! The block layouts follow ggml's `ggml-common.h` (all fields little-endian). A quantized tensor is a
//! run of blocks along its contiguous dimension; each block holds [`GgmlType::block_size`] elements in
//! [`GgmlType::type_size`] bytes.

use half::{bf16, f16};

use crate::error::{ModelError, Result};

/// Elements in a k-quant super-block (`QK_K` in ggml).
const QK_K: usize = 256;

/// The 16 levels of `IQ4_NL` (`kvalues_iq4nl` in ggml).
const IQ4_NL_LEVELS: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// A tensor element type of ggml, as stored in the tensor infos of a GGUF file.
///
/// Every type ggml defines in a released GGUF file is listed so that errors can name it; only some
/// of them can be dequantized (see [`GgmlType::can_dequantize`]).
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    /// 32-bit IEEE float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// 4-bit, 32 per block, one f16 scale: `(q - 8) * d`.
    Q4_0,
    /// 4-bit, 32 per block, f16 scale and minimum: `q * d + m`.
    Q4_1,
    /// 5-bit, 32 per block, one f16 scale: `(q - 16) * d`.
    Q5_0,
    /// 5-bit, 32 per block, f16 scale and minimum: `q * d + m`.
    Q5_1,
    /// 8-bit, 32 per block, one f16 scale: `q * d`.
    Q8_0,
    /// 8-bit, 32 per block, f16 scale and f16 sum (the sum is not needed to dequantize).
    Q8_1,
    /// 2-bit k-quant (256 per super-block).
    Q2_K,
    /// 3-bit k-quant (256 per super-block).
    Q3_K,
    /// 4-bit k-quant: 8 sub-blocks of 32 with 6-bit scales and minimums.
    Q4_K,
    /// 5-bit k-quant: like `Q4_K` plus one high bit per element.
    Q5_K,
    /// 6-bit k-quant: 16 sub-blocks of 16 with 8-bit scales.
    Q6_K,
    /// 8-bit k-quant (used for intermediate results).
    Q8_K,
    /// 2.06-bit i-quant.
    IQ2_XXS,
    /// 2.31-bit i-quant.
    IQ2_XS,
    /// 3.06-bit i-quant.
    IQ3_XXS,
    /// 1.56-bit i-quant.
    IQ1_S,
    /// 4.5-bit non-linear quant, 32 per block.
    IQ4_NL,
    /// 3.44-bit i-quant.
    IQ3_S,
    /// 2.5-bit i-quant.
    IQ2_S,
    /// 4.25-bit non-linear i-quant.
    IQ4_XS,
    /// 8-bit integer.
    I8,
    /// 16-bit integer.
    I16,
    /// 32-bit integer.
    I32,
    /// 64-bit integer.
    I64,
    /// 64-bit IEEE float.
    F64,
    /// 1.75-bit i-quant.
    IQ1_M,
    /// bfloat16.
    BF16,
    /// Ternary quant, 1.69 bits.
    TQ1_0,
    /// Ternary quant, 2.06 bits.
    TQ2_0,
    /// Microscaling FP4 (E2M1 with an E8M0 scale per 32).
    MXFP4,
    /// NVIDIA FP4 (E2M1 with an E4M3 scale per 16, 64 per block).
    NVFP4,
    /// 1-bit signs with an f16 scale per 128.
    Q1_0,
}

/// `(type, id, name, elements per block, bytes per block)` for every known type.
const TYPES: [(GgmlType, u32, &str, usize, usize); 34] = [
    (GgmlType::F32, 0, "F32", 1, 4),
    (GgmlType::F16, 1, "F16", 1, 2),
    (GgmlType::Q4_0, 2, "Q4_0", 32, 18),
    (GgmlType::Q4_1, 3, "Q4_1", 32, 20),
    (GgmlType::Q5_0, 6, "Q5_0", 32, 22),
    (GgmlType::Q5_1, 7, "Q5_1", 32, 24),
    (GgmlType::Q8_0, 8, "Q8_0", 32, 34),
    (GgmlType::Q8_1, 9, "Q8_1", 32, 36),
    (GgmlType::Q2_K, 10, "Q2_K", QK_K, 84),
    (GgmlType::Q3_K, 11, "Q3_K", QK_K, 110),
    (GgmlType::Q4_K, 12, "Q4_K", QK_K, 144),
    (GgmlType::Q5_K, 13, "Q5_K", QK_K, 176),
    (GgmlType::Q6_K, 14, "Q6_K", QK_K, 210),
    (GgmlType::Q8_K, 15, "Q8_K", QK_K, 292),
    (GgmlType::IQ2_XXS, 16, "IQ2_XXS", QK_K, 66),
    (GgmlType::IQ2_XS, 17, "IQ2_XS", QK_K, 74),
    (GgmlType::IQ3_XXS, 18, "IQ3_XXS", QK_K, 98),
    (GgmlType::IQ1_S, 19, "IQ1_S", QK_K, 50),
    (GgmlType::IQ4_NL, 20, "IQ4_NL", 32, 18),
    (GgmlType::IQ3_S, 21, "IQ3_S", QK_K, 110),
    (GgmlType::IQ2_S, 22, "IQ2_S", QK_K, 82),
    (GgmlType::IQ4_XS, 23, "IQ4_XS", QK_K, 136),
    (GgmlType::I8, 24, "I8", 1, 1),
    (GgmlType::I16, 25, "I16", 1, 2),
    (GgmlType::I32, 26, "I32", 1, 4),
    (GgmlType::I64, 27, "I64", 1, 8),
    (GgmlType::F64, 28, "F64", 1, 8),
    (GgmlType::IQ1_M, 29, "IQ1_M", QK_K, 56),
    (GgmlType::BF16, 30, "BF16", 1, 2),
    (GgmlType::TQ1_0, 34, "TQ1_0", QK_K, 54),
    (GgmlType::TQ2_0, 35, "TQ2_0", QK_K, 66),
    (GgmlType::MXFP4, 39, "MXFP4", 32, 17),
    (GgmlType::NVFP4, 40, "NVFP4", 64, 36),
    (GgmlType::Q1_0, 41, "Q1_0", 128, 18),
];

/// The name ggml gives a type id, `"unknown"` for ids it never defined or has removed from GGUF.
pub fn type_name(id: u32) -> &'static str {
    GgmlType::from_id(id).map_or("unknown", GgmlType::name)
}

impl GgmlType {
    /// The row of [`TYPES`] describing `self`.
    fn row(self) -> (GgmlType, u32, &'static str, usize, usize) {
        // Every variant has exactly one row; the fallback is never taken.
        TYPES
            .iter()
            .copied()
            .find(|row| row.0 == self)
            .unwrap_or((self, u32::MAX, "unknown", 1, 1))
    }

    /// The type with ggml id `id`, if ggml defines one.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        TYPES.iter().find(|row| row.1 == id).map(|row| row.0)
    }

    /// The numeric ggml id (`GGML_TYPE_*`).
    pub fn id(self) -> u32 {
        self.row().1
    }

    /// The ggml name, e.g. `"Q4_K"`.
    pub fn name(self) -> &'static str {
        self.row().2
    }

    /// Elements per block (1 for plain float and integer types).
    pub fn block_size(self) -> usize {
        self.row().3
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        self.row().4
    }

    /// Bytes taken by `n_elements` elements, or `None` when `n_elements` is not a whole number of
    /// blocks or the size overflows.
    pub fn bytes_for(self, n_elements: usize) -> Option<usize> {
        if !n_elements.is_multiple_of(self.block_size()) {
            return None;
        }
        (n_elements / self.block_size()).checked_mul(self.type_size())
    }

    /// Whether [`dequantize`] supports this type.
    pub fn can_dequantize(self) -> bool {
        block_decoder(self).is_some()
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Decodes one block of bytes (exactly `type_size` long) into `block_size` floats.
type BlockDecoder = fn(&[u8], &mut [f32]);

/// The decoder for `ty`, `None` where dequantization is not implemented.
fn block_decoder(ty: GgmlType) -> Option<BlockDecoder> {
    let decoder: BlockDecoder = match ty {
        GgmlType::F32 => |b, y| y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        GgmlType::F16 => |b, y| y[0] = half_at(b, 0),
        GgmlType::BF16 => |b, y| y[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        GgmlType::Q4_0 => decode_q4_0,
        GgmlType::Q4_1 => decode_q4_1,
        GgmlType::Q5_0 => decode_q5_0,
        GgmlType::Q5_1 => decode_q5_1,
        GgmlType::Q8_0 => |b, y| decode_q8(half_at(b, 0), &b[2..], y),
        GgmlType::Q8_1 => |b, y| decode_q8(half_at(b, 0), &b[4..], y),
        GgmlType::IQ4_NL => decode_iq4_nl,
        GgmlType::Q4_K => decode_q4_k,
        GgmlType::Q5_K => decode_q5_k,
        GgmlType::Q6_K => decode_q6_k,
        _ => return None,
    };
    Some(decoder)
}

/// The unsupported-type error for `ty`, attributed to `tensor`.
pub(crate) fn unsupported(ty: GgmlType, tensor: &str) -> ModelError {
    ModelError::UnknownTensorType {
        tensor: tensor.to_string(),
        type_id: ty.id(),
        type_name: ty.name(),
    }
}

/// Dequantizes `n_elements` values of type `ty` stored in `bytes` to `f32`.
///
/// `bytes` must hold exactly the blocks of `n_elements` elements. Errors: an unsupported type gives
/// [`ModelError::UnknownTensorType`] (with an empty tensor name; [`super::GgufFile::tensor_f32`] fills
/// it in), a count that is not a whole number of blocks or a length mismatch gives
/// [`ModelError::InvalidInput`].
pub fn dequantize(ty: GgmlType, bytes: &[u8], n_elements: usize) -> Result<Vec<f32>> {
    let decode = block_decoder(ty).ok_or_else(|| unsupported(ty, ""))?;
    let expected = ty.bytes_for(n_elements).ok_or_else(|| {
        ModelError::InvalidInput(format!(
            "{n_elements} elements is not a multiple of the {ty} block size {}",
            ty.block_size()
        ))
    })?;
    if bytes.len() != expected {
        return Err(ModelError::InvalidInput(format!(
            "{n_elements} {ty} elements take {expected} bytes, got {}",
            bytes.len()
        )));
    }
    let mut out = vec![0f32; n_elements];
    let blocks = bytes.chunks_exact(ty.type_size());
    for (block, y) in blocks.zip(out.chunks_exact_mut(ty.block_size())) {
        decode(block, y);
    }
    Ok(out)
}

/// The little-endian f16 at `at` in `b`, as f32.
fn half_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// `Q4_0`: `d`, then 16 bytes whose low nibbles are elements 0..16 and high nibbles 16..32.
fn decode_q4_0(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    for (j, &q) in b[2..18].iter().enumerate() {
        y[j] = (f32::from(q & 0xF) - 8.0) * d;
        y[j + 16] = (f32::from(q >> 4) - 8.0) * d;
    }
}

/// `Q4_1`: `d`, `m`, then nibbles as in `Q4_0`, unsigned.
fn decode_q4_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (half_at(b, 0), half_at(b, 2));
    for (j, &q) in b[4..20].iter().enumerate() {
        y[j] = f32::from(q & 0xF) * d + m;
        y[j + 16] = f32::from(q >> 4) * d + m;
    }
}

/// The 5-bit values of a `Q5_0`/`Q5_1` block: bit `j` of `qh` is the high bit of element `j`.
fn five_bit_values(qh: &[u8], qs: &[u8]) -> [u8; 32] {
    let high = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    let mut v = [0u8; 32];
    for (j, &q) in qs.iter().take(16).enumerate() {
        let bit = |k: usize| (((high >> k) & 1) as u8) << 4;
        v[j] = (q & 0xF) | bit(j);
        v[j + 16] = (q >> 4) | bit(j + 16);
    }
    v
}

/// `Q5_0`: `d`, `qh` (u32), 16 nibble bytes: `(q - 16) * d`.
fn decode_q5_0(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    for (y, q) in y.iter_mut().zip(five_bit_values(&b[2..6], &b[6..22])) {
        *y = (f32::from(q) - 16.0) * d;
    }
}

/// `Q5_1`: `d`, `m`, `qh` (u32), 16 nibble bytes: `q * d + m`.
fn decode_q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (half_at(b, 0), half_at(b, 2));
    for (y, q) in y.iter_mut().zip(five_bit_values(&b[4..8], &b[8..24])) {
        *y = f32::from(q) * d + m;
    }
}

/// `Q8_0`/`Q8_1` payload: 32 signed bytes times `d`.
fn decode_q8(d: f32, qs: &[u8], y: &mut [f32]) {
    for (y, &q) in y.iter_mut().zip(qs) {
        *y = f32::from(q as i8) * d;
    }
}

/// `IQ4_NL`: `d`, then nibbles (as in `Q4_0`) indexing [`IQ4_NL_LEVELS`].
fn decode_iq4_nl(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    let level = |q: u8| f32::from(IQ4_NL_LEVELS[usize::from(q & 0xF)]) * d;
    for (j, &q) in b[2..18].iter().enumerate() {
        y[j] = level(q);
        y[j + 16] = level(q >> 4);
    }
}

/// Scale and minimum of sub-block `j` (0..8) from the 12 packed bytes of `Q4_K`/`Q5_K`.
///
/// Sub-blocks 0..4 keep 6-bit values in the low bits of bytes `j` (scale) and `j + 4` (min);
/// sub-blocks 4..8 take their low 4 bits from byte `j + 4` and their top 2 bits from the spare high
/// bits of bytes `j - 4` (scale) and `j` (min).
fn k_scale_min(j: usize, s: &[u8]) -> (f32, f32) {
    let (sc, m) = if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    };
    (f32::from(sc), f32::from(m))
}

/// `Q4_K`: `d`, `dmin`, 12 scale bytes, 128 nibble bytes. Each 64 elements use 32 bytes: low
/// nibbles are sub-block `2i`, high nibbles sub-block `2i + 1`; `x = d * sc * q - dmin * m`.
fn decode_q4_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (half_at(b, 0), half_at(b, 2));
    let scales = &b[4..16];
    for (chunk, qs) in b[16..144].chunks_exact(32).enumerate() {
        for half in 0..2 {
            let sub = 2 * chunk + half;
            let (sc, m) = k_scale_min(sub, scales);
            for (l, &q) in qs.iter().enumerate() {
                let q = if half == 0 { q & 0xF } else { q >> 4 };
                y[32 * sub + l] = d * sc * f32::from(q) - dmin * m;
            }
        }
    }
}

/// `Q5_K`: like `Q4_K` with 32 `qh` bytes after the scales; bit `sub` of `qh[l]` is the fifth bit
/// of element `l` of sub-block `sub`.
fn decode_q5_k(b: &[u8], y: &mut [f32]) {
    let (d, dmin) = (half_at(b, 0), half_at(b, 2));
    let (scales, qh) = (&b[4..16], &b[16..48]);
    for (chunk, qs) in b[48..176].chunks_exact(32).enumerate() {
        for half in 0..2 {
            let sub = 2 * chunk + half;
            let (sc, m) = k_scale_min(sub, scales);
            for (l, &q) in qs.iter().enumerate() {
                let low = if half == 0 { q & 0xF } else { q >> 4 };
                let high = ((qh[l] >> sub) & 1) << 4;
                y[32 * sub + l] = d * sc * f32::from(low | high) - dmin * m;
            }
        }
    }
}

/// `Q6_K`: 128 `ql` bytes, 64 `qh` bytes, 16 signed scales, `d`. Each half of 128 elements uses 64
/// `ql` and 32 `qh` bytes: element `32 k + l` (k in 0..4, l in 0..32) takes its low 4 bits from
/// `ql[l + 32 (k % 2)]` (low nibble for k < 2, high otherwise) and its high 2 bits from bits
/// `2k..2k+2` of `qh[l]`; its scale is `scales[(32 k + l) / 16]` of that half.
fn decode_q6_k(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 208);
    for half in 0..2 {
        let ql = &b[64 * half..64 * half + 64];
        let qh = &b[128 + 32 * half..128 + 32 * half + 32];
        let scales = &b[192 + 8 * half..192 + 8 * half + 8];
        for k in 0..4 {
            for l in 0..32 {
                let low_byte = ql[l + 32 * (k % 2)];
                let low = if k < 2 { low_byte & 0xF } else { low_byte >> 4 };
                let high = (qh[l] >> (2 * k)) & 3;
                let q = i32::from(low | (high << 4)) - 32;
                let sc = f32::from(scales[(32 * k + l) / 16] as i8);
                y[128 * half + 32 * k + l] = d * sc * q as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16_bytes(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    /// Packs 32 nibbles the ggml way: element j < 16 in the low nibble of byte j, element j + 16
    /// in its high nibble.
    fn pack_nibbles(q: &[u8; 32]) -> Vec<u8> {
        (0..16).map(|j| q[j] | (q[j + 16] << 4)).collect()
    }

    fn assert_close(got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-6 * w.abs().max(1.0),
                "element {i}: got {g}, want {w}"
            );
        }
    }

    #[test]
    fn type_table_is_consistent() {
        for (ty, id, name, block, size) in TYPES {
            assert_eq!(GgmlType::from_id(id), Some(ty));
            assert_eq!(
                (ty.id(), ty.name(), ty.block_size(), ty.type_size()),
                (id, name, block, size)
            );
        }
        assert_eq!(type_name(14), "Q6_K");
        assert_eq!(type_name(4), "unknown");
        assert_eq!(type_name(1000), "unknown");
        assert_eq!(GgmlType::Q4_K.bytes_for(512), Some(288));
        assert_eq!(GgmlType::Q4_K.bytes_for(100), None);
    }

    #[test]
    fn f32_f16_bf16() {
        let vals = [1.5f32, -2.25, 0.0, 65504.0];
        let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(dequantize(GgmlType::F32, &bytes, 4).unwrap(), vals);
        // f16 1.5 = 0x3E00, -2.25 = 0xC080, 0 = 0x0000, 65504 = 0x7BFF.
        let bytes = [0x00, 0x3E, 0x80, 0xC0, 0x00, 0x00, 0xFF, 0x7B];
        assert_eq!(dequantize(GgmlType::F16, &bytes, 4).unwrap(), vals);
        // bf16 is the top half of an f32: 1.5 = 0x3FC0, -2.25 = 0xC010, 3.0 = 0x4040.
        let bytes = [0xC0, 0x3F, 0x10, 0xC0, 0x40, 0x40];
        assert_eq!(
            dequantize(GgmlType::BF16, &bytes, 3).unwrap(),
            [1.5, -2.25, 3.0]
        );
    }

    #[test]
    fn q8_0_block() {
        // d = 0.5, qs = -128, -120, ..., 120 (step 8): value = 0.5 * q.
        let qs: Vec<i8> = (0..32).map(|i| (i * 8 - 128) as i8).collect();
        let mut bytes = f16_bytes(0.5).to_vec();
        bytes.extend(qs.iter().map(|&q| q as u8));
        let want: Vec<f32> = qs.iter().map(|&q| 0.5 * f32::from(q)).collect();
        assert_eq!(want[0], -64.0);
        assert_eq!(want[31], 60.0);
        assert_close(&dequantize(GgmlType::Q8_0, &bytes, 32).unwrap(), &want);
    }

    #[test]
    fn q8_1_block_ignores_sum() {
        let mut bytes = f16_bytes(0.25).to_vec();
        bytes.extend(f16_bytes(99.0)); // s: unused by dequantization
        bytes.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let want: Vec<f32> = (0..32).map(|i| 0.25 * (i as f32 - 16.0)).collect();
        assert_close(&dequantize(GgmlType::Q8_1, &bytes, 32).unwrap(), &want);
    }

    #[test]
    fn q4_0_block() {
        // d = 2, nibble of element i = i % 16: value = (q - 8) * 2, so element 0 -> -16,
        // element 15 -> 14, element 16 (high nibble of byte 0) -> -16, element 31 -> 14.
        let q: [u8; 32] = std::array::from_fn(|i| (i % 16) as u8);
        let mut bytes = f16_bytes(2.0).to_vec();
        bytes.extend(pack_nibbles(&q));
        let want: Vec<f32> = q.iter().map(|&q| (f32::from(q) - 8.0) * 2.0).collect();
        assert_eq!(
            (want[0], want[15], want[16], want[31]),
            (-16.0, 14.0, -16.0, 14.0)
        );
        assert_close(&dequantize(GgmlType::Q4_0, &bytes, 32).unwrap(), &want);
        // Distinguish low and high nibble: byte 0 = 0xF1 gives element 0 = (1-8)*2 = -14 and
        // element 16 = (15-8)*2 = 14.
        bytes[2] = 0xF1;
        let got = dequantize(GgmlType::Q4_0, &bytes, 32).unwrap();
        assert_eq!((got[0], got[16]), (-14.0, 14.0));
    }

    #[test]
    fn q4_1_block() {
        // d = 0.5, m = -1: value = q * 0.5 - 1, q = 15 - (i % 16).
        let q: [u8; 32] = std::array::from_fn(|i| 15 - (i % 16) as u8);
        let mut bytes = f16_bytes(0.5).to_vec();
        bytes.extend(f16_bytes(-1.0));
        bytes.extend(pack_nibbles(&q));
        let want: Vec<f32> = q.iter().map(|&q| f32::from(q) * 0.5 - 1.0).collect();
        assert_eq!((want[0], want[15]), (6.5, -1.0));
        assert_close(&dequantize(GgmlType::Q4_1, &bytes, 32).unwrap(), &want);
    }

    /// Builds the `qh` word and nibble bytes of a 5-bit block from 32 values in 0..32.
    fn pack_five_bits(q: &[u8; 32]) -> Vec<u8> {
        let qh: u32 = (0..32).map(|j| u32::from(q[j] >> 4) << j).sum();
        let low: [u8; 32] = std::array::from_fn(|j| q[j] & 0xF);
        let mut out = qh.to_le_bytes().to_vec();
        out.extend(pack_nibbles(&low));
        out
    }

    #[test]
    fn q5_0_block() {
        // d = 1, q = i (0..32): value = i - 16.
        let q: [u8; 32] = std::array::from_fn(|i| i as u8);
        let mut bytes = f16_bytes(1.0).to_vec();
        bytes.extend(pack_five_bits(&q));
        let want: Vec<f32> = (0..32).map(|i| i as f32 - 16.0).collect();
        assert_close(&dequantize(GgmlType::Q5_0, &bytes, 32).unwrap(), &want);
    }

    #[test]
    fn q5_1_block() {
        // d = 0.25, m = 3, q = 31 - i: value = 0.25 * q + 3.
        let q: [u8; 32] = std::array::from_fn(|i| 31 - i as u8);
        let mut bytes = f16_bytes(0.25).to_vec();
        bytes.extend(f16_bytes(3.0));
        bytes.extend(pack_five_bits(&q));
        let want: Vec<f32> = q.iter().map(|&q| 0.25 * f32::from(q) + 3.0).collect();
        assert_eq!((want[0], want[31]), (10.75, 3.0));
        assert_close(&dequantize(GgmlType::Q5_1, &bytes, 32).unwrap(), &want);
    }

    #[test]
    fn iq4_nl_block() {
        // d = 0.5, nibble = i % 16: value = 0.5 * level[i % 16].
        let q: [u8; 32] = std::array::from_fn(|i| (i % 16) as u8);
        let mut bytes = f16_bytes(0.5).to_vec();
        bytes.extend(pack_nibbles(&q));
        let got = dequantize(GgmlType::IQ4_NL, &bytes, 32).unwrap();
        assert_eq!((got[0], got[7], got[8], got[31]), (-63.5, -5.0, 0.5, 56.5));
    }

    /// Packs 8 six-bit (scale, min) pairs into the 12 bytes of `Q4_K`/`Q5_K`.
    ///
    /// Bytes 0..4: scale j (j < 4) in bits 0..6, top 2 bits of scale j+4 in bits 6..8.
    /// Bytes 4..8: min j (j < 4) in bits 0..6, top 2 bits of min j+4 in bits 6..8.
    /// Bytes 8..12: low 4 bits of scale j+4 in bits 0..4, low 4 bits of min j+4 in bits 4..8.
    fn pack_k_scales(sc: [u8; 8], m: [u8; 8]) -> Vec<u8> {
        let mut s = vec![0u8; 12];
        for j in 0..4 {
            s[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
            s[j + 4] = m[j] | ((m[j + 4] >> 4) << 6);
            s[j + 8] = (sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4);
        }
        s
    }

    /// Sub-block scales and minimums used by the k-quant tests: values above 15 exercise the
    /// 2 high bits stored apart for sub-blocks 4..8.
    const K_SC: [u8; 8] = [1, 2, 3, 63, 5, 17, 40, 63];
    const K_MIN: [u8; 8] = [0, 1, 2, 3, 60, 33, 16, 7];

    #[test]
    fn k_scale_unpacking() {
        let s = pack_k_scales(K_SC, K_MIN);
        for j in 0..8 {
            assert_eq!(
                k_scale_min(j, &s),
                (f32::from(K_SC[j]), f32::from(K_MIN[j])),
                "sub {j}"
            );
        }
    }

    /// The value of element `i` (0..256) in the k-quant tests: q = (i * 7) % 16 (4 bits).
    fn k_q4(i: usize) -> u8 {
        ((i * 7) % 16) as u8
    }

    /// Packs 256 4-bit values like `Q4_K`: 64 elements per 32 bytes, the first 32 in the low
    /// nibbles, the next 32 in the high nibbles.
    fn pack_q4_k_nibbles(q: impl Fn(usize) -> u8) -> Vec<u8> {
        let mut out = vec![0u8; 128];
        for chunk in 0..4 {
            for l in 0..32 {
                out[32 * chunk + l] = q(64 * chunk + l) | (q(64 * chunk + 32 + l) << 4);
            }
        }
        out
    }

    #[test]
    fn q4_k_super_block() {
        // d = 0.5, dmin = 0.25. Element i lies in sub-block i / 32 and is
        // 0.5 * K_SC[i / 32] * q(i) - 0.25 * K_MIN[i / 32].
        let mut bytes = f16_bytes(0.5).to_vec();
        bytes.extend(f16_bytes(0.25));
        bytes.extend(pack_k_scales(K_SC, K_MIN));
        bytes.extend(pack_q4_k_nibbles(k_q4));
        let got = dequantize(GgmlType::Q4_K, &bytes, 256).unwrap();
        // Hand-computed: i = 0: q 0 -> 0. i = 33: sub 1, q = 231 % 16 = 7 -> 0.5*2*7 - 0.25 = 6.75.
        // i = 100: sub 3, q = 700 % 16 = 12 -> 0.5*63*12 - 0.75 = 377.25.
        // i = 130: sub 4, q = 910 % 16 = 14 -> 0.5*5*14 - 15 = 20.
        // i = 255: sub 7, q = 1785 % 16 = 9 -> 0.5*63*9 - 1.75 = 281.75.
        assert_eq!(
            [got[0], got[33], got[100], got[130], got[255]],
            [0.0, 6.75, 377.25, 20.0, 281.75]
        );
        for sub in 0..8 {
            for i in [32 * sub, 32 * sub + 17, 32 * sub + 31] {
                let want =
                    0.5 * f32::from(K_SC[sub]) * f32::from(k_q4(i)) - 0.25 * f32::from(K_MIN[sub]);
                assert_eq!(got[i], want, "element {i}");
            }
        }
    }

    #[test]
    fn q5_k_super_block() {
        // As Q4_K, with q(i) + 16 for odd i: the fifth bit of element i is bit (i / 32) of qh[i % 32].
        let q5 = |i: usize| k_q4(i) + if i % 2 == 1 { 16 } else { 0 };
        let mut bytes = f16_bytes(0.5).to_vec();
        bytes.extend(f16_bytes(0.25));
        bytes.extend(pack_k_scales(K_SC, K_MIN));
        let qh: Vec<u8> = (0..32)
            .map(|l| (0..8).map(|sub| (q5(32 * sub + l) >> 4) << sub).sum())
            .collect();
        bytes.extend(qh);
        bytes.extend(pack_q4_k_nibbles(|i| q5(i) & 0xF));
        let got = dequantize(GgmlType::Q5_K, &bytes, 256).unwrap();
        // i = 33: sub 1, q = 7 + 16 = 23 -> 0.5*2*23 - 0.25 = 22.75.
        assert_eq!(got[33], 22.75);
        for (i, &g) in got.iter().enumerate() {
            let sub = i / 32;
            let want = 0.5 * f32::from(K_SC[sub]) * f32::from(q5(i)) - 0.25 * f32::from(K_MIN[sub]);
            assert_eq!(g, want, "element {i}");
        }
    }

    #[test]
    fn q6_k_super_block() {
        // d = 0.5, 16 scales sc[s] = s - 8 (signed), 6-bit q(i) = (i * 5) % 64, value
        // 0.5 * sc[i / 16] * (q(i) - 32).
        let q = |i: usize| ((i * 5) % 64) as u8;
        let sc: [i8; 16] = std::array::from_fn(|s| s as i8 - 8);
        // Layout per half h (elements 128h..128h+128), k = 0..4, l = 0..32, e = 128h + 32k + l:
        // low nibble of ql[64h + l + 32 (k % 2)] (k < 2) or its high nibble (k >= 2);
        // bits 2k..2k+2 of qh[32h + l] hold q >> 4.
        let mut ql = [0u8; 128];
        let mut qh = [0u8; 64];
        for e in 0..256 {
            let (h, k, l) = (e / 128, (e % 128) / 32, e % 32);
            let byte = 64 * h + l + 32 * (k % 2);
            ql[byte] |= (q(e) & 0xF) << (4 * (k / 2));
            qh[32 * h + l] |= (q(e) >> 4) << (2 * k);
        }
        let mut bytes = ql.to_vec();
        bytes.extend(qh);
        bytes.extend(sc.iter().map(|&s| s as u8));
        bytes.extend(f16_bytes(0.5));
        let got = dequantize(GgmlType::Q6_K, &bytes, 256).unwrap();
        // Hand-computed: i = 0: sc -8, q 0 -> 0.5*-8*-32 = 128. i = 20: sc[1] = -7, q 100%64 = 36
        // -> 0.5*-7*4 = -14. i = 200: sc[12] = 4, q 1000%64 = 40 -> 0.5*4*8 = 16.
        // i = 255: sc[15] = 7, q 1275%64 = 59 -> 0.5*7*27 = 94.5.
        assert_eq!(
            [got[0], got[20], got[200], got[255]],
            [128.0, -14.0, 16.0, 94.5]
        );
        for (s, &scale) in sc.iter().enumerate() {
            for i in [16 * s, 16 * s + 9, 16 * s + 15] {
                let want = 0.5 * f32::from(scale) * (f32::from(q(i)) - 32.0);
                assert_eq!(got[i], want, "element {i}");
            }
        }
    }

    #[test]
    fn several_blocks_in_order() {
        let mut bytes = f16_bytes(1.0).to_vec();
        bytes.extend([1u8; 32]);
        bytes.extend(f16_bytes(2.0));
        bytes.extend([1u8; 32]);
        let got = dequantize(GgmlType::Q8_0, &bytes, 64).unwrap();
        assert_eq!((got[31], got[32]), (1.0, 2.0));
    }

    #[test]
    fn errors() {
        let err = dequantize(GgmlType::Q2_K, &[0; 84], 256).unwrap_err();
        assert!(matches!(
            err,
            ModelError::UnknownTensorType {
                type_id: 10,
                type_name: "Q2_K",
                ..
            }
        ));
        let err = dequantize(GgmlType::Q8_0, &[0; 34], 31)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a multiple"), "{err}");
        let err = dequantize(GgmlType::Q8_0, &[0; 33], 32)
            .unwrap_err()
            .to_string();
        assert!(err.contains("take 34 bytes, got 33"), "{err}");
        let err = dequantize(GgmlType::F32, &[0; 7], 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("take 8 bytes"), "{err}");
        assert!(!GgmlType::IQ2_XXS.can_dequantize());
        assert!(GgmlType::Q6_K.can_dequantize());
    }
}
