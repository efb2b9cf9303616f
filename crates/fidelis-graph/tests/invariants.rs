//! Property tests: invariants of selection, pruning and JSON over random configs and scores.

use fidelis_graph::{Graph, GraphConfig};
use proptest::prelude::*;

/// Random configs: 1 to 4 layers, 1 to 4 heads, parallel or not, `d_model` 1 to 3.
fn config() -> impl Strategy<Value = GraphConfig> {
    (1usize..5, 1usize..5, any::<bool>(), 1usize..4).prop_map(|(l, h, parallel, d)| GraphConfig {
        d_model: Some(d),
        ..GraphConfig::new(l, h, parallel)
    })
}

/// Scores with many ties (quarter steps), arbitrary non-NaN floats, and canonical NaN.
fn score() -> impl Strategy<Value = f32> {
    use proptest::num::f32 as f;
    prop_oneof![
        4 => (-8i32..8).prop_map(|x| x as f32 / 4.0),
        4 => f::POSITIVE | f::NEGATIVE | f::NORMAL | f::SUBNORMAL | f::ZERO | f::INFINITE,
        1 => Just(f32::NAN),
    ]
}

/// A graph with random edge scores and a random edge membership mask (node masks derived).
fn graph() -> impl Strategy<Value = Graph> {
    config().prop_flat_map(|cfg| {
        let g = Graph::new(cfg);
        let n = g.n_forward() * g.n_backward();
        (
            Just(g),
            proptest::collection::vec(score(), n),
            proptest::collection::vec(any::<bool>(), n),
        )
            .prop_map(|(mut g, scores, mask)| {
                let (r, c) = (g.n_forward(), g.n_backward());
                g.set_scores(&scores, r, c).unwrap();
                for (i, m) in mask.into_iter().enumerate() {
                    if g.valid_mask()[i] {
                        g.set_in_graph(i / c, i % c, m);
                    }
                }
                g.update_nodes();
                g
            })
    })
}

/// Node index of the reader of column `b`.
fn child(g: &Graph, b: usize) -> usize {
    g.node_index(g.reader(b).node).unwrap()
}

/// Nodes reachable from `input` and nodes reaching `logits` through in-graph edges, by search.
fn reachability(g: &Graph) -> (Vec<bool>, Vec<bool>) {
    let edges: Vec<(usize, usize)> = g
        .edges()
        .filter(|e| e.in_graph)
        .map(|e| (e.forward, child(g, e.backward)))
        .collect();
    let mut from_input = vec![false; g.n_nodes()];
    let mut to_logits = vec![false; g.n_nodes()];
    from_input[0] = true;
    to_logits[g.n_forward()] = true;
    // Fixed point by repeated relaxation: no ordering assumptions about the indices.
    let mut changed = true;
    while changed {
        changed = false;
        for &(u, v) in &edges {
            if from_input[u] && !from_input[v] {
                from_input[v] = true;
                changed = true;
            }
            if to_logits[v] && !to_logits[u] {
                to_logits[u] = true;
                changed = true;
            }
        }
    }
    (from_input, to_logits)
}

/// Every in-graph edge touches only in-graph nodes, and every in-graph node lies on a path
/// from `input` to `logits`.
fn assert_connected(g: &Graph) {
    let nodes = g.nodes_in_graph();
    for e in g.edges().filter(|e| e.in_graph) {
        assert!(
            nodes[e.forward] && nodes[child(g, e.backward)],
            "{}",
            e.name
        );
    }
    let (from_input, to_logits) = reachability(g);
    for i in (0..g.n_nodes()).filter(|&i| nodes[i]) {
        assert!(
            from_input[i] && to_logits[i],
            "dangling {}",
            g.node(i).name()
        );
    }
}

/// Bit patterns, so that NaN compares equal to itself.
fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn prune_is_idempotent_connected_and_never_adds(g in graph()) {
        let before = g.in_graph().to_vec();
        let mut p = g.clone();
        p.prune();
        for (a, b) in p.in_graph().iter().zip(&before) {
            prop_assert!(!*a || *b, "prune added an edge");
        }
        assert_connected(&p);
        let mut again = p.clone();
        again.prune();
        prop_assert_eq!(again.in_graph(), p.in_graph());
        prop_assert_eq!(again.nodes_in_graph(), p.nodes_in_graph());
    }

    #[test]
    fn json_round_trips_bit_identically(
        g in graph(),
        node_scores in proptest::collection::vec(score(), 1..200),
        neurons in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut g = g;
        if node_scores.len() >= g.n_forward() {
            g.set_node_scores(&node_scores[..g.n_forward()]).unwrap();
        }
        if neurons {
            let (r, d) = (g.n_forward(), g.cfg().d_model.unwrap());
            // Cheap deterministic pseudo-random neuron data from the seed.
            let x = |i: usize| seed.rotate_left((i % 64) as u32) ^ (i as u64).wrapping_mul(0x9e37_79b9);
            let mask: Vec<bool> = (0..r * d).map(|i| x(i) & 1 == 1).collect();
            let scores: Vec<f32> = (0..r * d).map(|i| (x(i) % 1000) as f32 / 7.0 - 50.0).collect();
            g.set_neurons_in_graph(&mask, r, d).unwrap();
            g.set_neuron_scores(&scores, r, d).unwrap();
        }
        let s = g.to_json_string();
        let back = Graph::from_json_str(&s).unwrap();
        prop_assert_eq!(back.to_json_string(), s);
        prop_assert_eq!(bits(back.scores()), bits(g.scores()));
        prop_assert_eq!(back.in_graph(), g.in_graph());
        prop_assert_eq!(back.nodes_in_graph(), g.nodes_in_graph());
        prop_assert_eq!(back.node_scores().map(bits), g.node_scores().map(bits));
        prop_assert_eq!(back.neuron_scores().map(bits), g.neuron_scores().map(bits));
        prop_assert_eq!(back.neurons_in_graph(), g.neurons_in_graph());
    }

    #[test]
    fn topn_selects_exactly_n(g in graph(), frac in 0.0f64..=1.0, absolute in any::<bool>()) {
        let mut g = g;
        let n = (frac * g.n_edges() as f64) as usize;
        g.apply_topn(n, absolute).unwrap();
        prop_assert_eq!(g.n_edges_in_graph(), n);
        let too_many = g.n_edges() + 1;
        prop_assert!(g.apply_topn(too_many, absolute).is_err());
    }

    #[test]
    fn greedy_selects_exactly_n_connected_to_logits(
        g in graph(),
        frac in 0.0f64..=1.0,
        absolute in any::<bool>(),
    ) {
        let mut g = g;
        let n = (frac * g.n_edges() as f64) as usize;
        g.apply_greedy(n, absolute).unwrap();
        prop_assert_eq!(g.n_edges_in_graph(), n);
        // Greedy grows from the logits, so every selected edge leads on to them.
        let (_, to_logits) = reachability(&g);
        for e in g.edges().filter(|e| e.in_graph) {
            prop_assert!(to_logits[e.forward], "{}", e.name);
        }
    }

    #[test]
    fn node_topn_then_prune_is_connected(g in graph(), frac in 0.0f64..=1.0) {
        let mut g = g;
        let scores = g.node_scores_from_edges();
        g.set_node_scores(&scores).unwrap();
        // +inf and -inf edge scores sum to NaN, which marks a node as unscored.
        let scored = scores.iter().filter(|s| !s.is_nan()).count();
        let n = (frac * scored as f64) as usize;
        g.apply_node_topn(n, true).unwrap();
        let selected = g.nodes_in_graph().to_vec();
        for e in g.edges().filter(|e| e.in_graph) {
            prop_assert!(selected[e.forward] && selected[child(&g, e.backward)]);
        }
        g.prune();
        assert_connected(&g);
    }
}
