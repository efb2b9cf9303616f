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
            "--top-n",
            "20",
            "--out",
            out.to_str().unwrap(),
        ]);
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert!(
            run.status.success(),
            "{method}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(
            stdout.contains("scored") && stdout.contains("->"),
            "{stdout}"
        );
        let graph = Graph::from_json_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(graph.n_edges(), Graph::new(*graph.cfg()).n_edges());
        assert!(
            graph.scores().iter().any(|s| s.abs() > 0.0),
            "{method}: all scores zero"
        );
        assert!(graph.n_edges_in_graph() > 0 && graph.n_edges_in_graph() <= 20);
    }
    let svg = dir.join("graph.svg");
    let show = fidelis(&[
        "circuit",
        "show",
        out.to_str().unwrap(),
        "--top",
        "5",
        "--svg",
        svg.to_str().unwrap(),
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
