//! Context copying: a question whose answer must be copied from facts given in the context.
//!
//! "Context: The key is in the red box. The coin is under the blue bag. Question: Where is the
//! key? Answer:" → " in the red box". Every fact places a different object with a different
//! preposition, colour and container, so the answer is fixed only by finding the fact about
//! the asked object and copying its location (an induction-style lookup). Without the context
//! the answer cannot be guessed, which is what context attribution (PECoRe) looks for.
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

/// Facts per context, at least two so that one is a distractor.
pub const FACTS_RANGE: std::ops::RangeInclusive<usize> = 2..=3;

/// One context-copying question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextQuestion {
    /// The facts, e.g. "The key is in the red box. The coin is under the blue bag."
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
    let facts = rng.random_range(FACTS_RANGE);
    let objects = sample(rng, OBJECTS.len(), facts);
    let prepositions = sample(rng, PREPOSITIONS.len(), facts);
    let colors = sample(rng, COLORS.len(), facts);
    let containers = sample(rng, CONTAINERS.len(), facts);
    let location = |i: usize| {
        format!(
            "{} the {} {}",
            PREPOSITIONS[prepositions.index(i)],
            COLORS[colors.index(i)],
            CONTAINERS[containers.index(i)]
        )
    };
    let context = (0..facts)
        .map(|i| format!("The {} is {}.", OBJECTS[objects.index(i)], location(i)))
        .collect::<Vec<_>>()
        .join(" ");
    let asked = rng.random_range(0..facts);
    ContextQuestion {
        context,
        question: format!("Where is the {}?", OBJECTS[objects.index(asked)]),
        answer: format!(" {}", location(asked)),
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
        }
    }
}
