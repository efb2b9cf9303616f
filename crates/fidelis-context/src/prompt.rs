//! How the texts of one PECoRe example become token sequences: templates joining context and
//! current text, the input/output separator, an optional chat template, and where each part
//! (input context, output context, output current) lands among the tokens.

use std::ops::Range;
use std::path::Path;

use fidelis_models::Tokenizer;
use fidelis_models::gguf::GgufFile;

use crate::{ContextError, Result};

/// Inseq's default input template.
pub const DEFAULT_INPUT_TEMPLATE: &str = "{context} {current}";
/// Inseq's default output template without an output context.
pub const DEFAULT_OUTPUT_TEMPLATE: &str = "{current}";
/// The output template used by default when an output context is given.
pub const DEFAULT_OUTPUT_CONTEXT_TEMPLATE: &str = "{context} {current}";
/// Inseq's default separator between input and output for decoder-only models.
pub const DEFAULT_SEPARATOR: &str = " ";

/// A formatted template: the text and where the context and current text went (byte ranges).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Formatted {
    /// The formatted text.
    pub text: String,
    /// Where `{context}` was substituted, if the template has it.
    pub context: Option<Range<usize>>,
    /// Where `{current}` was substituted.
    pub current: Range<usize>,
}

/// Fills `{context}` and `{current}` into `template`. `{current}` is required, `{context}` is
/// required when `context` is given, and other `{...}` placeholders are rejected.
pub fn format_template(template: &str, current: &str, context: Option<&str>) -> Result<Formatted> {
    let bad = |message: String| ContextError::Template {
        template: template.to_string(),
        message,
    };
    let count = |p: &str| template.matches(p).count();
    if count("{current}") != 1 {
        return Err(bad("needs exactly one {current} placeholder".into()));
    }
    match context {
        Some(_) if count("{context}") != 1 => {
            return Err(bad(
                "needs exactly one {context} placeholder for the context".into(),
            ));
        }
        None if count("{context}") > 0 => {
            return Err(bad("has {context} but no context was given".into()));
        }
        _ => {}
    }
    let stripped = template.replace("{current}", "").replace("{context}", "");
    if stripped.contains('{') || stripped.contains('}') {
        return Err(bad(
            "only {context} and {current} placeholders are known".into()
        ));
    }
    let mut text = String::new();
    let (mut ctx_range, mut cur_range) = (None, 0..0);
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        text.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("{current}") {
            let start = text.len();
            text.push_str(current);
            cur_range = start..text.len();
            rest = after;
        } else if let Some(after) = tail.strip_prefix("{context}") {
            let start = text.len();
            text.push_str(context.unwrap_or_default());
            ctx_range = Some(start..text.len());
            rest = after;
        } else {
            return Err(bad("unexpected `{`".into()));
        }
    }
    text.push_str(rest);
    Ok(Formatted {
        text,
        context: ctx_range,
        current: cur_range,
    })
}

/// A chat template Fidelis can apply without a template engine, recognised from the model's
/// own template (GGUF `tokenizer.chat_template` or `tokenizer_config.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatTemplate {
    /// ChatML (`<|im_start|>role\n...<|im_end|>\n`), used by SmolLM2 and Qwen2, with the
    /// template's default system message when it has one.
    ChatMl {
        /// The default system message.
        system: Option<String>,
    },
    /// Llama 3 (`<|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|>`).
    Llama3,
}

impl ChatTemplate {
    /// Recognises a Jinja chat template's format.
    pub fn detect(source: &str) -> Result<Self> {
        if source.contains("<|im_start|>") {
            return Ok(Self::ChatMl {
                system: default_system(source),
            });
        }
        if source.contains("<|start_header_id|>") {
            return Ok(Self::Llama3);
        }
        Err(ContextError::Options(
            "the model's chat template is neither ChatML nor Llama 3, the formats supported".into(),
        ))
    }

    /// The chat template stored with a model (a `.gguf` file or a Hugging Face folder).
    pub fn from_model(path: &Path) -> Result<Self> {
        let source = if path.is_dir() {
            let cfg = path.join("tokenizer_config.json");
            let text = std::fs::read_to_string(&cfg).map_err(|e| {
                ContextError::Options(format!(
                    "no chat template: cannot read {}: {e}",
                    cfg.display()
                ))
            })?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| ContextError::Options(format!("{}: {e}", cfg.display())))?;
            v.get("chat_template")
                .and_then(|t| t.as_str())
                .map(str::to_string)
        } else {
            let file = GgufFile::open(path)?;
            file.get_str("tokenizer.chat_template")
                .ok()
                .map(str::to_string)
        };
        let source = source.ok_or_else(|| {
            ContextError::Options(format!("{} has no chat template", path.display()))
        })?;
        Self::detect(&source)
    }

    /// Wraps a user message and opens the assistant turn; returns the text and where the
    /// message went.
    pub fn wrap_user(&self, message: &str) -> (String, Range<usize>) {
        let (before, after) = match self {
            Self::ChatMl { system } => {
                let sys = system
                    .as_ref()
                    .map(|s| format!("<|im_start|>system\n{s}<|im_end|>\n"))
                    .unwrap_or_default();
                (
                    format!("{sys}<|im_start|>user\n"),
                    "<|im_end|>\n<|im_start|>assistant\n",
                )
            }
            Self::Llama3 => (
                "<|start_header_id|>user<|end_header_id|>\n\n".to_string(),
                "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
            ),
        };
        let start = before.len();
        (
            format!("{before}{message}{after}"),
            start..start + message.len(),
        )
    }

    /// Whether the conversation starts with the model's BOS token (Llama 3's template writes
    /// it; ChatML's does not, SmolLM2's BOS being `<|im_start|>` itself).
    pub fn uses_bos(&self) -> bool {
        matches!(self, Self::Llama3)
    }

    /// The token that ends an assistant turn.
    pub fn end_of_turn(&self) -> &'static str {
        match self {
            Self::ChatMl { .. } => "<|im_end|>",
            Self::Llama3 => "<|eot_id|>",
        }
    }
}

/// The literal default system message of a ChatML template, when it has one.
fn default_system(source: &str) -> Option<String> {
    for marker in ["<|im_start|>system\\n", "<|im_start|>system\n"] {
        if let Some(i) = source.find(marker) {
            let rest = &source[i + marker.len()..];
            let end = rest.find("<|im_end|>")?;
            let msg = &rest[..end];
            let literal = !msg.contains(['{', '}', '\'', '"', '+']);
            if literal && !msg.is_empty() {
                return Some(msg.to_string());
            }
        }
    }
    None
}

/// A text tokenized with the byte ranges of its parts mapped onto token positions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Token ids, BOS first when added.
    pub ids: Vec<u32>,
    /// Display string of each token.
    pub tokens: Vec<String>,
    /// Byte span of each token in the text (`(0, 0)` for BOS).
    pub offsets: Vec<(usize, usize)>,
    /// The text.
    pub text: String,
}

impl Layout {
    /// Tokenizes `text`, prepending BOS when asked and the model has one.
    pub fn new(tokenizer: &Tokenizer, text: &str, add_bos: bool) -> Result<Self> {
        let enc = tokenizer.encode_full(text)?;
        let mut out = Self {
            ids: Vec::new(),
            tokens: Vec::new(),
            offsets: Vec::new(),
            text: text.to_string(),
        };
        if add_bos && let Some(bos) = tokenizer.bos_id() {
            out.ids.push(bos);
            out.tokens
                .push(tokenizer.token_str(bos).unwrap_or_default());
            out.offsets.push((0, 0));
        }
        for (id, off) in enc.ids.iter().zip(&enc.offsets) {
            out.ids.push(*id);
            out.tokens.push(display_token(tokenizer, *id));
            out.offsets.push(*off);
        }
        Ok(out)
    }

    /// The token positions inside the byte range `part`: tokens whose non-whitespace bytes lie
    /// in it. A token with text on both sides of the range's edge is an error naming `what`.
    pub fn positions(&self, part: &Range<usize>, what: &str) -> Result<Range<usize>> {
        let (range, straddling) = self.overlapping(part);
        if let Some(i) = straddling {
            return Err(ContextError::Options(format!(
                "token {:?} spans the edge of the {what}; separate the {what} from its neighbours (e.g. with a space)",
                self.tokens[i]
            )));
        }
        Ok(range)
    }

    /// The positions of tokens whose non-whitespace bytes overlap `part`, and the first of them
    /// that also reaches outside it, if any.
    pub fn overlapping(&self, part: &Range<usize>) -> (Range<usize>, Option<usize>) {
        let (mut first, mut last, mut straddling) = (None, None, None);
        for (i, &(s, e)) in self.offsets.iter().enumerate() {
            let piece = self.text.get(s..e).unwrap_or_default();
            let s_core = s + (piece.len() - piece.trim_start().len());
            if s_core >= e {
                continue;
            }
            if s_core < part.end && e > part.start {
                first.get_or_insert(i);
                last = Some(i);
                if (s_core < part.start || e > part.end) && straddling.is_none() {
                    straddling = Some(i);
                }
            }
        }
        match (first, last) {
            (Some(f), Some(l)) => (f..l + 1, straddling),
            _ => (0..0, straddling),
        }
    }
}

/// A token as text: its decoded string (spaces visible), or the vocabulary entry if it does
/// not decode on its own.
pub fn display_token(tokenizer: &Tokenizer, id: u32) -> String {
    match tokenizer.decode(&[id]) {
        Ok(s) if !s.is_empty() && !s.contains('\u{fffd}') => s,
        _ => tokenizer.token_str(id).unwrap_or_default(),
    }
}

/// Joins two texts with `sep` unless one side already has it (Inseq's `concat_with_sep`).
pub fn concat_with_sep(a: &str, b: &str, sep: &str) -> String {
    if a.ends_with(sep) || b.starts_with(sep) {
        format!("{a}{b}")
    } else {
        format!("{a}{sep}{b}")
    }
}
