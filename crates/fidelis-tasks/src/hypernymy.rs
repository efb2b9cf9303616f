//! Hypernymy: naming an item's category, one of the tasks of the EAP-IG paper (Hanna et al.
//! 2024, "Have Faith in Faithfulness", arXiv:2403.17806).
//!
//! Clean: "The apple is a kind of" → " fruit". Corrupted: an item of a different category,
//! "The hammer is a kind of"; `correct` is the clean item's hypernym, `incorrect` the corrupted
//! item's.

use crate::example::prompt_lengths;
use crate::sample::{sample_examples, single_token_words};
use crate::words::{HYPERNYMS, pairs};
use crate::{Example, Task, TaskError, TextTokenizer};

/// Templates with slot `{item}`; the hypernym comes next.
const TEMPLATES: [&str; 5] = [
    "The {item} is a kind of",
    "The {item} is a type of",
    "Everyone knows that the {item} is a kind of",
    "In the dictionary, the {item} is listed as a type of",
    "Biologists and engineers agree that the {item} is a kind of",
];

const HINT: &str = "Hypernymy needs hypernyms that are single tokens with a leading space \
                    (\" fruit\") and items of different categories with prompts of equal length";

/// Generates `n` Hypernymy examples; see the module doc.
pub(crate) fn generate(
    tok: &dyn TextTokenizer,
    n: usize,
    seed: u64,
) -> Result<Vec<Example>, TaskError> {
    let all = pairs(HYPERNYMS);
    let mut hypernyms: Vec<&str> = all.iter().map(|p| p.1).collect();
    hypernyms.sort_unstable();
    hypernyms.dedup();
    let hypernyms = single_token_words(tok, hypernyms, |hypernym| format!(" {hypernym}"))?;
    // Items whose hypernym survived the single-token filter, with that hypernym's token.
    let items: Vec<(&str, &str, u32)> = all
        .iter()
        .filter_map(|&(item, hypernym)| {
            let &(_, id) = hypernyms.iter().find(|h| h.0 == hypernym)?;
            Some((item, hypernym, id))
        })
        .collect();
    let dims = [TEMPLATES.len(), items.len(), items.len()];

    sample_examples(Task::Hypernymy, &dims, n, seed, HINT, |digits| {
        let &[template, clean_item, corrupted_item] = digits else {
            unreachable!("3 digits")
        };
        let (right, wrong) = (items[clean_item], items[corrupted_item]);
        if right.1 == wrong.1 {
            return Ok(None); // same category: nothing to contrast
        }
        let fill = |item: &str| TEMPLATES[template].replace("{item}", item);
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
