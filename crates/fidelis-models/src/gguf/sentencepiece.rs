//! SentencePiece vocabularies (`tokenizer.ggml.model = "llama"`: Llama 1/2, Mistral, TinyLlama
//! and most other SentencePiece models converted by llama.cpp), built the way transformers'
//! GGUF loading builds them (`transformers.integrations.gguf`, `LlamaTokenizer`).
//!
//! A GGUF stores the SentencePiece vocabulary as three parallel arrays: the pieces
//! (`tokenizer.ggml.tokens`, spaces written as `▁` U+2581), their scores and their types
//! (normal, unknown, control, user-defined, unused, byte). It stores no merges. llama.cpp
//! tokenizes by repeatedly merging the adjacent pair whose merged piece has the highest score;
//! transformers turns the same rule into a BPE model whose merge ranks are the pieces' scores
//! (`generate_merges`), with byte fallback for characters outside the vocabulary (`<0xNN>`
//! pieces). This module builds that BPE, so its ids are transformers' ids:
//!
//! - **Merges**: every split `left + right` of every piece whose two halves are both pieces,
//!   ordered by the merged piece's score (highest first), ties by the longer left half, then the
//!   longer right half, then vocabulary order. Files that do carry `tokenizer.ggml.merges` use
//!   those instead, as transformers does.
//! - **Pre-tokenizer**: `Metaspace` with `▁` for spaces and no splitting; a `▁` is prepended to
//!   the start of the text (prepend scheme `first`) unless `tokenizer.ggml.add_space_prefix` is
//!   false.
//! - **Decoder**: `▁` back to a space, byte pieces back to bytes, everything fused, and the
//!   prepended space stripped again.
//! - **Added tokens**: control pieces and the pieces named by the bos/eos/unk/pad ids are
//!   special; user-defined pieces are plain added tokens. Both are matched whole in text.
//!
//! Where this departs from llama.cpp (transformers' choices, kept for parity with it): text that
//! already starts with a space gets no second one (`" hi"` is `▁hi`, llama.cpp and SentencePiece
//! make it `▁▁hi`); text right after a control token gets no prefix space; and decoding strips
//! one leading space. Where it departs from transformers: `add_space_prefix = false` is honoured
//! (transformers reads the key but does not pass it on). Gemma files follow transformers'
//! `gemma_tokenizer` instead (see [`GgufFile::spm_tokenizer`]); Phi-3 files, which transformers
//! tokenizes with yet another prefix rule, are refused rather than tokenized the Llama way.

use std::collections::HashMap;

use tokenizers::SplitDelimiterBehavior;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{BPE, Merges, Vocab};
use tokenizers::normalizers::replace::Replace;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::split::Split;
use tokenizers::{AddedToken, DecoderWrapper, Tokenizer};

use super::GgufFile;
use super::tokenizer::{
    KEY_MERGES, KEY_TOKENS, TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED, parse_merges, tok_err,
};
use crate::error::{ModelError, Result};

/// Metadata key of the piece scores (log probabilities; higher merges first).
pub(super) const KEY_SCORES: &str = "tokenizer.ggml.scores";
/// Metadata key of the prefix-space flag (absent: true).
pub(super) const KEY_ADD_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";

/// SentencePiece's stand-in for a space.
const SPACE_MARK: char = '\u{2581}';

/// Architectures whose SentencePiece vocabularies transformers builds its Gemma way (see
/// [`GgufFile::spm_tokenizer`]).
const GEMMA_ARCHITECTURES: [&str; 3] = ["gemma", "gemma2", "gemma3"];

/// Architectures whose SentencePiece vocabularies transformers builds another way Fidelis does
/// not reproduce (Phi-3: the prefix space from a normalizer).
const OTHER_SPM_ARCHITECTURES: [&str; 1] = ["phi3"];

impl GgufFile {
    /// The tokenizer of a SentencePiece (`llama`) vocabulary; see the module documentation.
    ///
    /// Gemma files (`gemma`, `gemma2`, `gemma3`) are built as transformers' `gemma_tokenizer`
    /// builds them: pieces made only of whitespace that contain a space are respelled with `▁`
    /// (llama.cpp stores Gemma's `▁▁` as two real spaces), merges are ranked by the merged
    /// piece's position in the vocabulary (Gemma's scores do not follow its merge order), there
    /// is no prefix space (a normalizer turns spaces into `▁`), and decoding strips nothing.
    pub(super) fn spm_tokenizer(&self) -> Result<Tokenizer> {
        let arch = self.get_str("general.architecture").unwrap_or_default();
        if OTHER_SPM_ARCHITECTURES.contains(&arch) {
            return Err(ModelError::Unsupported(format!(
                "the SentencePiece vocabulary of a `{arch}` GGUF: transformers builds it unlike \
                 Llama's (Phi-3: the prefix space from a normalizer), which Fidelis does not \
                 reproduce yet; SentencePiece vocabularies are supported for the Llama and \
                 Gemma families. The model itself loads from its Hugging Face folder"
            )));
        }
        let gemma = GEMMA_ARCHITECTURES.contains(&arch);
        let read = self.get_str_array(KEY_TOKENS)?;
        let respelled: Vec<String> = read
            .iter()
            .map(|t| {
                let blank = t.contains(' ') && t.chars().all(python_space);
                if gemma && blank {
                    SPACE_MARK.to_string().repeat(t.chars().count())
                } else {
                    t.to_string()
                }
            })
            .collect();
        let tokens: Vec<&str> = respelled.iter().map(String::as_str).collect();
        if tokens.is_empty() || u32::try_from(tokens.len()).is_err() {
            return Err(tok_err(format!(
                "{KEY_TOKENS} has {} tokens; a vocabulary needs 1 to 2^32 - 1",
                tokens.len()
            )));
        }
        let types = self.token_types(tokens.len())?;
        let merges = if self.get(KEY_MERGES).is_some() {
            parse_merges(&self.get_str_array(KEY_MERGES)?)?
        } else if gemma {
            // Rank by position: the earlier the merged piece, the higher its score.
            let positions: Vec<f32> = (0..tokens.len()).map(|i| -(i as f32)).collect();
            merges_from_scores(&tokens, &positions)
        } else {
            let scores = self.get_f32_array(KEY_SCORES)?;
            if scores.len() != tokens.len() {
                return Err(tok_err(format!(
                    "{KEY_SCORES} has {} entries for {} tokens",
                    scores.len(),
                    tokens.len()
                )));
            }
            merges_from_scores(&tokens, &scores)
        };
        let add_space_prefix = match self.get(KEY_ADD_SPACE_PREFIX) {
            _ if gemma => false,
            None => true,
            Some(_) => self.get_bool(KEY_ADD_SPACE_PREFIX)?,
        };
        // As a Python dict: a piece listed twice maps to its last id.
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(id, t)| (t.to_string(), id as u32))
            .collect();
        let mut bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .byte_fallback(true)
            .fuse_unk(true);
        // GemmaTokenizer names its unknown piece; LlamaTokenizer's BPE has none.
        let unk = self
            .special_tokens()
            .unk
            .and_then(|id| tokens.get(id as usize));
        if let (true, Some(unk)) = (gemma, unk) {
            bpe = bpe.unk_token(unk.to_string());
        }
        let bpe = bpe
            .build()
            .map_err(|e| tok_err(format!("GGUF SentencePiece vocabulary: {e}")))?;
        let mut tokenizer = Tokenizer::new(bpe);
        if gemma {
            let spaces = Replace::new(" ", SPACE_MARK.to_string())
                .map_err(|e| tok_err(format!("Gemma normalizer: {e}")))?;
            tokenizer.with_normalizer(Some(spaces));
            let split = Split::new(" ", SplitDelimiterBehavior::MergedWithPrevious, false)
                .map_err(|e| tok_err(format!("Gemma pre-tokenizer: {e}")))?;
            tokenizer.with_pre_tokenizer(Some(split));
        } else {
            let prepend = if add_space_prefix {
                PrependScheme::First
            } else {
                PrependScheme::Never
            };
            tokenizer.with_pre_tokenizer(Some(Metaspace::new(SPACE_MARK, prepend, false)));
        }
        tokenizer.with_decoder(Some(decoder(add_space_prefix)?));
        tokenizer.add_special_tokens(&self.spm_special_tokens(&tokens, &types));
        let user_defined: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|&(_, &t)| t == TOKEN_TYPE_USER_DEFINED)
            .map(|(&content, _)| AddedToken::from(content, false).normalized(false))
            .collect();
        tokenizer.add_tokens(&user_defined);
        Ok(tokenizer)
    }

    /// Control pieces, then the pieces of the bos/eos/unk/pad ids, as special added tokens.
    fn spm_special_tokens(&self, tokens: &[&str], types: &[i64]) -> Vec<AddedToken> {
        let special = self.special_tokens();
        let named = [special.bos, special.eos, special.unk, special.pad];
        let control = tokens
            .iter()
            .zip(types)
            .enumerate()
            .filter(|&(id, (_, &t))| {
                t == TOKEN_TYPE_CONTROL || named.contains(&u32::try_from(id).ok())
            })
            .map(|(_, (&content, _))| AddedToken::from(content, true).normalized(false));
        control.collect()
    }
}

/// Python's `str.isspace` (Unicode white space, and the four ASCII separators U+001C..U+001F
/// that Rust's `char::is_whitespace` leaves out): what transformers' Gemma respelling tests.
fn python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `▁` to space, `<0xNN>` pieces to bytes, fused into one string, and the prefix space (if one
/// was added) stripped.
fn decoder(strip_prefix_space: bool) -> Result<Sequence> {
    let space = Replace::new(SPACE_MARK.to_string(), " ")
        .map_err(|e| tok_err(format!("SentencePiece decoder: {e}")))?;
    let mut steps: Vec<DecoderWrapper> =
        vec![space.into(), ByteFallback::new().into(), Fuse::new().into()];
    if strip_prefix_space {
        steps.push(Strip::new(' ', 1, 0).into());
    }
    Ok(Sequence::new(steps))
}

/// One candidate merge: the two halves of a piece and the piece's rank keys.
struct Candidate<'a> {
    left: &'a str,
    right: &'a str,
    score: f32,
}

/// The BPE merges a SentencePiece vocabulary implies (transformers' `generate_merges` with
/// scores): each split of each piece into two pieces, best merged score first.
///
/// The order decides which pair merges first, so it follows transformers exactly: pieces in
/// vocabulary order (a repeated piece at its first position, with its last id and score), the
/// splits of one piece by the ids of their halves, then a stable sort by score, left length and
/// right length (in characters), all descending.
fn merges_from_scores(tokens: &[&str], scores: &[f32]) -> Merges {
    let mut ids: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
    let mut score_of: HashMap<&str, f32> = HashMap::with_capacity(tokens.len());
    let mut order = Vec::with_capacity(tokens.len());
    for (id, (&token, &score)) in tokens.iter().zip(scores).enumerate() {
        if ids.insert(token, id).is_none() {
            order.push(token);
        }
        score_of.insert(token, score);
    }
    let mut candidates: Vec<Candidate<'_>> = Vec::new();
    for token in order {
        let score = score_of[token];
        let mut splits: Vec<(usize, usize, Candidate<'_>)> = token
            .char_indices()
            .skip(1)
            .filter_map(|(at, _)| {
                let (left, right) = token.split_at(at);
                Some((
                    *ids.get(left)?,
                    *ids.get(right)?,
                    Candidate { left, right, score },
                ))
            })
            .collect();
        splits.sort_by_key(|&(l, r, _)| (l, r));
        candidates.extend(splits.into_iter().map(|(_, _, c)| c));
    }
    let chars = |s: &str| s.chars().count();
    candidates.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| chars(b.left).cmp(&chars(a.left)))
            .then_with(|| chars(b.right).cmp(&chars(a.right)))
    });
    candidates
        .into_iter()
        .map(|c| (c.left.to_string(), c.right.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::writer::{GgufWriter, TempFile};
    use super::*;

    const BYTE: i32 = 6;

    /// A small SentencePiece vocabulary: `<unk> <s> </s>`, the 256 byte pieces, then pieces with
    /// scores. `▁hello` outranks `▁he`, so `▁he llo` must merge before `▁h ello` could.
    fn vocab_writer() -> GgufWriter {
        let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
        let mut types = vec![2, 3, 3];
        let mut scores = vec![0.0f32; 3];
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(BYTE);
            scores.push(0.0);
        }
        let pieces = [
            ("▁", -1.0),
            ("h", -2.0),
            ("e", -3.0),
            ("l", -4.0),
            ("o", -5.0),
            ("▁h", -6.0),
            ("▁he", -7.0),
            ("ll", -8.0),
            ("llo", -9.0),
            ("▁hello", -0.5),
            ("<tool>", 0.0),
        ];
        for (piece, score) in pieces {
            tokens.push(piece.into());
            types.push(if piece == "<tool>" { 4 } else { 1 });
            scores.push(score);
        }
        let mut w = GgufWriter::new();
        w.add_string("general.architecture", "llama")
            .add_string("tokenizer.ggml.model", "llama")
            .add_string_array(KEY_TOKENS, &tokens)
            .add_f32_array(KEY_SCORES, &scores)
            .add_i32_array("tokenizer.ggml.token_type", &types)
            .add_u32("tokenizer.ggml.bos_token_id", 1)
            .add_u32("tokenizer.ggml.eos_token_id", 2)
            .add_u32("tokenizer.ggml.unknown_token_id", 0);
        w
    }

    /// The id of a named piece of [`vocab_writer`]: 259 + its index there.
    fn id(piece: &str) -> u32 {
        let pieces = [
            "▁", "h", "e", "l", "o", "▁h", "▁he", "ll", "llo", "▁hello", "<tool>",
        ];
        259 + pieces.iter().position(|&p| p == piece).unwrap() as u32
    }

    fn tokenizer(w: &GgufWriter) -> Result<Tokenizer> {
        let file = TempFile::new("spm", &w.to_bytes().unwrap());
        GgufFile::open(&file.0)?.tokenizer()
    }

    fn encode(t: &Tokenizer, text: &str) -> Vec<u32> {
        t.encode(text, false).unwrap().get_ids().to_vec()
    }

    #[test]
    fn merges_follow_scores_then_lengths() {
        let tokens = ["a", "b", "c", "ab", "bc", "abc"];
        let scores = [0.0, 0.0, 0.0, -2.0, -1.0, -3.0];
        let merges = merges_from_scores(&tokens, &scores);
        let pair = |l: &str, r: &str| (l.to_string(), r.to_string());
        // bc (-1) before ab (-2) before the two splits of abc (-3), the longer left half first.
        assert_eq!(
            merges,
            [
                pair("b", "c"),
                pair("a", "b"),
                pair("ab", "c"),
                pair("a", "bc")
            ]
        );
    }

    #[test]
    fn encodes_with_prefix_space_and_byte_fallback() {
        let t = tokenizer(&vocab_writer()).unwrap();
        assert_eq!(encode(&t, "hello"), [id("▁hello")]);
        // "hell" cannot reach ▁hello: ▁ h e l l -> ▁h e ll -> ▁he ll.
        assert_eq!(encode(&t, "hell"), [id("▁he"), id("ll")]);
        // Not in the vocabulary: é is C3 A9, each a byte piece (id 3 + byte).
        assert_eq!(encode(&t, "é"), [id("▁"), 3 + 0xC3, 3 + 0xA9]);
        assert_eq!(
            t.decode(&[id("▁"), 3 + 0xC3, 3 + 0xA9], false).unwrap(),
            "é"
        );
        assert_eq!(
            encode(&t, "hello<s><tool>"),
            [id("▁hello"), 1, id("<tool>")]
        );
        assert_eq!(
            t.decode(&[1, id("▁hello"), id("▁hello"), 2], true).unwrap(),
            "hello hello"
        );
        assert_eq!(t.get_vocab_size(true), 259 + 11);
    }

    #[test]
    fn without_prefix_space() {
        let mut w = vocab_writer();
        w.add_bool(KEY_ADD_SPACE_PREFIX, false);
        let t = tokenizer(&w).unwrap();
        assert_eq!(encode(&t, "hello"), [id("h"), id("e"), id("llo")]);
        assert_eq!(encode(&t, " hello"), [id("▁hello")]);
        assert_eq!(t.decode(&[id("▁hello")], false).unwrap(), " hello");
    }

    #[test]
    fn malformed_vocabularies_are_errors() {
        let err = |w: &GgufWriter| tokenizer(w).unwrap_err().to_string();
        let mut w = vocab_writer();
        w.add_f32_array(KEY_SCORES, &[0.0; 3]);
        assert!(err(&w).contains("3 entries for 270 tokens"), "{}", err(&w));
        w.add(
            "tokenizer.ggml.scores",
            super::super::GgufValue::Array(vec![]),
        );
        assert!(err(&w).contains("0 entries"), "{}", err(&w));
        let mut w = vocab_writer();
        w.add_i32_array("tokenizer.ggml.token_type", &[1, 2]);
        assert!(err(&w).contains("2 entries for 270 tokens"), "{}", err(&w));
        let mut w = vocab_writer();
        w.add_string(KEY_SCORES, "high");
        assert!(
            err(&w).contains("expected an array of numbers"),
            "{}",
            err(&w)
        );
        let mut w = vocab_writer();
        w.add_u32(KEY_ADD_SPACE_PREFIX, 1);
        assert!(err(&w).contains("expected a bool"), "{}", err(&w));
        let mut w = vocab_writer();
        w.add_string_array(KEY_TOKENS, &[] as &[&str]);
        assert!(err(&w).contains("has 0 tokens"), "{}", err(&w));
        // Scores are needed only when the file has no merges.
        let mut w = GgufWriter::new();
        w.add_string("tokenizer.ggml.model", "llama")
            .add_string_array(KEY_TOKENS, &["a", "b"]);
        assert!(err(&w).contains("missing metadata key `tokenizer.ggml.scores`"));
        w.add_string_array(KEY_MERGES, &["a b"]);
        assert!(matches!(
            tokenizer(&w).unwrap_err(),
            ModelError::Tokenizer(_)
        ));
        w.add_string_array(KEY_TOKENS, &["a", "b", "ab"]);
        assert!(tokenizer(&w).is_ok());
        // Phi-3's vocabularies need transformers' Phi-3 rules, which are not reproduced.
        let mut w = vocab_writer();
        w.add_string("general.architecture", "phi3");
        assert!(
            matches!(tokenizer(&w).unwrap_err(), ModelError::Unsupported(m) if m.contains("phi3"))
        );
    }
}
