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

/// A stand-in for the hub on 127.0.0.1 with the two requests `hf-hub` makes: the file list
/// (`/api/models/ORG/NAME/revision/main`) and ranged file downloads
/// (`/ORG/NAME/resolve/main/FILE`) carrying the commit and etag headers. It serves the
/// tiny-gpt2 fixture as `tiny-org/tiny-gpt2` and nothing else.
fn fake_hub() -> String {
    use axum::Router;
    use axum::extract::Path as UrlPath;
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::get;

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
    const FILES: [&str; 3] = ["config.json", "model.safetensors", "tokenizer.json"];
    async fn info(UrlPath((org, name)): UrlPath<(String, String)>) -> axum::response::Response {
        if (org.as_str(), name.as_str()) != ("tiny-org", "tiny-gpt2") {
            return (StatusCode::NOT_FOUND, "no such repo").into_response();
        }
        let siblings: Vec<_> = FILES
            .iter()
            .chain(&["README.md"])
            .map(|f| serde_json::json!({ "rfilename": f }))
            .collect();
        axum::Json(serde_json::json!({ "sha": COMMIT, "siblings": siblings })).into_response()
    }
    async fn file(
        UrlPath((org, name, _rev, file)): UrlPath<(String, String, String, String)>,
        headers: HeaderMap,
    ) -> axum::response::Response {
        if (org.as_str(), name.as_str()) != ("tiny-org", "tiny-gpt2")
            || !FILES.contains(&file.as_str())
        {
            return (StatusCode::NOT_FOUND, "no such file").into_response();
        }
        let bytes = std::fs::read(fixture("tiny-gpt2").join(&file)).unwrap();
        let size = bytes.len();
        let (start, end) = headers
            .get(header::RANGE)
            .and_then(|r| r.to_str().ok())
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.split_once('-'))
            .map(|(a, b)| {
                let a: usize = a.parse().unwrap_or(0);
                let b: usize = b.parse().map_or(size - 1, |b: usize| b.min(size - 1));
                (a, b)
            })
            .unwrap_or((0, size - 1));
        let etag = format!("\"{:x}{:08x}\"", file.len(), size);
        (
            StatusCode::PARTIAL_CONTENT,
            [
                ("x-repo-commit", COMMIT.to_string()),
                ("etag", etag),
                ("content-range", format!("bytes {start}-{end}/{size}")),
            ],
            bytes[start..=end].to_vec(),
        )
            .into_response()
    }
    let app = Router::new()
        .route("/api/models/{org}/{name}/revision/main", get(info))
        .route("/{org}/{name}/resolve/{rev}/{*file}", get(file));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{}", rx.recv().unwrap())
}

fn fetch(endpoint: &str, cache: &Path, id: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fidelis"))
        .args(["models", "fetch", id])
        .env("HF_ENDPOINT", endpoint)
        .env("HF_HUB_CACHE", cache)
        .env_remove("HF_TOKEN")
        .output()
        .unwrap()
}

#[test]
fn fetch_downloads_a_hub_model_into_the_cache_from_a_local_endpoint() {
    let endpoint = fake_hub();
    let root = std::env::temp_dir().join(format!("fidelis-hub-fetch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let out = fetch(&endpoint, &root, "tiny-org/tiny-gpt2");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snapshot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        let got = std::fs::read(snapshot.join(file)).unwrap();
        assert_eq!(
            got,
            std::fs::read(fixture("tiny-gpt2").join(file)).unwrap(),
            "{file}"
        );
    }
    assert!(
        !snapshot.join("README.md").exists(),
        "only the files a model needs"
    );
    // Now offline: the hub id resolves from the cache.
    let out = inspect(&root, "tiny-org/tiny-gpt2");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A repository the hub does not have, and a hub that cannot be reached, are named.
    let out = fetch(&endpoint, &root, "tiny-org/missing");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tiny-org/missing") && err.contains("listing the files"),
        "{err}"
    );
    let out = fetch("http://127.0.0.1:9", &root, "tiny-org/tiny-gpt2x");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("network"), "{err}");
    let _ = std::fs::remove_dir_all(&root);
}
