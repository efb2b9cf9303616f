//! The run of the context tab as the reference tool would make it: Inseq's (0.7.1)
//! `inseq attribute-context` command and the equivalent Python call, so a user can reproduce
//! the page's PECoRe run with Inseq and compare. The flag mapping is the one docs/inseq.md
//! documents, read in the other direction; what has no Inseq equivalent is listed in notes
//! instead of being silently dropped.

use std::path::Path;

use serde_json::{Value, json};

use super::export::shell_command;
use crate::options::ContextOptions;

/// The Inseq command, the Python snippet and what they cannot express.
#[derive(Debug, Clone, PartialEq)]
pub struct InseqExport {
    /// `inseq attribute-context ...`, one POSIX shell line.
    pub command: String,
    /// A Python program calling Inseq's `attribute_context`.
    pub python: String,
    /// Options of the run that Inseq has no flag for, each said in a sentence.
    pub notes: Vec<String>,
}

/// Every `inseq attribute-context` argument the export may write (Inseq 0.7.1's
/// `AttributeContextArgs` fields): a check that nothing else is ever written.
pub const INSEQ_FLAGS: [&str; 22] = [
    "model_name_or_path",
    "model_kwargs",
    "tokenizer_kwargs",
    "input_context_text",
    "input_current_text",
    "output_context_text",
    "output_current_text",
    "input_template",
    "output_template",
    "contextless_input_current_text",
    "decoder_input_output_separator",
    "context_sensitivity_metric",
    "context_sensitivity_std_threshold",
    "context_sensitivity_topk",
    "attribution_method",
    "attributed_fn",
    "attribution_kwargs",
    "attribution_std_threshold",
    "attribution_topk",
    "generation_kwargs",
    "save_path",
    "show_viz",
];

/// Inseq's name of a Fidelis CTI metric.
fn cti_metric(name: &str) -> Option<&'static str> {
    match name {
        // Fidelis's `kl` and `contrast-prob-diff` are Inseq's definitions (the contextless
        // run as the original); `kl-ctx` and `ctx-prob-diff` are the other direction and sign.
        "kl" => Some("kl_divergence"),
        "contrast-prob-diff" => Some("contrast_prob_diff"),
        "pcxmi" => Some("pcxmi"),
        _ => None,
    }
}

/// Inseq's name of a Fidelis token attribution method.
fn method(name: &str) -> Option<&'static str> {
    match name {
        "saliency" => Some("saliency"),
        "ixg" => Some("input_x_gradient"),
        "ig" => Some("integrated_gradients"),
        "attention" => Some("attention"),
        "occlusion" => Some("occlusion"),
        _ => None,
    }
}

/// Inseq's step function for a Fidelis attribution target.
fn attributed_fn(name: &str) -> Option<&'static str> {
    match name {
        "contrast-prob-diff" => Some("contrast_prob_diff"),
        "contrast-logit-diff" => Some("contrast_logits_diff"),
        "probability" => Some("probability"),
        "logit" => Some("logit"),
        "entropy" => Some("entropy"),
        "kl" => Some("kl_divergence"),
        "pcxmi" => Some("pcxmi"),
        _ => None,
    }
}

/// The model argument(s): a hub id as it is; a folder by its path; a GGUF file by its folder
/// with `gguf_file` for both the model and the tokenizer (transformers dequantizes it).
fn model_args(name: &str, source: &Path) -> Vec<(&'static str, Value)> {
    if fidelis_models::fetch::is_hub_id(name) && !Path::new(name).exists() {
        return vec![("model_name_or_path", json!(name))];
    }
    let canonical = std::fs::canonicalize(source);
    let source = canonical.as_deref().unwrap_or(source);
    let is_gguf = source
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    match (is_gguf, source.parent(), source.file_name()) {
        (true, Some(dir), Some(file)) => {
            let gguf = json!({ "gguf_file": file.to_string_lossy() });
            vec![
                ("model_name_or_path", json!(dir.display().to_string())),
                ("model_kwargs", gguf.clone()),
                ("tokenizer_kwargs", gguf),
            ]
        }
        _ => vec![("model_name_or_path", json!(source.display().to_string()))],
    }
}

/// The Inseq arguments of a context run on the model `name` loaded from `source`, and notes on
/// what they do not carry over.
pub fn inseq_arguments(
    name: &str,
    source: &Path,
    o: &ContextOptions,
    encoder_decoder: bool,
) -> (Vec<(&'static str, Value)>, Vec<String>) {
    let mut args = model_args(name, source);
    let mut notes = Vec::new();
    args.push(("input_context_text", json!(o.input_context)));
    args.push(("input_current_text", json!(o.input_current)));
    if let Some(text) = &o.output_context {
        args.push(("output_context_text", json!(text)));
    }
    if let Some(text) = &o.output_current {
        args.push(("output_current_text", json!(text)));
    }
    args.push(("input_template", json!(o.input_template)));
    if let Some(template) = &o.output_template {
        args.push(("output_template", json!(template)));
    }
    if o.contextless_input_template != "{current}" {
        args.push((
            "contextless_input_current_text",
            json!(o.contextless_input_template),
        ));
    }
    if o.separator != " " {
        args.push(("decoder_input_output_separator", json!(o.separator)));
    }
    let metric = o.cti_metric.to_string();
    match cti_metric(&metric) {
        Some(inseq) => args.push(("context_sensitivity_metric", json!(inseq))),
        None => notes.push(format!(
            "The CTI metric {metric} has no Inseq equivalent; Inseq uses its default (kl_divergence)."
        )),
    }
    args.push(("context_sensitivity_std_threshold", json!(o.cti_std)));
    if let Some(k) = o.cti_topk {
        args.push(("context_sensitivity_topk", json!(k)));
    }
    let token_method = o.token.method.to_string();
    match method(&token_method) {
        Some(inseq) => args.push(("attribution_method", json!(inseq))),
        None => notes.push(format!(
            "The attribution method {token_method} has no Inseq equivalent."
        )),
    }
    let target = o.target.to_string();
    match attributed_fn(&target) {
        Some(inseq) => args.push(("attributed_fn", json!(inseq))),
        None => notes.push(format!(
            "The attribution target {target} has no Inseq step function of that name."
        )),
    }
    if token_method == "ig" {
        args.push(("attribution_kwargs", json!({ "n_steps": o.token.ig_steps })));
    }
    if o.token.baseline != "zero" {
        notes.push(format!(
            "The baseline {:?} is not passed on: Inseq's integrated gradients and occlusion use \
             their own (zero) baseline.",
            o.token.baseline
        ));
    }
    args.push(("attribution_std_threshold", json!(o.cci_std)));
    if let Some(k) = o.cci_topk {
        args.push(("attribution_topk", json!(k)));
    }
    if o.output_current.is_none() {
        args.push((
            "generation_kwargs",
            json!({ "max_new_tokens": o.max_new_tokens }),
        ));
    }
    if o.chat {
        notes.push(
            "Inseq has no chat-template switch: put the model's rendered chat template into \
             input_template to reproduce this run."
                .into(),
        );
    }
    if encoder_decoder {
        notes.push(
            "Inseq 0.7.1 with transformers 4.x scales MarianMT's target embeddings twice (it \
             passes embeddings already multiplied by embed_scale, and the decoder multiplies \
             again), so its CTI scores on Marian models differ from the model's own; Fidelis \
             follows the model (docs/inseq.md)."
                .into(),
        );
    }
    if !o.inseq_compat && !encoder_decoder {
        notes.push(
            "Fidelis ran with its own prompt conventions; with --inseq-compat (and --no-bos) it \
             generates after the separator and builds the CCI contrasts as Inseq does, which is \
             what this command reproduces (docs/inseq.md)."
                .into(),
        );
    }
    if !o.no_bos && !encoder_decoder {
        notes.push(
            "Fidelis prepends the model's BOS token here (no --no-bos); Inseq feeds what the \
             model's tokenizer adds by itself, so runs agree only where those are the same."
                .into(),
        );
    }
    // Encoder-decoder languages go to the tokenizer, as Inseq takes them.
    let mut langs = serde_json::Map::new();
    if let Some(l) = &o.source_lang {
        langs.insert("src_lang".into(), json!(l));
    }
    if let Some(l) = &o.target_lang {
        langs.insert("tgt_lang".into(), json!(l));
    }
    if !langs.is_empty() {
        args.push(("tokenizer_kwargs", Value::Object(langs)));
    }
    args.push(("save_path", json!("context.json")));
    (args, notes)
}

/// A JSON value as it is written on Inseq's command line: strings bare, objects as JSON text.
fn cli_value(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A JSON value as a Python literal (JSON strings and numbers are Python literals too;
/// `true`/`false`/`null` are spelled the Python way).
fn python_value(value: &Value) -> String {
    match value {
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null => "None".into(),
        Value::Object(map) => {
            let items: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", Value::String(k.clone()), python_value(v)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        other => other.to_string(),
    }
}

/// The Inseq command and Python program of a context run.
/// `encoder_decoder` says whether the model is one (its notes differ).
pub fn inseq_export(
    name: &str,
    source: &Path,
    o: &ContextOptions,
    encoder_decoder: bool,
) -> InseqExport {
    let (args, notes) = inseq_arguments(name, source, o, encoder_decoder);
    let mut argv = vec!["inseq".to_string(), "attribute-context".to_string()];
    for (flag, value) in &args {
        argv.push(format!("--{flag}"));
        argv.push(cli_value(value));
    }
    let mut python = String::from(
        "# Inseq 0.7.1: pip install inseq\n\
         from inseq.commands.attribute_context import AttributeContextArgs\n\
         from inseq.commands.attribute_context.attribute_context import attribute_context\n\n\
         args = AttributeContextArgs(\n",
    );
    for (flag, value) in &args {
        python.push_str(&format!("    {flag}={},\n", python_value(value)));
    }
    python.push_str(
        "    show_viz=False,\n)\nout = attribute_context(args)  # also written to context.json\n",
    );
    for note in &notes {
        python.push_str(&format!("# Note: {note}\n"));
    }
    InseqExport {
        command: shell_command(&argv),
        python,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> ContextOptions {
        ContextOptions {
            input_context: "The key is in the red box.".into(),
            input_current: "Where's the key?".into(),
            max_new_tokens: 4,
            cti_std: 0.0,
            no_bos: true,
            inseq_compat: true,
            ..ContextOptions::default()
        }
    }

    /// Splits a POSIX shell line of bare and single-quoted words (what `shell_command` writes).
    fn shell_words(line: &str) -> Vec<String> {
        let (mut words, mut word, mut quoted, mut in_word) =
            (Vec::new(), String::new(), false, false);
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\'' => {
                    quoted = !quoted;
                    in_word = true;
                }
                '\\' if !quoted => {
                    word.extend(chars.next());
                    in_word = true;
                }
                ' ' if !quoted => {
                    if in_word {
                        words.push(std::mem::take(&mut word));
                    }
                    in_word = false;
                }
                c => {
                    word.push(c);
                    in_word = true;
                }
            }
        }
        if in_word {
            words.push(word);
        }
        words
    }

    #[test]
    fn the_inseq_command_is_well_formed_and_carries_every_option() {
        let mut o = options();
        o.token.method = "ig".parse().unwrap();
        o.token.ig_steps = 16;
        o.cti_topk = Some(2);
        let export = inseq_export("organism", Path::new("/m/organism"), &o, false);
        let words = shell_words(&export.command);
        assert_eq!(words[..2], ["inseq", "attribute-context"]);
        let pairs: Vec<(&str, &str)> = words[2..]
            .chunks(2)
            .map(|p| (p[0].strip_prefix("--").expect("a flag"), p[1].as_str()))
            .collect();
        for (flag, _) in &pairs {
            assert!(INSEQ_FLAGS.contains(flag), "{flag} is not an Inseq flag");
        }
        let get = |flag: &str| pairs.iter().find(|(f, _)| *f == flag).map(|p| p.1);
        assert_eq!(get("model_name_or_path"), Some("/m/organism"));
        assert_eq!(get("input_current_text"), Some("Where's the key?"));
        assert_eq!(get("input_template"), Some("{context} {current}"));
        assert_eq!(get("attribution_method"), Some("integrated_gradients"));
        assert_eq!(get("attributed_fn"), Some("contrast_prob_diff"));
        assert_eq!(get("context_sensitivity_metric"), Some("kl_divergence"));
        assert_eq!(get("context_sensitivity_std_threshold"), Some("0.0"));
        assert_eq!(get("context_sensitivity_topk"), Some("2"));
        let kwargs: Value = serde_json::from_str(get("attribution_kwargs").unwrap()).unwrap();
        assert_eq!(kwargs, json!({"n_steps": 16}));
        let generation: Value = serde_json::from_str(get("generation_kwargs").unwrap()).unwrap();
        assert_eq!(generation, json!({"max_new_tokens": 4}));
        assert!(export.notes.is_empty(), "{:?}", export.notes);
        assert!(
            export
                .python
                .contains("    input_current_text=\"Where's the key?\",\n")
        );
        assert!(
            export
                .python
                .contains("    attribution_kwargs={\"n_steps\": 16},\n")
        );
        assert!(export.python.contains("show_viz=False"));
    }

    #[test]
    fn gguf_models_hub_ids_and_unmapped_options() {
        let mut o = options();
        o.no_bos = false;
        o.inseq_compat = false;
        o.target = "log-probability".parse().unwrap();
        o.output_current = Some("in the red box".into());
        let export = inseq_export("smollm2", Path::new("/c/SmolLM2.Q4_1.gguf"), &o, false);
        let words = shell_words(&export.command);
        let at = |flag: &str| {
            words
                .iter()
                .position(|w| w == flag)
                .map(|i| words[i + 1].as_str())
        };
        assert_eq!(at("--model_name_or_path"), Some("/c"));
        assert_eq!(
            at("--model_kwargs"),
            Some(r#"{"gguf_file":"SmolLM2.Q4_1.gguf"}"#)
        );
        assert_eq!(at("--output_current_text"), Some("in the red box"));
        assert_eq!(
            at("--generation_kwargs"),
            None,
            "a forced output generates nothing"
        );
        assert_eq!(at("--attributed_fn"), None);
        assert_eq!(export.notes.len(), 3, "{:?}", export.notes);
        assert!(
            export
                .python
                .contains("# Note: The attribution target log-probability")
        );

        let hub = inseq_export(
            "HuggingFaceTB/SmolLM2-135M",
            Path::new("/cache/x"),
            &options(),
            false,
        );
        assert!(
            hub.command
                .contains("--model_name_or_path HuggingFaceTB/SmolLM2-135M")
        );
    }

    #[test]
    fn encoder_decoders_carry_the_output_context_and_languages() {
        let mut o = options();
        o.output_context = Some("l'ecole est grande .".into());
        o.input_template = "{context} <brk> {current}".into();
        o.output_template = Some("{context} <brk> {current}".into());
        o.source_lang = Some("en_XX".into());
        o.target_lang = Some("fr_XX".into());
        o.no_bos = false;
        o.inseq_compat = false;
        let export = inseq_export("m", Path::new("/m/mbart"), &o, true);
        let words = shell_words(&export.command);
        let at = |flag: &str| {
            words
                .iter()
                .position(|w| w == flag)
                .map(|i| words[i + 1].as_str())
        };
        assert_eq!(at("--output_context_text"), Some("l'ecole est grande ."));
        assert_eq!(at("--output_template"), Some("{context} <brk> {current}"));
        let langs: Value = serde_json::from_str(at("--tokenizer_kwargs").unwrap()).unwrap();
        assert_eq!(langs, json!({"src_lang": "en_XX", "tgt_lang": "fr_XX"}));
        // Only the Marian note: BOS and --inseq-compat are decoder-only matters.
        assert_eq!(export.notes.len(), 1, "{:?}", export.notes);
        assert!(export.notes[0].contains("embed_scale"));
    }
}
