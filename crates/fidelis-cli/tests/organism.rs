//! The committed organism (`models/organism/`) solves the tasks it was trained on, on held-out
//! prompts, with the accuracies its model card reports.

use burn::prelude::*;
use fidelis_cli::organism::task_accuracies;
use fidelis_models::Model;
use fidelis_models::fetch::{ORGANISM, resolve_model_name};
use fidelis_tasks::{Task, generate};

/// Held-out examples per task and their seed, as in `MODEL_CARD.md`.
const EXAMPLES: usize = 200;
const SEED: u64 = 1;
const MIN_ACCURACY: f64 = 0.95;

fn organism() -> Model {
    let path = resolve_model_name(ORGANISM).expect("models/organism is committed");
    Model::load(&path, &Device::flex()).expect("the organism loads")
}

#[test]
fn organism_is_accurate_on_held_out_prompts() {
    let model = organism();
    let accuracies = task_accuracies(&model, EXAMPLES, SEED).unwrap();
    assert_eq!(accuracies.len(), 4);
    for a in &accuracies {
        assert_eq!(a.total, EXAMPLES);
        assert!(
            a.accuracy() >= MIN_ACCURACY,
            "{}: {}/{} ({})",
            a.task,
            a.correct,
            a.total,
            a.criterion
        );
    }
}

#[test]
fn organism_tokenizer_poses_the_circuit_tasks() {
    let model = organism();
    let tok = |text: &str| model.tokenizer.encode(text).map_err(|e| e.to_string());
    for task in [Task::Ioi, Task::GreaterThan, Task::Sva] {
        assert_eq!(generate(task, &tok, 64, 0).unwrap().len(), 64, "{task}");
    }
    assert_eq!(model.tokenizer.encode(" 1745").unwrap().len(), 2);
}

#[test]
fn eap_ig_finds_a_faithful_ioi_circuit_in_under_ten_percent_of_edges() {
    use fidelis_attribution::{EdgeAttribution, Method, attribute_edges_with_progress};
    use fidelis_circuit::{Ablation, BuiltinMetric, Silent};
    use fidelis_cli::circuit::{DataSource, graph_for, load_examples, tokenize};
    use fidelis_faithfulness::{EvalOptions, faithfulness_curve_with_progress, mib_sizes};
    let model = organism();
    let data = DataSource::Task {
        task: Task::Ioi,
        n: 32,
        seed: 0,
    };
    let pairs = tokenize(&model, &load_examples(&model, &data).unwrap(), true).unwrap();
    let mut graph = graph_for(&model);
    let metric = BuiltinMetric::LogitDiff;
    let opts = EdgeAttribution::new(Method::EapIgInputs);
    attribute_edges_with_progress(
        &model.transformer,
        &mut graph,
        &pairs,
        &metric,
        &opts,
        &mut Silent,
    )
    .unwrap();
    let eval = EvalOptions {
        ablation: Ablation::Patching,
        batch_size: 16,
        circuits_per_pass: 4,
        selection: Default::default(),
    };
    let sizes = mib_sizes(graph.n_edges());
    let curve = faithfulness_curve_with_progress(
        &model.transformer,
        &graph,
        &pairs,
        &metric,
        &sizes,
        &eval,
        &mut Silent,
    )
    .unwrap();
    let first = curve.first_reaching(0.8).expect("the curve reaches 0.8");
    assert!(first.fraction < 0.1, "0.8 first reached at {first:?}");
    assert!(
        curve.clean > curve.empty,
        "IOI behaviour: clean {} vs corrupted {}",
        curve.clean,
        curve.empty
    );
}
