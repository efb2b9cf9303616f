//! Shared helpers: fixture models, random prompt pairs, independent reference computations.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::prelude::*;
use fidelis_circuit::PromptPair;
use fidelis_graph::{Graph, GraphConfig};
use fidelis_models::{Activation, Batch, Hooks, Model, Transformer, point};

/// The test device (CPU unless `FIDELIS_TEST_DEVICE` names a compiled GPU backend).
pub fn device() -> Device {
    match std::env::var("FIDELIS_TEST_DEVICE").as_deref() {
        #[cfg(feature = "wgpu")]
        Ok("wgpu") => return Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        #[cfg(feature = "cuda")]
        Ok("cuda") => return Device::cuda(0),
        _ => {}
    }
    #[cfg(feature = "flex")]
    return Device::flex();
    #[cfg(all(not(feature = "flex"), feature = "ndarray"))]
    #[allow(deprecated)]
    return Device::ndarray();
    #[cfg(not(any(feature = "flex", feature = "ndarray")))]
    return Device::default();
}

/// A committed fixture model of `fidelis-models`.
pub fn load(name: &str) -> Model {
    let dir = std::env::var("FIDELIS_FIXTURE_DIR").map_or_else(
        |_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fidelis-models/tests/fixtures"),
        PathBuf::from,
    );
    Model::load(&dir.join(name), &device()).unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

/// The full graph of a model.
pub fn graph_of(model: &Transformer) -> Graph {
    let c = model.config();
    let mut cfg = GraphConfig::new(c.n_layers, c.n_heads, c.parallel_attn_mlp);
    cfg.d_model = Some(c.d_model);
    Graph::new(cfg)
}

/// `n` random pairs (see [`fidelis_circuit::data::synthetic_pairs`]).
pub fn random_pairs(n: usize, vocab: u32, seed: u64) -> Vec<PromptPair> {
    fidelis_circuit::data::synthetic_pairs(n, vocab, seed)
}

/// Values of a float tensor.
pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 data")
}

/// Independent logit difference at each example's last position, read on the host.
pub fn logit_diff_host(logits: Tensor<3>, pairs: &[PromptPair]) -> Vec<f32> {
    let [b, p, v] = logits.dims();
    let data = values(logits);
    (0..b)
        .map(|i| {
            let last = pairs[i].clean.len() - 1;
            let row = &data[(i * p + last) * v..(i * p + last + 1) * v];
            row[pairs[i].correct[0] as usize] - row[pairs[i].incorrect[0] as usize]
        })
        .collect()
}

/// Each node's output on `tokens` recorded with plain hooks, host-side, indexed
/// `[example][pos][node][d]` flattened as `((i * p + pos) * n_forward + f) * d + k`.
pub fn node_outputs_host(model: &Transformer, batch: &Batch) -> Vec<f32> {
    let cfg = model.config();
    let mut hooks = Hooks::new();
    hooks.record(point::resid_pre(0));
    for l in 0..cfg.n_layers {
        hooks.record(point::result(l)).record(point::mlp_out(l));
    }
    model.forward_batch(batch, &mut hooks).unwrap();
    let rank3 = |pt: String| hooks.recorded(&pt).and_then(Activation::rank3).unwrap();
    let mut parts = vec![rank3(point::resid_pre(0)).unsqueeze_dim::<4>(2)];
    for l in 0..cfg.n_layers {
        parts.push(
            hooks
                .recorded(&point::result(l))
                .and_then(Activation::rank4)
                .unwrap(),
        );
        parts.push(rank3(point::mlp_out(l)).unsqueeze_dim::<4>(2));
    }
    values(Tensor::cat(parts, 2))
}

/// A `[batch, pos]` padded batch of the clean (or corrupted) prompts.
pub fn batch_of(pairs: &[PromptPair], corrupted: bool, device: &Device) -> Batch {
    let seqs: Vec<Vec<u32>> = pairs
        .iter()
        .map(|p| {
            if corrupted {
                p.corrupted.clone()
            } else {
                p.clean.clone()
            }
        })
        .collect();
    Batch::from_sequences(&seqs, 0, device).unwrap()
}

/// The hook point, head slot and rank of the reader at graph column `b`.
pub fn reader_point(graph: &Graph, b: usize) -> (String, Option<usize>) {
    use fidelis_graph::{Node, Qkv};
    let r = graph.reader(b);
    let n_layers = graph.cfg().n_layers;
    match (r.node, r.qkv) {
        (Node::Head { layer, head }, Some(Qkv::Q)) => (point::q_input(layer), Some(head)),
        (Node::Head { layer, head }, Some(Qkv::K)) => (point::k_input(layer), Some(head)),
        (Node::Head { layer, head }, Some(Qkv::V)) => (point::v_input(layer), Some(head)),
        (Node::Mlp(layer), None) => (point::mlp_in(layer), None),
        (Node::Logits, None) => (point::resid_post(n_layers - 1), None),
        other => panic!("unexpected reader {other:?}"),
    }
}

/// Adds `scale · Δa_f` (host `delta`, `[b, p, n_forward, d]`) at reader `b`'s input and
/// returns the summed negated logit difference.
pub fn loss_with_added(
    model: &Transformer,
    graph: &Graph,
    pairs: &[PromptPair],
    delta: &[f32],
    f: usize,
    b: usize,
    scale: f32,
) -> f64 {
    let device = model.device();
    let batch = batch_of(pairs, false, device);
    let [nb, p] = batch.tokens.dims();
    let (d, h, nf) = (
        model.config().d_model,
        model.config().n_heads,
        graph.n_forward(),
    );
    let (pt, head) = reader_point(graph, b);
    let mut hooks = Hooks::new();
    match head {
        Some(slot) => {
            let mut add = vec![0f32; nb * p * h * d];
            for i in 0..nb * p {
                for k in 0..d {
                    add[(i * h + slot) * d + k] = scale * delta[(i * nf + f) * d + k];
                }
            }
            hooks.add(
                pt,
                Tensor::<4>::from_data(TensorData::new(add, [nb, p, h, d]), device),
            );
        }
        None => {
            let mut add = vec![0f32; nb * p * d];
            for i in 0..nb * p {
                for k in 0..d {
                    add[i * d + k] = scale * delta[(i * nf + f) * d + k];
                }
            }
            hooks.add(
                pt,
                Tensor::<3>::from_data(TensorData::new(add, [nb, p, d]), device),
            );
        }
    }
    let logits = model.forward_batch(&batch, &mut hooks).unwrap();
    -logit_diff_host(logits, pairs)
        .iter()
        .map(|&x| f64::from(x))
        .sum::<f64>()
}
