//! The context-attribution job: a request becomes the argument list of `fidelis context`,
//! which clap parses into the very [`ContextArgs`] the command line would build, and
//! [`crate::context::config`] turns into a [`fidelis_context::PecoreConfig`]. The exported
//! shell command is that argument list quoted, so it reproduces the page's run by
//! construction.

use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use fidelis_context::attribute_context_with_progress;
use fidelis_context::prompt::format_template;
use fidelis_models::Model;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::api::ApiError;
use super::export::{rust_string, shell_command};
use super::jobs::Job;
use super::{Limits, presets};
use crate::context::ContextArgs;

/// Every PECoRe parameter of `fidelis context`, each optional (unset: the preset's value, else
/// the command's default). Names are the command's flags with `_` for `-`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // each field is the flag of the same name, documented on ContextArgs
pub struct ContextParams {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_context: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_current: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_current: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_context: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_template: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_template: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contextless_input_template: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub separator: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_bos: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_new_tokens: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cti_metric: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cti_std: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cti_topk: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ig_steps: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cci_std: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cci_topk: Option<usize>,
}

/// `POST /api/context`: a model, an optional preset, and parameters that override it.
#[derive(Debug, Clone, Default)]
pub struct ContextRequest {
    /// A model the server serves (default: the preset's, else the first).
    pub model: Option<String>,
    /// A preset id whose parameters are the starting point.
    pub preset: Option<String>,
    /// Parameters.
    pub params: ContextParams,
}

impl ContextRequest {
    /// Reads a request body: a JSON object with `model`, `preset` and [`ContextParams`] fields;
    /// an unknown field is an error that names it.
    pub fn from_value(value: serde_json::Value) -> Result<Self, ApiError> {
        let serde_json::Value::Object(mut map) = value else {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object".into(),
            ));
        };
        let mut take_str = |key: &str| match map.remove(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ApiError::bad_request(format!("{key} must be a string"))),
        };
        let model = take_str("model")?;
        let preset = take_str("preset")?;
        let params = serde_json::from_value(serde_json::Value::Object(map))
            .map_err(|e| ApiError::bad_request(format!("invalid parameters: {e}")))?;
        Ok(Self {
            model,
            preset,
            params,
        })
    }
}

impl ContextParams {
    /// `self`'s values where set, else `base`'s.
    pub fn over(self, base: &ContextParams) -> ContextParams {
        let b = base.clone();
        ContextParams {
            input_context: self.input_context.or(b.input_context),
            input_current: self.input_current.or(b.input_current),
            output_current: self.output_current.or(b.output_current),
            output_context: self.output_context.or(b.output_context),
            input_template: self.input_template.or(b.input_template),
            output_template: self.output_template.or(b.output_template),
            contextless_input_template: self
                .contextless_input_template
                .or(b.contextless_input_template),
            separator: self.separator.or(b.separator),
            chat: self.chat.or(b.chat),
            no_bos: self.no_bos.or(b.no_bos),
            max_new_tokens: self.max_new_tokens.or(b.max_new_tokens),
            cti_metric: self.cti_metric.or(b.cti_metric),
            cti_std: self.cti_std.or(b.cti_std),
            cti_topk: self.cti_topk.or(b.cti_topk),
            method: self.method.or(b.method),
            target: self.target.or(b.target),
            ig_steps: self.ig_steps.or(b.ig_steps),
            baseline: self.baseline.or(b.baseline),
            aggregation: self.aggregation.or(b.aggregation),
            cci_std: self.cci_std.or(b.cci_std),
            cci_topk: self.cci_topk.or(b.cci_topk),
        }
    }

    /// The text fields, for the length check.
    fn texts(&self) -> impl Iterator<Item = (&'static str, &String)> {
        [
            ("input_context", &self.input_context),
            ("input_current", &self.input_current),
            ("output_current", &self.output_current),
            ("output_context", &self.output_context),
            ("input_template", &self.input_template),
            ("output_template", &self.output_template),
            (
                "contextless_input_template",
                &self.contextless_input_template,
            ),
            ("separator", &self.separator),
            ("baseline", &self.baseline),
        ]
        .into_iter()
        .filter_map(|(name, v)| v.as_ref().map(|v| (name, v)))
    }

    /// The flags of `fidelis context` these parameters stand for, as `(flag, value)` pairs
    /// (`value` `None` for a switch), in the command's order.
    pub fn flags(&self) -> Vec<(&'static str, Option<String>)> {
        let mut out = Vec::new();
        let mut text = |flag: &'static str, v: &Option<String>| {
            if let Some(v) = v {
                out.push((flag, Some(v.clone())));
            }
        };
        text("--input-context", &self.input_context);
        text("--input-current", &self.input_current);
        text("--output-current", &self.output_current);
        text("--output-context", &self.output_context);
        text("--input-template", &self.input_template);
        text("--output-template", &self.output_template);
        text(
            "--contextless-input-template",
            &self.contextless_input_template,
        );
        text("--separator", &self.separator);
        text("--cti-metric", &self.cti_metric);
        text("--method", &self.method);
        text("--target", &self.target);
        text("--baseline", &self.baseline);
        text("--aggregation", &self.aggregation);
        let num = |v: Option<String>| v.map(Some);
        let numbers = [
            (
                "--max-new-tokens",
                num(self.max_new_tokens.map(|v| v.to_string())),
            ),
            ("--cti-std", num(self.cti_std.map(|v| v.to_string()))),
            ("--cti-topk", num(self.cti_topk.map(|v| v.to_string()))),
            ("--ig-steps", num(self.ig_steps.map(|v| v.to_string()))),
            ("--cci-std", num(self.cci_std.map(|v| v.to_string()))),
            ("--cci-topk", num(self.cci_topk.map(|v| v.to_string()))),
        ];
        out.extend(numbers.into_iter().filter_map(|(f, v)| v.map(|v| (f, v))));
        if self.chat == Some(true) {
            out.push(("--chat", None));
        }
        if self.no_bos == Some(true) {
            out.push(("--no-bos", None));
        }
        out
    }
}

/// `fidelis context`'s arguments alone, for parsing.
#[derive(Parser)]
#[command(name = "fidelis context", no_binary_name = true)]
struct ContextCommand {
    #[command(flatten)]
    args: ContextArgs,
}

/// A checked request, ready to run.
pub struct PreparedContext {
    /// The model's name.
    pub model_name: String,
    /// The model.
    pub model: Arc<Model>,
    /// The parameters after the preset was applied.
    pub params: ContextParams,
    /// The parsed arguments.
    pub args: ContextArgs,
    /// The PECoRe configuration.
    pub cfg: fidelis_context::PecoreConfig,
    /// The exported shell command.
    pub command: String,
    /// The exported Rust snippet.
    pub rust: String,
}

/// The argument list (without the program name) of the command these parameters describe.
fn argv(model: &str, device: &str, params: &ContextParams) -> Vec<String> {
    let mut argv = vec!["--model".to_string(), model.to_string()];
    if device != "cpu" {
        argv.extend(["--device".to_string(), device.to_string()]);
    }
    for (flag, value) in params.flags() {
        match value {
            // `--flag=value` keeps values that start with `-` from reading as flags.
            Some(v) if v.starts_with('-') => argv.push(format!("{flag}={v}")),
            Some(v) => argv.extend([flag.to_string(), v]),
            None => argv.push(flag.to_string()),
        }
    }
    argv
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
    let served = state.model(&model_name)?;
    let params = match &base {
        Some(p) => req.params.over(&p.params),
        None => req.params,
    };
    for (name, text) in params.texts() {
        if text.chars().count() > limits.max_text_chars {
            return Err(ApiError::too_large(format!(
                "{name} has {} characters; the limit is {}",
                text.chars().count(),
                limits.max_text_chars
            )));
        }
    }
    if params.input_context.is_none() || params.input_current.is_none() {
        return Err(ApiError::bad_request(
            "give input_context and input_current (or a preset)".into(),
        ));
    }
    if let Some(n) = params.max_new_tokens
        && n > limits.max_new_tokens
    {
        return Err(ApiError::unprocessable(format!(
            "max_new_tokens is {n}; the limit is {}",
            limits.max_new_tokens
        )));
    }
    if let Some(n) = params.ig_steps
        && n > limits.max_ig_steps
    {
        return Err(ApiError::unprocessable(format!(
            "ig_steps is {n}; the limit is {}",
            limits.max_ig_steps
        )));
    }
    let argv = argv(&served.name, &state.device, &params);
    let parsed = ContextCommand::try_parse_from(&argv).map_err(|e| {
        ApiError::bad_request(format!(
            "invalid parameters: {}",
            e.render().to_string().trim()
        ))
    })?;
    let args = parsed.args;
    let model = Arc::clone(&served.model);
    let cfg = crate::context::config(&model, &args)
        .map_err(|e| ApiError::bad_request(format!("invalid parameters: {e:#}")))?;
    check_length(&model, &cfg)?;
    let mut shell = vec!["fidelis".to_string(), "context".to_string()];
    shell.extend(argv);
    shell.extend(["--json".to_string(), "context.json".to_string()]);
    let command = shell_command(&shell);
    let rust = rust_snippet(&served.name, &state.device, &params);
    Ok(PreparedContext {
        model_name: served.name.clone(),
        model,
        params,
        args,
        cfg,
        command,
        rust,
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
        Some(chat) => (
            chat.wrap_user(&input.text).0,
            cfg.add_bos && chat.uses_bos(),
        ),
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

/// The Rust code that runs the same attribution with the crates' API.
pub fn rust_snippet(model: &str, device: &str, p: &ContextParams) -> String {
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
        rust_string(p.input_context.as_deref().unwrap_or("")),
        rust_string(p.input_current.as_deref().unwrap_or(""))
    );
    let some_text = |field: &str, v: &Option<String>| {
        v.as_ref()
            .map(|v| format!("    cfg.{field} = Some({}.into());\n", rust_string(v)))
            .unwrap_or_default()
    };
    let text = |field: &str, v: &Option<String>| {
        v.as_ref()
            .map(|v| format!("    cfg.{field} = {}.into();\n", rust_string(v)))
            .unwrap_or_default()
    };
    let parsed = |field: &str, v: &Option<String>| {
        v.as_ref()
            .map(|v| format!("    cfg.{field} = {}.parse()?;\n", rust_string(v)))
            .unwrap_or_default()
    };
    s += &some_text("output_current", &p.output_current);
    s += &some_text("output_context", &p.output_context);
    s += &text("input_template", &p.input_template);
    s += &some_text("output_template", &p.output_template);
    s += &text("contextless_input_template", &p.contextless_input_template);
    s += &text("separator", &p.separator);
    if p.chat == Some(true) {
        s += "    cfg.chat = Some(fidelis_context::prompt::ChatTemplate::from_model(&model.source)?);\n";
    }
    if p.no_bos == Some(true) {
        s += "    cfg.add_bos = false;\n";
    }
    if let Some(n) = p.max_new_tokens {
        s += &format!("    cfg.max_new_tokens = {n};\n");
    }
    s += &parsed("cti_metric", &p.cti_metric);
    let lambda = |v: f32| {
        if v >= 0.0 {
            format!("Some({v:?})")
        } else {
            "None".into()
        }
    };
    if let Some(v) = p.cti_std {
        s += &format!("    cfg.cti_std = {};\n", lambda(v));
    }
    if let Some(k) = p.cti_topk {
        s += &format!("    cfg.cti_topk = Some({k});\n");
    }
    s += &parsed("attribution.method", &p.method);
    s += &parsed("cci_target", &p.target);
    if let Some(n) = p.ig_steps {
        s += &format!("    cfg.attribution.ig_steps = {n};\n");
    }
    if let Some(b) = p.baseline.as_deref().filter(|b| *b != "zero") {
        s += &format!(
            "    cfg.attribution.baseline = fidelis_attribution::token::Baseline::Token(model.tokenizer.single_token({})?);\n",
            rust_string(b)
        );
    }
    s += &parsed("attribution.aggregation", &p.aggregation);
    if let Some(v) = p.cci_std {
        s += &format!("    cfg.cci_std = {};\n", lambda(v));
    }
    if let Some(k) = p.cci_topk {
        s += &format!("    cfg.cci_topk = Some({k});\n");
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
    let out = attribute_context_with_progress(&prepared.model, &prepared.cfg, &mut progress)
        .map_err(|e| e.to_string())?;
    let seconds = start.elapsed().as_secs_f64();
    let text = serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?;
    job.put_file("result.json", text);
    Ok(json!({
        "model": prepared.model_name,
        "params": prepared.params,
        "attribution": out,
        "command": prepared.command,
        "rust": prepared.rust,
        "seconds": seconds,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every parameter set, so every line the snippet can have is written.
    fn all_params() -> ContextParams {
        let text = |s: &str| Some(s.to_string());
        ContextParams {
            input_context: text("The key is in the red box."),
            input_current: text("Question: Where is the key? Answer:"),
            output_current: text("in the red box"),
            output_context: text("Let me see."),
            input_template: text("Context: {context} {current}"),
            output_template: text("{context} {current}"),
            contextless_input_template: text("{current}"),
            separator: text(" "),
            chat: Some(true),
            no_bos: Some(true),
            max_new_tokens: Some(4),
            cti_metric: text("pcxmi"),
            cti_std: Some(0.5),
            cti_topk: Some(3),
            method: text("ig"),
            target: text("contrast-logit-diff"),
            ig_steps: Some(16),
            baseline: text(" the"),
            aggregation: text("sum"),
            cci_std: Some(-1.0),
            cci_topk: Some(2),
        }
    }

    /// The snippet for every parameter is the example `serve_context_snippet`, which `cargo
    /// test` compiles: the exported Rust code builds against the crates' API.
    #[test]
    fn rust_snippet_is_the_compiled_example() {
        let snippet = rust_snippet("organism", "cpu", &all_params());
        let example = include_str!("../../examples/serve_context_snippet.rs.txt");
        assert_eq!(snippet, example, "update the example to this test's output");
    }

    #[test]
    fn every_parameter_is_a_flag_of_fidelis_context() {
        let argv = argv("organism", "cpu", &all_params());
        let parsed = ContextCommand::try_parse_from(&argv).expect("the command parses");
        let a = parsed.args;
        assert_eq!(a.output_current.as_deref(), Some("in the red box"));
        assert_eq!(
            (a.cti_std, a.cci_std, a.cti_topk, a.cci_topk),
            (0.5, -1.0, Some(3), Some(2))
        );
        assert!(a.chat && a.no_bos);
        assert_eq!(
            (a.method.as_str(), a.ig_steps, a.baseline.as_str()),
            ("ig", 16, " the")
        );
    }
}
