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

/// A model's own chat template (the Jinja `chat_template` of its `tokenizer_config.json` or
/// GGUF `tokenizer.chat_template`), rendered with `minijinja` and Python's string methods
/// (`minijinja-contrib`'s pycompat), as transformers' `apply_chat_template` renders it: the
/// `messages` as `{role, content}` maps, `add_generation_prompt`, `bos_token`, `eos_token`, and
/// `raise_exception`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatTemplate {
    source: String,
    bos_token: String,
    eos_token: String,
    end_of_turn: String,
}

/// Stands for a message while the template is rendered, to find where the message goes.
const SENTINEL: &str = "\u{E000}fidelis-message\u{E001}";

impl ChatTemplate {
    /// A template from its Jinja source and the model's BOS and EOS token texts. Errors when the
    /// source does not compile or cannot render a user turn.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        let mut template = Self {
            source: source.to_string(),
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
            end_of_turn: eos_token.to_string(),
        };
        // What closes an assistant turn: the first piece the template writes after one.
        let closed = template.render(&[("user", "hi"), ("assistant", SENTINEL)], false)?;
        if let Some(i) = closed.rfind(SENTINEL) {
            let after = closed[i + SENTINEL.len()..].trim_start();
            let end: String = after.chars().take_while(|c| !c.is_whitespace()).collect();
            if !end.is_empty() {
                template.end_of_turn = end;
            }
        }
        template.wrap_user("hi")?;
        Ok(template)
    }

    /// Renders `messages` (`(role, content)` pairs), opening the assistant turn when
    /// `add_generation_prompt` is set.
    pub fn render(&self, messages: &[(&str, &str)], add_generation_prompt: bool) -> Result<String> {
        let bad = |e: minijinja::Error| {
            ContextError::Options(format!("the model's chat template: {e:#}"))
        };
        let mut env = minijinja::Environment::new();
        // transformers compiles chat templates with both of these on.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    message,
                ))
            },
        );
        env.add_template("chat", &self.source).map_err(bad)?;
        let messages: Vec<minijinja::Value> = messages
            .iter()
            .map(|(role, content)| minijinja::context! { role => role, content => content })
            .collect();
        env.get_template("chat")
            .and_then(|t| {
                t.render(minijinja::context! {
                    messages => messages,
                    add_generation_prompt => add_generation_prompt,
                    bos_token => &self.bos_token,
                    eos_token => &self.eos_token,
                })
            })
            .map_err(bad)
    }

    /// The chat template stored with a model (a `.gguf` file or a Hugging Face folder), with
    /// its BOS and EOS token texts.
    pub fn from_model(path: &Path) -> Result<Self> {
        let missing = || ContextError::Options(format!("{} has no chat template", path.display()));
        if path.is_dir() {
            let cfg = path.join("tokenizer_config.json");
            let text = std::fs::read_to_string(&cfg).map_err(|e| {
                ContextError::Options(format!(
                    "no chat template: cannot read {}: {e}",
                    cfg.display()
                ))
            })?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| ContextError::Options(format!("{}: {e}", cfg.display())))?;
            // A token is written as a string or as an object with its `content`.
            let token = |key: &str| {
                let t = v.get(key);
                t.and_then(|t| t.as_str())
                    .or_else(|| t.and_then(|t| t.get("content")).and_then(|c| c.as_str()))
                    .unwrap_or_default()
                    .to_string()
            };
            let source = v
                .get("chat_template")
                .and_then(|t| t.as_str())
                .ok_or_else(missing)?;
            Self::new(source, &token("bos_token"), &token("eos_token"))
        } else {
            let file = GgufFile::open(path)?;
            let source = file
                .get_str("tokenizer.chat_template")
                .map_err(|_| missing())?;
            let tokens = file
                .get_str_array("tokenizer.ggml.tokens")
                .unwrap_or_default();
            let special = file.special_tokens();
            let text = |id: Option<u32>| {
                id.and_then(|i| tokens.get(i as usize))
                    .map_or_else(String::new, |t| t.to_string())
            };
            Self::new(source, &text(special.bos), &text(special.eos))
        }
    }

    /// Wraps a user message as the template does and opens the assistant turn; returns the
    /// text and where the message went. Errors when the template does not write the message
    /// exactly once as given (one that edits the content cannot be mapped back).
    pub fn wrap_user(&self, message: &str) -> Result<(String, Range<usize>)> {
        let text = self.render(&[("user", SENTINEL)], true)?;
        let start = text.find(SENTINEL).ok_or_else(|| {
            ContextError::Options(
                "the model's chat template does not write the user message as given".into(),
            )
        })?;
        let after = &text[start + SENTINEL.len()..];
        if after.contains(SENTINEL) {
            return Err(ContextError::Options(
                "the model's chat template writes the user message more than once".into(),
            ));
        }
        Ok((
            format!("{}{message}{after}", &text[..start]),
            start..start + message.len(),
        ))
    }

    /// Whether the rendered conversation already starts with the BOS token's text (Llama 3's
    /// template writes it), in which case no BOS id is prepended: the text carries it.
    pub fn uses_bos(&self) -> bool {
        !self.bos_token.is_empty()
            && self
                .render(&[("user", "hi")], true)
                .is_ok_and(|t| t.starts_with(&self.bos_token))
    }

    /// The token that ends an assistant turn (`<|im_end|>` for ChatML, `<|eot_id|>` for
    /// Llama 3), read off the template; the EOS text when the template writes nothing there.
    pub fn end_of_turn(&self) -> &str {
        &self.end_of_turn
    }
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
