//! `fidelis inspect --config` on the published shapes in `models/configs/`: node and edge counts
//! of the EAP-IG graph against a closed-form count written here, independently of
//! `fidelis-graph`'s masks.

use std::path::PathBuf;
use std::process::Command;

/// Nodes and edges of the graph of `layers` × `heads`: rows are the input, every head and every
/// MLP; a layer-l head input (q, k and v separately) reads the rows written before layer l, an
/// MLP also reads its own layer's heads unless attention and MLP run in parallel, and the
/// logits read every row.
fn closed_form(layers: u64, heads: u64, parallel: bool) -> (u64, u64) {
    let before = |l: u64| 1 + l * (heads + 1);
    let mut edges = 0;
    for l in 0..layers {
        edges += 3 * heads * before(l);
        edges += before(l) + if parallel { 0 } else { heads };
    }
    edges += before(layers);
    (before(layers) + 1, edges)
}

fn inspect(file: &str) -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/configs")
        .join(file);
    let out = Command::new(env!("CARGO_BIN_EXE_fidelis"))
        .args(["inspect", "--json", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn graph_sizes_of_published_models_match_the_closed_form() {
    let cases = [
        ("gpt2-small.json", 12, 12, false, Some(32_491)),
        ("pythia-160m.json", 12, 12, true, None),
        ("qwen2.5-0.5b.json", 24, 14, false, None),
        ("qwen3-0.6b.json", 28, 16, false, None),
        ("llama-3.2-1b.json", 16, 32, false, None),
        ("llama-3.1-8b.json", 32, 32, false, None),
        ("gemma-2-2b.json", 26, 8, false, None),
    ];
    for (file, layers, heads, parallel, published) in cases {
        let v = inspect(file);
        let cfg = &v["config"];
        assert_eq!(cfg["n_layers"], layers, "{file}");
        assert_eq!(cfg["n_heads"], heads, "{file}");
        assert_eq!(cfg["parallel_attn_mlp"], parallel, "{file}");
        let (nodes, edges) = closed_form(layers, heads, parallel);
        assert_eq!(v["graph"]["nodes"], nodes, "{file}");
        assert_eq!(v["graph"]["edges"], edges, "{file}");
        if let Some(n) = published {
            assert_eq!(edges, n, "{file}: the EAP-IG paper's count");
        }
    }
}

#[test]
fn published_shapes_load_their_positions_and_sizes() {
    // Llama 3.1 8B: 8.03 B parameters with an untied unembedding, llama3 rope scaling.
    let v = inspect("llama-3.1-8b.json");
    let params = v["parameters_estimate"].as_u64().unwrap();
    assert!((8_020_000_000..8_040_000_000).contains(&params), "{params}");
    let scaling = &v["config"]["positional"]["Rotary"]["scaling"]["Llama3"];
    assert_eq!(scaling["factor"], 8.0, "{v}");
    // Gemma-2-2B: 2,614,341,888 parameters (26 × (14,155,776 attention + 63,700,992 MLP +
    // 4 × 2,304 norm) + 256,000 × 2,304 tied embedding + 2,304 final norm).
    let v = inspect("gemma-2-2b.json");
    assert_eq!(v["parameters_estimate"], 2_614_341_888u64, "{v}");
    let cfg = &v["config"];
    assert_eq!(cfg["post_norms"], true);
    assert_eq!(cfg["attn_softcap"], 50.0);
    assert_eq!(cfg["final_softcap"], 30.0);
    assert_eq!(cfg["embed_scale"], 48.0);
    let windows = cfg["attention_windows"].as_array().unwrap();
    assert_eq!(windows.len(), 26);
    assert_eq!(
        (windows[0].clone(), windows[1].clone()),
        (4096.into(), serde_json::Value::Null)
    );
    // Pythia rotates a quarter of each 64-wide head.
    let v = inspect("pythia-160m.json");
    assert_eq!(v["config"]["positional"]["Rotary"]["rotary_dim"], 16);
    // Qwen 3 heads are 128 wide though 1024 / 16 = 64.
    let v = inspect("qwen3-0.6b.json");
    assert_eq!(v["config"]["d_head"], 128);
    assert_eq!(v["config"]["qk_norm"], true);
}

#[test]
fn config_and_model_are_exclusive_and_a_bad_config_is_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_fidelis"))
        .args(["inspect", "--model", "organism", "--config", "x.json"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--config") && err.contains("--model"), "{err}");
    let dir = std::env::temp_dir().join(format!("fidelis-inspect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mamba.json");
    std::fs::write(&path, r#"{"model_type": "mamba"}"#).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fidelis"))
        .args(["inspect", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mamba") && err.contains("gemma2") && err.contains("gpt_neox"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
