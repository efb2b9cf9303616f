//! Context-attribution presets: worked examples the page offers per model.
//!
//! The organism was trained on context-copying questions (one location fact among facts about
//! other objects' colour or condition: "Context: The coin is blue. The key is in the red box.
//! The cup is old. Question: Where is the key? Answer:", see `fidelis_tasks::context_copy`), so
//! its presets use that form: the facts are the input context, the question is the input
//! current text and the contextless run sees the question alone. SmolLM2 gets free-form text in
//! its chat template. The seq2seq organism (`models/seq2seq-organism`, served as
//! `fidelis serve --model models/seq2seq-organism` from the repository root) translates a
//! sentence whose pronoun's gender only the previous sentence gives: source and target are
//! `{context} <brk> {current}`, the output context (the previous sentence's translation) is
//! given and the current sentence is generated.

use serde::Serialize;
use serde_json::{Map, Value, json};

/// One preset.
#[derive(Debug, Clone, Serialize)]
pub struct Preset {
    /// Its id, e.g. `organism-qa`.
    pub id: &'static str,
    /// What the page shows.
    pub label: &'static str,
    /// The model it is meant for (a `--model` name).
    pub model: &'static str,
    /// The `fidelis context` options it sets (fields of
    /// [`crate::options::ContextOptions`]).
    pub params: Map<String, Value>,
}

/// The fields of a JSON object literal.
fn fields(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// The organism's question form: `Context: {facts} Question: … Answer:`.
fn organism(context: &str, question: &str) -> Map<String, Value> {
    fields(json!({
        "input_context": context,
        "input_current": format!("Question: {question} Answer:"),
        "input_template": "Context: {context} {current}",
        // The answer is a location of four tokens (" in the red box").
        "max_new_tokens": 4,
        // Of four answer tokens about two depend on the context; with two high and two low
        // scores, mean + 1·std is the top score itself and rounding can leave no token above
        // it. λ = 0 keeps the tokens above the mean.
        "cti_std": 0.0,
    }))
}

fn smollm2(context: &str, question: &str, max_new_tokens: usize) -> Map<String, Value> {
    fields(json!({
        "input_context": context,
        "input_current": question,
        "chat": true,
        "max_new_tokens": max_new_tokens,
    }))
}

/// The `--model` name of the seq2seq organism's presets.
pub const SEQ2SEQ_ORGANISM: &str = "models/seq2seq-organism";

/// The seq2seq organism's form: previous sentence and its translation as the contexts.
fn seq2seq(context: &str, current: &str, output_context: &str) -> Map<String, Value> {
    fields(json!({
        "input_context": context,
        "input_current": current,
        "output_context": output_context,
        "input_template": "{context} <brk> {current}",
        "output_template": "{context} <brk> {current}",
        "max_new_tokens": 12,
    }))
}

/// Every preset, for every model; the server offers those whose model it serves.
pub fn all() -> Vec<Preset> {
    vec![
        Preset {
            id: "organism-qa",
            label: "Fact lookup: where is the key?",
            model: "organism",
            params: organism(
                "The coin is blue. The key is in the red box. The cup is old.",
                "Where is the key?",
            ),
        },
        Preset {
            id: "organism-story",
            label: "Story of three things: where is the ring?",
            model: "organism",
            params: organism(
                "The lamp is broken. The book is yellow. The ring is behind the green chest.",
                "Where is the ring?",
            ),
        },
        Preset {
            id: "seq2seq-organism-pronoun",
            label: "Translation: it → il or elle? (the clock)",
            model: SEQ2SEQ_ORGANISM,
            params: seq2seq(
                "the clock follows the bulb .",
                "it is near the factory .",
                "l' horloge suit l' ampoule .",
            ),
        },
        Preset {
            id: "seq2seq-organism-distractor",
            label: "Translation: it → il or elle? (the tree)",
            model: SEQ2SEQ_ORGANISM,
            params: seq2seq(
                "here is the tree .",
                "now it is dirty .",
                "voici l' arbre .",
            ),
        },
        Preset {
            id: "smollm2-qa",
            label: "Fact lookup: the capital of Zembla",
            model: "smollm2",
            params: smollm2(
                "The capital of Zembla is Korvo. Zembla is famous for its blue cheese.",
                "What is the capital of Zembla?",
                16,
            ),
        },
        Preset {
            id: "smollm2-story",
            label: "Story: Mara's concert",
            model: "smollm2",
            params: smollm2(
                "Mara packed her violin and took the night train to Lisbon. When she arrived, the concert hall was closed for repairs, so she played in the old market square instead. A crowd gathered and a baker gave her bread.",
                "Where did Mara play her violin, and what did she get?",
                24,
            ),
        },
    ]
}

/// The preset with this id.
pub fn find(id: &str) -> Option<Preset> {
    all().into_iter().find(|p| p.id == id)
}
