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
    assert_eq!(g.edge_index("a0.h2->a1.h5<k>").unwrap(), (3, 37 + 12 + 5));
    assert_eq!(g.edge_index("m0->a1.h5<v>").unwrap(), (13, 37 + 24 + 5));
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
    // Columns: all q inputs, then all k inputs, then all v inputs, then the MLP, then logits.
    let expected = [
        "input->a0.h0<q>",
        "input->a0.h1<q>",
        "input->a0.h0<k>",
        "input->a0.h1<k>",
        "input->a0.h0<v>",
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
        ["a0.h1->logits", "input->a0.h1<q>", "m0->logits"]
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
    assert!(v["nodes"]["logits"]["in_graph"].is_boolean());
    assert!(v["nodes"]["a0.h1"].get("score").is_none());
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

/// Reader names in the order of the reference's `Graph.get_dst_nodes`.
fn reference_dst_nodes(cfg: &GraphConfig) -> Vec<String> {
    let mut names = Vec::new();
    for layer in 0..cfg.n_layers {
        for letter in ['q', 'k', 'v'] {
            for head in 0..cfg.n_heads {
                names.push(format!("a{layer}.h{head}<{letter}>"));
            }
        }
        names.push(format!("m{layer}"));
    }
    names.push("logits".into());
    names
}

#[test]
fn reader_order_matches_reference() {
    for cfg in [
        GraphConfig::new(12, 12, false),
        GraphConfig::new(3, 1, true),
        GraphConfig::new(2, 5, false),
    ] {
        let g = Graph::new(cfg);
        let ours: Vec<String> = (0..g.n_backward()).map(|b| g.reader(b).name()).collect();
        assert_eq!(ours, reference_dst_nodes(&cfg));
        for b in 0..g.n_backward() {
            assert_eq!(g.backward_index(g.reader(b)), Some(b));
        }
    }
}

#[test]
fn layer_ranges_for_per_layer_tensors() {
    let g = Graph::new(GraphConfig::new(12, 12, false));
    let cols = g.reader_columns(1);
    assert_eq!(
        cols,
        LayerColumns {
            q: 37..49,
            k: 49..61,
            v: 61..73,
            mlp: 73
        }
    );
    for qkv in Qkv::ALL {
        for (head, b) in cols.qkv(qkv).enumerate() {
            let r = g.reader(b);
            assert_eq!(r.node, Node::Head { layer: 1, head });
            assert_eq!(r.qkv, Some(qkv));
        }
    }
    assert_eq!(g.reader(cols.mlp).node, Node::Mlp(1));
    assert_eq!(g.logits_column(), 444);
    assert_eq!(g.reader(444).node, Node::Logits);
    assert_eq!(g.forward_range_of_layer(1), 14..26);
    for (head, f) in g.forward_range_of_layer(1).enumerate() {
        assert_eq!(g.forward_node(f), Node::Head { layer: 1, head });
    }
    assert_eq!(g.mlp_row(1), 26);
    assert_eq!(g.forward_node(26), Node::Mlp(1));
    // Visible prefixes: heads of layer 1 see input and layer 0; m1 also sees layer 1's heads.
    assert_eq!(g.visible_forward(cols.q.start), 14);
    assert_eq!(g.visible_forward(cols.mlp), 26);
    assert_eq!(g.visible_forward(g.logits_column()), g.n_forward());
    let parallel = Graph::new(GraphConfig::new(12, 12, true));
    assert_eq!(parallel.visible_forward(cols.mlp), 14);
}

#[test]
fn top_edges_sorted_with_index_ties() {
    let mut g = tiny();
    set(&mut g, "a0.h1->logits", 3.0);
    set(&mut g, "input->a0.h0<k>", -3.0);
    set(&mut g, "m0->logits", f32::NAN);
    set(&mut g, "a0.h0->m0", 1.0);
    let names = |v: Vec<Edge>| v.into_iter().map(|e| e.name).collect::<Vec<_>>();
    // |3| ties: input row comes first.
    assert_eq!(
        names(g.top_edges(3, true)),
        ["input->a0.h0<k>", "a0.h1->logits", "a0.h0->m0"]
    );
    assert_eq!(names(g.top_edges(2, false)), ["a0.h1->logits", "a0.h0->m0"]);
    let all = g.top_edges(100, false);
    assert_eq!(all.len(), g.n_edges());
    assert_eq!(all.last().unwrap().name, "m0->logits"); // NaN ranks last
    assert_eq!(all[all.len() - 2].name, "input->a0.h0<k>");
}

#[test]
fn node_scores_from_edges_sums_rows() {
    let mut g = tiny();
    set(&mut g, "input->a0.h0<q>", 1.0);
    set(&mut g, "input->logits", 2.5);
    set(&mut g, "a0.h1->m0", -1.0);
    set(&mut g, "a0.h1->logits", f32::NAN);
    assert_eq!(g.node_scores_from_edges(), [3.5, 0.0, -1.0, 0.0]);
}

#[test]
fn node_topn_selects_nodes_and_edges_between_them() {
    let mut g = tiny();
    assert_eq!(g.apply_node_topn(1, true), Err(GraphError::NoNodeScores));
    assert!(matches!(
        g.set_node_scores(&[1.0]),
        Err(GraphError::LengthMismatch { .. })
    ));
    // input, a0.h0, a0.h1, m0 (unscored: always kept).
    g.set_node_scores(&[1.0, 5.0, -0.5, f32::NAN]).unwrap();
    g.apply_node_topn(2, true).unwrap();
    assert_eq!(node_names(&g), ["input", "a0.h0", "m0", "logits"]);
    assert_eq!(
        in_names(&g),
        [
            "a0.h0->logits",
            "a0.h0->m0",
            "input->a0.h0<k>",
            "input->a0.h0<q>",
            "input->a0.h0<v>",
            "input->logits",
            "input->m0",
            "m0->logits"
        ]
    );
    g.apply_node_topn(1, false).unwrap();
    assert_eq!(node_names(&g), ["a0.h0", "m0", "logits"]);
    g.prune(); // nothing reaches from input
    assert_eq!(g.n_edges_in_graph(), 0);
    assert_eq!(
        g.apply_node_topn(4, true),
        Err(GraphError::TooManyNodes {
            requested: 4,
            available: 3
        })
    );
}

fn neuron_graph() -> Graph {
    let mut g = Graph::new(GraphConfig {
        d_model: Some(3),
        ..GraphConfig::new(1, 2, false)
    });
    let (r, d) = (g.n_forward(), 3);
    let scores: Vec<f32> = (0..r * d).map(|i| i as f32 - 4.5).collect();
    g.set_neuron_scores(&scores, r, d).unwrap();
    let mask: Vec<bool> = (0..r * d).map(|i| i % 2 == 0).collect();
    g.set_neurons_in_graph(&mask, r, d).unwrap();
    g.set_node_scores(&[0.5, f32::NAN, f32::INFINITY, -1.0])
        .unwrap();
    g
}

#[test]
fn neuron_level_needs_d_model() {
    let mut g = tiny();
    assert_eq!(g.enable_neurons(), Err(GraphError::NoDModel));
    let mut n = neuron_graph();
    assert!(n.is_neuron_level());
    assert!(matches!(
        n.set_neuron_scores(&[0.0; 6], 2, 3),
        Err(GraphError::ShapeMismatch { .. })
    ));
    n.clear_neurons();
    assert!(n.neuron_scores().is_none() && !n.is_neuron_level());
}

#[test]
fn json_round_trips_node_and_neuron_data() {
    let mut g = neuron_graph();
    set(&mut g, "input->logits", f32::NEG_INFINITY);
    let s = g.to_json_string();
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    // Heads carry their layer's [n_heads, d_model] block, like the reference writes.
    assert_eq!(v["nodes"]["a0.h1"]["neurons"].as_array().unwrap().len(), 2);
    assert_eq!(v["nodes"]["a0.h1"]["neurons_scores"][1][0], 1.5);
    assert_eq!(
        v["nodes"]["m0"]["neurons"],
        serde_json::json!([false, true, false])
    );
    assert!(v["nodes"]["a0.h0"]["score"].is_null());
    assert_eq!(v["nodes"]["a0.h1"]["score"], 1e39);
    assert!(v["nodes"]["logits"].get("score").is_none());
    let back = Graph::from_json_str(&s).unwrap();
    assert_eq!(back.to_json_string(), s);
    assert_eq!(back.neurons_in_graph(), g.neurons_in_graph());
    assert_eq!(back.neuron_scores(), g.neuron_scores());
    let ns = back.node_scores().unwrap();
    assert!(ns[1].is_nan() && ns[2] == f32::INFINITY && ns[3] == -1.0);
    let (f, b) = back.edge_index("input->logits").unwrap();
    assert_eq!(back.score(f, b), f32::NEG_INFINITY);
}

#[test]
fn json_reads_python_literals_and_single_rows() {
    let text = r#"{"cfg": {"n_layers": 1, "n_heads": 2, "parallel_attn_mlp": false, "d_model": 3},
        "nodes": {"input": {"in_graph": true, "score": NaN},
                  "a0.h1": {"in_graph": true, "score": -Infinity,
                            "neurons": [[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]],
                            "neurons_scores": [[1, 2, 3], [4, NaN, Infinity]]},
                  "m0": {"in_graph": false, "neurons": [false, true, false]},
                  "logits": {"in_graph": true}},
        "edges": {"input->a0.h1<q>": {"score": 0.25, "in_graph": true},
                  "a0.h1->logits": {"score": NaN, "in_graph": true}}}"#;
    let g = Graph::from_json_str(text).unwrap();
    assert_eq!(in_names(&g), ["a0.h1->logits", "input->a0.h1<q>"]);
    assert_eq!(node_names(&g), ["input", "a0.h1", "logits"]);
    let ns = g.node_scores().unwrap();
    assert!(ns[0].is_nan() && ns[1].is_nan() && ns[3].is_nan());
    assert_eq!(ns[2], f32::NEG_INFINITY);
    let mask = g.neurons_in_graph().unwrap();
    assert_eq!(&mask[6..9], [false, true, true]); // row of a0.h1 from its layer block
    assert_eq!(&mask[9..12], [false, true, false]);
    assert_eq!(&mask[0..3], [false; 3]); // absent: out of the circuit
    let scores = g.neuron_scores().unwrap();
    assert_eq!(scores[6], 4.0);
    assert!(scores[7].is_nan() && scores[0].is_nan());
    assert_eq!(scores[8], f32::INFINITY);
    // A string containing NaN is left alone.
    let bad = r#"{"cfg": {"n_layers": 1, "n_heads": 2, "parallel_attn_mlp": false},
        "nodes": {"NaN": true}}"#;
    assert_eq!(
        Graph::from_json_str(bad),
        Err(GraphError::UnknownNode("NaN".into()))
    );
    // Neuron data needs d_model.
    let no_d = r#"{"cfg": {"n_layers": 1, "n_heads": 2, "parallel_attn_mlp": false},
        "nodes": {"m0": {"in_graph": true, "neurons": [true]}}}"#;
    assert_eq!(Graph::from_json_str(no_d), Err(GraphError::NoDModel));
}

#[test]
fn prune_drops_neuronless_nodes_and_their_neurons() {
    let mut g = neuron_graph();
    let d = 3;
    let mut mask = vec![true; g.n_forward() * d];
    mask[2 * d..3 * d].fill(false); // a0.h1 has no neuron left
    g.set_neurons_in_graph(&mask, g.n_forward(), d).unwrap();
    for name in [
        "input->a0.h1<q>",
        "a0.h1->logits",
        "input->a0.h0<v>",
        "a0.h0->m0",
        "m0->logits",
    ] {
        let (f, b) = g.edge_index(name).unwrap();
        g.set_in_graph(f, b, true);
    }
    g.prune();
    assert_eq!(in_names(&g), ["a0.h0->m0", "input->a0.h0<v>", "m0->logits"]);
    assert_eq!(node_names(&g), ["input", "a0.h0", "m0", "logits"]);
    // Make m0 drop out too: its input edge goes, and so do its neurons.
    let (f, b) = g.edge_index("a0.h0->m0").unwrap();
    g.set_in_graph(f, b, false);
    g.prune();
    assert_eq!(g.n_edges_in_graph(), 0);
    assert!(g.neurons_in_graph().unwrap().iter().all(|x| !x));
}

#[test]
fn svg_draws_circuit_nodes_and_edges() {
    let mut g = tiny();
    set(&mut g, "input->a0.h0<q>", 2.0);
    set(&mut g, "a0.h0->logits", -4.0);
    g.apply_topn(2, true).unwrap();
    let svg = g.to_svg(&SvgOptions::default());
    assert!(
        svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
        "{svg}"
    );
    assert!(svg.ends_with("</svg>\n"));
    assert_eq!(svg.matches("<g class=\"node\">").count(), 3);
    assert_eq!(svg.matches("<title>").count(), 3 + 2);
    assert_eq!(svg.matches("</title>").count(), 3 + 2);
    assert_eq!(svg.matches("<path ").count(), 2);
    assert_eq!(svg.matches("<g").count(), svg.matches("</g>").count());
    assert!(
        svg.contains("<title>input-&gt;a0.h0&lt;q&gt; (score 2)</title>"),
        "{svg}"
    );
    assert!(
        svg.contains("stroke=\"#b2182b\" stroke-width=\"6.00\""),
        "{svg}"
    );
    assert!(
        svg.contains("stroke=\"#2166ac\" stroke-width=\"3.00\""),
        "{svg}"
    );
    assert!(!svg.contains(">m0<"));
    // Bottom to top: input below a0.h0 below logits (SVG y grows downwards).
    let y_of = |name: &str| -> f32 {
        let at = svg.find(&format!("<title>{name}</title><rect")).unwrap();
        let rest = &svg[at..];
        let y = rest.split("y=\"").nth(1).unwrap();
        y[..y.find('"').unwrap()].parse().unwrap()
    };
    assert!(y_of("input") > y_of("a0.h0") && y_of("a0.h0") > y_of("logits"));
    // The legend explains colour, width (with the scores the widths stand for) and dash.
    for want in [
        "Edge colour: sign of score",
        ">positive<",
        ">negative<",
        "Edge width ∝ |score|",
        ">|score| 4<",
        ">|score| 2<",
        ">q (query)<",
        ">k (key)<",
        ">v (value)<",
    ] {
        assert!(svg.contains(want), "{want:?} missing: {svg}");
    }
    // The head marks its q, k and v entries; every text is at least 12 px.
    assert!(
        svg.contains(">q</text>") && svg.contains(">v</text>"),
        "{svg}"
    );
    for size in svg.split("font-size=\"").skip(1) {
        let px: f32 = size[..size.find('"').unwrap()].parse().unwrap();
        assert!(px >= 12.0, "{px} px text");
    }
    // The picture is wider than its single column of nodes (it holds the legend).
    let width: f32 = svg
        .split("width=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(width >= 300.0, "{width}");
    // An empty circuit is still a valid document.
    g.clear();
    let empty = g.to_svg(&SvgOptions::default());
    assert!(empty.starts_with("<svg") && !empty.contains("<title>"));
}

#[test]
fn svg_marks_head_inputs_by_dash_and_bows_long_edges() {
    let mut g = tiny();
    set(&mut g, "input->a0.h0<k>", 1.0);
    set(&mut g, "input->a0.h0<v>", 1.0);
    set(&mut g, "input->a0.h0<q>", 1.0);
    set(&mut g, "a0.h0->logits", 1.0);
    g.apply_topn(4, true).unwrap();
    let svg = g.to_svg(&SvgOptions::default());
    let edge = |name: &str| -> String {
        let at = svg.find(&format!("<title>{name} ")).unwrap();
        svg[svg[..at].rfind("<path").unwrap()..at].to_string()
    };
    assert!(!edge("input-&gt;a0.h0&lt;q&gt;").contains("dasharray"));
    assert!(edge("input-&gt;a0.h0&lt;k&gt;").contains("stroke-dasharray=\"7 3\""));
    assert!(edge("input-&gt;a0.h0&lt;v&gt;").contains("stroke-dasharray=\"2 3\""));
    // m0 is not drawn, so its row is left out: a0.h0 -> logits skips no row and goes straight.
    let d = edge("a0.h0-&gt;logits");
    let nums: Vec<f32> = d
        .split("d=\"M")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .split([' ', ',', 'C'])
        .filter(|t| !t.is_empty())
        .map(|t| t.parse().unwrap())
        .collect();
    assert_eq!(nums[0], nums[2], "straight up: {d}");
    // With m0 drawn between them, the same edge bows out beside m0's box.
    set(&mut g, "a0.h0->m0", 1.0);
    g.apply_topn(5, true).unwrap();
    let svg = g.to_svg(&SvgOptions::default());
    let at = svg.find("<title>a0.h0-&gt;logits ").unwrap();
    let d = &svg[svg[..at].rfind("<path").unwrap()..at];
    let nums: Vec<f32> = d
        .split("d=\"M")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .split([' ', ',', 'C'])
        .filter(|t| !t.is_empty())
        .map(|t| t.parse().unwrap())
        .collect();
    let opts = SvgOptions::default();
    assert!(
        (nums[2] - nums[0]).abs() > opts.node_width / 2.0,
        "bows beside the box: {d}"
    );
}

#[test]
fn scores_are_formatted_for_people() {
    let cases = [
        (0.0, "0"),
        (-0.0, "0"),
        (-1e-9, "0"),
        (1.0, "1"),
        (2.5, "2.5"),
        (-0.12345, "-0.123"),
        (123.456, "123"),
        (0.001234, "0.00123"),
        (0.0001234, "1.23e-4"),
        (f32::NAN, "NaN"),
    ];
    for (x, want) in cases {
        assert_eq!(format_score(x), want, "{x}");
    }
}

#[test]
fn dot_renders_when_graphviz_is_installed() {
    let mut g = tiny();
    set(&mut g, "a0.h0->logits", 1.0);
    g.apply_topn(1, true).unwrap();
    match render_svg_with_dot(&g.to_dot()) {
        None => {} // `dot` not on PATH
        Some(result) => assert!(result.unwrap().contains("<svg")),
    }
    if let Some(result) = render_svg_with_dot("digraph {") {
        assert!(matches!(result, Err(GraphError::Render(_))));
    }
}

/// A graph JSON whose `cfg` asks for an absurd graph is an `InvalidConfig` naming the field or
/// the limit, before anything is allocated (issue 18: 650 GB requests from a 19 KB file).
#[test]
fn graph_json_with_absurd_sizes_is_refused_before_allocating() {
    let cases = [
        (
            r#"{"n_layers": 1000000000, "n_heads": 12}"#,
            "n_layers = 1000000000",
        ),
        (
            r#"{"n_layers": 12, "n_heads": 18446744073709551615}"#,
            "n_heads",
        ),
        (r#"{"n_layers": 0, "n_heads": 12}"#, "n_layers = 0"),
        (r#"{"n_layers": 12, "n_heads": 0}"#, "n_heads = 0"),
        (r#"{"n_layers": 4096, "n_heads": 4096}"#, "MAX_CELLS"),
        (
            r#"{"n_layers": 12, "n_heads": 12, "d_model": 0}"#,
            "d_model = 0",
        ),
        (
            r#"{"n_layers": 100, "n_heads": 12, "d_model": 1048576}"#,
            "neuron data",
        ),
    ];
    for (cfg, needle) in cases {
        let cfg = cfg.replace('}', r#", "parallel_attn_mlp": false}"#);
        let json = format!(r#"{{"cfg": {cfg}, "nodes": {{}}, "edges": {{}}}}"#);
        let err = Graph::from_json_str(&json).unwrap_err();
        assert!(
            matches!(err, GraphError::InvalidConfig(_)),
            "{cfg}: {err:?}"
        );
        assert!(err.to_string().contains(needle), "{cfg}: {err}");
    }
    // The same sizes through the constructor: an error, not a panic or an abort.
    let huge = GraphConfig::new(4096, 4096, false);
    assert!(Graph::try_new(huge).is_err());
    assert!(std::panic::catch_unwind(|| Graph::new(huge)).is_err());
    // Real shapes pass: Llama 3 70B (80 layers of 64 heads, d_model 8192).
    let mut llama70b = GraphConfig::new(80, 64, false);
    llama70b.d_model = Some(8192);
    assert_eq!(llama70b.check(), Ok(()));
}
