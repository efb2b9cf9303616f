//! `fidelis circuit discover` and `fidelis circuit show` end to end on a fixture model.

use std::path::{Path, PathBuf};
use std::process::Command;

use fidelis_graph::Graph;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fidelis-models/tests/fixtures")
        .join(name)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fidelis-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// IOI-style pairs whose names are single tokens of the fixture tokenizer.
fn write_jsonl(dir: &Path, unequal: bool) -> PathBuf {
    let corrupted = if unequal {
        "When John and Mary went to the store, Mary gave a drink to the"
    } else {
        "When John and Mary went to the store, Mary gave a drink to"
    };
    let lines = [
        format!(r#"{{"clean": "When Mary and John went to the store, John gave a drink to", "corrupted": "{corrupted}", "answer": " Mary", "wrong": " John"}}"#),
        r#"{"clean": "When John and Mary went to the store, Mary gave a drink to", "corrupted": "When Mary and John went to the store, John gave a drink to", "answer": " John", "wrong": " Mary"}"#.to_string(),
    ];
    let path = dir.join("pairs.jsonl");
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

fn fidelis(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fidelis"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn discover_writes_a_scored_graph_and_show_draws_it() {
    let dir = scratch("discover");
    let data = write_jsonl(&dir, false);
    let out = dir.join("graph.json");
    let model = fixture("tiny-gpt2");
    for method in ["eap", "eap-ig-inputs", "clean-corrupted", "exact"] {
        let run = fidelis(&[
            "circuit",
            "discover",
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--method",
            method,
            "--steps",
            "3",
            "--node-scores",
            "--top-n",
            "20",
            "--out",
            out.to_str().unwrap(),
        ]);
        let stdout = String::from_utf8_lossy(&run.stdout);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(run.status.success(), "{method}: {stderr}");
        assert!(stdout.contains("->"), "{stdout}");
        // The summary line on stderr: what was done and the wall time.
        let summary = stderr.lines().last().unwrap_or_default();
        assert!(
            summary.starts_with("scored ")
                && summary.contains(" edges in ")
                && summary.ends_with(" s"),
            "{stderr}"
        );
        let graph = Graph::from_json_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(graph.n_edges(), Graph::new(*graph.cfg()).n_edges());
        assert!(
            graph.scores().iter().any(|s| s.abs() > 0.0),
            "{method}: all scores zero"
        );
        assert!(graph.n_edges_in_graph() > 0 && graph.n_edges_in_graph() <= 20);
        let nodes = graph.node_scores().expect("node scores were asked for");
        assert_eq!(nodes.len(), graph.n_forward());
    }
    let (svg, png) = (dir.join("graph.svg"), dir.join("graph.png"));
    let show = fidelis(&[
        "circuit",
        "show",
        out.to_str().unwrap(),
        "--top",
        "5",
        "--svg",
        svg.to_str().unwrap(),
        "--png",
        png.to_str().unwrap(),
    ]);
    assert!(
        show.status.success(),
        "{}",
        String::from_utf8_lossy(&show.stderr)
    );
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        text.contains("2 layers × 4 heads") && text.contains("rank"),
        "{text}"
    );
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG\r\n"));

    // The last discover marked a 20-edge circuit: evaluate it (with completeness), then a curve.
    let m = model.to_str().unwrap();
    let d = data.to_str().unwrap();
    let run = fidelis(&[
        "circuit",
        "evaluate",
        out.to_str().unwrap(),
        "--model",
        m,
        "--data",
        d,
    ]);
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success() && text.contains("complement"),
        "{text}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let (csv, json, curve_svg, curve_png) = (
        dir.join("curve.csv"),
        dir.join("curve.json"),
        dir.join("curve.svg"),
        dir.join("curve.png"),
    );
    let run = fidelis(&[
        "circuit",
        "evaluate",
        out.to_str().unwrap(),
        "--model",
        m,
        "--data",
        d,
        "--sizes",
        "5,50,100000",
        "--csv",
        csv.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--svg",
        curve_svg.to_str().unwrap(),
        "--png",
        curve_png.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success() && text.contains("CPR"),
        "{text}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let rows: Vec<String> = std::fs::read_to_string(&csv)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(rows.len(), 4, "{rows:?}");
    let last: Vec<&str> = rows[3].split(',').collect();
    assert_eq!(
        last[2], "1.000000",
        "the largest size is the whole graph: {rows:?}"
    );
    let faithfulness: f32 = last[4].parse().unwrap();
    assert!((faithfulness - 1.0).abs() < 1e-3, "{rows:?}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(summary["cpr"].is_number() && summary["points"].as_array().unwrap().len() == 3);
    // The picture of that curve: axis descriptions, exact ticks, the empty circuit apart, and a
    // legend naming the graph file.
    let picture = std::fs::read_to_string(&curve_svg).unwrap();
    let png = std::fs::read(&curve_png).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n") && png.len() > 10_000,
        "{}",
        png.len()
    );
    for want in [
        "circuit size (% of edges)",
        "normalized faithfulness",
        "empty",
        "100 %",
        "graph.json (",
    ] {
        assert!(picture.contains(want), "{want:?} missing from {picture}");
    }
    assert!(
        !picture.contains("0.0000") && !picture.contains("9999 %"),
        "float noise in a label"
    );

    let run = fidelis(&[
        "circuit",
        "compare",
        out.to_str().unwrap(),
        out.to_str().unwrap(),
        "--top",
        "10",
    ]);
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success() && text.contains("IoU 1.000"), "{text}");
}

#[test]
fn unequal_lengths_and_bad_options_are_clear_errors() {
    let dir = scratch("errors");
    let data = write_jsonl(&dir, true);
    let model = fixture("tiny-gpt2");
    let out = dir.join("g.json");
    let base = [
        "circuit",
        "discover",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ];
    let run = fidelis(&[&base[..], &["--out", out.to_str().unwrap()]].concat());
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("error:") && err.contains("equal"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let run = fidelis(&[&base[..], &["--method", "eap-magic"]].concat());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && err.contains("unknown method"),
        "{err}"
    );
    let run = fidelis(&[&base[..], &["--loss", "accuracy"]].concat());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && err.contains("unknown metric"),
        "{err}"
    );
    let run = fidelis(&[
        "circuit",
        "show",
        dir.join("missing.json").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && err.contains("missing.json"),
        "{err}"
    );
}
