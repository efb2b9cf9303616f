//! The synthetic training corpus: the task formats Fidelis ships, written out with their answers.
//!
//! Prompts come from `fidelis-tasks` itself (IOI, Greater-Than and SVA through
//! [`fidelis_tasks::generate`], context copying through [`fidelis_tasks::context_copy`]), so the
//! organism learns exactly the distributions Fidelis later tests it on. Every document is
//! `<|endoftext|> prompt answer . <|endoftext|>`; prompts on the held-out side of
//! [`fidelis_tasks::split`] are left out, so tests can measure accuracy on unseen prompts.

use std::ops::Range;

use anyhow::{Context, Result, bail};
use fidelis_tasks::context_copy::context_questions;
use fidelis_tasks::split::is_held_out;
use fidelis_tasks::{Task, generate};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::tokenizer::{self, END_OF_TEXT_ID, Interner};

/// The task families of the corpus, in the order of `FAMILY_SHARE`.
pub const FAMILIES: [&str; 4] = ["ioi", "greater-than", "sva", "context-copy"];

/// What the corpus holds: how many documents of each family.
#[derive(Debug, Clone, PartialEq)]
pub struct CorpusConfig {
    /// Documents generated per family, relative to `docs_per_family`, in the order of
    /// [`FAMILIES`] (IOI is the slowest to learn, so it gets the most).
    pub family_share: [f64; 4],
    /// Documents per unit of share.
    pub docs_per_family: usize,
}

/// One training sequence.
#[derive(Debug, Clone)]
pub struct Document {
    /// Token ids, starting and ending with `<|endoftext|>`.
    pub tokens: Vec<u32>,
    /// Positions of the answer tokens in `tokens`.
    pub answer: Range<usize>,
}

/// The corpus and the tokenizer built from it.
pub struct Corpus {
    /// Vocabulary pieces in id order (after the two special tokens).
    pub pieces: Vec<String>,
    /// Training documents (no held-out prompt among them).
    pub documents: Vec<Document>,
}

/// A prompt and the answer the corpus writes after it.
struct Text {
    prompt: String,
    answer: String,
}

/// Generates the corpus: about `cfg.docs_per_family` documents per task family (scaled by each
/// family's share), deterministically from `seed`.
pub fn build(cfg: &CorpusConfig, seed: u64) -> Result<Corpus> {
    let interner = Interner::new()?;
    let tok = |text: &str| interner.encode(text);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut texts = Vec::new();
    let count =
        |family: usize| (cfg.docs_per_family as f64 * cfg.family_share[family]).ceil() as usize;
    for (family, task) in [Task::Ioi, Task::GreaterThan, Task::Sva]
        .into_iter()
        .enumerate()
    {
        let examples = generate(task, &tok, count(family), seed.wrapping_add(family as u64))
            .with_context(|| format!("generating {task} documents"))?;
        for example in examples {
            // Greater-Than has many right answers; the corpus writes one at random, so the
            // model learns the whole set's probability mass.
            let pick = rng.random_range(0..example.correct_text.len());
            texts.push(Text {
                prompt: example.clean,
                answer: example.correct_text[pick].clone(),
            });
        }
    }
    let family = FAMILIES.len() - 1;
    for question in context_questions(count(family), seed.wrapping_add(family as u64)) {
        texts.push(Text {
            prompt: question.prompt(),
            answer: question.answer,
        });
    }
    texts.retain(|text| !is_held_out(&text.prompt));
    for text in &texts {
        tok(&text.prompt)
            .and_then(|_| tok(&text.answer))
            .and_then(|_| tok("."))
            .map_err(anyhow::Error::msg)?;
    }

    let pieces = interner.pieces();
    let tokenizer = tokenizer::build(&pieces)?;
    let encode = |text: &str| -> Result<Vec<u32>> {
        let ids = tokenizer
            .encode(text, false)
            .map_err(anyhow::Error::msg)?
            .get_ids()
            .to_vec();
        if ids.contains(&1) {
            bail!("{text:?} has a piece outside the vocabulary");
        }
        Ok(ids)
    };
    let documents = texts
        .iter()
        .map(|text| {
            let mut tokens = vec![END_OF_TEXT_ID];
            tokens.extend(encode(&text.prompt)?);
            let start = tokens.len();
            tokens.extend(encode(&text.answer)?);
            let answer = start..tokens.len();
            tokens.extend(encode(".")?);
            tokens.push(END_OF_TEXT_ID);
            Ok(Document { tokens, answer })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Corpus { pieces, documents })
}
