//! `--model ORG/NAME` resolves from the Hugging Face cache (its `models--ORG--NAME` layout, as
//! `huggingface_hub` writes it), with no network; a model that is not cached is a clear error.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fidelis-models/tests/fixtures")
        .join(name)
}

/// A Hugging Face cache holding `tiny-org/tiny-gpt2` at commit `abc123` (files copied, not
/// linked as the real cache does: resolution reads the snapshot folder either way).
fn fake_cache(root: &Path) {
    let repo = root.join("models--tiny-org--tiny-gpt2");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "abc123\n").unwrap();
    let snapshot = repo.join("snapshots/abc123");
    std::fs::create_dir_all(&snapshot).unwrap();
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixture("tiny-gpt2").join(file), snapshot.join(file)).unwrap();
    }
}

fn inspect(cache: &Path, model: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fidelis"))
        .args(["inspect", "--json", "--model", model])
        .env("HF_HUB_CACHE", cache)
        .output()
        .unwrap()
}

#[test]
fn hub_ids_resolve_from_the_cache_and_missing_ones_say_how_to_fetch() {
    let root = std::env::temp_dir().join(format!("fidelis-hub-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    fake_cache(&root);
    let out = inspect(&root, "tiny-org/tiny-gpt2");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["config"]["n_layers"], 2);
    assert!(
        v["source"].as_str().unwrap().ends_with("snapshots/abc123"),
        "{v}"
    );

    let out = inspect(&root, "tiny-org/not-here");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("models--tiny-org--not-here") && err.contains("fidelis models fetch"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn hub_id_shapes() {
    use fidelis_models::fetch::is_hub_id;
    for ok in [
        "meta-llama/Llama-3.2-1B",
        "EleutherAI/pythia-160m",
        "Qwen/Qwen2.5-0.5B",
    ] {
        assert!(is_hub_id(ok), "{ok}");
    }
    for bad in [
        "organism",
        "a/b/c",
        "../x",
        "a/..",
        "/abs",
        "a/",
        "a b/c",
        "models/organism/",
    ] {
        assert!(!is_hub_id(bad), "{bad}");
    }
}
