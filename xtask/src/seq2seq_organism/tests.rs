//! Tests of the seq2seq organism pipeline on a tiny configuration (seconds on 2 cores).

use std::collections::HashMap;

use burn::prelude::*;
use fidelis_models::{Batch, Hooks, Seq2SeqModel};
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::corpus::{self, Gender, SEPARATOR, is_held_out};
use super::model::sinusoids;
use super::save::save_hf_folder;
use super::tokenizer::{self, EOS_ID, SEPARATOR_ID};
use super::train::{TrainConfig, encode, train};

fn tiny() -> TrainConfig {
    TrainConfig {
        steps: 3,
        batch_size: 4,
        warmup_steps: 1,
        d_model: 16,
        d_mlp: 32,
        n_heads: 2,
        log_every: 1,
        seed: 7,
        ..TrainConfig::organism()
    }
}

fn ids() -> HashMap<String, u32> {
    tokenizer::vocabulary(&corpus::vocabulary())
        .into_iter()
        .enumerate()
        .map(|(i, w)| (w, i as u32))
        .collect()
}

#[test]
fn examples_follow_the_format_and_the_split() {
    let ids = ids();
    let mut rng = StdRng::seed_from_u64(0);
    let mix = corpus::Mix {
        contextless: 0.3,
        plain: 0.2,
    };
    let (mut with_context, mut without) = (0, 0);
    for _ in 0..2000 {
        let e = corpus::training_example(&mut rng, mix);
        let enc = encode(&e, &ids).unwrap();
        assert_eq!(enc.source.last(), Some(&EOS_ID));
        assert_eq!(enc.target.last(), Some(&EOS_ID));
        match (&e.context, e.antecedent) {
            (Some(_), Some(noun)) => {
                with_context += 1;
                assert!(!is_held_out(noun.0, e.context_template.unwrap()));
                assert_eq!(enc.source.iter().filter(|&&t| t == SEPARATOR_ID).count(), 1);
                // The pronoun, when there is one, agrees with the antecedent.
                if let Some(p) = enc.pronoun {
                    let want = if noun.2 == Gender::Masculine {
                        "il"
                    } else {
                        "elle"
                    };
                    assert_eq!(enc.target[p], ids[want]);
                }
            }
            _ => {
                without += 1;
                assert!(!enc.source.contains(&SEPARATOR_ID));
                assert_eq!(enc.pronoun, None);
            }
        }
    }
    assert!(
        with_context > 1200 && without > 400,
        "{with_context} / {without}"
    );

    // Held-out examples: balanced genders, only held-out combinations.
    let held = corpus::held_out(&mut rng, 40);
    assert_eq!(
        held.iter()
            .filter(|e| e.antecedent.unwrap().2 == Gender::Masculine)
            .count(),
        20
    );
    for e in &held {
        assert!(is_held_out(
            e.antecedent.unwrap().0,
            e.context_template.unwrap()
        ));
        assert!(e.source_words().contains(&SEPARATOR.to_string()));
    }
}

/// Hand values of Marian's layout at p = 1, d = 4: sin(1), sin(1/100), cos(1), cos(1/100).
#[test]
fn sinusoids_match_hand_values() {
    let t = sinusoids(2, 4);
    assert_eq!(&t[..4], &[0.0, 0.0, 1.0, 1.0]);
    let want = [1f64.sin(), 0.01f64.sin(), 1f64.cos(), 0.01f64.cos()];
    for (g, w) in t[4..].iter().zip(want) {
        assert!((f64::from(*g) - w).abs() < 1e-6, "{t:?}");
    }
}

fn weights(model: &super::model::Marian) -> Vec<f32> {
    let mut all = model
        .shared
        .weight
        .val()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    for layer in &model.decoder {
        all.extend(
            layer
                .encoder_attn
                .q_proj
                .weight
                .val()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap(),
        );
    }
    all
}

#[test]
fn same_seed_gives_identical_weights() {
    let device = Device::flex().autodiff();
    let a = train(&tiny(), &device, |_| Ok(())).unwrap();
    let b = train(&tiny(), &device, |_| Ok(())).unwrap();
    assert_eq!(a.log.len(), 3);
    let losses =
        |log: &[super::train::LogRow]| -> Vec<f64> { log.iter().map(|r| r.loss).collect() };
    assert_eq!(losses(&a.log), losses(&b.log));
    assert_eq!(weights(&a.model), weights(&b.model));
    let other = train(&TrainConfig { seed: 8, ..tiny() }, &device, |_| Ok(())).unwrap();
    assert_ne!(weights(&a.model), weights(&other.model));
}

/// The saved folder loads in `fidelis_models` with the logits of the Burn model it was saved
/// from, on a padded batch; its tokenizer encodes the held-out texts to the recorded ids.
#[test]
fn saved_folder_loads_in_fidelis_models_with_the_same_logits() {
    let device = Device::flex().autodiff();
    let trained = train(&tiny(), &device, |_| Ok(())).unwrap();
    let dir = std::env::temp_dir().join(format!("fidelis-s2s-organism-{}", std::process::id()));
    save_hf_folder(&trained.model, trained.shape, &corpus::vocabulary(), &dir).unwrap();
    super::write_held_out(&dir, 0).unwrap();
    let loaded = Seq2SeqModel::load(&dir, &Device::flex()).unwrap();
    let records = super::eval::read_jsonl(&dir.join("heldout.jsonl")).unwrap();
    assert_eq!(records.len(), super::HELD_OUT_EXAMPLES);

    let as_ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let rows: Vec<(Vec<u32>, Vec<u32>)> = records[..3]
        .iter()
        .map(|r| (as_ids(&r["source_ids"]), as_ids(&r["target_ids"])))
        .collect();
    for (r, (source, _)) in records.iter().zip(&rows) {
        let text = r["source"].as_str().unwrap();
        assert_eq!(&loaded.encode_source(text, None).unwrap(), source);
    }
    // Decoder inputs: the start token `<pad>`, then the target but its last token.
    let sources: Vec<Vec<u32>> = rows.iter().map(|(s, _)| s.clone()).collect();
    let inputs: Vec<Vec<u32>> = rows
        .iter()
        .map(|(_, t)| [vec![0], t[..t.len() - 1].to_vec()].concat())
        .collect();
    let theirs = loaded
        .model
        .forward(
            &Batch::from_sequences(&sources, 0, &Device::flex()).unwrap(),
            &Batch::from_sequences(&inputs, 0, &Device::flex()).unwrap(),
            &mut Hooks::new(),
        )
        .unwrap();
    let pad = |rows: &[Vec<u32>]| {
        let len = rows.iter().map(Vec::len).max().unwrap();
        let flat: Vec<i64> = rows
            .iter()
            .flat_map(|r| (0..len).map(|p| r.get(p).map_or(0, |&t| i64::from(t))))
            .collect();
        Tensor::<2, Int>::from_data(TensorData::new(flat, [rows.len(), len]), &device)
    };
    let lengths: Vec<usize> = sources.iter().map(Vec::len).collect();
    let ours = trained.model.forward(pad(&sources), &lengths, pad(&inputs));
    assert_eq!(ours.dims(), theirs.dims());
    let [_, _, vocab] = ours.dims();
    let ours = ours.into_data().try_to_vec::<f32>().unwrap();
    let theirs = theirs.into_data().try_to_vec::<f32>().unwrap();
    let tgt_len = inputs.iter().map(Vec::len).max().unwrap();
    let mut max_diff = 0f32;
    for (b, row) in inputs.iter().enumerate() {
        for p in 0..row.len() {
            let at = (b * tgt_len + p) * vocab;
            for v in 0..vocab {
                max_diff = max_diff.max((ours[at + v] - theirs[at + v]).abs());
            }
        }
    }
    assert!(max_diff < 1e-4, "max |Δlogit| = {max_diff}");
    std::fs::remove_dir_all(&dir).unwrap();
}
