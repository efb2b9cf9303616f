//! The organism's tokenizer: word-level over GPT-2-style pieces.
//!
//! Text is split into pieces the way GPT-2's pre-tokenizer does for our corpus (a word with its
//! leading space, `" Mary"`; punctuation; numbers in pieces of at most two digits, so `" 1745"`
//! is `" 17"` + `"45"` as Greater-Than needs), each piece is mapped to bytes-as-characters
//! (GPT-2's `Ġ` for a space) and looked up whole in the vocabulary. The vocabulary is every
//! piece the corpus generators produce, so every task answer is one token.

use std::cell::RefCell;
use std::collections::HashMap;

use anyhow::{Result, anyhow};
use serde_json::{Value, json};
use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer, Tokenizer};

/// Beginning/end of text and padding, id 0 (GPT-2's `<|endoftext|>` plays all three roles).
pub const END_OF_TEXT: &str = "<|endoftext|>";
/// Unknown piece, id 1.
pub const UNKNOWN: &str = "<|unk|>";
/// The id of [`END_OF_TEXT`].
pub const END_OF_TEXT_ID: u32 = 0;

/// GPT-2's pre-tokenizer pattern, restricted to ASCII and with numbers cut into two digits.
const SPLIT_PATTERN: &str = r"'s|'t| ?[A-Za-z]+| ?[0-9]{1,2}| ?[^\sA-Za-z0-9]+|\s+";

/// `tokenizer.json` for a vocabulary of pieces (in byte-level form, `"ĠMary"`), ids in order
/// after the two special tokens.
pub fn tokenizer_json(pieces: &[String]) -> Value {
    let special = |id: u32, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": true})
    };
    let mut vocab = serde_json::Map::new();
    vocab.insert(END_OF_TEXT.into(), json!(END_OF_TEXT_ID));
    vocab.insert(UNKNOWN.into(), json!(1));
    for (i, piece) in pieces.iter().enumerate() {
        vocab.insert(piece.clone(), json!(i + 2));
    }
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false,
                            "trim_offsets": true, "use_regex": false});
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(END_OF_TEXT_ID, END_OF_TEXT), special(1, UNKNOWN)],
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": SPLIT_PATTERN}, "behavior": "Isolated",
             "invert": false},
            byte_level,
        ]},
        "post_processor": null,
        "decoder": byte_level,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": UNKNOWN},
    })
}

/// Builds a `tokenizers::Tokenizer` from [`tokenizer_json`].
pub fn build(pieces: &[String]) -> Result<Tokenizer> {
    let text = tokenizer_json(pieces).to_string();
    text.parse::<Tokenizer>()
        .map_err(|e| anyhow!("building the organism tokenizer: {e}"))
}

/// A tokenizer that gives every new piece the next id, so that running the task generators
/// through it collects the vocabulary. Its ids match those of [`build`] on
/// [`Interner::pieces`].
pub struct Interner {
    pre_tokenizer: Tokenizer,
    ids: RefCell<HashMap<String, u32>>,
    pieces: RefCell<Vec<String>>,
}

impl Interner {
    /// An empty vocabulary.
    pub fn new() -> Result<Self> {
        Ok(Self {
            pre_tokenizer: build(&[])?,
            ids: RefCell::default(),
            pieces: RefCell::default(),
        })
    }

    /// Ids of the pieces of `text`, interning new pieces.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        let pre = self
            .pre_tokenizer
            .get_pre_tokenizer()
            .ok_or("no pre-tokenizer")?;
        let mut split = PreTokenizedString::from(text);
        pre.pre_tokenize(&mut split).map_err(|e| e.to_string())?;
        let mut ids = self.ids.borrow_mut();
        let mut pieces = self.pieces.borrow_mut();
        Ok(split
            .get_splits(OffsetReferential::Original, OffsetType::Byte)
            .into_iter()
            .map(|(piece, _, _)| {
                *ids.entry(piece.to_owned()).or_insert_with(|| {
                    pieces.push(piece.to_owned());
                    pieces.len() as u32 + 1
                })
            })
            .collect())
    }

    /// The pieces seen so far, in id order.
    pub fn pieces(&self) -> Vec<String> {
        self.pieces.borrow().clone()
    }
}
