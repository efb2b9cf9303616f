//! The organism's tokenizer: one token per whitespace-separated word, shared by the source and
//! the target side (as Marian's shared vocabulary is).
//!
//! Ids: `<pad>` 0 (also the decoder start token, as in every MarianMT checkpoint), `</s>` 1,
//! `<unk>` 2, the context separator `<brk>` 3 (an ordinary word, so that decoding keeps it),
//! then the words of [`super::corpus::vocabulary`]. The post-processor appends `</s>` when
//! special tokens are added, as `MarianTokenizer` does to a source.

use serde_json::{Value, json};

use super::corpus::SEPARATOR;

/// Padding, id 0; the decoder starts from it.
pub const PAD: &str = "<pad>";
/// End of sequence, id 1.
pub const EOS: &str = "</s>";
/// Unknown word, id 2.
pub const UNK: &str = "<unk>";
/// Id of [`PAD`].
pub const PAD_ID: u32 = 0;
/// Id of [`EOS`].
pub const EOS_ID: u32 = 1;
/// Id of [`UNK`].
pub const UNK_ID: u32 = 2;
/// Id of [`SEPARATOR`].
pub const SEPARATOR_ID: u32 = 3;

/// The full vocabulary in id order: the specials, the separator, then `words`.
pub fn vocabulary(words: &[String]) -> Vec<String> {
    let mut all: Vec<String> = [PAD, EOS, UNK, SEPARATOR]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    all.extend(words.iter().cloned());
    all
}

/// `tokenizer.json` for `vocabulary` (in id order, as [`vocabulary`] returns it).
pub fn tokenizer_json(vocabulary: &[String]) -> Value {
    let special = |id: u32, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": true})
    };
    let vocab: serde_json::Map<String, Value> = vocabulary
        .iter()
        .enumerate()
        .map(|(i, w)| (w.clone(), json!(i)))
        .collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(PAD_ID, PAD), special(EOS_ID, EOS), special(UNK_ID, UNK)],
        "normalizer": null,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": EOS, "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 0}},
                     {"SpecialToken": {"id": EOS, "type_id": 0}}],
            "special_tokens": {EOS: {"id": EOS, "ids": [EOS_ID], "tokens": [EOS]}},
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": UNK},
    })
}

/// `tokenizer_config.json`, so that `AutoTokenizer` loads the folder as a
/// `PreTrainedTokenizerFast` with the right special tokens.
pub fn tokenizer_config_json(max_length: usize) -> Value {
    json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "pad_token": PAD,
        "eos_token": EOS,
        "unk_token": UNK,
        "model_max_length": max_length,
        "clean_up_tokenization_spaces": false,
    })
}
