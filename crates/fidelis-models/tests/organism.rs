//! `--model organism` resolves to the GPT-2 committed under `models/organism/`.

use burn::prelude::*;
use fidelis_models::fetch::{ORGANISM, organism_path, resolve_model_name};
use fidelis_models::{Architecture, Model};

#[test]
fn organism_name_resolves_to_the_committed_folder() {
    let path = resolve_model_name(ORGANISM).unwrap();
    assert_eq!(path, organism_path());
    assert!(
        path.join("model.safetensors").is_file(),
        "{}",
        path.display()
    );
    let bytes = std::fs::metadata(path.join("model.safetensors"))
        .unwrap()
        .len();
    assert!(
        bytes < 10_000_000,
        "the organism must stay small: {bytes} bytes"
    );

    let model = Model::load(&path, &Device::flex()).unwrap();
    assert_eq!(model.config().architecture, Architecture::Gpt2);
    assert_eq!(model.tokenizer.bos_id(), Some(0));
}

#[test]
fn other_names_are_paths() {
    for path in ["some/deep/folder", "./some/folder", "model.gguf"] {
        assert_eq!(
            resolve_model_name(path).unwrap(),
            std::path::PathBuf::from(path)
        );
    }
    // An `ORG/NAME` that is no local path is a hub id, looked up in the Hugging Face cache
    // (`crates/fidelis-cli/tests/hub_cache.rs` covers the cache and the fetch).
    let err = resolve_model_name("no-such-org-xyz/no-such-model").unwrap_err();
    assert!(err.to_string().contains("fidelis models fetch"), "{err}");
}
