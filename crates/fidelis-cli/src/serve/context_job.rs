//! The context-attribution job: a request is a partial [`ContextOptions`] (the very struct
//! `fidelis context` parses its flags into) put over a preset's and the command's defaults,
//! and [`crate::context::config`] turns it into a [`fidelis_context::PecoreConfig`]. The
//! exported shell command is [`to_args`] of the same struct, which parses back to it (a test
//! checks), so it reproduces the page's run by construction.

use std::sync::Arc;
use std::time::Instant;

use fidelis_context::prompt::format_template;
use fidelis_context::{attribute_context_seq2seq_with_progress, attribute_context_with_progress};
use fidelis_models::{Model, Seq2SeqModel};
use serde_json::{Map, Value, json};

use super::api::{ApiError, overlay_request};
use super::export::{rust_string, shell_command};
use super::jobs::Job;
use super::{Limits, presets};
use crate::options::{ContextOptions, overlay, to_args};

/// `POST /api/context`: a model, an optional preset, and [`ContextOptions`] fields that
/// override it.
#[derive(Debug, Clone, Default)]
pub struct ContextRequest {
    /// A model the server serves (default: the preset's, else the first).
    pub model: Option<String>,
    /// A preset id whose parameters are the starting point.
    pub preset: Option<String>,
    /// Fields of [`ContextOptions`] (names as the command's flags, with `_` for `-`).
    pub params: Map<String, Value>,
}

impl ContextRequest {
    /// Reads a request body: a JSON object with `model`, `preset` and [`ContextOptions`]
    /// fields; an unknown field is an error that names it.
    pub fn from_value(value: Value) -> Result<Self, ApiError> {
        let Value::Object(mut map) = value else {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object".into(),
            ));
        };
        let mut take_str = |key: &str| match map.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ApiError::bad_request(format!("{key} must be a string"))),
        };
        let model = take_str("model")?;
        let preset = take_str("preset")?;
        Ok(Self {
            model,
            preset,
            params: map,
        })
    }
}

/// The model a context job runs on.
#[derive(Clone)]
pub enum ContextModel {
    /// A decoder-only model.
    DecoderOnly(Arc<Model>),
    /// An encoder-decoder.
    Seq2Seq(Arc<Seq2SeqModel>),
}

/// A checked request, ready to run.
pub struct PreparedContext {
    /// The model's name.
    pub model_name: String,
    /// The model.
    pub model: ContextModel,
    /// The options after the preset and the request were applied.
    pub options: ContextOptions,
    /// The PECoRe configuration.
    pub cfg: fidelis_context::PecoreConfig,
    /// The exported shell command.
    pub command: String,
    /// The exported Rust snippet.
    pub rust: String,
    /// The same run with the reference tool: Inseq's command, Python call and caveats.
    pub inseq: super::inseq_export::InseqExport,
}

/// The argument list (without the program name) of the command these options describe.
fn argv(model: &str, device: &str, options: &ContextOptions) -> Result<Vec<String>, ApiError> {
    let mut argv = vec!["--model".to_string(), model.to_string()];
    if device != "cpu" {
        argv.extend(["--device".to_string(), device.to_string()]);
    }
    let flags = to_args(options, &ContextOptions::default())
        .map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
    argv.extend(flags);
    Ok(argv)
}

/// Checks a request against the server's models, presets and limits, and prepares the run.
pub fn prepare(state: &super::AppState, req: ContextRequest) -> Result<PreparedContext, ApiError> {
    let limits: &Limits = &state.limits;
    let base = match &req.preset {
        Some(id) => {
            let preset = presets::find(id).ok_or_else(|| {
                let known: Vec<&str> = presets::all().iter().map(|p| p.id).collect();
                ApiError::bad_request(format!(
                    "unknown preset {id:?}; presets: {}",
                    known.join(", ")
                ))
            })?;
            Some(preset)
        }
        None => None,
    };
    let model_name = req
        .model
        .clone()
        .or_else(|| base.as_ref().map(|p| p.model.to_string()))
        .unwrap_or_else(|| state.default_model().to_string());
    let seq2seq = state.seq2seq_model(&model_name);
    let served_name = match seq2seq {
        Some(m) => m.name.clone(),
        None => state.model(&model_name)?.name.clone(),
    };
    let invalid = |e: anyhow::Error| ApiError::bad_request(format!("invalid parameters: {e:#}"));
    for (name, value) in &req.params {
        if let Value::String(text) = value
            && text.chars().count() > limits.max_text_chars
        {
            return Err(ApiError::too_large(format!(
                "{name} has {} characters; the limit is {}",
                text.chars().count(),
                limits.max_text_chars
            )));
        }
    }
    let mut options = ContextOptions::default();
    if let Some(p) = &base {
        options = overlay(&options, &p.params).map_err(invalid)?;
    }
    let options = overlay_request(&options, &req.params)?;
    // The bounds `fidelis context` checks, then this server's tighter limits.
    options
        .validate()
        .map_err(|e| ApiError::invalid_options(&e))?;
    if options.input_context.is_empty() || options.input_current.is_empty() {
        return Err(ApiError::bad_request(
            "give input_context and input_current (or a preset)".into(),
        ));
    }
    let server_limits = [
        (
            "max_new_tokens",
            options.max_new_tokens,
            limits.max_new_tokens,
        ),
        ("ig_steps", options.token.ig_steps, limits.max_ig_steps),
    ];
    for (field, value, limit) in server_limits {
        if value > limit {
            return Err(ApiError::out_of_range(
                field,
                format!("{field} is {value}; this server's limit is {limit}"),
            ));
        }
    }
    let argv = argv(&served_name, &state.device, &options)?;
    let (model, cfg, source) = match seq2seq {
        Some(m) => {
            let cfg = crate::context::config_seq2seq(&m.model, &options).map_err(invalid)?;
            let source = m.model.source.clone();
            (ContextModel::Seq2Seq(Arc::clone(&m.model)), cfg, source)
        }
        None => {
            let model = Arc::clone(&state.model(&served_name)?.model);
            let cfg = crate::context::config(&model, &options).map_err(invalid)?;
            check_length(&model, &cfg)?;
            let source = model.source.clone();
            (ContextModel::DecoderOnly(model), cfg, source)
        }
    };
    let mut shell = vec!["fidelis".to_string(), "context".to_string()];
    shell.extend(argv);
    shell.extend(["--json".to_string(), "context.json".to_string()]);
    let command = shell_command(&shell);
    let mut rust = rust_snippet(&served_name, &state.device, &options);
    if matches!(model, ContextModel::Seq2Seq(_)) {
        rust = rust
            .replace("attribute_context}", "attribute_context_seq2seq}")
            .replace("attribute_context(", "attribute_context_seq2seq(")
            .replace("{Model,", "{Seq2SeqModel,")
            .replace("Model::load(", "Seq2SeqModel::load(");
    }
    let encoder_decoder = matches!(model, ContextModel::Seq2Seq(_));
    let inseq = super::inseq_export::inseq_export(&served_name, &source, &options, encoder_decoder);
    Ok(PreparedContext {
        model_name: served_name,
        model,
        options,
        cfg,
        command,
        rust,
        inseq,
    })
}

/// Rejects inputs that leave no room in the model's window for one output token.
fn check_length(model: &Model, cfg: &fidelis_context::PecoreConfig) -> Result<(), ApiError> {
    let invalid = |e: fidelis_context::ContextError| ApiError::bad_request(e.to_string());
    let input = format_template(
        &cfg.input_template,
        &cfg.input_current,
        Some(&cfg.input_context),
    )
    .map_err(invalid)?;
    let (text, add_bos) = match &cfg.chat {
        // The template's text carries the BOS when it writes one.
        Some(chat) => (chat.wrap_user(&input.text).map_err(invalid)?.0, false),
        None => (input.text, cfg.add_bos),
    };
    let count = |t: &str| {
        model
            .tokenizer
            .encode(t)
            .map(|ids| ids.len())
            .map_err(|e| ApiError::bad_request(format!("cannot tokenize the input: {e}")))
    };
    let mut tokens = count(&text)? + usize::from(add_bos);
    for extra in [&cfg.output_context, &cfg.output_current]
        .into_iter()
        .flatten()
    {
        tokens += count(extra)?;
    }
    let n_ctx = model.config().n_ctx;
    if tokens >= n_ctx {
        return Err(ApiError::unprocessable(format!(
            "the input is {tokens} tokens long; the model's window is {n_ctx} tokens and at least one output token must fit; shorten the context"
        )));
    }
    Ok(())
}

/// The Rust code that runs the same attribution with the crates' API: one line per option
/// that differs from `fidelis context`'s default.
pub fn rust_snippet(model: &str, device: &str, o: &ContextOptions) -> String {
    let d = ContextOptions::default();
    let mut s = String::from(
        "use burn::prelude::*;\nuse fidelis_context::{PecoreConfig, attribute_context};\nuse fidelis_models::{Model, fetch::resolve_model_name};\n\nfn main() -> Result<(), Box<dyn std::error::Error>> {\n",
    );
    let device_expr = match device {
        "ndarray" => "Device::ndarray()",
        d if d.starts_with("wgpu") => "Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)",
        d if d.starts_with("cuda") => "Device::cuda(0)",
        _ => "Device::flex()",
    };
    s += &format!(
        "    let model = Model::load(&resolve_model_name({})?, &{device_expr})?;\n",
        rust_string(model)
    );
    s += &format!(
        "    let mut cfg = PecoreConfig::new({}, {});\n",
        rust_string(&o.input_context),
        rust_string(&o.input_current)
    );
    let some_text = |field: &str, v: &Option<String>| {
        v.as_ref()
            .map(|v| format!("    cfg.{field} = Some({}.into());\n", rust_string(v)))
            .unwrap_or_default()
    };
    let text = |field: &str, v: &String, default: &String| {
        if v == default {
            String::new()
        } else {
            format!("    cfg.{field} = {}.into();\n", rust_string(v))
        }
    };
    let parsed = |field: &str, v: &str, default: &str| {
        if v == default {
            String::new()
        } else {
            format!("    cfg.{field} = {}.parse()?;\n", rust_string(v))
        }
    };
    let lambda = |v: f32| {
        if v >= 0.0 {
            format!("Some({v:?})")
        } else {
            "None".into()
        }
    };
    s += &some_text("output_current", &o.output_current);
    s += &some_text("output_context", &o.output_context);
    s += &text("input_template", &o.input_template, &d.input_template);
    s += &some_text("output_template", &o.output_template);
    s += &text(
        "contextless_input_template",
        &o.contextless_input_template,
        &d.contextless_input_template,
    );
    s += &text("separator", &o.separator, &d.separator);
    if o.chat {
        s += "    cfg.chat = Some(fidelis_context::prompt::ChatTemplate::from_model(&model.source)?);\n";
    }
    if o.no_bos {
        s += "    cfg.add_bos = false;\n";
    }
    if o.max_new_tokens != d.max_new_tokens {
        s += &format!("    cfg.max_new_tokens = {};\n", o.max_new_tokens);
    }
    s += &parsed("cti_metric", o.cti_metric.name(), d.cti_metric.name());
    if o.cti_std != d.cti_std {
        s += &format!("    cfg.cti_std = {};\n", lambda(o.cti_std));
    }
    if let Some(k) = o.cti_topk {
        s += &format!("    cfg.cti_topk = Some({k});\n");
    }
    s += &parsed(
        "attribution.method",
        o.token.method.name(),
        d.token.method.name(),
    );
    s += &parsed("cci_target", o.target.name(), d.target.name());
    if o.token.ig_steps != d.token.ig_steps {
        s += &format!("    cfg.attribution.ig_steps = {};\n", o.token.ig_steps);
    }
    if o.token.baseline != "zero" {
        s += &format!(
            "    cfg.attribution.baseline = fidelis_attribution::token::Baseline::Token(model.tokenizer.single_token({})?);\n",
            rust_string(&o.token.baseline)
        );
    }
    s += &parsed(
        "attribution.aggregation",
        o.token.aggregation.name(),
        d.token.aggregation.name(),
    );
    if o.cci_std != d.cci_std {
        s += &format!("    cfg.cci_std = {};\n", lambda(o.cci_std));
    }
    if let Some(k) = o.cci_topk {
        s += &format!("    cfg.cci_topk = Some({k});\n");
    }
    if o.inseq_compat {
        s += "    cfg.inseq_compat = true;\n";
    }
    s += "    let out = attribute_context(&model, &cfg)?;\n";
    s += "    std::fs::write(\"context.json\", serde_json::to_string_pretty(&out)?)?;\n";
    s += "    Ok(())\n}\n";
    s
}

/// Runs a prepared request as a job; returns the page's result.
pub fn run(job: &Job, prepared: PreparedContext) -> Result<serde_json::Value, String> {
    let start = Instant::now();
    job.progress("starting", 0, 0);
    let mut progress = job;
    let out = match &prepared.model {
        ContextModel::DecoderOnly(m) => {
            attribute_context_with_progress(m, &prepared.cfg, &mut progress)
        }
        ContextModel::Seq2Seq(m) => {
            attribute_context_seq2seq_with_progress(m, &prepared.cfg, &mut progress)
        }
    }
    .map_err(|e| e.to_string())?;
    let seconds = start.elapsed().as_secs_f64();
    let text = serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?;
    job.put_file("result.json", text);
    Ok(json!({
        "model": prepared.model_name,
        "params": prepared.options,
        "attribution": out,
        "command": prepared.command,
        "rust": prepared.rust,
        "inseq_command": prepared.inseq.command,
        "inseq_python": prepared.inseq.python,
        "inseq_notes": prepared.inseq.notes,
        "seconds": seconds,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use fidelis_attribution::token::{EmbeddingAggregation, TargetFunction, TokenMethod};
    use fidelis_context::CtiMetric;

    /// `fidelis context`'s options alone, for parsing.
    #[derive(Parser)]
    #[command(name = "fidelis context", no_binary_name = true)]
    struct ContextCommand {
        #[command(flatten)]
        model: crate::model_args::ModelFlags,
        #[command(flatten)]
        opts: ContextOptions,
    }

    /// Every option away from its default, so every line the snippet can have is written.
    fn all_options() -> ContextOptions {
        let text = |s: &str| s.to_string();
        ContextOptions {
            input_context: text("The key is in the red box."),
            input_current: text("Question: Where is the key? Answer:"),
            output_current: Some(text("in the red box")),
            output_context: Some(text("Let me see.")),
            input_template: text("Context: {context} {current}"),
            output_template: Some(text("{context} {current}")),
            contextless_input_template: text("Q: {current}"),
            separator: text("\n"),
            chat: true,
            no_bos: true,
            max_new_tokens: 4,
            cti_metric: CtiMetric::Pcxmi,
            cti_std: 0.5,
            cti_topk: Some(3),
            token: crate::options::TokenOptions {
                method: TokenMethod::IntegratedGradients,
                ig_steps: 16,
                baseline: text(" the"),
                aggregation: EmbeddingAggregation::Sum,
            },
            target: TargetFunction::ContrastLogitDiff,
            cci_std: -1.0,
            cci_topk: Some(2),
            inseq_compat: true,
            source_lang: None,
            target_lang: None,
        }
    }

    /// The snippet for every parameter is the example `serve_context_snippet`, which `cargo
    /// test` compiles: the exported Rust code builds against the crates' API. With
    /// `FIDELIS_BLESS=1` the test rewrites the example instead.
    #[test]
    fn rust_snippet_is_the_compiled_example() {
        let snippet = rust_snippet("organism", "cpu", &all_options());
        if std::env::var_os("FIDELIS_BLESS").is_some() {
            let path = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/examples/serve_context_snippet.rs.txt"
            );
            std::fs::write(path, &snippet).unwrap();
        }
        let example = include_str!("../../examples/serve_context_snippet.rs.txt");
        assert_eq!(snippet, example, "update the example to this test's output");
    }

    #[test]
    fn the_exported_command_parses_back_to_the_options() {
        let options = all_options();
        let argv = argv("organism", "cpu", &options).unwrap();
        let parsed = ContextCommand::try_parse_from(&argv).expect("the command parses");
        assert_eq!(parsed.opts, options);
        assert!(argv.contains(&"--cci-std=-1.0".to_string()), "{argv:?}");
    }

    #[test]
    fn every_preset_is_a_set_of_context_options() {
        for preset in presets::all() {
            let o = overlay(&ContextOptions::default(), &preset.params).unwrap();
            assert!(!o.input_context.is_empty(), "{}", preset.id);
        }
    }
}
