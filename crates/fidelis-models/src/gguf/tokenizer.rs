//! Building a Hugging Face [`Tokenizer`] from the vocabulary embedded in a GGUF file, the way
//! llama.cpp (`llama-vocab.cpp`) interprets it.
//!
//! Two vocabulary kinds (`tokenizer.ggml.model`) are supported: byte-level BPE (`gpt2`), here, and
//! SentencePiece (`llama`), in `gguf::sentencepiece`. For byte-level BPE the text is split by
//! the regex chain llama.cpp uses for `tokenizer.ggml.pre` (each regex splits every piece
//! further, keeping both matches and the text between them), then mapped to GPT-2's byte-level
//! alphabet and merged with the file's BPE merges. Tokens of type control (3) become special added
//! tokens and user-defined ones (4) plain added tokens, so both are recognized in input text.
//! Encoding adds no BOS/EOS; [`GgufFile::special_tokens`] tells whether the model wants a BOS.

use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::models::bpe::{BPE, Merges, Vocab};
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use super::GgufFile;
use crate::error::{ModelError, Result};

/// Metadata key of the tokenizer model name.
const KEY_MODEL: &str = "tokenizer.ggml.model";
/// Metadata key of the pre-tokenizer name.
const KEY_PRE: &str = "tokenizer.ggml.pre";
/// Metadata key of the token strings (index = id).
pub(super) const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
/// Metadata key of the token types.
const KEY_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
/// Metadata key of the BPE merges (`"left right"`, highest priority first).
pub(super) const KEY_MERGES: &str = "tokenizer.ggml.merges";

/// llama.cpp token type of control tokens (`<|im_start|>`, BOS, EOS).
pub(super) const TOKEN_TYPE_CONTROL: i64 = 3;
/// llama.cpp token type of user-defined tokens, matched verbatim in text.
pub(super) const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// GPT-2's word regex, used alone by the `gpt-2` pre-tokenizer and as part of others.
const GPT2_REGEX: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
/// One digit per piece.
const SINGLE_DIGIT_REGEX: &str = r"\p{N}";
/// Llama 3's word regex (case-insensitive contractions spelled out; numbers in runs of up to 3).
const LLAMA3_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen 2's word regex: as Llama 3's but one digit per piece.
const QWEN2_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// llama.cpp's fallback chain for a missing or `default` pre-tokenizer.
const DEFAULT_REGEXES: [&str; 4] = [
    r"[\p{P}\$\+<=>\^~\|]+",
    GPT2_REGEX,
    r"\p{N}+",
    r"[0-9][0-9][0-9]",
];

/// How llama.cpp pre-tokenizes for one `tokenizer.ggml.pre` value.
struct PreTokenizerSpec {
    /// Regexes applied in turn.
    regexes: &'static [&'static str],
    /// Whether a word found whole in the vocabulary skips BPE (`ignore_merges`).
    ignore_merges: bool,
    /// Whether the model adds BOS when `tokenizer.ggml.add_bos_token` is absent.
    add_bos: bool,
}

/// The `tokenizer.ggml.model` values [`GgufFile::tokenizer`] understands, for error messages.
const SUPPORTED_MODELS: &str = "gpt2 (byte-level BPE), llama (SentencePiece)";

/// The pre-tokenizer names this module understands, for error messages.
const KNOWN_PRE: &str = "default, gpt-2 (gpt2), smollm, starcoder, refact, command-r, codeshell, \
                         llama3 (llama-bpe, llama-v3, falcon3), dbrx, smaug-bpe, qwen2, \
                         deepseek-r1-qwen, stablelm2";

/// The llama.cpp pre-tokenizer for `pre` (`None`: the key is absent, which llama.cpp treats as
/// `default`).
fn pre_tokenizer_spec(pre: Option<&str>) -> Option<PreTokenizerSpec> {
    let spec = |regexes, ignore_merges, add_bos| PreTokenizerSpec {
        regexes,
        ignore_merges,
        add_bos,
    };
    Some(match pre.unwrap_or("default") {
        "default" => spec(&DEFAULT_REGEXES, false, false),
        "gpt-2" | "gpt2" | "phi-2" | "mpt" | "olmo" | "jais" => spec(&[GPT2_REGEX], false, false),
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" => {
            spec(&[SINGLE_DIGIT_REGEX, GPT2_REGEX], false, false)
        }
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" => spec(&[LLAMA3_REGEX], true, true),
        "dbrx" | "smaug-bpe" => spec(&[LLAMA3_REGEX], false, false),
        "qwen2" | "deepseek-r1-qwen" | "stablelm2" => spec(&[QWEN2_REGEX], false, false),
        _ => return None,
    })
}

/// The special token ids and BOS policy of a GGUF vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GgufSpecialTokens {
    /// Beginning-of-sequence token (`tokenizer.ggml.bos_token_id`).
    pub bos: Option<u32>,
    /// End-of-sequence token (`tokenizer.ggml.eos_token_id`).
    pub eos: Option<u32>,
    /// Unknown token (`tokenizer.ggml.unknown_token_id`).
    pub unk: Option<u32>,
    /// Padding token (`tokenizer.ggml.padding_token_id`).
    pub pad: Option<u32>,
    /// Whether llama.cpp prepends BOS when tokenizing a prompt (`tokenizer.ggml.add_bos_token`,
    /// else the default of the tokenizer model and pre-tokenizer).
    pub add_bos: bool,
    /// Whether llama.cpp appends EOS (`tokenizer.ggml.add_eos_token`, default false).
    pub add_eos: bool,
}

/// A [`ModelError::Tokenizer`] from anything printable.
pub(super) fn tok_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer(e.to_string())
}

impl GgufFile {
    /// The special token ids and BOS/EOS policy. Ids that are absent, not integers or outside the
    /// vocabulary are `None`.
    pub fn special_tokens(&self) -> GgufSpecialTokens {
        let n_vocab = self
            .get(KEY_TOKENS)
            .and_then(|v| v.as_array())
            .map_or(0, <[_]>::len);
        let id = |key: &str| {
            let v = self.get_u64(&format!("tokenizer.ggml.{key}")).ok()?;
            u32::try_from(v).ok().filter(|&id| (id as usize) < n_vocab)
        };
        let flag = |key: &str| self.get_bool(&format!("tokenizer.ggml.{key}")).ok();
        GgufSpecialTokens {
            bos: id("bos_token_id"),
            eos: id("eos_token_id"),
            unk: id("unknown_token_id"),
            pad: id("padding_token_id"),
            add_bos: flag("add_bos_token").unwrap_or_else(|| self.default_add_bos()),
            add_eos: flag("add_eos_token").unwrap_or(false),
        }
    }

    /// llama.cpp's BOS default when `tokenizer.ggml.add_bos_token` is absent.
    fn default_add_bos(&self) -> bool {
        match self.get_str(KEY_MODEL) {
            Ok("llama") => true,
            Ok("gpt2") => self
                .pre_tokenizer_name()
                .ok()
                .and_then(pre_tokenizer_spec)
                .is_some_and(|s| s.add_bos),
            _ => false,
        }
    }

    /// `tokenizer.ggml.pre`, `None` when absent.
    fn pre_tokenizer_name(&self) -> Result<Option<&str>> {
        self.get(KEY_PRE).map(|_| self.get_str(KEY_PRE)).transpose()
    }

    /// The tokenizer embedded in this file, as a Hugging Face [`Tokenizer`] that adds no special
    /// tokens when encoding.
    ///
    /// Fails with [`ModelError::Unsupported`] for vocabularies other than byte-level BPE
    /// (`tokenizer.ggml.model = "gpt2"`) and SentencePiece (`"llama"`), or an unknown
    /// `tokenizer.ggml.pre`, with [`ModelError::Gguf`] for missing or mistyped keys, and with
    /// [`ModelError::Tokenizer`] for an inconsistent vocabulary (arrays of different lengths,
    /// merges of unknown tokens).
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        match self.get_str(KEY_MODEL)? {
            "gpt2" => self.bpe_tokenizer(),
            "llama" => self.spm_tokenizer(),
            other => Err(ModelError::Unsupported(format!(
                "GGUF tokenizer model `{other}` (supported: {SUPPORTED_MODELS})"
            ))),
        }
    }

    /// The byte-level BPE tokenizer of a `gpt2` vocabulary.
    fn bpe_tokenizer(&self) -> Result<Tokenizer> {
        let pre = self.pre_tokenizer_name()?;
        let spec = pre_tokenizer_spec(pre).ok_or_else(|| {
            ModelError::Unsupported(format!(
                "GGUF pre-tokenizer `{}` is not supported (known: {KNOWN_PRE})",
                pre.unwrap_or_default()
            ))
        })?;
        let tokens = self.get_str_array(KEY_TOKENS)?;
        if u32::try_from(tokens.len()).is_err() {
            return Err(tok_err(format!(
                "{} tokens do not fit u32 ids",
                tokens.len()
            )));
        }
        let types = self.token_types(tokens.len())?;
        let merges = parse_merges(&self.get_str_array(KEY_MERGES)?)?;
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(id, t)| (t.to_string(), id as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(spec.ignore_merges)
            .build()
            .map_err(|e| tok_err(format!("GGUF BPE vocabulary: {e}")))?;
        let mut tokenizer = Tokenizer::new(bpe);
        tokenizer.with_pre_tokenizer(Some(pre_tokenizer(spec.regexes)?));
        tokenizer.with_decoder(Some(ByteLevel::default()));
        tokenizer.add_special_tokens(&added_tokens(&tokens, &types, TOKEN_TYPE_CONTROL));
        tokenizer.add_tokens(&added_tokens(&tokens, &types, TOKEN_TYPE_USER_DEFINED));
        Ok(tokenizer)
    }

    /// `tokenizer.ggml.token_type`, or all normal (1) when absent; must match the vocabulary size.
    pub(super) fn token_types(&self, n_tokens: usize) -> Result<Vec<i64>> {
        if self.get(KEY_TOKEN_TYPE).is_none() {
            return Ok(vec![1; n_tokens]);
        }
        let types = self.get_i64_array(KEY_TOKEN_TYPE)?;
        if types.len() != n_tokens {
            return Err(tok_err(format!(
                "{KEY_TOKEN_TYPE} has {} entries for {n_tokens} tokens",
                types.len()
            )));
        }
        Ok(types)
    }
}

/// Splits each merge `"left right"` at its first space after the first character, as llama.cpp
/// does.
pub(super) fn parse_merges(merges: &[&str]) -> Result<Merges> {
    merges
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let at = m.char_indices().skip(1).find(|&(_, c)| c == ' ');
            let (at, _) = at.ok_or_else(|| tok_err(format!("merge #{i} {m:?} has no space")))?;
            Ok((m[..at].to_string(), m[at + 1..].to_string()))
        })
        .collect()
}

/// The regex chain followed by the byte-level mapping (without its own regex or prefix space).
fn pre_tokenizer(regexes: &[&str]) -> Result<PreTokenizerWrapper> {
    let mut steps = Vec::with_capacity(regexes.len() + 1);
    for re in regexes {
        let pattern = SplitPattern::Regex((*re).to_string());
        let split = Split::new(pattern, SplitDelimiterBehavior::Isolated, false)
            .map_err(|e| tok_err(format!("pre-tokenizer regex {re:?}: {e}")))?;
        steps.push(split.into());
    }
    steps.push(ByteLevel::new(false, false, false).into());
    Ok(Sequence::new(steps).into())
}

/// Added tokens for every token of type `kind`; control tokens are marked special.
fn added_tokens(tokens: &[&str], types: &[i64], kind: i64) -> Vec<AddedToken> {
    tokens
        .iter()
        .zip(types)
        .filter(|&(_, &t)| t == kind)
        .map(|(&content, _)| {
            AddedToken::from(content, kind == TOKEN_TYPE_CONTROL).normalized(false)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::writer::{GgufWriter, TempFile};
    use super::*;

    /// GPT-2's byte-to-character map: printable Latin-1 bytes stand for themselves, the others
    /// (controls, space, DEL, NBSP, soft hyphen) for U+0100 onwards in byte order.
    fn byte_char(b: u8) -> char {
        let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        if printable(b) {
            return char::from(b);
        }
        let rank = (0..b).filter(|&x| !printable(x)).count() as u32;
        char::from_u32(256 + rank).unwrap()
    }

    /// Merges (rank order) of the test vocabulary; the merged tokens get ids 256.. in this order.
    const MERGES: [&str; 12] = [
        "H e", "l l", "He ll", "Hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld", "2 0", "2 4",
        "20 24",
    ];

    /// A GGUF holding a byte-level vocabulary: ids 0..256 are the bytes (id = byte value), 256..268
    /// the merge results, 268 `<|endoftext|>` (control) and 269 `<tool>` (user-defined).
    fn vocab_file(pre: Option<&str>) -> TempFile {
        let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
        tokens.extend(MERGES.iter().map(|m| m.replace(' ', "")));
        tokens.extend(["<|endoftext|>".to_string(), "<tool>".to_string()]);
        let mut types = vec![1i32; 268];
        types.extend([3, 4]);
        let mut w = GgufWriter::new();
        w.add_string("general.architecture", "llama")
            .add_string(KEY_MODEL, "gpt2")
            .add_string_array(KEY_TOKENS, &tokens)
            .add_i32_array(KEY_TOKEN_TYPE, &types)
            .add_string_array(KEY_MERGES, &MERGES)
            .add_u32("tokenizer.ggml.bos_token_id", 268)
            .add_u32("tokenizer.ggml.eos_token_id", 268)
            .add_u32("tokenizer.ggml.padding_token_id", 5000);
        if let Some(pre) = pre {
            w.add_string(KEY_PRE, pre);
        }
        TempFile::new("vocab", &w.to_bytes().unwrap())
    }

    fn encode(pre: Option<&str>, text: &str) -> Vec<u32> {
        let file = vocab_file(pre);
        let tokenizer = GgufFile::open(&file.0).unwrap().tokenizer().unwrap();
        let encoding = tokenizer.encode(text, false).unwrap();
        encoding.get_ids().to_vec()
    }

    #[test]
    fn byte_map_matches_gpt2() {
        assert_eq!(byte_char(b' '), 'Ġ');
        assert_eq!(byte_char(b'\n'), 'Ċ');
        assert_eq!(byte_char(b'a'), 'a');
        assert_eq!(byte_char(0xA0), 'ł');
        assert_eq!(byte_char(0xAD), 'Ń');
    }

    #[test]
    fn gpt2_encode_decode() {
        let file = vocab_file(Some("gpt-2"));
        let gguf = GgufFile::open(&file.0).unwrap();
        let tokenizer = gguf.tokenizer().unwrap();
        let text = "Hello world, 2024!";
        // Pieces: "Hello" -> H e l l o -> He, ll -> Hell -> Hello (259); " world" -> Ġworld (264);
        // "," is byte 44; " 2024" -> Ġ (32) + 2024 (267: 2 0 -> 20, 2 4 -> 24, 20 24 -> 2024);
        // "!" is byte 33. No BOS although the file has one.
        let ids = tokenizer.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(ids, [259, 264, 44, 32, 267, 33]);
        assert_eq!(tokenizer.encode(text, true).unwrap().get_ids(), ids);
        assert_eq!(tokenizer.decode(&ids, false).unwrap(), text);
        // Multi-byte characters and newlines go through the byte alphabet: é = C3 A9.
        let ids = tokenizer
            .encode("héllo\n", false)
            .unwrap()
            .get_ids()
            .to_vec();
        assert_eq!(ids, [104, 195, 169, 257, 111, 10]);
        assert_eq!(tokenizer.decode(&ids, false).unwrap(), "héllo\n");
        assert_eq!(tokenizer.get_vocab_size(true), 270);
    }

    #[test]
    fn added_tokens_are_recognized() {
        let file = vocab_file(Some("gpt2"));
        let tokenizer = GgufFile::open(&file.0).unwrap().tokenizer().unwrap();
        let ids = tokenizer.encode("Hi<|endoftext|><tool>", false).unwrap();
        assert_eq!(ids.get_ids(), [72, 105, 268, 269]);
        assert_eq!(tokenizer.decode(&[72, 105, 268], true).unwrap(), "Hi");
        assert_eq!(
            tokenizer.decode(&[269, 268], false).unwrap(),
            "<tool><|endoftext|>"
        );
    }

    #[test]
    fn digits_split_per_pre_tokenizer() {
        // smollm and qwen2 isolate every digit: " " (32), 2 0 2 4 (50 48 50 52).
        let single = [259, 264, 44, 32, 50, 48, 50, 52, 33];
        assert_eq!(encode(Some("smollm"), "Hello world, 2024!"), single);
        assert_eq!(encode(Some("qwen2"), "Hello world, 2024!"), single);
        // gpt2 keeps " 2024" together.
        assert_eq!(encode(Some("gpt2"), "2024"), [267]);
        assert_eq!(encode(Some("smollm"), "2024"), [50, 48, 50, 52]);
        // llama3 cuts numbers into runs of 3 ("202" -> 20 2, "4") and spaces off before digits;
        // llama.cpp's default chain does the same through its [0-9]{3} split.
        let triples = [259, 264, 44, 32, 265, 50, 52, 33];
        assert_eq!(encode(Some("llama-bpe"), "Hello world, 2024!"), triples);
        assert_eq!(encode(None, "Hello world, 2024!"), triples);
        assert_eq!(encode(Some("default"), "Hello world, 2024!"), triples);
    }

    #[test]
    fn special_tokens() {
        let file = vocab_file(Some("smollm"));
        let gguf = GgufFile::open(&file.0).unwrap();
        let special = gguf.special_tokens();
        assert_eq!(special.bos, Some(268));
        assert_eq!(special.eos, Some(268));
        assert_eq!(special.unk, None);
        assert_eq!(special.pad, None, "5000 is outside the vocabulary");
        assert!(!special.add_bos && !special.add_eos);
        assert!(
            GgufFile::open(&vocab_file(Some("llama-bpe")).0)
                .unwrap()
                .special_tokens()
                .add_bos
        );
    }

    fn tokenizer_error(w: &GgufWriter) -> ModelError {
        let file = TempFile::new("bad-vocab", &w.to_bytes().unwrap());
        GgufFile::open(&file.0).unwrap().tokenizer().unwrap_err()
    }

    #[test]
    fn unsupported_and_malformed_vocabularies() {
        let mut w = GgufWriter::new();
        w.add_string(KEY_MODEL, "gpt2")
            .add_string(KEY_PRE, "klingon")
            .add_string_array(KEY_TOKENS, &["a", "b", "ab"])
            .add_string_array(KEY_MERGES, &["a b"]);
        let err = tokenizer_error(&w);
        assert!(
            matches!(&err, ModelError::Unsupported(m) if m.contains("`klingon`")),
            "{err}"
        );
        w.add_string(KEY_PRE, "gpt-2")
            .add_string_array(KEY_MERGES, &["ab"]);
        assert!(tokenizer_error(&w).to_string().contains("has no space"));
        w.add_string_array(KEY_MERGES, &["a c"]);
        assert!(matches!(tokenizer_error(&w), ModelError::Tokenizer(_)));
        w.add_string_array(KEY_MERGES, &["a b"])
            .add_i32_array(KEY_TOKEN_TYPE, &[1]);
        assert!(
            tokenizer_error(&w)
                .to_string()
                .contains("1 entries for 3 tokens")
        );
        w.add_string(KEY_MODEL, "rwkv");
        let err = tokenizer_error(&w);
        assert!(
            matches!(&err, ModelError::Unsupported(m)
                if m.contains("`rwkv`") && m.contains("gpt2") && m.contains("llama (SentencePiece)")),
            "{err}"
        );
        let err = tokenizer_error(&GgufWriter::new());
        assert!(err.to_string().contains("tokenizer.ggml.model"), "{err}");
    }

    /// Checks the real SmolLM2 GGUF when it is in the cache (never downloaded by tests).
    #[test]
    fn real_smollm2_if_cached() {
        let Some(home) = std::env::var_os("HOME") else {
            return;
        };
        let path =
            std::path::Path::new(&home).join(".cache/fidelis/SmolLM2-135M-Instruct.Q4_1.gguf");
        if !path.exists() {
            return;
        }
        let gguf = GgufFile::open(&path).unwrap();
        assert_eq!(gguf.architecture().unwrap(), "llama");
        let (shape, data) = gguf.tensor_f32("token_embd.weight").unwrap();
        assert_eq!(shape.iter().product::<usize>(), data.len());
        assert!(data.iter().all(|v| v.is_finite()));
        let tokenizer = gguf.tokenizer().unwrap();
        let ids = tokenizer
            .encode("Hello world, 2024!", false)
            .unwrap()
            .get_ids()
            .to_vec();
        assert_eq!(tokenizer.decode(&ids, false).unwrap(), "Hello world, 2024!");
    }
}
