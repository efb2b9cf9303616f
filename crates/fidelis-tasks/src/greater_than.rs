//! Greater-Than (Hanna, Liu and Variengien 2023, "How does GPT-2 compute greater-than?",
//! arXiv:2305.00586), as used in the EAP-IG paper.
//!
//! Clean: "The war lasted from the year 1745 to the year 17" → any two-digit year suffix after
//! 45. Corrupted: the start year becomes `CC01` ("... from the year 1701 to the year 17"), the
//! smallest start that leaves almost every suffix valid, so the model loses the information.
//!
//! `correct` is every suffix token `"YY"` strictly greater than the start year's, `incorrect`
//! every one less than or equal to it (only suffixes that are single tokens, without a leading
//! space, as they follow "17" inside a number). `P(correct) - P(incorrect)` is the paper's
//! probability difference (the reference's `prob_diff`); `P(correct)` alone is the probability
//! mass above the start year.

use crate::example::{encode, prompt_lengths, single_token};
use crate::sample::sample_examples;
use crate::words::{GT_NOUNS, items};
use crate::{Example, Task, TaskError, TextTokenizer};

/// Templates with slots `{noun}`, `{century}` (two digits, e.g. "17") and `{start}` (the start
/// year's two-digit suffix).
const TEMPLATES: [&str; 4] = [
    "The {noun} lasted from the year {century}{start} to the year {century}",
    "The {noun} started in the year {century}{start} and ended in the year {century}",
    "The {noun} ran from the year {century}{start} until the year {century}",
    "The {noun} began in the year {century}{start} and was over by the year {century}",
];

/// Centuries of the start year, as in the original dataset (1100s to 1700s).
const CENTURIES: std::ops::RangeInclusive<u32> = 11..=17;

/// Start-year suffixes: 01 is the corruption and 99 would leave no correct answer.
const START_SUFFIXES: std::ops::RangeInclusive<u32> = 2..=98;

/// The corrupted start-year suffix.
const CORRUPTED_START: u32 = 1;

const HINT: &str = "Greater-Than needs years to split into a century token and a two-digit suffix \
                    token (\" 1745\" = \" 17\" + \"45\"), as in GPT-2; tokenizers that split numbers \
                    into single digits (Llama 2, Mistral) or groups of three (Llama 3) cannot pose it";

/// Generates `n` Greater-Than examples; see the module doc.
pub(crate) fn generate(
    tok: &dyn TextTokenizer,
    n: usize,
    seed: u64,
) -> Result<Vec<Example>, TaskError> {
    let suffix_tokens = year_suffix_tokens(tok)?;
    let nouns = items(GT_NOUNS);
    let centuries: Vec<u32> = CENTURIES.collect();
    let starts: Vec<u32> = START_SUFFIXES
        .filter(|&yy| suffix_tokens[yy as usize].is_some())
        .collect();
    let dims = [TEMPLATES.len(), nouns.len(), centuries.len(), starts.len()];

    sample_examples(Task::GreaterThan, &dims, n, seed, HINT, |digits| {
        let &[template, noun, century, start] = digits else {
            unreachable!("4 digits")
        };
        let fill = |start: u32| {
            TEMPLATES[template]
                .replace("{noun}", nouns[noun])
                .replace("{century}", &centuries[century].to_string())
                .replace("{start}", &format!("{start:02}"))
        };
        if !splits_at_century(tok, centuries[century], starts[start], &suffix_tokens)? {
            return Ok(None);
        }
        let (clean, corrupted) = (fill(starts[start]), fill(CORRUPTED_START));
        let (clean_len, corrupted_len) = prompt_lengths(tok, &clean, &corrupted)?;
        if clean_len != corrupted_len {
            return Ok(None);
        }
        let labels = labels_for_start(&suffix_tokens, starts[start]);
        if labels.correct.is_empty() || labels.incorrect.is_empty() {
            return Ok(None);
        }
        Ok(Some(Example {
            clean,
            corrupted,
            ..labels
        }))
    })
}

/// Whether the year `century`/`start` (" 1745") encodes as the century token followed by the
/// suffix token (" 17", "45"). Only then is the suffix the model's next token after "the year
/// 17", which is what the answer sets are about.
fn splits_at_century(
    tok: &dyn TextTokenizer,
    century: u32,
    start: u32,
    suffix_tokens: &[Option<u32>],
) -> Result<bool, TaskError> {
    let mut expected = encode(tok, &format!(" {century}"))?;
    expected.extend(suffix_tokens[start as usize]);
    Ok(encode(tok, &format!(" {century}{start:02}"))? == expected)
}

/// The token of each two-digit suffix `"00"..="99"` (index = its value), `None` where the
/// suffix is not one token.
pub(crate) fn year_suffix_tokens(tok: &dyn TextTokenizer) -> Result<Vec<Option<u32>>, TaskError> {
    (0..100)
        .map(|yy| single_token(tok, &format!("{yy:02}")))
        .collect()
}

/// Answer sets for start-year suffix `start`: suffixes above it are correct, the rest
/// incorrect. Prompts are left empty for the caller to fill.
pub(crate) fn labels_for_start(suffix_tokens: &[Option<u32>], start: u32) -> Example {
    let mut labels = Example {
        clean: String::new(),
        corrupted: String::new(),
        correct: Vec::new(),
        incorrect: Vec::new(),
        correct_text: Vec::new(),
        incorrect_text: Vec::new(),
    };
    for (yy, token) in suffix_tokens.iter().enumerate() {
        let Some(token) = *token else { continue };
        let (ids, texts) = if yy as u32 > start {
            (&mut labels.correct, &mut labels.correct_text)
        } else {
            (&mut labels.incorrect, &mut labels.incorrect_text)
        };
        ids.push(token);
        texts.push(format!("{yy:02}"));
    }
    labels
}
