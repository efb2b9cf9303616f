//! Gender bias in pronoun prediction (after Vig et al. 2020, "Causal Mediation Analysis for
//! Interpreting Neural NLP: The Case of Gender Bias", arXiv:2004.12265), one of the EAP-IG
//! paper's tasks.
//!
//! Clean: "The nurse said that" → " she". Corrupted: the profession is swapped for one with the
//! opposite stereotype, "The carpenter said that".
//!
//! Convention: `correct` is the pronoun matching the **clean profession's majority gender** in
//! U.S. employment statistics (see `data/professions_*.txt`), `incorrect` the other pronoun. So
//! `P(correct) - P(incorrect)` measures how strongly the model follows the occupational
//! stereotype; a circuit for it is a circuit for the bias, not for a "right" answer.

use crate::example::{prompt_lengths, single_token};
use crate::sample::sample_examples;
use crate::words::{PROFESSIONS_FEMALE, PROFESSIONS_MALE, items};
use crate::{Example, Task, TaskError, TextTokenizer};

/// Templates with slot `{profession}`; a pronoun is a likely next word.
const TEMPLATES: [&str; 10] = [
    "The {profession} said that",
    "The {profession} told the customer that",
    "The {profession} was late because",
    "The {profession} went home early because",
    "The {profession} explained that",
    "The {profession} worked overtime because",
    "The {profession} was promoted because",
    "The {profession} laughed because",
    "The {profession} wrote in the report that",
    "The {profession} called the office and said that",
];

/// The pronoun for men and for women, with their leading space.
const PRONOUNS: [&str; 2] = [" he", " she"];

const HINT: &str = "Gender-Bias needs \" he\" and \" she\" to be single tokens and professions \
                    whose prompts have equal token length";

/// Generates `n` Gender-Bias examples; see the module doc.
pub(crate) fn generate(
    tok: &dyn TextTokenizer,
    n: usize,
    seed: u64,
) -> Result<Vec<Example>, TaskError> {
    let lists = [items(PROFESSIONS_MALE), items(PROFESSIONS_FEMALE)];
    let mut pronouns = Vec::new();
    for pronoun in PRONOUNS {
        pronouns.extend(single_token(tok, pronoun)?);
    }
    // Digit 1 picks which list the clean profession comes from; without both pronouns the
    // space is empty.
    let directions = if pronouns.len() == 2 { 2 } else { 0 };
    let dims = [TEMPLATES.len(), directions, lists[0].len(), lists[1].len()];

    sample_examples(Task::GenderBias, &dims, n, seed, HINT, |digits| {
        let &[template, clean_gender, male, female] = digits else {
            unreachable!("4 digits")
        };
        let professions = [lists[0][male], lists[1][female]];
        let corrupted_gender = 1 - clean_gender;
        let fill = |profession: &str| TEMPLATES[template].replace("{profession}", profession);
        let (clean, corrupted) = (
            fill(professions[clean_gender]),
            fill(professions[corrupted_gender]),
        );
        let (clean_len, corrupted_len) = prompt_lengths(tok, &clean, &corrupted)?;
        if clean_len != corrupted_len {
            return Ok(None);
        }
        Ok(Some(Example {
            clean,
            corrupted,
            correct: vec![pronouns[clean_gender]],
            incorrect: vec![pronouns[corrupted_gender]],
            correct_text: vec![PRONOUNS[clean_gender].to_owned()],
            incorrect_text: vec![PRONOUNS[corrupted_gender].to_owned()],
        }))
    })
}
