//! Tests of the training pipeline on a tiny configuration (seconds on 2 cores).

use burn::prelude::*;
use fidelis_models::{Hooks, Model};
use fidelis_tasks::{Task, generate};

use super::corpus::CorpusConfig;
use super::save::save_hf_folder;
use super::train::{TrainConfig, train};

fn tiny() -> TrainConfig {
    TrainConfig {
        seed: 7,
        steps: 3,
        batch_size: 4,
        learning_rate: 1e-3,
        warmup_steps: 1,
        corpus: CorpusConfig {
            family_share: [1.0, 1.0, 0.5, 2.0],
            docs_per_family: 40,
        },
        answer_weight: 10.0,
        d_model: 16,
        n_layers: 2,
        n_heads: 2,
        n_ctx: 64,
        log_every: 1,
    }
}

fn weights(model: &super::model::Gpt2) -> Vec<f32> {
    let mut all = model
        .wte
        .weight
        .val()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    for block in &model.blocks {
        for t in [block.c_attn.weight.val(), block.mlp_proj.weight.val()] {
            all.extend(t.into_data().try_to_vec::<f32>().unwrap());
        }
    }
    all
}

#[test]
fn same_seed_gives_identical_weights() {
    let device = Device::flex().autodiff();
    let a = train(&tiny(), &device, |_, _, _| Ok(())).unwrap();
    let b = train(&tiny(), &device, |_, _, _| Ok(())).unwrap();
    let losses = |log: &[super::train::LogRow]| -> Vec<(f64, f64)> {
        log.iter().map(|row| (row.loss, row.answer_loss)).collect()
    };
    assert_eq!(losses(&a.log), losses(&b.log));
    assert_eq!(weights(&a.model), weights(&b.model));
    let other = train(
        &TrainConfig { seed: 8, ..tiny() },
        &device,
        |_, _, _| Ok(()),
    )
    .unwrap();
    assert_ne!(weights(&a.model), weights(&other.model));
}

#[test]
fn saved_folder_loads_in_fidelis_models_with_the_same_logits() {
    let device = Device::flex().autodiff();
    let trained = train(&tiny(), &device, |_, _, _| Ok(())).unwrap();
    let dir = std::env::temp_dir().join(format!("fidelis-organism-test-{}", std::process::id()));
    save_hf_folder(&trained.model, trained.shape, &trained.corpus.pieces, &dir).unwrap();
    let loaded = Model::load(&dir, &Device::flex()).unwrap();

    let doc = &trained.corpus.documents[0].tokens;
    let len = doc.len();
    let ids: Vec<i64> = doc.iter().map(|&t| i64::from(t)).collect();
    let tokens = |device: &Device| {
        Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [1, len]), device)
    };
    let ours = trained
        .model
        .forward(tokens(&device))
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let theirs = loaded
        .transformer
        .forward(tokens(&Device::flex()), &mut Hooks::new())
        .unwrap()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    assert_eq!(ours.len(), theirs.len());
    let max_diff = ours
        .iter()
        .zip(&theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(max_diff < 1e-4, "max |Δlogit| = {max_diff}");

    // The tokenizer round-trips and poses the tasks Fidelis runs on the organism.
    let text = "When Mary and John went to the store, John gave a drink to Mary.";
    let tok = &loaded.tokenizer;
    assert_eq!(tok.decode(&tok.encode(text).unwrap()).unwrap(), text);
    assert_eq!(tok.encode(" 1745").unwrap().len(), 2);
    let encode = |text: &str| tok.encode(text).map_err(|e| e.to_string());
    for task in [Task::Ioi, Task::GreaterThan, Task::Sva] {
        let examples = generate(task, &encode, 64, 0).unwrap();
        assert_eq!(examples.len(), 64, "{task}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
