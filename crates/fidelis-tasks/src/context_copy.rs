//! Context copying: a question whose answer must be copied from a fact given in the context.
//!
//! "Context: The coin is blue. The key is in the red box. The cup is old. Question: Where is
//! the key? Answer:" → " in the red box". The context states one location fact, about the
//! asked object, among one or two distractor facts about other objects' colour or condition.
//! The location (preposition, colour, container) is drawn at random, so it cannot be guessed
//! without the context, which is what context attribution (PECoRe) looks for; the distractors
//! share the location's vocabulary (colours), so copying the right words means finding the
//! location fact, wherever it stands in the context.
//!
//! Unlike the [`crate::Task`] datasets these are text questions with multi-token answers: a
//! model answers correctly when it reproduces `answer` token by token.

use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};

/// Objects whose location the facts state.
pub const OBJECTS: [&str; 16] = [
    "key", "coin", "ring", "book", "map", "letter", "watch", "card", "pen", "stone", "shell",
    "ticket", "phone", "cup", "lamp", "bell",
];

/// Colours of the containers.
pub const COLORS: [&str; 10] = [
    "red", "blue", "green", "yellow", "black", "white", "brown", "purple", "orange", "gray",
];

/// Containers or landmarks an object can be at.
pub const CONTAINERS: [&str; 10] = [
    "box", "bag", "drawer", "jar", "basket", "chest", "car", "desk", "shelf", "bed",
];

/// How an object relates to its container.
pub const PREPOSITIONS: [&str; 4] = ["in", "under", "behind", "near"];

/// Conditions a distractor fact can state ("The cup is old.").
pub const CONDITIONS: [&str; 6] = ["old", "new", "small", "large", "heavy", "broken"];

/// Distractor facts per context (each about another object's colour or condition).
pub const DISTRACTORS_RANGE: std::ops::RangeInclusive<usize> = 1..=2;

/// One context-copying question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextQuestion {
    /// The facts, e.g. "The coin is blue. The key is in the red box."
    pub context: String,
    /// The question, e.g. "Where is the key?"
    pub question: String,
    /// The answer to copy, with its leading space: " in the red box".
    pub answer: String,
}

impl ContextQuestion {
    /// The text a model continues with [`ContextQuestion::answer`]:
    /// `"Context: {context} Question: {question} Answer:"`.
    pub fn prompt(&self) -> String {
        format!(
            "Context: {} Question: {} Answer:",
            self.context, self.question
        )
    }

    /// The prompt without its context (`"Question: {question} Answer:"`), the contextless run
    /// of context attribution.
    pub fn prompt_without_context(&self) -> String {
        format!("Question: {} Answer:", self.question)
    }
}

/// `n` context-copying questions drawn with a generator seeded by `seed` (the same `n` and
/// `seed` always give the same questions; they may repeat when `n` is large).
pub fn context_questions(n: usize, seed: u64) -> Vec<ContextQuestion> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| context_question(&mut rng)).collect()
}

fn context_question(rng: &mut StdRng) -> ContextQuestion {
    let distractors = rng.random_range(DISTRACTORS_RANGE);
    // Object 0 is asked about; colour 0 is its container's, the others colour distractors.
    let objects = sample(rng, OBJECTS.len(), distractors + 1);
    let colors = sample(rng, COLORS.len(), distractors + 1);
    let location = format!(
        " {} the {} {}",
        PREPOSITIONS[rng.random_range(0..PREPOSITIONS.len())],
        COLORS[colors.index(0)],
        CONTAINERS[rng.random_range(0..CONTAINERS.len())]
    );
    let mut facts: Vec<String> = (1..=distractors)
        .map(|i| {
            let property = if rng.random_bool(0.5) {
                COLORS[colors.index(i)]
            } else {
                CONDITIONS[rng.random_range(0..CONDITIONS.len())]
            };
            format!("The {} is {property}.", OBJECTS[objects.index(i)])
        })
        .collect();
    let asked = OBJECTS[objects.index(0)];
    facts.insert(
        rng.random_range(0..=distractors),
        format!("The {asked} is{location}."),
    );
    ContextQuestion {
        context: facts.join(" "),
        question: format!("Where is the {asked}?"),
        answer: location,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_are_seeded_and_answerable_from_the_context() {
        let questions = context_questions(50, 3);
        assert_eq!(questions, context_questions(50, 3));
        assert_ne!(questions, context_questions(50, 4));
        for q in &questions {
            let object = q
                .question
                .trim_start_matches("Where is the ")
                .trim_end_matches('?');
            let fact = format!("The {object} is{}.", q.answer);
            assert!(q.context.contains(&fact), "{q:?}");
            assert!(q.prompt().ends_with(" Answer:"));
            // One location fact, one or two distractors, none of them about the asked object.
            let facts = q.context.split(". ").count();
            assert!((2..=3).contains(&facts), "{q:?}");
            assert_eq!(
                q.context.matches(&format!("The {object} ")).count(),
                1,
                "{q:?}"
            );
            // The answer's colour is not any distractor's.
            let color = q.answer.split(' ').nth(3).unwrap();
            assert_eq!(q.context.matches(color).count(), 1, "{q:?}");
        }
    }
}
