//! `cargo xtask fuzz [--minutes N] [--format F] [--inputs N] [--seed S] [--cap-mib M]`:
//! structure-aware fuzzing of every file Fidelis reads, on stable Rust, in-process.
//!
//! Each format has a generator: proptest strategies pick structured edits to a small valid seed
//! built here in code (sizes from a list of boundary values: 0, 1, odd numbers, 2^24, 2^32,
//! 2^63, u64::MAX, ...), the result is serialized, and one input in three is then byte-mutated
//! (bit flips, boundary integers written over random offsets, truncation, duplicated ranges).
//! Formats: `safetensors` (header and data), `gguf` (header, metadata, tensor table, data; then
//! a full model load, a forward and two generated tokens when it loads), `config` (a fixture's
//! `config.json` edited, then a full model load, forward and generation with the fixture's
//! weights), `tokenizer` (`tokenizer.json`, then encode/decode), `graph` (EAP-IG graph JSON,
//! then writing it back), `tasks` (task CSV and JSONL).
//!
//! The loaders run in a worker process (this binary, `fuzz --worker`) that the supervisor
//! restarts after a crash. In the worker each call runs under `catch_unwind` (a panic counts as
//! a failure), is timed (a call over [`HANG_BUDGET`] counts as a hang; a worker silent for
//! [`KILL_AFTER`] is killed and counted as a hang), and allocates under a cap: this binary's
//! global allocator counts live bytes and fails any allocation past the cap, so an unbounded
//! allocation ends the worker with "memory allocation failed" (counted as an abort) instead of
//! exhausting the machine. Inputs are numbered and regenerated from `(seed, format, index)`,
//! so a failure is reported with the index that reproduces it (`--start I --inputs 1`).
//!
//! The process exits with an error if any input panicked, aborted or hung. With
//! `FIDELIS_FUZZ_DEBUG` set, a worker prints why each model input was refused (to see what the
//! generators reach).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use fidelis_graph::{Graph, GraphConfig};
use fidelis_models::gguf::GgufValue;
use fidelis_models::{GenerateConfig, Hooks, Model};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as RunnerConfig, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Value, json};

/// The formats, in the order a run visits them.
const FORMATS: [&str; 6] = [
    "safetensors",
    "gguf",
    "config",
    "tokenizer",
    "graph",
    "tasks",
];
/// A call that takes longer than this counts as a hang.
const HANG_BUDGET: Duration = Duration::from_secs(10);
/// A worker that reports nothing for this long is killed and its input counted as a hang.
const KILL_AFTER: Duration = Duration::from_secs(60);
/// The default cap on live heap bytes in a worker.
const DEFAULT_CAP_MIB: usize = 2048;

// ---- The capped, counting allocator of this binary. ----

/// Live heap bytes of this process.
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// The most live heap bytes seen.
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// Allocations that would take the live bytes past this fail (no cap outside fuzz workers).
static CAP: AtomicUsize = AtomicUsize::new(usize::MAX);

/// The system allocator, counting live bytes and failing allocations past [`CAP`].
struct CappedAllocator;

/// Counts `n` more live bytes, or returns false (counting nothing) if that passes the cap.
fn reserve(n: usize) -> bool {
    let live = LIVE.fetch_add(n, Ordering::Relaxed).saturating_add(n);
    if live > CAP.load(Ordering::Relaxed) {
        LIVE.fetch_sub(n, Ordering::Relaxed);
        return false;
    }
    PEAK.fetch_max(live, Ordering::Relaxed);
    true
}

// SAFETY: every method forwards to `System` with the caller's layout and only adds counting;
// a refused allocation returns null, which `GlobalAlloc` allows.
unsafe impl GlobalAlloc for CappedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !reserve(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc(layout) };
        if p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !reserve(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc_zeroed(layout) };
        if p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator (so from `System`) with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        if new_size > old && !reserve(new_size - old) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded with the caller's pointer, layout and size.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if p.is_null() {
            if new_size > old {
                LIVE.fetch_sub(new_size - old, Ordering::Relaxed);
            }
        } else if new_size < old {
            LIVE.fetch_sub(old - new_size, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: CappedAllocator = CappedAllocator;

// ---- Command line. ----

/// What one `fuzz` invocation was asked to do.
#[derive(Debug, Clone)]
struct Options {
    minutes: f64,
    formats: Vec<String>,
    inputs: Option<u64>,
    start: u64,
    seed: u64,
    cap_mib: usize,
    worker: bool,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        minutes: 1.0,
        formats: FORMATS.iter().map(|f| f.to_string()).collect(),
        inputs: None,
        start: 0,
        seed: 0x5eed,
        cap_mib: DEFAULT_CAP_MIB,
        worker: false,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--worker" {
            o.worker = true;
            continue;
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--minutes" => o.minutes = value.parse().context("--minutes")?,
            "--format" => {
                o.formats = value.split(',').map(str::to_string).collect();
                if let Some(bad) = o.formats.iter().find(|f| !FORMATS.contains(&f.as_str())) {
                    bail!("unknown format `{bad}` (formats: {})", FORMATS.join(", "));
                }
            }
            "--inputs" => o.inputs = Some(value.parse().context("--inputs")?),
            "--start" => o.start = value.parse().context("--start")?,
            "--seed" => o.seed = value.parse().context("--seed")?,
            "--cap-mib" => o.cap_mib = value.parse().context("--cap-mib")?,
            other => bail!("unknown fuzz option `{other}`"),
        }
    }
    if !(o.minutes > 0.0 && o.minutes.is_finite()) {
        bail!("--minutes must be positive");
    }
    Ok(o)
}

/// Runs `cargo xtask fuzz ...` (or, with `--worker`, one worker).
pub fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    if o.worker {
        return worker(&o);
    }
    let mut failed = false;
    println!(
        "| format | inputs | accepted | panics | aborts | hangs | slowest (ms) | peak heap (MiB) \
         | minutes |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for format in &o.formats {
        let s = supervise(&o, format)?;
        println!(
            "| {format} | {} | {} | {} | {} | {} | {} | {:.0} | {:.1} |",
            s.inputs,
            s.accepted,
            s.panics,
            s.aborts,
            s.hangs,
            s.slowest_ms,
            s.peak_bytes as f64 / (1 << 20) as f64,
            s.elapsed.as_secs_f64() / 60.0
        );
        for f in &s.failures {
            eprintln!("  {format} input {f}");
        }
        failed |= s.panics + s.aborts + s.hangs > 0;
    }
    if failed {
        bail!("fuzzing found failures (reproduce one with --format F --start I --inputs 1)");
    }
    Ok(())
}

/// What the supervisor counted for one format.
#[derive(Debug, Default)]
struct Stats {
    inputs: u64,
    accepted: u64,
    panics: u64,
    aborts: u64,
    hangs: u64,
    slowest_ms: u64,
    peak_bytes: usize,
    elapsed: Duration,
    failures: Vec<String>,
}

/// Runs workers for `format` until the time or the inputs are used up, restarting after crashes.
fn supervise(o: &Options, format: &str) -> Result<Stats> {
    let started = Instant::now();
    let budget = Duration::from_secs_f64(o.minutes * 60.0);
    let end = o.inputs.map(|n| o.start + n);
    let mut stats = Stats::default();
    let mut next = o.start;
    let exe = std::env::current_exe()?;
    let stderr_path = std::env::temp_dir().join(format!("fidelis-fuzz-{}.err", std::process::id()));
    while started.elapsed() < budget && end.is_none_or(|e| next < e) {
        let left = budget.saturating_sub(started.elapsed());
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["fuzz", "--worker", "--format", format])
            .args(["--seed", &o.seed.to_string(), "--start", &next.to_string()])
            .args([
                "--minutes",
                &(left.as_secs_f64() / 60.0).max(1e-3).to_string(),
            ])
            .args(["--cap-mib", &o.cap_mib.to_string()]);
        if let Some(e) = end {
            cmd.args(["--inputs", &(e - next).to_string()]);
        }
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path)?)
            .spawn()
            .context("starting a fuzz worker")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut current: Option<u64> = None;
        let finished = loop {
            match rx.recv_timeout(KILL_AFTER) {
                Ok(Ok(line)) => {
                    let mut parts = line.splitn(3, ' ');
                    let (kind, a, rest) = (parts.next(), parts.next(), parts.next());
                    let a: u64 = a.and_then(|a| a.parse().ok()).unwrap_or(0);
                    match kind {
                        Some("B") => {
                            current = Some(a);
                            stats.inputs += 1;
                        }
                        Some("D") => {
                            current = None;
                            let ms = rest.and_then(|r| r.parse().ok()).unwrap_or(0);
                            stats.slowest_ms = stats.slowest_ms.max(ms);
                        }
                        Some("P") => {
                            current = None;
                            stats.panics += 1;
                            stats
                                .failures
                                .push(format!("{a}: panic: {}", rest.unwrap_or("")));
                        }
                        Some("H") => {
                            current = None;
                            stats.hangs += 1;
                            stats
                                .failures
                                .push(format!("{a}: took {} ms", rest.unwrap_or("")));
                        }
                        Some("A") => stats.accepted += 1,
                        Some("M") => stats.peak_bytes = stats.peak_bytes.max(a as usize),
                        _ => {}
                    }
                }
                Ok(Err(_)) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break false,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    stats.hangs += 1;
                    let at = current.map_or("?".into(), |c| c.to_string());
                    stats
                        .failures
                        .push(format!("{at}: no progress for {KILL_AFTER:?}"));
                    next = current.map_or(next, |c| c + 1);
                    break true;
                }
            }
        };
        let status = child.wait()?;
        if finished {
            continue;
        }
        match current {
            // The worker died inside an input: an abort (allocation failure, stack overflow).
            Some(c) if !status.success() => {
                stats.aborts += 1;
                let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                let tail: String = err.lines().rev().take(2).collect::<Vec<_>>().join(" / ");
                stats
                    .failures
                    .push(format!("{c}: aborted ({status}): {tail}"));
                next = c + 1;
            }
            _ if !status.success() => {
                let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                bail!("fuzz worker failed outside an input ({status}): {err}");
            }
            _ => break,
        }
    }
    let _ = std::fs::remove_file(&stderr_path);
    stats.elapsed = started.elapsed();
    Ok(stats)
}

// ---- The worker. ----

/// Generates and runs inputs from `o.start` on, reporting each on stdout:
/// `B i` (begun), `A i` (accepted), `D i ms` (done), `P i message` (panicked), `H i ms` (over the budget),
/// `M bytes` (peak heap so far).
fn worker(o: &Options) -> Result<()> {
    let format = o.formats.first().context("--format")?.clone();
    let scratch = Scratch::new()?;
    let last_panic = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    {
        let last_panic = last_panic.clone();
        std::panic::set_hook(Box::new(move |info| {
            if let Ok(mut m) = last_panic.lock() {
                *m = info.to_string().replace('\n', " ");
            }
        }));
    }
    CAP.store(o.cap_mib.saturating_mul(1 << 20), Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs_f64(o.minutes * 60.0);
    let end = o.inputs.map_or(u64::MAX, |n| o.start.saturating_add(n));
    let mut out = std::io::stdout().lock();
    let mut i = o.start;
    while i < end && Instant::now() < deadline {
        writeln!(out, "B {i}")?;
        out.flush()?;
        let started = Instant::now();
        let result = std::panic::catch_unwind(|| run_one(&format, o.seed, i, &scratch));
        let ms = started.elapsed().as_millis() as u64;
        if let Ok(true) = result {
            writeln!(out, "A {i}")?;
        }
        match result {
            Err(_) => {
                let msg = last_panic.lock().map(|m| m.clone()).unwrap_or_default();
                writeln!(out, "P {i} {msg}")?;
            }
            Ok(_) if started.elapsed() > HANG_BUDGET => writeln!(out, "H {i} {ms}")?,
            Ok(_) => writeln!(out, "D {i} {ms}")?,
        }
        writeln!(out, "M {}", PEAK.load(Ordering::Relaxed))?;
        i += 1;
    }
    out.flush()?;
    Ok(())
}

/// A private directory for the files the loaders read, with the fixtures' folders copied in.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self> {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("fidelis-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        for name in CONFIG_FIXTURES {
            let to = dir.join(name);
            std::fs::create_dir_all(&to)?;
            for entry in std::fs::read_dir(fixture(name))? {
                let entry = entry?;
                std::fs::copy(entry.path(), to.join(entry.file_name()))?;
            }
        }
        Ok(Self(dir))
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A committed test fixture of `fidelis-models`.
fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/fidelis-models/tests/fixtures")
        .join(name)
}

/// The fixtures whose `config.json` the `config` format edits (their weights and tokenizer are
/// loaded with it).
const CONFIG_FIXTURES: [&str; 5] = [
    "tiny-gpt2",
    "tiny-llama-gqa",
    "tiny-pythia",
    "tiny-qwen3",
    "tiny-gemma2",
];

/// Generates input `i` of `format` and runs the loaders on it; true if the input was accepted
/// (for models: loaded, so that the forward and generation ran too). Errors are the expected
/// outcome for most inputs and are dropped; only panics, aborts and time are failures.
fn run_one(format: &str, seed: u64, i: u64, scratch: &Scratch) -> bool {
    let mut g = Gen::new(seed, format, i);
    match format {
        "safetensors" => {
            let bytes = safetensors_input(&mut g);
            let bytes = g.maybe_mutate(bytes);
            let path = scratch.path("model.safetensors");
            write(&path, &bytes);
            let Ok(src) = fidelis_models::weights::SafetensorsSource::open_files(&[path]) else {
                return false;
            };
            // Every tensor is read, also after one fails.
            let mut all_read = true;
            for name in src.names() {
                all_read &= fidelis_models::weights::WeightSource::tensor(&src, name).is_ok();
            }
            all_read
        }
        "gguf" => {
            let bytes = gguf_input(&mut g);
            let bytes = g.maybe_mutate(bytes);
            let path = scratch.path("model.gguf");
            write(&path, &bytes);
            if let Ok(file) = fidelis_models::gguf::GgufFile::open(&path) {
                let _ = fidelis_models::model::config_at(&path);
                if let Ok(t) = file.tokenizer() {
                    let _ = t.encode("Hello wörld 123", false);
                }
            }
            exercise_model(&path)
        }
        "config" => {
            let name = CONFIG_FIXTURES[g.below(CONFIG_FIXTURES.len() as u64) as usize];
            let base: Value = read_json(&fixture(name).join("config.json"));
            let text = config_input(&mut g, base).into_bytes();
            let text = g.maybe_mutate(text);
            let dir = scratch.path(name);
            write(&dir.join("config.json"), &text);
            exercise_model(&dir)
        }
        "tokenizer" => {
            let base = match g.below(3) {
                0 => read_json(&fixture("tiny-gpt2").join("tokenizer.json")),
                1 => wordpiece_tokenizer(),
                _ => unigram_tokenizer(),
            };
            let text = json_edits(&mut g, base).into_bytes();
            let text = g.maybe_mutate(text);
            let path = scratch.path("tokenizer.json");
            write(&path, &text);
            let Ok(t) = fidelis_models::Tokenizer::from_file(&path, None, None) else {
                return false;
            };
            if let Ok(ids) = t.encode("Hello wörld, 123 ▁é") {
                let _ = t.decode(&ids);
            }
            let _ = t.decode(&[0, 1, 2, u32::MAX]);
            true
        }
        "graph" => {
            let text = graph_input(&mut g).into_bytes();
            let text = g.maybe_mutate(text);
            let Ok(graph) = Graph::from_json_str(&String::from_utf8_lossy(&text)) else {
                return false;
            };
            // Writing is linear in the edges; a graph under the reader's limits is written
            // when it is of a size the fuzzer can afford many times a second.
            if graph.n_edges() <= 1 << 20 {
                let _ = graph.to_json_string();
                let _ = graph.to_dot();
            }
            true
        }
        "tasks" => {
            let csv = g.below(2) == 0;
            let text = tasks_input(&mut g, csv).into_bytes();
            let text = g.maybe_mutate(text);
            let path = scratch.path(if csv { "task.csv" } else { "task.jsonl" });
            write(&path, &text);
            let tok = |s: &str| -> Result<Vec<u32>, String> {
                Ok(s.split_whitespace()
                    .map(|w| {
                        w.bytes()
                            .fold(7u32, |h, b| h.wrapping_mul(31) ^ u32::from(b))
                            % 997
                    })
                    .collect())
            };
            let loaded = if csv {
                fidelis_tasks::load_csv(&path, &tok)
            } else {
                fidelis_tasks::load_jsonl(&path, &tok)
            };
            loaded.is_ok()
        }
        other => panic!("unknown format {other}"),
    }
}

/// Loads the model at `path` and, when it loads, runs a forward and generates two tokens;
/// true if it loaded.
fn exercise_model(path: &Path) -> bool {
    let device = Device::flex();
    let model = match Model::load(path, &device) {
        Ok(model) => model,
        Err(e) => {
            if std::env::var_os("FIDELIS_FUZZ_DEBUG").is_some() {
                eprintln!("{e}");
            }
            return false;
        }
    };
    let ids = [1u32, 2, 3];
    let tokens = Tensor::<2, Int>::from_data(
        burn::tensor::TensorData::new(ids.iter().map(|&t| i64::from(t)).collect(), [1, 3]),
        &device,
    );
    let _ = model.transformer.forward(tokens, &mut Hooks::new());
    let greedy = GenerateConfig {
        max_new_tokens: 2,
        ..GenerateConfig::default()
    };
    let _ = model.transformer.generate(&ids, &greedy, |_| {});
    if let Ok(ids) = model.tokenizer.encode("Hello world") {
        let _ = model.tokenizer.decode(&ids);
    }
    true
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("fixture");
    serde_json::from_str(&text).expect("fixture JSON")
}

// ---- Generators. ----

/// The randomness of one input: a proptest runner for structured values and a small PRNG for
/// byte mutations, both seeded from `(seed, format, index)`.
struct Gen {
    runner: TestRunner,
    state: u64,
}

impl Gen {
    fn new(seed: u64, format: &str, i: u64) -> Self {
        let tag = format.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let mut state = seed ^ tag ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut bytes = [0u8; 32];
        for chunk in bytes.chunks_mut(8) {
            chunk.copy_from_slice(&splitmix(&mut state).to_le_bytes());
        }
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
        Self {
            runner: TestRunner::new_with_rng(RunnerConfig::default(), rng),
            state,
        }
    }

    /// A value of `strategy`.
    fn pick<S: Strategy>(&mut self, strategy: S) -> S::Value {
        match strategy.new_tree(&mut self.runner) {
            Ok(tree) => tree.current(),
            Err(e) => panic!("generator: {e}"),
        }
    }

    fn next(&mut self) -> u64 {
        splitmix(&mut self.state)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// One input in three comes back with 1 to 8 byte-level mutations.
    fn maybe_mutate(&mut self, mut bytes: Vec<u8>) -> Vec<u8> {
        if self.below(3) != 0 {
            return bytes;
        }
        for _ in 0..1 + self.below(8) {
            let len = bytes.len() as u64;
            let at = self.below(len.max(1)) as usize;
            match self.below(6) {
                0 if !bytes.is_empty() => bytes[at] ^= 1 << self.below(8),
                1 if !bytes.is_empty() => bytes[at] = self.next() as u8,
                2 => {
                    // A boundary integer over 4 or 8 bytes at a random offset.
                    let v = INTERESTING[self.below(INTERESTING.len() as u64) as usize];
                    let width = if self.below(2) == 0 { 4 } else { 8 };
                    let v = v.to_le_bytes();
                    for (k, b) in v[..width].iter().enumerate() {
                        if let Some(slot) = bytes.get_mut(at + k) {
                            *slot = *b;
                        }
                    }
                }
                3 => bytes.truncate(at),
                4 if !bytes.is_empty() => {
                    let n = (self.below(64) as usize).min(bytes.len() - at);
                    let chunk = bytes[at..at + n].to_vec();
                    let to = self.below(len) as usize;
                    bytes.splice(to..to, chunk);
                }
                _ => {
                    let n = (self.below(16) as usize).min(bytes.len() - at.min(bytes.len()));
                    bytes.drain(at..at + n);
                }
            }
        }
        bytes
    }
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Sizes at the edges of what loaders check: zero, one, odd, powers of two and their
/// neighbours, the limits of `u32`, `i64`, `u64`.
const INTERESTING: [u64; 24] = [
    0,
    1,
    2,
    3,
    4,
    7,
    8,
    16,
    63,
    64,
    255,
    4095,
    4096,
    4097,
    65_535,
    1 << 20,
    (1 << 24) + 1,
    1 << 31,
    u32::MAX as u64,
    1 << 32,
    1 << 40,
    1 << 62,
    i64::MAX as u64,
    u64::MAX,
];

/// A size: small most of the time, a boundary value or anything otherwise.
fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..20,
        3 => proptest::sample::select(INTERESTING.to_vec()),
        1 => any::<u64>(),
    ]
}

/// A JSON value a loader might trip on.
fn json_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => size().prop_map(|n| json!(n)),
        1 => any::<i64>().prop_map(|n| json!(n)),
        1 => proptest::sample::select(vec![
            json!(-1), json!(0.5), json!(1e39), json!(-0.0), json!(null), json!(true),
            json!(""), json!("é"), json!("▁"), json!("##"), json!("\u{1F600}"),
            json!([]), json!({}), json!([1, 2, 3]), json!(["a", "b"]), json!({"type": 3}),
            json!("x".repeat(300)),
        ]),
    ]
}

/// `base` with 1 to 6 structured edits: a value somewhere in the tree replaced or removed.
fn json_edits(g: &mut Gen, mut base: Value) -> String {
    let mut paths = Vec::new();
    collect_paths(&base, &mut Vec::new(), &mut paths);
    let n = 1 + g.below(6);
    for _ in 0..n {
        if paths.is_empty() {
            break;
        }
        let path = paths[g.below(paths.len() as u64) as usize].clone();
        let value = g.pick(json_value());
        let remove = g.below(5) == 0;
        set_path(&mut base, &path, value, remove);
    }
    base.to_string()
}

/// Every path (object keys and array indices) in `v`, at most 64 entries of one array.
fn collect_paths(v: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                prefix.push(k.clone());
                out.push(prefix.clone());
                collect_paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (k, child) in items.iter().enumerate().take(64) {
                prefix.push(k.to_string());
                out.push(prefix.clone());
                collect_paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn set_path(v: &mut Value, path: &[String], value: Value, remove: bool) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut at = v;
    for p in parents {
        at = match at {
            Value::Object(m) => match m.get_mut(p) {
                Some(x) => x,
                None => return,
            },
            Value::Array(a) => match p.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                Some(x) => x,
                None => return,
            },
            _ => return,
        };
    }
    match at {
        Value::Object(m) if remove => {
            m.remove(last);
        }
        Value::Object(m) => {
            m.insert(last.clone(), value);
        }
        Value::Array(a) => {
            if let Some(i) = last.parse::<usize>().ok().filter(|&i| i < a.len()) {
                if remove {
                    a.remove(i);
                } else {
                    a[i] = value;
                }
            }
        }
        _ => {}
    }
}

/// A fixture's `config.json` with structured edits to its sizes and options, and sometimes a
/// key added that the fixture lacks.
fn config_input(g: &mut Gen, mut base: Value) -> String {
    const EXTRA: [&str; 14] = [
        "head_dim",
        "n_inner",
        "num_key_value_heads",
        "sliding_window",
        "use_sliding_window",
        "max_window_layers",
        "layer_types",
        "rope_scaling",
        "rope_parameters",
        "rotary_pct",
        "query_pre_attn_scalar",
        "attn_logit_softcapping",
        "tie_word_embeddings",
        "intermediate_size",
    ];
    for _ in 0..g.below(3) {
        let key = EXTRA[g.below(EXTRA.len() as u64) as usize];
        let value = match key {
            "rope_scaling" | "rope_parameters" => g.pick(proptest::sample::select(vec![
                json!({"rope_type": "linear", "factor": 0.0}),
                json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                       "high_freq_factor": 4.0, "original_max_position_embeddings": 1u64 << 62}),
                json!({"rope_type": "llama3"}),
                json!({"type": "yarn"}),
                json!({"rope_theta": -1.0}),
            ])),
            "layer_types" => json!(["sliding_attention", "full_attention", "sliding_attention"]),
            _ => g.pick(json_value()),
        };
        base[key] = value;
    }
    json_edits(g, base)
}

/// A GGUF metadata value, serialized as the format does (tag not included).
fn put_value(out: &mut Vec<u8>, v: &GgufValue) {
    match v {
        GgufValue::U8(x) => out.push(*x),
        GgufValue::I8(x) => out.extend(x.to_le_bytes()),
        GgufValue::U16(x) => out.extend(x.to_le_bytes()),
        GgufValue::I16(x) => out.extend(x.to_le_bytes()),
        GgufValue::U32(x) => out.extend(x.to_le_bytes()),
        GgufValue::I32(x) => out.extend(x.to_le_bytes()),
        GgufValue::F32(x) => out.extend(x.to_le_bytes()),
        GgufValue::Bool(x) => out.push(u8::from(*x)),
        GgufValue::String(s) => put_str(out, s),
        GgufValue::Array(items) => {
            let tag = items.first().map_or(4, GgufValue::type_tag);
            out.extend(tag.to_le_bytes());
            out.extend((items.len() as u64).to_le_bytes());
            items.iter().for_each(|x| put_value(out, x));
        }
        GgufValue::U64(x) => out.extend(x.to_le_bytes()),
        GgufValue::I64(x) => out.extend(x.to_le_bytes()),
        GgufValue::F64(x) => out.extend(x.to_le_bytes()),
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// One GGUF tensor-table entry: name, `ne` (innermost first), ggml type, data bytes.
struct GgufTensor {
    name: String,
    ne: Vec<u64>,
    ty: u32,
    bytes: usize,
}

/// A GGUF file from a tiny loadable model (llama, qwen2, gemma2 or gptneox metadata, a BPE
/// vocabulary, f32 tensors) with structured edits: metadata sizes set to boundary values,
/// keys removed or retyped, tensor dims, types and offsets changed, header counts lied about.
fn gguf_input(g: &mut Gen) -> Vec<u8> {
    let arch = ["llama", "qwen2", "gemma2", "gptneox"][g.below(4) as usize];
    let neox = arch == "gptneox";
    let key = |k: &str| format!("{arch}.{k}");
    let tokens: Vec<GgufValue> = ["a", "b", "c", "d", "e", "f", "g", "ab"]
        .into_iter()
        .map(|t| GgufValue::String(t.into()))
        .collect();
    let mut kv: Vec<(String, GgufValue)> = vec![
        (
            "general.architecture".into(),
            GgufValue::String(arch.into()),
        ),
        (key("block_count"), GgufValue::U32(1)),
        (key("context_length"), GgufValue::U32(16)),
        (key("embedding_length"), GgufValue::U32(8)),
        (key("feed_forward_length"), GgufValue::U32(16)),
        (key("attention.head_count"), GgufValue::U32(2)),
        (key("attention.head_count_kv"), GgufValue::U32(2)),
        (
            key("attention.layer_norm_rms_epsilon"),
            GgufValue::F32(1e-6),
        ),
        (key("attention.layer_norm_epsilon"), GgufValue::F32(1e-5)),
        (key("rope.dimension_count"), GgufValue::U32(4)),
        (key("use_parallel_residual"), GgufValue::Bool(true)),
        (
            "tokenizer.ggml.model".into(),
            GgufValue::String("gpt2".into()),
        ),
        (
            "tokenizer.ggml.pre".into(),
            GgufValue::String("gpt-2".into()),
        ),
        ("tokenizer.ggml.tokens".into(), GgufValue::Array(tokens)),
        (
            "tokenizer.ggml.token_type".into(),
            GgufValue::Array(vec![GgufValue::I32(1); 8]),
        ),
        (
            "tokenizer.ggml.merges".into(),
            GgufValue::Array(vec![GgufValue::String("a b".into())]),
        ),
        ("tokenizer.ggml.bos_token_id".into(), GgufValue::U32(1)),
    ];
    let mut shapes: Vec<(String, Vec<u64>)> = vec![
        ("token_embd.weight".into(), vec![8, 8]),
        ("output_norm.weight".into(), vec![8]),
    ];
    let parts: &[(&str, &[u64])] = if neox {
        &[
            ("attn_norm.weight", &[8]),
            ("attn_norm.bias", &[8]),
            ("ffn_norm.weight", &[8]),
            ("ffn_norm.bias", &[8]),
            ("attn_qkv.weight", &[8, 24]),
            ("attn_qkv.bias", &[24]),
            ("attn_output.weight", &[8, 8]),
            ("attn_output.bias", &[8]),
            ("ffn_up.weight", &[8, 16]),
            ("ffn_up.bias", &[16]),
            ("ffn_down.weight", &[16, 8]),
            ("ffn_down.bias", &[8]),
        ]
    } else {
        &[
            ("attn_norm.weight", &[8]),
            ("ffn_norm.weight", &[8]),
            ("post_attention_norm.weight", &[8]),
            ("post_ffw_norm.weight", &[8]),
            ("attn_q.weight", &[8, 8]),
            ("attn_k.weight", &[8, 8]),
            ("attn_v.weight", &[8, 8]),
            ("attn_output.weight", &[8, 8]),
            ("ffn_gate.weight", &[8, 16]),
            ("ffn_up.weight", &[8, 16]),
            ("ffn_down.weight", &[16, 8]),
        ]
    };
    if neox {
        shapes.push(("output_norm.bias".into(), vec![8]));
        shapes.push(("output.weight".into(), vec![8, 8]));
    }
    for (part, ne) in parts {
        shapes.push((format!("blk.0.{part}"), ne.to_vec()));
    }
    // Structured edits of the metadata.
    for _ in 0..g.below(4) {
        let k = g.below(kv.len() as u64) as usize;
        match g.below(4) {
            0 => {
                kv.remove(k);
            }
            1 => kv[k].1 = GgufValue::String("é".repeat(g.below(4) as usize)),
            2 => kv[k].1 = GgufValue::Array(vec![GgufValue::U8(1); g.below(40) as usize]),
            _ => kv[k].1 = GgufValue::U64(g.pick(size())),
        }
    }
    // Structured edits of the tensor table.
    let mut tensors: Vec<GgufTensor> = shapes
        .into_iter()
        .map(|(name, ne)| {
            let n: u64 = ne.iter().product();
            GgufTensor {
                name,
                ne,
                ty: 0,
                bytes: 4 * n as usize,
            }
        })
        .collect();
    let mut offsets: Vec<Option<u64>> = vec![None; tensors.len()];
    for _ in 0..g.below(3) {
        let k = g.below(tensors.len() as u64) as usize;
        match g.below(4) {
            0 => {
                let dims = g.pick(proptest::collection::vec(size(), 0..6));
                tensors[k].ne = dims;
            }
            1 => tensors[k].ty = g.pick(prop_oneof![0u32..16, any::<u32>()]),
            2 => offsets[k] = Some(g.pick(size())),
            _ => {
                tensors.remove(k);
                offsets.remove(k);
            }
        }
    }
    let lie = g.below(8) == 0;
    let mut out = Vec::new();
    out.extend(b"GGUF");
    out.extend(3u32.to_le_bytes());
    let (nt, nkv) = if lie {
        (g.pick(size()), g.pick(size()))
    } else {
        (tensors.len() as u64, kv.len() as u64)
    };
    out.extend(nt.to_le_bytes());
    out.extend(nkv.to_le_bytes());
    for (k, v) in &kv {
        put_str(&mut out, k);
        out.extend(v.type_tag().to_le_bytes());
        put_value(&mut out, v);
    }
    let mut offset = 0u64;
    for (t, fixed) in tensors.iter().zip(&offsets) {
        put_str(&mut out, &t.name);
        out.extend((t.ne.len() as u32).to_le_bytes());
        t.ne.iter().for_each(|d| out.extend(d.to_le_bytes()));
        out.extend(t.ty.to_le_bytes());
        out.extend(fixed.unwrap_or(offset).to_le_bytes());
        offset += (t.bytes as u64).div_ceil(32) * 32;
    }
    out.resize(out.len().div_ceil(32) * 32, 0);
    let data_len = (offset as usize).min(1 << 16);
    let value = 0.01f32.to_le_bytes();
    out.extend((0..data_len).map(|k| value[k % 4]));
    out
}

/// A safetensors file: an 8-byte header length, a JSON header of tensor entries (dtype, shape,
/// data offsets) with boundary values in them, and the data.
fn safetensors_input(g: &mut Gen) -> Vec<u8> {
    let n = 1 + g.below(4);
    let mut header = serde_json::Map::new();
    let mut offset = 0u64;
    for k in 0..n {
        let shape = if g.below(3) == 0 {
            g.pick(proptest::collection::vec(size(), 0..5))
        } else {
            vec![1 + g.below(4), 1 + g.below(4)]
        };
        let dtype = g.pick(proptest::sample::select(vec![
            "F32", "F16", "BF16", "F64", "I64", "U8", "BOOL", "F8_E4M3", "X",
        ]));
        let width = match dtype {
            "F64" | "I64" => 8,
            "F16" | "BF16" => 2,
            "U8" | "BOOL" | "F8_E4M3" => 1,
            _ => 4,
        };
        let len = shape
            .iter()
            .try_fold(width, |a: u64, d| a.checked_mul(*d))
            .unwrap_or(0)
            .min(1 << 12);
        let mut offsets = [offset, offset + len];
        if g.below(5) == 0 {
            offsets[g.below(2) as usize] = g.pick(size());
        }
        offset += len;
        header.insert(
            format!("t{k}"),
            json!({"dtype": dtype, "shape": shape, "data_offsets": offsets}),
        );
    }
    if g.below(4) == 0 {
        header.insert("__metadata__".into(), g.pick(json_value()));
    }
    let header = Value::Object(header).to_string();
    let mut out = Vec::new();
    let declared = if g.below(8) == 0 {
        g.pick(size())
    } else {
        header.len() as u64
    };
    out.extend(declared.to_le_bytes());
    out.extend(header.as_bytes());
    out.extend((0..offset.min(1 << 14)).map(|k| k as u8));
    out
}

/// A WordPiece `tokenizer.json` (BERT style: `##` continuation prefix, whitespace splitting).
fn wordpiece_tokenizer() -> Value {
    let vocab: serde_json::Map<String, Value> = ["[UNK]", "he", "##llo", "w", "##or", "##ld", "1"]
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), json!(i)))
        .collect();
    json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab}
    })
}

/// A Unigram `tokenizer.json` (SentencePiece style: `▁` for spaces, byte fallback).
fn unigram_tokenizer() -> Value {
    let vocab: Vec<Value> = ["<unk>", "▁he", "llo", "▁w", "or", "ld", "▁", "1"]
        .iter()
        .enumerate()
        .map(|(i, t)| json!([t, -(i as f64)]))
        .collect();
    json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [{"id": 0, "content": "<unk>", "single_word": false, "lstrip": false,
                          "rstrip": false, "normalized": false, "special": true}],
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
        "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always",
                          "split": true},
        "post_processor": null,
        "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always",
                    "split": true},
        "model": {"type": "Unigram", "unk_id": 0, "byte_fallback": false, "vocab": vocab}
    })
}

/// A graph JSON: a small graph with node and neuron data written by `fidelis-graph`, its `cfg`
/// and entries edited.
fn graph_input(g: &mut Gen) -> String {
    let mut cfg = GraphConfig::new(2, 2, g.below(2) == 0);
    cfg.d_model = Some(3);
    let mut graph = Graph::new(cfg);
    for b in 0..graph.n_backward() {
        for f in 0..graph.visible_forward(b) {
            graph.set_score(f, b, (f * 7 + b) as f32 * 0.1);
        }
    }
    let _ = graph.apply_topn(5, true);
    let mut base: Value = serde_json::from_str(&graph.to_json_string()).expect("graph JSON");
    for _ in 0..g.below(3) {
        let key = ["n_layers", "n_heads", "d_model", "parallel_attn_mlp"][g.below(4) as usize];
        base["cfg"][key] = g.pick(json_value());
    }
    if g.below(4) == 0 {
        base["edges"]["a9.h9->m99"] = json!({"score": 1.0, "in_graph": true});
    }
    if g.below(4) == 0 {
        base["nodes"]["a0.h1"]["neurons"] = g.pick(json_value());
    }
    json_edits(g, base)
}

/// A task file: the EAP-IG CSV columns or JSONL objects, rows with cells from boundary values.
fn tasks_input(g: &mut Gen, csv: bool) -> String {
    let cell = |g: &mut Gen| -> String {
        g.pick(proptest::sample::select(vec![
            "When Mary and John went".to_string(),
            "When Anna and John went".to_string(),
            "17".into(),
            "[1, 2]".into(),
            "[]".into(),
            "99999999999999999999".into(),
            "-1".into(),
            "\"".into(),
            "\"a,\nb\"".into(),
            String::new(),
            " Mary".into(),
            "é".repeat(50),
        ]))
    };
    let rows = g.below(6);
    let mut out = String::new();
    if csv {
        let header = if g.below(5) == 0 {
            ",clean,corrupted,label"
        } else {
            ",clean,corrupted,correct_idx,incorrect_idx"
        };
        out.push_str(header);
        out.push('\n');
        for r in 0..rows {
            let cells: Vec<String> = (0..4).map(|_| cell(g)).collect();
            out.push_str(&format!("{r},{}\n", cells.join(",")));
        }
    } else {
        for _ in 0..rows {
            let mut obj = json!({"clean": cell(g), "corrupted": cell(g),
                                 "answer": cell(g), "wrong": cell(g)});
            if g.below(3) == 0 {
                obj["correct_idx"] = g.pick(json_value());
            }
            out.push_str(&obj.to_string());
            out.push('\n');
        }
    }
    out
}
