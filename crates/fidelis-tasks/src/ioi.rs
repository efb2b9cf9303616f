//! Indirect Object Identification (Wang et al. 2022, "Interpretability in the Wild",
//! arXiv:2211.00593), in the form the EAP-IG paper uses (Hanna et al. 2024, "Have Faith in
//! Faithfulness", arXiv:2403.17806).
//!
//! Clean: "When Mary and John went to the store, John gave a drink to" → " Mary". The two names
//! of the first clause are the indirect object (IO, the answer) and the subject (S, who is
//! repeated). ABBA templates name IO first, BABA templates name S first.
//!
//! Corrupted: the repeated subject is replaced by a third name C, distinct from both ("When Mary
//! and John went to the store, Tiffany gave a drink to"), the "ABC" distribution of the EAP-IG
//! reference CSV: no name is repeated, so nothing marks either name as the indirect object.
//!
//! `correct = [IO]`, `incorrect = [S]`: logit difference IO − S is the usual IOI metric.

use crate::example::prompt_lengths;
use crate::sample::{distinct_dims, distinct_positions, sample_examples, single_token_words};
use crate::words::{IOI_OBJECTS, IOI_PLACES, NAMES, items};
use crate::{Example, Task, TaskError, TextTokenizer};

/// Templates with slots `{A}` and `{B}` (the two names of the first clause, in order), `{S}`
/// (the repeated subject), `{place}` and `{object}`. No name starts the text or touches
/// punctuation, so every name appears with a leading space and stays one token.
const TEMPLATES: [&str; 15] = [
    "When {A} and {B} went to the {place}, {S} gave a {object} to",
    "Then, {A} and {B} were working at the {place}. {S} decided to give a {object} to",
    "After {A} and {B} arrived at the {place}, {S} handed a {object} to",
    "While {A} and {B} were waiting at the {place}, {S} passed a {object} to",
    "Friends {A} and {B} found a {object} at the {place}. Then {S} gave it to",
    "When {A} and {B} got a {object} at the {place}, {S} decided to give it to",
    "Then, {A} and {B} had a long talk at the {place}. Afterwards {S} gave a {object} to",
    "After lunch, {A} and {B} went to the {place}. There {S} gave a {object} to",
    "The {place} was busy when {A} and {B} arrived, so {S} offered a {object} to",
    "Yesterday {A} and {B} walked to the {place}, and {S} threw a {object} to",
    "Once {A} and {B} reached the {place}, {S} brought a {object} to",
    "At the {place}, {A} and {B} were talking. Later, {S} sent a {object} to",
    "Since {A} and {B} were both at the {place}, {S} showed a {object} to",
    "When {A} and {B} left the {place}, {S} lent a {object} to",
    "Then {A} and {B} went back to the {place}, where {S} sold a {object} to",
];

/// Which name the first clause mentions first.
const ORDERS: [Order; 2] = [Order::Abba, Order::Baba];

#[derive(Clone, Copy)]
enum Order {
    /// IO first: "When Mary and John ..., John gave a drink to".
    Abba,
    /// S first: "When John and Mary ..., John gave a drink to".
    Baba,
}

const HINT: &str = "IOI needs first names that are single tokens with a leading space (\" Mary\"); \
                    with this tokenizer too few are";

/// Generates `n` IOI examples; see the module doc.
pub(crate) fn generate(
    tok: &dyn TextTokenizer,
    n: usize,
    seed: u64,
) -> Result<Vec<Example>, TaskError> {
    let names = single_token_words(tok, items(NAMES), |name| format!(" {name}"))?;
    let places = items(IOI_PLACES);
    let objects = items(IOI_OBJECTS);
    let mut dims = vec![TEMPLATES.len(), ORDERS.len(), places.len(), objects.len()];
    dims.extend(distinct_dims(names.len(), 3));

    sample_examples(Task::Ioi, &dims, n, seed, HINT, |digits| {
        let (&[template, order, place, object], picks) = digits.split_at(4) else {
            unreachable!("4 slot digits, then 3 name digits")
        };
        let [io, s, c] = distinct_positions(picks)[..] else {
            unreachable!("3 names")
        };
        let ((io, io_id), (s, s_id), (c, _)) = (names[io], names[s], names[c]);
        let (first, second) = match ORDERS[order] {
            Order::Abba => (io, s),
            Order::Baba => (s, io),
        };
        let fill = |subject: &str| {
            TEMPLATES[template]
                .replace("{A}", first)
                .replace("{B}", second)
                .replace("{S}", subject)
                .replace("{place}", places[place])
                .replace("{object}", objects[object])
        };
        let (clean, corrupted) = (fill(s), fill(c));
        let (clean_len, corrupted_len) = prompt_lengths(tok, &clean, &corrupted)?;
        if clean_len != corrupted_len {
            return Ok(None);
        }
        Ok(Some(Example {
            clean,
            corrupted,
            correct: vec![io_id],
            incorrect: vec![s_id],
            correct_text: vec![format!(" {io}")],
            incorrect_text: vec![format!(" {s}")],
        }))
    })
}
