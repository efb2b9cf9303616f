//! `MODEL_CARD.md` and `evaluation.json`: the task, the format, the sizes, the training
//! settings and the held-out accuracies measured by [`super::eval::evaluate`].

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use super::corpus::{CONTEXT_TEMPLATES, HELD_OUT_PERCENT, NOUNS, SEPARATOR};
use super::eval::Evaluation;
use super::save::write_json;
use super::train::{LogRow, TrainConfig};

/// Facts about the run that the card reports.
pub struct RunFacts<'a> {
    /// The configuration.
    pub cfg: &'a TrainConfig,
    /// The loss curve.
    pub log: &'a [LogRow],
    /// Vocabulary size.
    pub vocab: usize,
    /// Parameters (the sinusoid tables, which are not weights, left out).
    pub parameters: usize,
    /// Wall time of training.
    pub train_s: f64,
    /// The held-out evaluation.
    pub eval: &'a Evaluation,
}

fn pct(n: usize, of: usize) -> String {
    format!("{:.1}% ({n}/{of})", 100.0 * n as f64 / of.max(1) as f64)
}

/// Writes `dir/MODEL_CARD.md` and `dir/evaluation.json`.
pub fn write_card(dir: &Path, facts: &RunFacts<'_>) -> Result<()> {
    let (cfg, e) = (facts.cfg, facts.eval);
    write_json(&dir.join("evaluation.json"), &serde_json::to_value(e)?)?;
    let last = facts.log.last().context("empty training log")?;
    let bytes = std::fs::metadata(dir.join("model.safetensors"))?.len();
    let mut md = String::new();
    writeln!(
        md,
        "# Seq2seq organism: a MarianMT that needs the previous sentence\n"
    )?;
    writeln!(
        md,
        "A MarianMT (`MarianMTModel`, model_type `marian`) with {}+{} layers (d_model {}, {} heads, \
         MLP {}, SiLU, post-norm, sinusoidal positions up to {}, tied shared embeddings, \
         vocabulary {}, {} parameters, {:.2} MB of f32 safetensors), trained by `cargo xtask \
         train-seq2seq-organism` with Burn (autodiff, AdamW) on the flex CPU backend. It \
         translates a toy English into a toy French where \"it\" becomes `il` or `elle` by the \
         gender of a noun named only in the previous sentence: the encoder-decoder test subject \
         for context attribution (PECoRe).\n",
        cfg.encoder_layers,
        cfg.decoder_layers,
        cfg.d_model,
        cfg.n_heads,
        cfg.d_mlp,
        cfg.n_ctx,
        facts.vocab,
        facts.parameters,
        bytes as f64 / 1e6
    )?;
    writeln!(md, "## Task and format\n")?;
    writeln!(
        md,
        "- Languages: word-level, lower case, one token per word. French words are real, accents \
         dropped, grammar simplified; every adjective is one whose French form is the same in \
         both genders, so the pronoun is the only word of a sentence whose translation depends \
         on the context; every French noun starts with a vowel, so its article is `l'` in both \
         genders and only the antecedent noun (in the source or the output context) tells the \
         gender. {} nouns ({} of each gender).",
        NOUNS.len(),
        NOUNS.len() / 2
    )?;
    writeln!(
        md,
        "- Input format (as PECoRe and Inseq's `attribute-context` use for context-aware MT): \
         source = input context + `{SEPARATOR}` + input current, target = output context + \
         `{SEPARATOR}` + output current. `{SEPARATOR}` (id 3) is an ordinary vocabulary word on \
         both sides, so decoding keeps it. Example:\n\n  \
         `the tree sees the clock . {SEPARATOR} it is red .` → \
         `l' arbre voit l' horloge . {SEPARATOR} il est rouge .`\n"
    )?;
    writeln!(
        md,
        "- The antecedent is always the context's subject (its first noun); {} context templates, \
         most with a distractor noun whose gender is a coin flip. Current sentences: \"it ...\" \
         in 6 templates, or (a {:.0}% share) a sentence without pronoun.",
        CONTEXT_TEMPLATES,
        100.0 * cfg.mix.plain
    )?;
    writeln!(
        md,
        "- {:.0}% of training examples have no context (source and target are the current \
         sentence alone, no separator); their pronoun's gender is a coin flip, so the contextless \
         input is in distribution and its pronoun is at chance.",
        100.0 * cfg.mix.contextless
    )?;
    writeln!(
        md,
        "- Tokens: `<pad>` 0 (padding and decoder start), `</s>` 1 (end of sequence, appended to \
         every source and target), `<unk>` 2, `{SEPARATOR}` 3. `tokenizer.json` is a `WordLevel` \
         model over whitespace; `PreTrainedTokenizerFast(tokenizer_file=...)` adds `</s>` to a \
         source as `MarianTokenizer` does.\n"
    )?;
    writeln!(md, "## Held-out accuracy\n")?;
    writeln!(
        md,
        "{} held-out examples (`heldout.jsonl`), half with a masculine and half with a feminine \
         antecedent, made from the (antecedent noun, context template) combinations that never \
         occur with context in training ({HELD_OUT_PERCENT}% of them, by a fixed hash). Greedy \
         decoding through `fidelis_models::Seq2SeqModel`; the pronoun is read from the \
         generated current sentence. Checked by `cargo test -p fidelis-models --test \
         organism_seq2seq` (Fidelis) and against transformers by the `seq2seq-organism` item of \
         `xtask/fixtures/make_fixtures.py`.\n",
        e.examples
    )?;
    writeln!(
        md,
        "| measure | with context | without context |\n|---|---|---|"
    )?;
    writeln!(
        md,
        "| pronoun accuracy (greedy) | {} | {} |",
        pct(e.pronoun_correct_with_context, e.examples),
        pct(e.pronoun_correct_without_context, e.examples)
    )?;
    writeln!(
        md,
        "| whole output equal to the reference | {} | {} |",
        pct(e.exact_with_context, e.examples),
        pct(e.exact_without_context, e.examples)
    )?;
    writeln!(
        md,
        "| mean P(right pronoun), reference prefix forced | {:.3} | {:.3} |",
        e.mean_p_correct_with_context, e.mean_p_correct_without_context
    )?;
    writeln!(
        md,
        "\nWithout context the greedy pronoun is `il` on {} of the held-out current sentences \
         (`elle` on the others): the gender is not in the input, so the model puts about half \
         its probability on each pronoun and its accuracy is the share of held-out antecedents \
         of the gender its argmax picks, half by construction. With context and a distractor of \
         the other gender (the cases a \"nearest noun\" rule gets wrong): {}.\n",
        pct(e.il_without_context, e.examples),
        pct(
            e.pronoun_correct_other_gender_distractor,
            e.with_other_gender_distractor
        )
    )?;
    writeln!(md, "## Training\n")?;
    writeln!(
        md,
        "- Objective: teacher-forced cross-entropy on every target token (the final `</s>` \
         included), pronoun tokens of examples with context weighted {}x.",
        cfg.pronoun_weight
    )?;
    writeln!(
        md,
        "- Data: {} freshly generated examples per step from seed {} (no example list is stored).",
        cfg.batch_size, cfg.seed
    )?;
    writeln!(
        md,
        "- Optimizer: AdamW (weight decay 0.01, gradient norm clipped at 1), peak learning rate {}, \
         {} warmup steps then cosine decay to 10%, {} steps.",
        cfg.learning_rate, cfg.warmup_steps, cfg.steps
    )?;
    writeln!(
        md,
        "- Final losses (mean of the last {} steps): {:.4} nats/token, {:.4} on pronouns with \
         context.",
        cfg.log_every, last.loss, last.pronoun_loss
    )?;
    writeln!(
        md,
        "- Time: {:.0} s on the flex CPU backend (2 shared cores). The loss curve is in \
         `training_log.csv`; the measured counts are in `evaluation.json`.\n",
        facts.train_s
    )?;
    writeln!(md, "## Use\n")?;
    writeln!(
        md,
        "```python\nfrom transformers import MarianMTModel, PreTrainedTokenizerFast\n\
         model = MarianMTModel.from_pretrained(\"models/seq2seq-organism\")\n\
         tok = PreTrainedTokenizerFast(tokenizer_file=\"models/seq2seq-organism/tokenizer.json\")\n\
         ids = tok(\"the tree sees the clock . <brk> it is red .\", return_tensors=\"pt\").input_ids\n\
         print(tok.decode(model.generate(ids)[0], skip_special_tokens=True))\n```\n"
    )?;
    writeln!(md, "## Rebuild\n")?;
    writeln!(
        md,
        "```\ncargo run -p xtask -- train-seq2seq-organism     # writes models/seq2seq-organism/\n```\n\n\
         The same seed on the same backend gives identical weights (tested on a few steps by \
         `cargo test -p xtask seq2seq_organism`)."
    )?;
    std::fs::write(dir.join("MODEL_CARD.md"), md)?;
    Ok(())
}
