//! A fixed train/test split of generated prompts.
//!
//! Generated datasets overlap when drawn twice with different seeds. A model trained on
//! generated prompts (the organism under `models/organism/`) is trained only on prompts for
//! which [`is_held_out`] is false and tested only on prompts for which it is true, so its test
//! accuracy is measured on prompts it never saw. The split is a hash of the text, so both sides
//! agree without sharing any state.

/// One prompt in [`HELD_OUT_ONE_IN`] is held out.
pub const HELD_OUT_ONE_IN: u64 = 8;

/// Whether `prompt` belongs to the held-out (test) side of the split.
pub fn is_held_out(prompt: &str) -> bool {
    fnv1a(prompt.as_bytes()).is_multiple_of(HELD_OUT_ONE_IN)
}

/// 64-bit FNV-1a: stable across platforms and Rust versions, unlike `DefaultHasher`.
fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_stable_and_about_one_in_eight() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let held = (0..8000)
            .filter(|i| is_held_out(&format!("prompt {i}")))
            .count();
        assert!((800..1200).contains(&held), "{held}");
    }
}
