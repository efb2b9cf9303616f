//! How faithful the top-n circuits of an EAP score are: the organism scored with EAP on 16 IOI
//! pairs, then evaluated with every edge outside each circuit patched to its corrupted value,
//! at the MIB circuit sizes (0.1 % to 100 % of the edges), with the areas CPR and CMD.
//!
//! `cargo run -p fidelis --example faithfulness_curve` (from the repository root).

use fidelis::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = fidelis::cpu();
    let model = Model::load(
        &fidelis::models::fetch::resolve_model_name("organism")?,
        &device,
    )?;
    let pairs = fidelis::data::task_pairs(&model, Task::Ioi, 16, 0, true)?;
    let cfg = model.config();
    let mut graph = Graph::new(GraphConfig::new(
        cfg.n_layers,
        cfg.n_heads,
        cfg.parallel_attn_mlp,
    ));
    let metric = BuiltinMetric::LogitDiff;
    let opts = EdgeAttribution::new(Method::Eap);
    attribute_edges(&model.transformer, &mut graph, &pairs, &metric, &opts)?;

    let sizes = mib_sizes(graph.n_edges());
    let eval = EvalOptions::new(Ablation::Patching);
    let curve = faithfulness_curve(&model.transformer, &graph, &pairs, &metric, &sizes, &eval)?;
    println!(
        "clean metric {:.3}, all edges ablated {:.3}",
        curve.clean, curve.empty
    );
    println!("{:>8}  {:>8}  faithfulness", "edges", "fraction");
    for p in &curve.points {
        println!(
            "{:>8}  {:>7.2}%  {:.3}",
            p.edges,
            100.0 * p.fraction,
            p.faithfulness
        );
    }
    println!(
        "CPR {:.3} (higher is better), CMD {:.3} (lower is better)",
        curve.cpr, curve.cmd
    );
    Ok(())
}
