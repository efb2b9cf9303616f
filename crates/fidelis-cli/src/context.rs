//! `fidelis context`: PECoRe context attribution (which answer tokens used the context, and
//! which context tokens they used).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use fidelis_context::pecore::{STAGE_CCI, STAGE_CTI, STAGE_GENERATING};
use fidelis_context::prompt::ChatTemplate;
use fidelis_context::{
    ContextAttribution, PecoreConfig, attribute_context_seq2seq_with_progress,
    attribute_context_with_progress, render,
};
use fidelis_models::{Model, Seq2SeqModel};

use crate::model_args::{AnyModel, ModelFlags};
use crate::options::ContextOptions;
use crate::progress::items;

/// Arguments of `fidelis context`.
#[derive(clap::Args, Debug)]
pub struct ContextArgs {
    /// The model.
    #[command(flatten)]
    pub model: ModelFlags,
    /// The PECoRe parameters.
    #[command(flatten)]
    pub opts: ContextOptions,
    /// Write a self-contained HTML view here (Inseq: `--viz_path`).
    #[arg(long, help_heading = "Output", visible_alias = "viz-path", aliases = ["viz_path"])]
    pub html: Option<PathBuf>,
    /// Write the result as JSON (Inseq's attribute-context fields) here (Inseq: `--save_path`,
    /// `-o`).
    #[arg(long, short = 'o', help_heading = "Output", visible_alias = "save-path",
          aliases = ["save_path"])]
    pub json: Option<PathBuf>,
    /// Plain terminal output (no colours).
    #[arg(long, help_heading = "Output")]
    pub no_color: bool,
    /// Run every line of this JSONL file: each line is a JSON object of `context` options
    /// (`{"input_context": "...", "input_current": "..."}`, any field of the flags above by its
    /// long name with `_`) put over the flags given here; the results go to `--json`, one JSON
    /// object per line, with a progress bar over the lines.
    #[arg(long, help_heading = "Batch", requires = "json")]
    pub dataset: Option<PathBuf>,
}

/// The one input a run cannot do without (the other fields have defaults).
fn check_input(opts: &ContextOptions) -> Result<()> {
    anyhow::ensure!(
        !opts.input_current.trim().is_empty(),
        "the input current text is empty: give --input-current, or --dataset FILE.jsonl with an \
         `input_current` on every line"
    );
    Ok(())
}

/// Runs `fidelis context --dataset`: one PECoRe attribution per line, written as JSONL.
fn run_dataset(args: &ContextArgs, dataset: &Path, out_path: &Path) -> Result<()> {
    let examples = crate::dataset::examples(dataset, &args.opts, |opts| {
        opts.validate()?;
        check_input(opts)
    })?;
    let model = args.model.load_any()?;
    crate::dataset::run("context dataset", dataset, &examples, out_path, |opts| {
        attribute(&model, opts, &mut fidelis_circuit::Silent)
    })
}

/// Runs PECoRe with either kind of model.
pub fn attribute(
    model: &AnyModel,
    opts: &ContextOptions,
    progress: &mut dyn fidelis_circuit::Progress,
) -> Result<ContextAttribution> {
    Ok(match model {
        AnyModel::DecoderOnly(m) => {
            attribute_context_with_progress(m, &config(m, opts)?, progress)?
        }
        AnyModel::Seq2Seq(m) => {
            attribute_context_seq2seq_with_progress(m, &config_seq2seq(m, opts)?, progress)?
        }
    })
}

/// The PECoRe configuration for an encoder-decoder (no chat template, no BOS).
pub fn config_seq2seq(model: &Seq2SeqModel, args: &ContextOptions) -> Result<PecoreConfig> {
    anyhow::ensure!(
        !args.chat,
        "--chat applies a decoder-only chat template; {} is an encoder-decoder",
        model.source.display()
    );
    let mut cfg = common_config(args)?;
    cfg.attribution = args.token.config_for(&model.tokenizer)?;
    Ok(cfg)
}

/// The PECoRe configuration the arguments describe, for a loaded model.
pub fn config(model: &Model, args: &ContextOptions) -> Result<PecoreConfig> {
    let mut cfg = common_config(args)?;
    cfg.chat = if args.chat {
        Some(ChatTemplate::from_model(&model.source)?)
    } else {
        None
    };
    cfg.attribution = args.token.config(model)?;
    Ok(cfg)
}

/// The options both kinds of model share.
fn common_config(args: &ContextOptions) -> Result<PecoreConfig> {
    args.validate()?;
    let mut cfg = PecoreConfig::new(&args.input_context, &args.input_current);
    cfg.output_current = args.output_current.clone();
    cfg.output_context = args.output_context.clone();
    cfg.input_template = args.input_template.clone();
    cfg.output_template = args.output_template.clone();
    cfg.contextless_input_template = args.contextless_input_template.clone();
    cfg.separator = args.separator.clone();
    cfg.add_bos = !args.no_bos;
    cfg.max_new_tokens = args.max_new_tokens;
    cfg.cti_metric = args.cti_metric;
    cfg.cti_std = (args.cti_std >= 0.0).then_some(args.cti_std);
    cfg.cti_topk = args.cti_topk;
    cfg.cci_std = (args.cci_std >= 0.0).then_some(args.cci_std);
    cfg.cci_topk = args.cci_topk;
    cfg.cci_target = args.target;
    cfg.inseq_compat = args.inseq_compat;
    cfg.source_lang = args.source_lang.clone();
    cfg.target_lang = args.target_lang.clone();
    Ok(cfg)
}

/// What the bar says during each PECoRe stage.
fn stage_label(stage: &str) -> &str {
    match stage {
        STAGE_GENERATING => "generating the answer",
        STAGE_CTI => "CTI: context-sensitive tokens",
        STAGE_CCI => "CCI: cues in the context",
        other => other,
    }
}

/// Runs `fidelis context`.
pub fn run(args: &ContextArgs) -> Result<()> {
    if let (Some(dataset), Some(out)) = (&args.dataset, &args.json) {
        return run_dataset(args, dataset, out);
    }
    check_input(&args.opts)?;
    args.opts.validate()?;
    let model = args.model.load_any()?;
    let start = Instant::now();
    let mut bar = crate::progress::Bar::new("context attribution");
    let mut labelled = |stage: &str, done: usize, total: usize| {
        crate::progress::Progress::tick(&mut bar, stage_label(stage), done, total)
    };
    let out = attribute(&model, &args.opts, &mut labelled)?;
    bar.finish();
    let color = !args.no_color && std::io::IsTerminal::is_terminal(&std::io::stdout());
    print!("{}", render::terminal(&out, color));
    if let Some(path) = &args.json {
        crate::output::write(path, serde_json::to_string_pretty(&out)?)?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.html {
        crate::output::write(path, render::html(&out))?;
        eprintln!("wrote {}", path.display());
    }
    crate::progress::summary(
        &format!(
            "context attribution: {} of {} context-sensitive, attributed to {}",
            out.cci_scores.len(),
            items(out.output_current_tokens.len(), "output token"),
            items(out.input_context_tokens.len(), "context token")
        ),
        start,
    );
    Ok(())
}

#[cfg(test)]
mod inseq_names {
    use clap::Parser;

    use super::ContextArgs;

    #[derive(Parser)]
    #[command(no_binary_name = true)]
    struct Command {
        #[command(flatten)]
        args: ContextArgs,
    }

    /// Inseq's `attribute-context` flag names (underscored, as Inseq writes them) parse to the
    /// same options as Fidelis's own.
    #[test]
    fn inseq_flag_names_are_accepted() {
        let parse = |argv: &[&str]| Command::try_parse_from(argv).unwrap().args;
        let inseq = parse(&[
            "--model_name_or_path",
            "organism",
            "--input_context_text",
            "The key is in the box.",
            "--input_current_text",
            "Where is the key?",
            "--output_current_text",
            "In the box.",
            "--input_template",
            "{context} {current}",
            "--contextless_input_current_text",
            "Q: {current}",
            "--context_sensitivity_metric",
            "kl_divergence",
            "--context_sensitivity_std_threshold",
            "0",
            "--context_sensitivity_topk",
            "2",
            "--attribution_method",
            "ig",
            "--attributed_fn",
            "contrast_prob_diff",
            "--attribution_std_threshold",
            "0.5",
            "--attribution_topk",
            "3",
            "--decoder_input_output_separator",
            " ",
            "--save_path",
            "out.json",
            "--viz_path",
            "out.html",
        ]);
        let native = parse(&[
            "--model",
            "organism",
            "--input-context",
            "The key is in the box.",
            "--input-current",
            "Where is the key?",
            "--output-current",
            "In the box.",
            "--contextless-input-template",
            "Q: {current}",
            "--cti-metric",
            "kl",
            "--cti-std",
            "0",
            "--cti-topk",
            "2",
            "--method",
            "ig",
            "--target",
            "contrast-prob-diff",
            "--cci-std",
            "0.5",
            "--cci-topk",
            "3",
            "--json",
            "out.json",
            "--html",
            "out.html",
        ]);
        assert_eq!(inseq.opts, native.opts);
        assert_eq!(inseq.model.model, native.model.model);
        assert_eq!((inseq.json, inseq.html), (native.json, native.html));
        assert_eq!(
            parse(&[
                "--input-context",
                "a",
                "--input-current",
                "b",
                "-o",
                "x.json"
            ])
            .json
            .unwrap()
            .to_str(),
            Some("x.json")
        );
    }
}
