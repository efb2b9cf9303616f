//! Subject-verb agreement (after Linzen, Dupoux and Goldberg 2016, arXiv:1611.01368; the
//! attractor form follows Finlayson et al. 2021, arXiv:2106.06087).
//!
//! Clean: "The author near the pilots" → " is" (singular subject; the plural attractor
//! "pilots" is the distraction). Corrupted: the subject's number flips, "The authors near the
//! pilots", so the agreeing verb flips too.
//!
//! `correct` is the verb form agreeing with the clean subject (" is"), `incorrect` the other
//! form (" are"). Subjects and attractors come in both numbers; each example uses one verb pair
//! (is/are, was/were, has/have).

use crate::example::{prompt_lengths, single_token};
use crate::sample::{distinct_dims, distinct_positions, sample_examples};
use crate::words::{SVA_NOUNS, SVA_VERBS, pairs};
use crate::{Example, Task, TaskError, TextTokenizer};

/// Templates with slots `{subject}` and `{attractor}`; the verb comes next.
const TEMPLATES: [&str; 6] = [
    "The {subject} near the {attractor}",
    "The {subject} behind the {attractor}",
    "The {subject} next to the {attractor}",
    "The {subject} beside the {attractor}",
    "The {subject} with the {attractor}",
    "The {subject} across from the {attractor}",
];

/// Grammatical number of a noun.
const NUMBERS: [Number; 2] = [Number::Singular, Number::Plural];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Number {
    Singular,
    Plural,
}

impl Number {
    fn flipped(self) -> Self {
        match self {
            Number::Singular => Number::Plural,
            Number::Plural => Number::Singular,
        }
    }

    /// The form of a `singular: plural` pair with this number.
    fn pick(self, (singular, plural): (&'static str, &'static str)) -> &'static str {
        match self {
            Number::Singular => singular,
            Number::Plural => plural,
        }
    }
}

const HINT: &str = "SVA needs nouns whose singular and plural give prompts of equal token length, \
                    and single-token verbs (\" is\", \" are\")";

/// Generates `n` SVA examples; see the module doc.
pub(crate) fn generate(
    tok: &dyn TextTokenizer,
    n: usize,
    seed: u64,
) -> Result<Vec<Example>, TaskError> {
    let nouns = pairs(SVA_NOUNS);
    let mut verbs = Vec::new();
    for (singular, plural) in pairs(SVA_VERBS) {
        let ids = (
            single_token(tok, &format!(" {singular}"))?,
            single_token(tok, &format!(" {plural}"))?,
        );
        if let (Some(singular_id), Some(plural_id)) = ids {
            verbs.push([(singular, singular_id), (plural, plural_id)]);
        }
    }
    let mut dims = vec![TEMPLATES.len(), verbs.len(), NUMBERS.len(), NUMBERS.len()];
    dims.extend(distinct_dims(nouns.len(), 2));

    sample_examples(Task::Sva, &dims, n, seed, HINT, |digits| {
        let (&[template, verb, subject_number, attractor_number], picks) = digits.split_at(4)
        else {
            unreachable!("4 slot digits, then 2 noun digits")
        };
        let [subject, attractor] = distinct_positions(picks)[..] else {
            unreachable!("2 nouns")
        };
        let number = NUMBERS[subject_number];
        let attractor = NUMBERS[attractor_number].pick(nouns[attractor]);
        let fill = |number: Number| {
            TEMPLATES[template]
                .replace("{subject}", number.pick(nouns[subject]))
                .replace("{attractor}", attractor)
        };
        let (clean, corrupted) = (fill(number), fill(number.flipped()));
        let (clean_len, corrupted_len) = prompt_lengths(tok, &clean, &corrupted)?;
        if clean_len != corrupted_len {
            return Ok(None);
        }
        let [singular, plural] = verbs[verb];
        let (right, wrong) = match number {
            Number::Singular => (singular, plural),
            Number::Plural => (plural, singular),
        };
        Ok(Some(Example {
            clean,
            corrupted,
            correct: vec![right.1],
            incorrect: vec![wrong.1],
            correct_text: vec![format!(" {}", right.0)],
            incorrect_text: vec![format!(" {}", wrong.0)],
        }))
    })
}
