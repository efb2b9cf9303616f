//! `fidelis context`: PECoRe context attribution (which answer tokens used the context, and
//! which context tokens they used).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use fidelis_attribution::token::{AttentionSelection, Baseline, TokenMethod};
use fidelis_context::prompt::ChatTemplate;
use fidelis_context::{PecoreConfig, attribute_context_with_progress, render};
use fidelis_models::Model;

use crate::model_args::{ModelFlags, load_model};

/// Arguments of `fidelis context`.
#[derive(clap::Args, Debug)]
pub struct ContextArgs {
    /// The model.
    #[command(flatten)]
    pub model: ModelFlags,
    /// The input context (e.g. a short fact).
    #[arg(long)]
    pub input_context: String,
    /// The input current text (e.g. a question about the fact).
    #[arg(long)]
    pub input_current: String,
    /// The output current text to explain; generated greedily with the context when absent.
    #[arg(long)]
    pub output_current: Option<String>,
    /// An output context forced before the output current text.
    #[arg(long)]
    pub output_context: Option<String>,
    /// How input context and current text are joined.
    #[arg(long, default_value = "{context} {current}")]
    pub input_template: String,
    /// How output context and current text are joined (default `{current}`, or
    /// `{context} {current}` with --output-context).
    #[arg(long)]
    pub output_template: Option<String>,
    /// The contextless input.
    #[arg(long, default_value = "{current}")]
    pub contextless_input_template: String,
    /// Separator between input and output.
    #[arg(long, default_value = " ")]
    pub separator: String,
    /// Wrap the input in the model's chat template (ChatML or Llama 3), as a user turn.
    #[arg(long)]
    pub chat: bool,
    /// Do not prepend the BOS token.
    #[arg(long)]
    pub no_bos: bool,
    /// Limit of the generated output.
    #[arg(long, default_value_t = 32)]
    pub max_new_tokens: usize,
    /// Context-sensitivity metric: kl, ctx-prob-diff or pcxmi.
    #[arg(long, default_value = "kl")]
    pub cti_metric: String,
    /// λ of the CTI selector (|score| ≥ mean + λ·std); negative: no threshold.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub cti_std: f32,
    /// At most this many context-sensitive tokens.
    #[arg(long)]
    pub cti_topk: Option<usize>,
    /// CCI attribution method: saliency, ixg, ig, attention or occlusion.
    #[arg(long, default_value = "saliency")]
    pub method: String,
    /// CCI target: contrast-prob-diff, contrast-logit-diff, probability, log-probability, logit,
    /// kl or pcxmi.
    #[arg(long, default_value = "contrast-prob-diff")]
    pub target: String,
    /// Integrated-gradient steps (with --method ig).
    #[arg(long, default_value_t = 50)]
    pub ig_steps: usize,
    /// Baseline of ig and occlusion: `zero` or a one-token text.
    #[arg(long, default_value = "zero")]
    pub baseline: String,
    /// Reduction over embedding dimensions: l2 or sum.
    #[arg(long, default_value = "l2")]
    pub aggregation: String,
    /// λ of the cue selector; negative: no threshold.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub cci_std: f32,
    /// At most this many cues per token.
    #[arg(long)]
    pub cci_topk: Option<usize>,
    /// Write a self-contained HTML view here.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Write the result as JSON (Inseq's attribute-context fields) here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Plain terminal output (no colours).
    #[arg(long)]
    pub no_color: bool,
}

/// The PECoRe configuration the arguments describe, for a loaded model.
pub fn config(model: &Model, args: &ContextArgs) -> Result<PecoreConfig> {
    let mut cfg = PecoreConfig::new(&args.input_context, &args.input_current);
    cfg.output_current = args.output_current.clone();
    cfg.output_context = args.output_context.clone();
    cfg.input_template = args.input_template.clone();
    cfg.output_template = args.output_template.clone();
    cfg.contextless_input_template = args.contextless_input_template.clone();
    cfg.separator = args.separator.clone();
    cfg.chat = if args.chat {
        Some(ChatTemplate::from_model(&model.source)?)
    } else {
        None
    };
    cfg.add_bos = !args.no_bos;
    cfg.max_new_tokens = args.max_new_tokens;
    cfg.cti_metric = args.cti_metric.parse().map_err(anyhow::Error::msg)?;
    cfg.cti_std = (args.cti_std >= 0.0).then_some(args.cti_std);
    cfg.cti_topk = args.cti_topk;
    cfg.cci_std = (args.cci_std >= 0.0).then_some(args.cci_std);
    cfg.cci_topk = args.cci_topk;
    cfg.cci_target = args.target.parse().map_err(anyhow::Error::msg)?;
    let method: TokenMethod = args.method.parse().map_err(anyhow::Error::msg)?;
    cfg.attribution.method = method;
    cfg.attribution.ig_steps = args.ig_steps;
    cfg.attribution.aggregation = args.aggregation.parse().map_err(anyhow::Error::msg)?;
    cfg.attribution.attention = AttentionSelection::default();
    cfg.attribution.baseline = match args.baseline.as_str() {
        "zero" => Baseline::Zero,
        text => Baseline::Token(
            model
                .tokenizer
                .single_token(text)
                .context("--baseline must be `zero` or one token")?,
        ),
    };
    Ok(cfg)
}

/// Runs `fidelis context`.
pub fn run(args: &ContextArgs) -> Result<()> {
    let model = load_model(&args.model.model, &args.model.device)?;
    let cfg = config(&model, args)?;
    let start = Instant::now();
    let mut bar = crate::progress::Bar::new("context attribution");
    let out = attribute_context_with_progress(&model, &cfg, &mut bar)?;
    bar.finish();
    let secs = start.elapsed().as_secs_f64();
    let color = !args.no_color && std::io::IsTerminal::is_terminal(&std::io::stdout());
    print!("{}", render::terminal(&out, color));
    eprintln!("context attribution in {secs:.2} s");
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&out)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.html {
        std::fs::write(path, render::html(&out))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
