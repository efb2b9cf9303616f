//! Country-Capital: factual recall, one of the tasks of the EAP-IG paper (Hanna et al. 2024,
//! arXiv:2403.17806); see Meng et al. 2022 (arXiv:2202.05262) for where such facts live.
//!
//! Clean: "The capital of France is" → " Paris". Corrupted: another country, "The capital of
//! Egypt is"; `correct` is the clean country's capital, `incorrect` the corrupted country's.

use crate::example::prompt_lengths;
use crate::sample::{distinct_dims, distinct_positions, sample_examples, single_token_words};
use crate::words::{COUNTRY_CAPITALS, pairs};
use crate::{Example, Task, TaskError, TextTokenizer};

/// Templates with slot `{country}`; the capital comes next.
const TEMPLATES: [&str; 5] = [
    "The capital of {country} is",
    "The capital city of {country} is",
    "The government of {country} sits in the city of",
    "As everyone knows, the capital of {country} is",
    "On the map, the capital of {country} is marked as",
];

const HINT: &str = "Country-Capital needs capitals that are single tokens with a leading space \
                    (\" Paris\"); with this tokenizer too few are";

/// Generates `n` Country-Capital examples; see the module doc.
pub(crate) fn generate(
    tok: &dyn TextTokenizer,
    n: usize,
    seed: u64,
) -> Result<Vec<Example>, TaskError> {
    let all = pairs(COUNTRY_CAPITALS);
    let capitals = single_token_words(tok, all.iter().map(|p| p.1), |capital| {
        format!(" {capital}")
    })?;
    // Countries whose capital survived the single-token filter, with that capital's token.
    let countries: Vec<(&str, &str, u32)> = all
        .iter()
        .filter_map(|&(country, capital)| {
            let &(_, id) = capitals.iter().find(|c| c.0 == capital)?;
            Some((country, capital, id))
        })
        .collect();
    let mut dims = vec![TEMPLATES.len()];
    dims.extend(distinct_dims(countries.len(), 2));

    sample_examples(Task::CountryCapital, &dims, n, seed, HINT, |digits| {
        let (&[template], picks) = digits.split_at(1) else {
            unreachable!("1 template digit")
        };
        let [clean_pick, corrupted_pick] = distinct_positions(picks)[..] else {
            unreachable!("2")
        };
        let (right, wrong) = (countries[clean_pick], countries[corrupted_pick]);
        let fill = |country: &str| TEMPLATES[template].replace("{country}", country);
        let (clean, corrupted) = (fill(right.0), fill(wrong.0));
        let (clean_len, corrupted_len) = prompt_lengths(tok, &clean, &corrupted)?;
        if clean_len != corrupted_len {
            return Ok(None);
        }
        Ok(Some(Example {
            clean,
            corrupted,
            correct: vec![right.2],
            incorrect: vec![wrong.2],
            correct_text: vec![format!(" {}", right.1)],
            incorrect_text: vec![format!(" {}", wrong.1)],
        }))
    })
}
