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
//! # Security model
//! The server runs models for whoever drives it, so only its user may: it listens on
//! 127.0.0.1 unless `--host` names another address together with `--allow-remote`, and one
//! middleware layer ([`guard`]) in front of every route refuses requests whose `Host` is not
//! the address served (403, against DNS rebinding), whose `Origin` is another site's (403,
//! against cross-site requests), and, when the server has a token (`--token`, or one
//! generated for `--allow-remote`), requests without it (401). Job ids are 128 random bits and
//! nothing lists them ([`jobs`]). Connections are bounded in time ([`conn`]): headers within
//! the header read timeout, no idle connection past the idle timeout, a handler within the
//! request timeout. Every numeric field is checked with the bounds the CLI checks
//! ([`crate::options::bounds`]) and then against [`Limits`], 422 naming the field.

pub mod api;
pub mod circuit_job;
pub mod conn;
pub mod context_job;
pub mod export;
pub mod guard;
pub mod inseq_export;
pub mod jobs;
pub mod presets;

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use fidelis_models::fetch::cached_smollm2;
use fidelis_models::{Model, Seq2SeqModel};

use crate::model_args::{AnyModel, load_any};
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
    /// Allow a non-loopback --host. Requests then need a token: --token, or one generated and
    /// printed at start.
    #[arg(long)]
    pub allow_remote: bool,
    /// Also answer requests addressed to this host name or address (the `Host` header without
    /// the port), e.g. the machine's name when --host is 0.0.0.0 (repeat the flag); needs
    /// --allow-remote. Requests to any other name get 403.
    #[arg(long = "allowed-host", requires = "allow_remote")]
    pub allowed_hosts: Vec<String>,
    /// Require this token on every request (`Authorization: Bearer TOKEN`, or the cookie the
    /// page gets from the printed address): 16 or more of A-Z a-z 0-9 . _ ~ -. Default: the
    /// environment variable FIDELIS_SERVE_TOKEN (which other users cannot read in `ps`), else
    /// none on loopback and a generated one with --allow-remote.
    #[arg(long)]
    pub token: Option<String>,
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
    /// How long a connection may take to send a request's line and headers, counted from when
    /// the server waits for them (also how long a kept-alive connection may sit idle).
    pub header_read_timeout_ms: u64,
    /// How long a connection may move no byte, in or out, before it is closed.
    pub idle_timeout_ms: u64,
    /// How long a handler, reading the body included, may take before a 408.
    pub request_timeout_ms: u64,
    /// Connections served at once; more wait until one closes.
    pub max_connections: usize,
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
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            request_timeout_ms: 30_000,
            max_connections: 256,
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

/// A loaded encoder-decoder (context attribution only: circuits need a decoder-only model).
pub struct ServedSeq2Seq {
    /// The `--model` value it was loaded from.
    pub name: String,
    /// The model.
    pub model: Arc<Seq2SeqModel>,
}

/// Who may drive the server besides its loopback addresses (see [`guard`]).
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Host names or addresses (without port) accepted in `Host` and `Origin` besides the
    /// loopback names and the bound address.
    pub allowed_hosts: Vec<String>,
    /// The token every request must carry; `None`: none is asked for.
    pub token: Option<String>,
}

/// What the handlers share.
pub struct ServerState {
    /// The decoder-only models, in the order given.
    pub models: Vec<ServedModel>,
    /// The encoder-decoder models, in the order given.
    pub seq2seq: Vec<ServedSeq2Seq>,
    /// The `--device` value (repeated in exported commands).
    pub device: String,
    /// Request bounds.
    pub limits: Limits,
    /// Running and recent jobs.
    pub jobs: Arc<jobs::Jobs>,
    /// Extra host names and the token.
    pub access: Access,
}

/// The shared state handle.
pub type AppState = Arc<ServerState>;

impl ServerState {
    /// A state serving `models` (name, model) on `device` under `limits`, on loopback names
    /// only and without a token.
    pub fn new(models: Vec<(String, Model)>, device: &str, limits: Limits) -> AppState {
        Self::with_access(models, device, limits, Access::default())
    }

    /// A state serving `models` (name, model) on `device` under `limits` to the clients
    /// `access` lets in.
    pub fn with_access(
        models: Vec<(String, Model)>,
        device: &str,
        limits: Limits,
        access: Access,
    ) -> AppState {
        let models = models
            .into_iter()
            .map(|(name, model)| (name, AnyModel::DecoderOnly(model)))
            .collect();
        Self::serving(models, device, limits, access)
    }

    /// A state serving decoder-only and encoder-decoder `models` (name, model) on `device`
    /// under `limits` to the clients `access` lets in.
    pub fn serving(
        models: Vec<(String, AnyModel)>,
        device: &str,
        limits: Limits,
        access: Access,
    ) -> AppState {
        let (mut decoders, mut seq2seq) = (Vec::new(), Vec::new());
        for (name, model) in models {
            match model {
                AnyModel::DecoderOnly(m) => decoders.push(ServedModel {
                    name,
                    model: Arc::new(m),
                }),
                AnyModel::Seq2Seq(m) => seq2seq.push(ServedSeq2Seq {
                    name,
                    model: Arc::new(m),
                }),
            }
        }
        Arc::new(Self {
            models: decoders,
            seq2seq,
            device: device.to_string(),
            jobs: Arc::new(jobs::Jobs::new(limits.max_jobs)),
            limits,
            access,
        })
    }

    /// The model requests use when they name none.
    pub fn default_model(&self) -> &str {
        self.models
            .first()
            .map(|m| m.name.as_str())
            .or_else(|| self.seq2seq.first().map(|m| m.name.as_str()))
            .unwrap_or("organism")
    }

    /// The names of every served model, decoder-only first.
    pub fn model_names(&self) -> Vec<&str> {
        let decoders = self.models.iter().map(|m| m.name.as_str());
        decoders
            .chain(self.seq2seq.iter().map(|m| m.name.as_str()))
            .collect()
    }

    /// A served decoder-only model by name, or a 400 that lists the served ones (and says so
    /// when the name is an encoder-decoder's).
    pub fn model(&self, name: &str) -> Result<&ServedModel, ApiError> {
        if self.seq2seq_model(name).is_some() {
            return Err(ApiError::bad_request(format!(
                "{name} is an encoder-decoder model: it serves context attribution only \
                 (circuits need a decoder-only model)"
            )));
        }
        self.models.iter().find(|m| m.name == name).ok_or_else(|| {
            ApiError::bad_request(format!(
                "unknown model {name:?}; this server serves: {}",
                self.model_names().join(", ")
            ))
        })
    }

    /// A served encoder-decoder by name.
    pub fn seq2seq_model(&self, name: &str) -> Option<&ServedSeq2Seq> {
        self.seq2seq.iter().find(|m| m.name == name)
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
    let guard = guard::Guard::new(
        addr,
        &state.access.allowed_hosts,
        state.access.token.clone(),
        std::time::Duration::from_millis(state.limits.request_timeout_ms),
    );
    let limits = state.limits.clone();
    let app = api::router(state, guard);
    let thread = std::thread::Builder::new()
        .name("fidelis-serve".into())
        .spawn(move || -> Result<()> {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                conn::serve(listener, app, &limits).await;
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

/// Shortest `--token` accepted.
pub const MIN_TOKEN_CHARS: usize = 16;

/// The token the server asks for: `--token`, else `FIDELIS_SERVE_TOKEN`, else a generated one
/// (128 random bits in hex) with `--allow-remote`, else none.
fn token(args: &ServeArgs) -> Result<Option<String>> {
    let given = args
        .token
        .clone()
        .or_else(|| std::env::var("FIDELIS_SERVE_TOKEN").ok())
        .filter(|t| !t.is_empty());
    let Some(token) = given else {
        return Ok(args.allow_remote.then(guard::new_token));
    };
    // The token travels in a cookie and a query string: keep to characters neither escapes.
    let safe = |c: char| c.is_ascii_alphanumeric() || "._~-".contains(c);
    if token.chars().count() < MIN_TOKEN_CHARS || !token.chars().all(safe) {
        bail!("the token must be {MIN_TOKEN_CHARS} or more of the characters A-Z a-z 0-9 . _ ~ -");
    }
    Ok(Some(token))
}

/// Runs `fidelis serve` until the process is stopped.
pub fn run(args: &ServeArgs) -> Result<()> {
    if !args.host.is_loopback() && !args.allow_remote {
        bail!(
            "--host {} is not a loopback address; the API runs models for anyone who reaches \
             it. Add --allow-remote if that is what you want (requests then need a token).",
            args.host
        );
    }
    let token = token(args)?;
    let allowed_hosts = args
        .allowed_hosts
        .iter()
        .map(|name| guard::host_name(name))
        .collect::<Result<Vec<_>>>()?;
    let names = if args.models.is_empty() {
        default_models()
    } else {
        args.models.clone()
    };
    let mut models = Vec::new();
    for name in names {
        if models.iter().any(|(n, _): &(String, AnyModel)| *n == name) {
            continue;
        }
        eprintln!("loading {name}");
        let model = load_any(&name, &args.device, args.dtype)?;
        models.push((name, model));
    }
    let limits = Limits {
        max_jobs: args.max_jobs.max(1),
        ..Limits::default()
    };
    let access = Access {
        allowed_hosts,
        token: token.clone(),
    };
    let state = ServerState::serving(models, &args.device, limits, access);
    let server = start(state, SocketAddr::new(args.host, args.port))?;
    // An unspecified address (0.0.0.0) is no name to open: show the loopback one, which the
    // guard accepts. The end-to-end test reads the address from these lines.
    let shown = match server.addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], server.addr.port()))
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), server.addr.port())
        }
        _ => server.addr,
    };
    if shown == server.addr {
        println!("fidelis serve: listening on http://{shown}");
    } else {
        println!(
            "fidelis serve: listening on http://{} (here: http://{shown})",
            server.addr
        );
    }
    if let Some(token) = &token {
        println!("fidelis serve: open http://{shown}/?token={token}");
        println!("fidelis serve: API clients send `Authorization: Bearer {token}`");
    }
    std::io::Write::flush(&mut std::io::stdout())?;
    server.wait()
}
