//! A tokenizer facade over Hugging Face `tokenizers`, built from `tokenizer.json` or from a
//! GGUF vocabulary.

use std::path::Path;

use crate::error::{ModelError, Result};

thread_local! {
    /// Set while this thread runs a third-party parser whose panics are contained.
    static QUIET_PANICS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, catching a panic instead of unwinding through the caller, and without the default
/// panic message on stderr: the panic becomes an error the caller names instead.
///
/// The first call wraps the process's panic hook (once) so that panics on a thread inside this
/// function are not printed; every other panic goes to the previous hook unchanged.
fn quiet_catch_unwind<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    static WRAP_HOOK: std::sync::Once = std::sync::Once::new();
    WRAP_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET_PANICS.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
    let was_quiet = QUIET_PANICS.with(|q| q.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET_PANICS.with(|q| q.set(was_quiet));
    result
}

/// The message of a caught panic payload (a `&str` or `String`), or a placeholder.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message")
}

/// One encoded text: ids, their surface strings and byte offsets into the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    /// Token ids.
    pub ids: Vec<u32>,
    /// The vocabulary entry of each token.
    pub tokens: Vec<String>,
    /// `(start, end)` byte offsets of each token in the text.
    pub offsets: Vec<(usize, usize)>,
}

/// A model's tokenizer plus the special ids Fidelis needs.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos: Option<u32>,
    eos: Option<u32>,
}

impl Tokenizer {
    /// Wraps a `tokenizers::Tokenizer` with the model's BOS and EOS ids.
    pub fn new(inner: tokenizers::Tokenizer, bos: Option<u32>, eos: Option<u32>) -> Self {
        Self { inner, bos, eos }
    }

    /// Reads a `tokenizer.json`.
    ///
    /// A file that `tokenizers` rejects is a [`ModelError::Tokenizer`] naming the file; so is
    /// one that makes `tokenizers` panic (some malformed files reach an `expect` inside it, e.g.
    /// a syntax error inside `"decoder"`): that panic is contained here, the crate boundary,
    /// and its default message is not printed.
    pub fn from_file(path: &Path, bos: Option<u32>, eos: Option<u32>) -> Result<Self> {
        if !path.exists() {
            return Err(ModelError::MissingFile {
                path: path.to_path_buf(),
                what: "tokenizer",
            });
        }
        let loaded = quiet_catch_unwind(|| tokenizers::Tokenizer::from_file(path));
        let inner = match loaded {
            Ok(Ok(inner)) => inner,
            Ok(Err(e)) => {
                return Err(ModelError::Tokenizer(format!("{}: {e}", path.display())));
            }
            Err(panic) => {
                return Err(ModelError::Tokenizer(format!(
                    "{}: the tokenizers library panicked while reading it ({}); the file is \
                     malformed",
                    path.display(),
                    panic_message(panic.as_ref())
                )));
            }
        };
        Ok(Self::new(inner, bos, eos))
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Beginning-of-sequence id, if the model has one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// End-of-sequence id, if the model has one.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Encodes `text` without adding special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.encode_full(text)?.ids)
    }

    /// Encodes `text` without adding special tokens, keeping token strings and offsets.
    pub fn encode_full(&self, text: &str) -> Result<Encoding> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| ModelError::Tokenizer(format!("cannot encode {text:?}: {e}")))?;
        Ok(Encoding {
            ids: enc.get_ids().to_vec(),
            tokens: enc.get_tokens().to_vec(),
            offsets: enc.get_offsets().to_vec(),
        })
    }

    /// Encodes `text` and prepends BOS when `add_bos` is set and the model has one.
    pub fn encode_prompt(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        if add_bos && let Some(bos) = self.bos {
            ids.push(bos);
        }
        ids.extend(self.encode(text)?);
        Ok(ids)
    }

    /// The id of `text` when it is exactly one token, or an error saying how it splits.
    pub fn single_token(&self, text: &str) -> Result<u32> {
        let enc = self.encode_full(text)?;
        match enc.ids.as_slice() {
            [id] => Ok(*id),
            _ => Err(ModelError::InvalidInput(format!(
                "{text:?} is not a single token: it splits into {:?}",
                enc.tokens
            ))),
        }
    }

    /// Decodes ids to text, keeping special tokens visible.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| ModelError::Tokenizer(format!("cannot decode {ids:?}: {e}")))
    }

    /// The id of the model's unknown token (what a word outside a word-level vocabulary, or a
    /// character without a byte fallback, becomes), if the vocabulary has one.
    pub fn unk_id(&self) -> Option<u32> {
        use tokenizers::ModelWrapper;
        let unk = match self.inner.get_model() {
            ModelWrapper::WordLevel(m) => Some(m.unk_token.clone()),
            ModelWrapper::WordPiece(m) => Some(m.unk_token.clone()),
            ModelWrapper::BPE(m) => m.get_unk_token().clone(),
            ModelWrapper::Unigram(_) => None,
        }?;
        self.inner.token_to_id(&unk)
    }

    /// The vocabulary entry of one id.
    pub fn token_str(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }
}
