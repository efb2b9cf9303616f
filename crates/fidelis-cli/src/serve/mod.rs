//! `fidelis serve`: a local web page for context attribution and circuit discovery.
//!
//! One self-contained page (HTML, CSS and JavaScript embedded in the binary with
//! `include_str!`; nothing is fetched from elsewhere) and a JSON API, served by axum on a tokio
//! runtime. The page has two tabs:
//! - **Context attribution** (PECoRe through [`fidelis_context`]): presets, every parameter of
//!   `fidelis context`, the answer with its context-sensitive tokens highlighted and, on hover
//!   or click, their cues in the context; the JSON, and the exact shell command and Rust code
//!   that reproduce the run.
//! - **Circuit**: edge attribution for a task (the functions of [`crate::circuit`]), its
//!   faithfulness curve and the circuit graph, with a slider over evaluated circuit sizes.
//!
//! Model work runs as jobs on their own threads ([`jobs`]); the page polls
//! `GET /api/jobs/{id}` for progress and can cancel. One job runs per model; a second request
//! for a busy model gets `409`, one over the server's job cap `429`. Requests are bounded
//! ([`Limits`]): body size, text length (characters, and tokens against the model's window),
//! new tokens, examples and steps; each violation is a 4xx with a message.
//!
//! The server listens on 127.0.0.1 unless `--host` names another address together with
//! `--allow-remote`: the API runs models on request and has no authentication.

pub mod api;
pub mod circuit_job;
pub mod context_job;
pub mod export;
pub mod jobs;
pub mod presets;

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use fidelis_models::Model;
use fidelis_models::fetch::cached_smollm2;

use crate::model_args::load_model;
use api::ApiError;

/// Arguments of `fidelis serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Models to serve, each a Hugging Face folder, a .gguf file, `organism` or `smollm2`
    /// (repeat the flag). Default: `organism`, plus `smollm2` when it has been fetched.
    #[arg(long = "model")]
    pub models: Vec<String>,
    /// Where to run the models: cpu, flex, ndarray, wgpu or cuda[:N].
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// The float type the models run in: f32, f16 or bf16 (see `--dtype` of the other
    /// commands).
    #[arg(long, default_value_t = fidelis_models::Dtype::F32,
          value_parser = crate::options::variants::<fidelis_models::Dtype>())]
    pub dtype: fidelis_models::Dtype,
    /// The port to listen on (0: any free port; the address is printed).
    #[arg(long, default_value_t = 7860)]
    pub port: u16,
    /// The address to listen on; anything but a loopback address needs --allow-remote.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Allow a non-loopback --host: anyone who reaches it can run the models.
    #[arg(long)]
    pub allow_remote: bool,
    /// Jobs that may run at once (over all models; one per model in any case).
    #[arg(long, default_value_t = 2)]
    pub max_jobs: usize,
}

/// The bounds every request is checked against.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Limits {
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Longest text field, in characters (checked before tokenizing).
    pub max_text_chars: usize,
    /// Most new tokens a context request may ask for.
    pub max_new_tokens: usize,
    /// Most integrated-gradient steps.
    pub max_ig_steps: usize,
    /// Most examples (and batch size) of a circuit request.
    pub max_examples: usize,
    /// Most EAP-IG steps of a circuit request.
    pub max_steps: usize,
    /// Jobs that may run at once.
    pub max_jobs: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            max_text_chars: 8_000,
            max_new_tokens: 256,
            max_ig_steps: 300,
            max_examples: 512,
            max_steps: 50,
            max_jobs: 2,
        }
    }
}

/// A loaded model and the name the page and the exported commands use for it.
pub struct ServedModel {
    /// The `--model` value it was loaded from.
    pub name: String,
    /// The model.
    pub model: Arc<Model>,
}

/// What the handlers share.
pub struct ServerState {
    /// The models, in the order given.
    pub models: Vec<ServedModel>,
    /// The `--device` value (repeated in exported commands).
    pub device: String,
    /// Request bounds.
    pub limits: Limits,
    /// Running and recent jobs.
    pub jobs: Arc<jobs::Jobs>,
}

/// The shared state handle.
pub type AppState = Arc<ServerState>;

impl ServerState {
    /// A state serving `models` (name, model) on `device` under `limits`.
    pub fn new(models: Vec<(String, Model)>, device: &str, limits: Limits) -> AppState {
        Arc::new(Self {
            models: models
                .into_iter()
                .map(|(name, model)| ServedModel {
                    name,
                    model: Arc::new(model),
                })
                .collect(),
            device: device.to_string(),
            jobs: Arc::new(jobs::Jobs::new(limits.max_jobs)),
            limits,
        })
    }

    /// The model requests use when they name none.
    pub fn default_model(&self) -> &str {
        self.models.first().map_or("organism", |m| m.name.as_str())
    }

    /// A served model by name, or a 400 that lists the served ones.
    pub fn model(&self, name: &str) -> Result<&ServedModel, ApiError> {
        self.models.iter().find(|m| m.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.models.iter().map(|m| m.name.as_str()).collect();
            ApiError::bad_request(format!(
                "unknown model {name:?}; this server serves: {}",
                names.join(", ")
            ))
        })
    }
}

/// A server running on a background thread.
pub struct RunningServer {
    /// The address it listens on.
    pub addr: SocketAddr,
    thread: std::thread::JoinHandle<Result<()>>,
}

impl RunningServer {
    /// Blocks until the server stops (it runs until the process ends).
    pub fn wait(self) -> Result<()> {
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the server thread panicked"))?
    }
}

/// Binds `addr` and serves `state` on a background thread with its own tokio runtime.
pub fn start(state: AppState, addr: SocketAddr) -> Result<RunningServer> {
    let listener = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let app = api::router(state);
    let thread = std::thread::Builder::new()
        .name("fidelis-serve".into())
        .spawn(move || -> Result<()> {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                axum::serve(listener, app).await?;
                Ok(())
            })
        })?;
    Ok(RunningServer { addr, thread })
}

/// The models to serve when `--model` is not given.
pub fn default_models() -> Vec<String> {
    let mut models = vec!["organism".to_string()];
    if cached_smollm2().is_some() {
        models.push("smollm2".into());
    }
    models
}

/// Runs `fidelis serve` until the process is stopped.
pub fn run(args: &ServeArgs) -> Result<()> {
    if !args.host.is_loopback() && !args.allow_remote {
        bail!(
            "--host {} is not a loopback address; the API runs models for anyone who reaches it \
             and has no authentication. Add --allow-remote if that is what you want.",
            args.host
        );
    }
    let names = if args.models.is_empty() {
        default_models()
    } else {
        args.models.clone()
    };
    let mut models = Vec::new();
    for name in names {
        if models.iter().any(|(n, _): &(String, Model)| *n == name) {
            continue;
        }
        eprintln!("loading {name}");
        let model = load_model(&name, &args.device, args.dtype)?;
        models.push((name, model));
    }
    let limits = Limits {
        max_jobs: args.max_jobs.max(1),
        ..Limits::default()
    };
    let state = ServerState::new(models, &args.device, limits);
    let server = start(state, SocketAddr::new(args.host, args.port))?;
    // The end-to-end test reads the port from this line.
    println!("fidelis serve: listening on http://{}", server.addr);
    std::io::Write::flush(&mut std::io::stdout())?;
    server.wait()
}
