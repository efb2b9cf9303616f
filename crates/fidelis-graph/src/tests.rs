use super::*;

fn tiny() -> Graph {
    Graph::new(GraphConfig::new(1, 2, false))
}

fn set(g: &mut Graph, name: &str, score: f32) {
    let (f, b) = g.edge_index(name).unwrap();
    g.set_score(f, b, score);
}

fn in_names(g: &Graph) -> Vec<String> {
    let mut v: Vec<String> = g.edges().filter(|e| e.in_graph).map(|e| e.name).collect();
    v.sort();
    v
}

fn node_names(g: &Graph) -> Vec<String> {
    (0..g.n_nodes())
        .filter(|&i| g.nodes_in_graph()[i])
        .map(|i| g.node(i).name())
        .collect()
}

#[test]
fn gpt2_small_counts() {
    let g = Graph::new(GraphConfig::new(12, 12, false));
    assert_eq!(g.n_edges(), 32_491);
    assert_eq!(g.n_nodes(), 158);
    assert_eq!(g.n_forward(), 157);
    assert_eq!(g.n_backward(), 12 * 37 + 1);
    // Every edge name resolves back to its indices.
    for e in g.edges() {
        assert_eq!(
            g.edge_index(&e.name).unwrap(),
            (e.forward, e.backward),
            "{}",
            e.name
        );
    }
    assert_eq!(g.edge_index("a0.h3->m2").unwrap(), (4, 2 * 37 + 36));
    assert_eq!(g.edge_index("input->a1.h0<q>").unwrap(), (0, 37));
    assert!(g.edge_index("m3->logits").is_ok());
    // Not edges: reading a later/same-layer head, or an MLP into the same layer's head.
    assert!(g.edge_index("a1.h0->a1.h2<q>").is_err());
    assert!(g.edge_index("m1->a1.h2<v>").is_err());
    assert!(g.edge_index("a12.h0->logits").is_err());
    assert!(g.edge_index("logits->m0").is_err());
    assert!(g.edge_index("input->a0.h0<x>").is_err());
}

#[test]
fn tiny_graph_lists_all_edges() {
    let g = tiny();
    let names: Vec<String> = g.edges().map(|e| e.name).collect();
    let expected = [
        "input->a0.h0<q>",
        "input->a0.h0<k>",
        "input->a0.h0<v>",
        "input->a0.h1<q>",
        "input->a0.h1<k>",
        "input->a0.h1<v>",
        "input->m0",
        "input->logits",
        "a0.h0->m0",
        "a0.h0->logits",
        "a0.h1->m0",
        "a0.h1->logits",
        "m0->logits",
    ];
    assert_eq!(names, expected);
    assert_eq!(g.n_edges(), 13);
    assert_eq!(g.n_forward(), 4);
    assert_eq!(g.n_backward(), 8);
}

#[test]
fn parallel_mlp_does_not_read_own_heads() {
    let g = Graph::new(GraphConfig::new(1, 2, true));
    assert_eq!(g.n_edges(), 11);
    assert!(g.edge_index("a0.h0->m0").is_err());
    assert!(g.edge_index("input->m0").is_ok());
    let g2 = Graph::new(GraphConfig::new(2, 2, true));
    assert!(g2.edge_index("a0.h1->m1").is_ok());
    assert!(g2.edge_index("a1.h1->m1").is_err());
}

#[test]
fn set_scores_checks_shape() {
    let mut g = tiny();
    let err = g.set_scores(&[0.0; 32], 8, 4).unwrap_err();
    assert!(matches!(
        err,
        GraphError::ShapeMismatch {
            rows: 4,
            cols: 8,
            ..
        }
    ));
    assert!(matches!(
        g.set_scores(&[0.0; 31], 4, 8),
        Err(GraphError::LengthMismatch { .. })
    ));
    let data: Vec<f32> = (0..32).map(|i| i as f32).collect();
    g.set_scores(&data, 4, 8).unwrap();
    // logits column of row 3 (m0) is valid; m0 -> a0.h0<q> (row 3, col 0) is not.
    assert_eq!(g.score(3, 7), 31.0);
    assert_eq!(g.score(3, 0), 0.0);
}

#[test]
fn topn_absolute_vs_signed() {
    let mut g = tiny();
    set(&mut g, "input->a0.h0<q>", -9.0);
    set(&mut g, "a0.h1->logits", 3.0);
    set(&mut g, "m0->logits", 2.0);
    g.apply_topn(2, true).unwrap();
    assert_eq!(in_names(&g), ["a0.h1->logits", "input->a0.h0<q>"]);
    assert_eq!(node_names(&g), ["input", "a0.h0", "a0.h1", "logits"]);
    g.apply_topn(2, false).unwrap();
    assert_eq!(in_names(&g), ["a0.h1->logits", "m0->logits"]);
    assert_eq!(node_names(&g), ["a0.h1", "m0", "logits"]);
    // Ties are broken by row-major index: all other scores are 0.
    g.apply_topn(3, false).unwrap();
    assert_eq!(
        in_names(&g),
        ["a0.h1->logits", "input->a0.h0<k>", "m0->logits"]
    );
    assert!(matches!(
        g.apply_topn(14, true),
        Err(GraphError::TooManyEdges { .. })
    ));
}

#[test]
fn threshold_selects() {
    let mut g = tiny();
    set(&mut g, "input->a0.h0<q>", -9.0);
    set(&mut g, "a0.h1->logits", 3.0);
    g.apply_threshold(3.0, true);
    assert_eq!(in_names(&g), ["a0.h1->logits", "input->a0.h0<q>"]);
    g.apply_threshold(3.0, false);
    assert_eq!(in_names(&g), ["a0.h1->logits"]);
}

#[test]
fn greedy_respects_connectivity() {
    let mut g = tiny();
    set(&mut g, "input->a0.h0<q>", 10.0);
    set(&mut g, "a0.h1->logits", 5.0);
    set(&mut g, "a0.h0->logits", 0.1);
    g.apply_greedy(2, true).unwrap();
    // input->a0.h0<q> has the best score but a0.h0 is not reached yet.
    assert_eq!(in_names(&g), ["a0.h0->logits", "a0.h1->logits"]);
    g.apply_greedy(3, true).unwrap();
    assert_eq!(
        in_names(&g),
        ["a0.h0->logits", "a0.h1->logits", "input->a0.h0<q>"]
    );
    g.apply_topn(2, true).unwrap();
    assert_eq!(in_names(&g), ["a0.h1->logits", "input->a0.h0<q>"]);
}

#[test]
fn prune_removes_dangling_and_keeps_path() {
    let mut g = tiny();
    for name in [
        "input->a0.h0<q>",
        "a0.h0->logits",
        "input->a0.h1<k>",
        "m0->logits",
    ] {
        let (f, b) = g.edge_index(name).unwrap();
        g.set_in_graph(f, b, true);
    }
    g.update_nodes();
    assert_eq!(node_names(&g), ["input", "a0.h0", "a0.h1", "m0", "logits"]);
    g.prune();
    assert_eq!(in_names(&g), ["a0.h0->logits", "input->a0.h0<q>"]);
    assert_eq!(node_names(&g), ["input", "a0.h0", "logits"]);
    // Stable on a second call.
    let before = g.clone();
    g.prune();
    assert_eq!(g, before);
}

#[test]
fn prune_chain_cascades() {
    // input -> a0.h0 -> a1.h0 (dangling, no outgoing edge): both a1.h0 and the edge into it go,
    // and so does a0.h0 since its only child was pruned.
    let mut g = Graph::new(GraphConfig::new(2, 1, false));
    for name in ["input->a0.h0<v>", "a0.h0->a1.h0<k>", "input->logits"] {
        let (f, b) = g.edge_index(name).unwrap();
        g.set_in_graph(f, b, true);
    }
    g.prune();
    assert_eq!(in_names(&g), ["input->logits"]);
    assert_eq!(node_names(&g), ["input", "logits"]);
}

#[test]
fn json_round_trip() {
    let mut g = Graph::new(GraphConfig {
        d_model: Some(64),
        ..GraphConfig::new(2, 3, false)
    });
    let data: Vec<f32> = (0..g.n_forward() * g.n_backward())
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
        .collect();
    let (r, c) = (g.n_forward(), g.n_backward());
    g.set_scores(&data, r, c).unwrap();
    g.apply_topn(10, true).unwrap();
    let s = g.to_json_string();
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    assert_eq!(v["cfg"]["n_layers"], 2);
    assert_eq!(v["cfg"]["d_model"], 64);
    assert_eq!(v["cfg"]["parallel_attn_mlp"], false);
    assert!(v["nodes"]["logits"].is_boolean());
    assert!(v["edges"]["input->a1.h2<v>"]["score"].is_number());
    assert_eq!(v["edges"].as_object().unwrap().len(), g.n_edges());
    let back = Graph::from_json_str(&s).unwrap();
    assert_eq!(back, g);
}

#[test]
fn json_reads_reference_style_and_reports_errors() {
    let ok = r#"{"cfg": {"n_layers": 1, "n_heads": 2, "parallel_attn_mlp": false, "d_vocab": 5},
        "nodes": {"input": true, "a0.h1": true, "logits": true},
        "edges": {"input->a0.h1<v>": {"score": 0.5, "in_graph": true},
                  "a0.h1->logits": {"score": null, "in_graph": true}}}"#;
    let g = Graph::from_json_str(ok).unwrap();
    assert_eq!(in_names(&g), ["a0.h1->logits", "input->a0.h1<v>"]);
    let (f, b) = g.edge_index("a0.h1->logits").unwrap();
    assert!(g.score(f, b).is_nan());
    assert_eq!(node_names(&g), ["input", "a0.h1", "logits"]);

    let bad_node = r#"{"cfg": {"n_layers": 1, "n_heads": 2, "parallel_attn_mlp": false},
        "nodes": {"a5.h0": true}, "edges": {}}"#;
    assert_eq!(
        Graph::from_json_str(bad_node),
        Err(GraphError::UnknownNode("a5.h0".into()))
    );
    let bad_edge = r#"{"cfg": {"n_layers": 1, "n_heads": 2, "parallel_attn_mlp": false},
        "nodes": {}, "edges": {"m0->a0.h0<q>": {"score": 1.0, "in_graph": false}}}"#;
    assert_eq!(
        Graph::from_json_str(bad_edge),
        Err(GraphError::UnknownEdge("m0->a0.h0<q>".into()))
    );
    let bad_cfg = r#"{"cfg": {"n_layers": "two", "n_heads": 2, "parallel_attn_mlp": false}}"#;
    assert!(matches!(
        Graph::from_json_str(bad_cfg),
        Err(GraphError::InvalidConfig(_))
    ));
    assert!(matches!(
        Graph::from_json_str(r#"{"nodes": {}}"#),
        Err(GraphError::InvalidConfig(_))
    ));
    assert!(matches!(
        Graph::from_json_str("not json"),
        Err(GraphError::Json(_))
    ));
}

#[test]
fn dot_contains_edges() {
    let mut g = tiny();
    set(&mut g, "input->a0.h0<q>", 2.0);
    set(&mut g, "a0.h0->logits", -4.0);
    g.apply_topn(2, true).unwrap();
    let dot = g.to_dot();
    assert!(dot.starts_with("digraph"));
    assert!(
        dot.contains("\"input\" -> \"a0.h0\" [penwidth=0.600, color=blue, label=\"q\"];"),
        "{dot}"
    );
    assert!(
        dot.contains("\"a0.h0\" -> \"logits\" [penwidth=5.000, color=red];"),
        "{dot}"
    );
    assert!(dot.contains("  \"a0.h0\";"));
    assert!(!dot.contains("\"m0\""));
}
