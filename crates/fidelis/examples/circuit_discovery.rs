//! Circuit discovery on the organism (the small GPT-2 this repository ships): EAP-IG on inputs
//! over 16 generated IOI pairs, the top edges, and the circuit of the 50 best edges saved in
//! the EAP-IG JSON format.
//!
//! `cargo run -p fidelis --example circuit_discovery` (from the repository root).

use fidelis::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = fidelis::cpu();
    let path = fidelis::models::fetch::resolve_model_name("organism")?;
    let model = Model::load(&path, &device)?;
    let pairs = fidelis::data::task_pairs(&model, Task::Ioi, 16, 0, true)?;

    let cfg = model.config();
    let mut graph = Graph::new(GraphConfig::new(
        cfg.n_layers,
        cfg.n_heads,
        cfg.parallel_attn_mlp,
    ));
    let opts = EdgeAttribution::new(Method::EapIgInputs);
    let metric = BuiltinMetric::LogitDiff;
    attribute_edges(&model.transformer, &mut graph, &pairs, &metric, &opts)?;

    let mut edges: Vec<_> = graph.edges().collect();
    edges.sort_by(|a, b| b.score.abs().total_cmp(&a.score.abs()));
    println!(
        "{} edges scored on {} IOI pairs; the strongest:",
        edges.len(),
        pairs.len()
    );
    for e in edges.iter().take(10) {
        println!("  {:<24} {:+.4}", e.name, e.score);
    }

    let circuit = fidelis::faithfulness::select_circuit(&graph, 50, Default::default())?;
    let out = std::path::Path::new("fidelis-out/example-circuit.json");
    std::fs::create_dir_all("fidelis-out")?;
    std::fs::write(out, circuit.to_json_string())?;
    println!(
        "circuit of {} edges written to {}",
        circuit.n_edges_in_graph(),
        out.display()
    );
    Ok(())
}
