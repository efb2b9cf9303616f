//! The example type, the tokenizer seam, and the checks every example must pass.

use serde::{Deserialize, Serialize};

use crate::TaskError;

/// Anything that turns text into token ids, without adding BOS or other special tokens.
///
/// Implemented for closures `Fn(&str) -> Result<Vec<u32>, String>`, so a Hugging Face
/// tokenizer plugs in as `&|text: &str| Ok(hf.encode(text, false).map_err(|e| e.to_string())?.get_ids().to_vec())`.
pub trait TextTokenizer {
    /// Encodes `text` to token ids (no BOS).
    fn encode(&self, text: &str) -> Result<Vec<u32>, String>;

    /// The id text outside the vocabulary encodes to, if there is one: an answer that encodes
    /// to it alone is not a token of the vocabulary, and is refused rather than scored.
    fn unknown_id(&self) -> Option<u32> {
        None
    }
}

impl<F: Fn(&str) -> Result<Vec<u32>, String>> TextTokenizer for F {
    fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        self(text)
    }
}

/// One clean/corrupted prompt pair with its answer tokens.
///
/// Prompts are text; the caller tokenizes them (and prepends BOS). Generators and loaders
/// guarantee `encode(clean).len() == encode(corrupted).len()` for the tokenizer they were given,
/// so the two runs line up position by position, as edge attribution needs.
///
/// The metric convention is the EAP-IG reference's: probability (or logit) difference is
/// `P(correct) - P(incorrect)` at the last prompt position, summed over each set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    /// The prompt that elicits the behaviour.
    pub clean: String,
    /// The prompt with the information the behaviour depends on replaced.
    pub corrupted: String,
    /// Token ids of the right answer(s) to the clean prompt.
    pub correct: Vec<u32>,
    /// Token ids of the competing wrong answer(s).
    pub incorrect: Vec<u32>,
    /// Text of each `correct` token, in the same order (e.g. `" Mary"`). Empty when the source
    /// gave only token ids (an EAP-IG CSV).
    pub correct_text: Vec<String>,
    /// Text of each `incorrect` token, in the same order. Empty when the source gave only ids.
    pub incorrect_text: Vec<String>,
}

/// Encodes `text`, turning a tokenizer failure into [`TaskError::Tokenizer`].
pub(crate) fn encode(tok: &dyn TextTokenizer, text: &str) -> Result<Vec<u32>, TaskError> {
    tok.encode(text)
        .map_err(|message| TaskError::Tokenizer(format!("{message} (while encoding {text:?})")))
}

/// The one token `text` encodes to, or `None` when it is not exactly one token of the
/// vocabulary (the unknown token does not count).
pub(crate) fn single_token(tok: &dyn TextTokenizer, text: &str) -> Result<Option<u32>, TaskError> {
    let ids = encode(tok, text)?;
    Ok(match ids.as_slice() {
        [id] if Some(*id) != tok.unknown_id() => Some(*id),
        _ => None,
    })
}

/// The one token `answer` encodes to, or [`TaskError::NotSingleToken`].
pub(crate) fn require_single_token(
    tok: &dyn TextTokenizer,
    answer: &str,
) -> Result<u32, TaskError> {
    let tokens = encode(tok, answer)?;
    match tokens.as_slice() {
        [id] if Some(*id) == tok.unknown_id() => Err(TaskError::UnknownAnswer {
            answer: answer.to_owned(),
            id: *id,
        }),
        [id] => Ok(*id),
        _ => Err(TaskError::NotSingleToken {
            answer: answer.to_owned(),
            tokens,
        }),
    }
}

/// Token counts of the clean and corrupted prompts, as `(clean, corrupted)`.
pub(crate) fn prompt_lengths(
    tok: &dyn TextTokenizer,
    clean: &str,
    corrupted: &str,
) -> Result<(usize, usize), TaskError> {
    Ok((encode(tok, clean)?.len(), encode(tok, corrupted)?.len()))
}

/// Checks that every example's clean and corrupted prompts encode to the same number of tokens.
///
/// Returns [`TaskError::UnequalLength`] naming the first offending example (0-based) and both
/// token counts.
pub fn check_equal_lengths(examples: &[Example], tok: &dyn TextTokenizer) -> Result<(), TaskError> {
    for (index, example) in examples.iter().enumerate() {
        let (clean, corrupted) = prompt_lengths(tok, &example.clean, &example.corrupted)?;
        if clean != corrupted {
            return Err(TaskError::UnequalLength {
                index,
                clean,
                corrupted,
            });
        }
    }
    Ok(())
}
