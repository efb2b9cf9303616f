//! How much memory an edge attribution run will need, and how many passes it makes, from the
//! model config alone: `fidelis inspect --plan` sizes a GPU with it before one is rented.
//!
//! The estimate counts what [`crate::edge`] and [`crate::exact`] keep alive at once for the
//! largest batch, term by term, in elements of the run's float type (`bytes_per_element`: 4 for
//! f32, 2 for f16/bf16). With b examples per batch, p tokens (the padded prompt length), `R = k·b`
//! rows per pass (k interpolation steps stacked), `f` graph rows (writers) and `c` graph columns
//! (reader inputs), a gradient method's probed pass keeps:
//!
//! - **weights**: the weight matrices and norms ([`fidelis_models::model::estimate_elements`])
//!   plus the rotary or learned position table.
//! - **node outputs and Δa**: EAP, clean-corrupted and EAP-IG on inputs keep Δa alone (below)
//!   and the input rows; EAP-IG on activations keeps the clean and ablated outputs and Δa,
//!   each `[b, p, f, d]`, the residual stream entering every layer, and per worker one group's
//!   interpolated output and Δa rows.
//! - **gradient probes**: the zero tensors at every layer's queries and per-query-head keys and
//!   values (`[R, p, n_heads, d_head]` each), MLP input and the logits' input, held until the
//!   pass ends, and the residual entering each layer (recorded for the q/k/v input gradients).
//! - **saved activations**: what the plain forward keeps for its backward, per layer the two
//!   norms' inputs and outputs, q/k/v per query head and after rotary, the attention scores and
//!   pattern, the weighted values, and the MLP's nonlinearity operands.
//! - **probe gradients**: as large as the probes, all returned at once by Burn's backward.
//! - **Δa and logits in f32**: Δa laid out by `flatten_rows` (`[f, b·p·d]`), the clean
//!   last-position logits and answer masks `[b, d_vocab]`, and per pass the logits, repeated
//!   clean logits and masks and the loss's softmax `[R, d_vocab]`: 4 bytes each whatever the
//!   model's type, since the metric and the contraction run in f32.
//! - **one layer's input gradients**: the q/k/v input gradients of one layer
//!   (`Transformer::qkv_input_grads`, 3 × `[R, p, n_heads, d]` in f32) and as many again for
//!   the norm backward in flight; one layer at a time.
//! - **scores**: the `[f, c]` running sum, the pass block and its reader-group parts, in f32.
//! - **process baseline**: [`PROCESS_BASELINE_BYTES`], the binary, tokenizer and allocator slack
//!   of the measured CPU runs (docs/benchmarks.md); a GPU adds its driver context on top.
//!
//! Exact patching has no backward: its peak is Δa, the patch values of the reader groups a
//! chunk of edges touches (`[e·b, p, width, d]` each), a forward of `e·b` rows and its logits.
//! The recording forwards (clean and corrupted, full-sequence logits for the corrupted one) are
//! a second phase (four `[b, p, f, d]` tensors: the clean outputs, and the corrupted outputs as
//! recorded, made contiguous by the concatenation and stacked, measured on a Llama-3.2-1B-shaped
//! model); the peak is the larger of the two. Calibrated against peak RSS of
//! SmolLM2 and of a Llama-3.2-1B-shaped model on the CPU (docs/benchmarks.md, "Planning
//! memory"): the estimate errs on the high side.

use fidelis_circuit::NodeMap;
use fidelis_graph::{Graph, GraphConfig};
use fidelis_models::TransformerConfig;
use fidelis_models::config::{ActivationFn, Positional};
use serde::Serialize;

use crate::edge::{EdgeAttribution, Method};
use crate::exact::ExactPatching;
use crate::{AttributionError, EdgeMethod, Result};

/// What a process needs besides the tensors the plan counts: the binary and its libraries,
/// the tokenizer and the allocator's slack. Fitted to the measured CPU runs (a process that
/// only parses a config peaks at 12 MB; the SmolLM2 runs of docs/benchmarks.md sit 40 to 85 MB
/// above the tensors counted, so this errs on the safe side).
pub const PROCESS_BASELINE_BYTES: u64 = 96 << 20;

/// The run to plan: the method and the sizes `circuit discover` would use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanRequest {
    /// The edge scoring method.
    pub method: EdgeMethod,
    /// Number of prompt pairs.
    pub pairs: usize,
    /// Examples per batch (a batch never holds more than `pairs`).
    pub batch_size: usize,
    /// Padded prompt length in tokens: the longest prompt of a batch.
    pub tokens: usize,
    /// Interpolation steps of the EAP-IG methods.
    pub steps: usize,
    /// Interpolation steps stacked into one forward/backward.
    pub steps_per_pass: usize,
    /// Passes of EAP-IG on activations run at once.
    pub workers: usize,
    /// Edges patched per forward by exact patching.
    pub edges_per_pass: usize,
    /// Bytes of one weight or activation element: 4 for f32, 2 for f16 and bf16.
    pub bytes_per_element: u64,
}

impl PlanRequest {
    /// `method` on `pairs` pairs of `tokens` tokens with the library's defaults
    /// ([`EdgeAttribution::new`], [`ExactPatching::default`]; one worker, f32).
    pub fn new(method: EdgeMethod, pairs: usize, tokens: usize) -> Self {
        let gradient = EdgeAttribution::new(method.gradient().unwrap_or(Method::Eap));
        let exact = ExactPatching::default();
        Self {
            method,
            pairs,
            batch_size: gradient.batch_size,
            tokens,
            steps: gradient.steps,
            steps_per_pass: gradient.steps_per_pass,
            workers: 1,
            edges_per_pass: exact.edges_per_pass,
            bytes_per_element: 4,
        }
    }
}

/// One line of a plan's breakdown: a term of the peak.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanTerm {
    /// What it is.
    pub name: &'static str,
    /// Its bytes.
    pub bytes: u64,
    /// The shapes it stands for.
    pub detail: String,
}

/// The estimate: memory by kind, the peak, and the passes of the whole run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The request, with `batch_size` capped at `pairs` and `steps_per_pass` at `steps`.
    pub request: PlanRequest,
    /// Graph rows (writers).
    pub n_forward: usize,
    /// Graph columns (reader inputs).
    pub n_backward: usize,
    /// Edges of the graph.
    pub n_edges: usize,
    /// Weights and position tables.
    pub weights_bytes: u64,
    /// Clean and ablated node outputs and Δa of one batch (and what EAP-IG on activations
    /// keeps besides).
    pub recorded_bytes: u64,
    /// Logits and answer masks alive during a pass.
    pub logits_bytes: u64,
    /// Activations one pass saves for its backward (probes and residual records included)
    /// times the workers; 0 for exact patching.
    pub activations_bytes: u64,
    /// Reader-input gradients one backward returns, times the workers; 0 for exact patching.
    pub gradient_bytes: u64,
    /// The score matrix and its per-pass blocks.
    pub score_bytes: u64,
    /// The estimated peak: the breakdown's sum.
    pub peak_bytes: u64,
    /// Which phase the peak is in (`gradient pass`, `patching pass`, `recording`).
    pub peak_phase: &'static str,
    /// The terms of the peak; they sum to `peak_bytes`.
    pub breakdown: Vec<PlanTerm>,
    /// Forward passes of the whole run (a pass of k stacked copies counts once; EAP-IG on
    /// activations' passes start at their group's layer).
    pub forward_passes: u64,
    /// Backward passes of the whole run.
    pub backward_passes: u64,
}

/// Checked arithmetic on element counts: every product and sum errors instead of wrapping.
fn mul(factors: &[u64]) -> Result<u64> {
    factors
        .iter()
        .try_fold(1u64, |acc, &x| acc.checked_mul(x))
        .ok_or_else(too_large)
}

fn add(terms: &[u64]) -> Result<u64> {
    terms
        .iter()
        .try_fold(0u64, |acc, &x| acc.checked_add(x))
        .ok_or_else(too_large)
}

fn too_large() -> AttributionError {
    AttributionError::Options(
        "the planned run is too large to count in 64 bits: lower --batch-size, --pairs, \
         --tokens or --steps-per-pass"
            .into(),
    )
}

fn u(x: usize) -> u64 {
    x as u64
}

/// The sizes of a config in the plan's vocabulary.
struct Shape {
    layers: u64,
    d: u64,
    heads: u64,
    kv_heads: u64,
    d_head: u64,
    d_mlp: u64,
    vocab: u64,
    /// Per layer, MLP tensors of `[rows, p, d_mlp]` the backward keeps.
    mlp_saved: u64,
    qk_norm: bool,
}

impl Shape {
    fn of(cfg: &TransformerConfig) -> Self {
        // Operands Burn's autodiff keeps, read off each composite: SiLU = x·σ(x) keeps x and
        // σ(x); the tanh GELU keeps x, tanh(·) and 1 + tanh(·); the erf GELU keeps x, x/√2 and
        // Φ(x); ReLU its output; a gated MLP also keeps act(gate) and up for their product.
        let act: u64 = match cfg.act_fn {
            ActivationFn::Silu => 2,
            ActivationFn::GeluTanh | ActivationFn::Gelu => 3,
            ActivationFn::Relu => 1,
        };
        Self {
            layers: u(cfg.n_layers),
            d: u(cfg.d_model),
            heads: u(cfg.n_heads),
            kv_heads: u(cfg.n_kv_heads),
            d_head: u(cfg.d_head),
            d_mlp: u(cfg.d_mlp),
            vocab: u(cfg.d_vocab),
            mlp_saved: act + if cfg.gated_mlp { 2 } else { 0 },
            qk_norm: cfg.qk_norm,
        }
    }

    /// Elements one layer of a probed pass keeps for its backward, probes aside: the plain
    /// forward's (no per-head copies of the residual).
    fn saved_per_layer(&self, rows: u64, p: u64) -> Result<u64> {
        let (h, dh) = (self.heads, self.d_head);
        let qk_norm = if self.qk_norm {
            mul(&[rows, p, h + self.kv_heads, dh])?
        } else {
            0
        };
        add(&[
            // the two norms' inputs and normalised outputs
            mul(&[4, rows, p, self.d])?,
            // q, k and v per query head, and q and k after rotary
            mul(&[5, rows, p, h, dh])?,
            // the attention scores and pattern
            mul(&[2, rows, h, p, p])?,
            // the heads' weighted values
            mul(&[rows, p, h, dh])?,
            qk_norm,
            mul(&[self.mlp_saved, rows, p, self.d_mlp])?,
        ])
    }
}

/// Weight elements: matrices and norms, plus the position table.
fn weight_elements(cfg: &TransformerConfig) -> Result<u64> {
    let tables = match cfg.positional {
        Positional::Rotary { rotary_dim, .. } => mul(&[2, u(cfg.n_ctx), u(rotary_dim)])?,
        Positional::Learned => mul(&[u(cfg.n_ctx), u(cfg.d_model)])?,
    };
    add(&[fidelis_models::model::estimate_elements(cfg), tables])
}

fn check(cfg: &TransformerConfig, req: &PlanRequest) -> Result<()> {
    let bad = |m: String| Err(AttributionError::Options(m));
    let positive = [
        ("pairs", req.pairs),
        ("batch size", req.batch_size),
        ("tokens", req.tokens),
        ("steps", req.steps),
        ("steps per pass", req.steps_per_pass),
        ("workers", req.workers),
        ("edges per pass", req.edges_per_pass),
    ];
    if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
        return bad(format!("{name} must be at least 1"));
    }
    if req.tokens > cfg.n_ctx {
        return bad(format!(
            "{} tokens do not fit the model's context of {} tokens",
            req.tokens, cfg.n_ctx
        ));
    }
    if !(1..=8).contains(&req.bytes_per_element) {
        return bad(format!(
            "{} bytes per element (expected 1 to 8)",
            req.bytes_per_element
        ));
    }
    Ok(())
}

/// Estimates the peak memory and the passes of `req` on a model of config `cfg` (see the
/// module docs for what is counted). Errors name the option when a size is zero, when the
/// tokens exceed the context, or when the counts would not fit in 64 bits.
pub fn estimate(cfg: &TransformerConfig, req: &PlanRequest) -> Result<Plan> {
    check(cfg, req)?;
    let mut req = req.clone();
    req.batch_size = req.batch_size.min(req.pairs);
    req.steps_per_pass = req.steps_per_pass.min(req.steps);
    let graph = Graph::new(GraphConfig::new(
        cfg.n_layers,
        cfg.n_heads,
        cfg.parallel_attn_mlp,
    ));
    let map = NodeMap::new(cfg, &graph)?;
    let s = Shape::of(cfg);
    let (b, p) = (u(req.batch_size), u(req.tokens));
    let (f, c) = (u(map.n_forward()), u(map.n_backward()));
    let bpe = req.bytes_per_element;
    let bytes = |elements: u64| mul(&[elements, bpe]);
    let weights = bytes(weight_elements(cfg)?)?;
    let outputs = mul(&[b, p, f, s.d])?;
    // The score matrix, its pass block and parts, in f32 whatever the model's type.
    let scores = mul(&[4, 3, f, c])?;
    let per_batch = mul(&[3, b, s.vocab])?;
    let batches = u(req.pairs.div_ceil(req.batch_size));

    // The recording forwards: clean outputs held while the corrupted run records its own and
    // stacks them, with full-sequence logits.
    let mut recording = vec![
        term("weights", weights, "matrices, norms, position table"),
        term(
            "node outputs",
            bytes(mul(&[4, outputs])?)?,
            format!(
                "clean; corrupted as recorded, made contiguous and stacked: 4 × [{b}, {p}, {f}, {}]",
                s.d
            ),
        ),
        term(
            "logits",
            bytes(add(&[mul(&[b, p, s.vocab])?, per_batch])?)?,
            format!("corrupted run [{b}, {p}, {}], answer masks", s.vocab),
        ),
    ];
    let gradient = req.method.gradient();
    let (pass, f32_terms, phase, activations, gradients, passes) = match gradient {
        Some(method) => {
            let g = gradient_pass(&s, &map, &req, method, outputs, per_batch)?;
            (
                g.terms,
                g.f32_terms,
                "gradient pass",
                g.activations,
                g.gradients,
                g.passes,
            )
        }
        None => {
            let terms = patching_pass(&s, &map, &req, outputs, per_batch)?;
            let forwards = u(graph.n_edges().div_ceil(req.edges_per_pass));
            (terms, Vec::new(), "patching pass", 0, 0, (forwards, 0))
        }
    };
    if matches!(gradient, Some(Method::EapIgActivations)) {
        recording.push(term(
            "residual stream",
            bytes(mul(&[s.layers, b, p, s.d])?)?,
            "entering every layer",
        ));
    }
    let mut pass = std::iter::once(Ok(term(
        "weights",
        weights,
        "matrices, norms, position table",
    )))
    .chain(
        pass.into_iter()
            .map(|(name, elements, detail)| Ok(term(name, bytes(elements)?, detail))),
    )
    .collect::<Result<Vec<_>>>()?;
    pass.extend(
        f32_terms
            .into_iter()
            .map(|(name, bytes, detail)| term(name, bytes, detail)),
    );
    pass.push(term(
        "scores",
        scores,
        format!("[{f}, {c}] sum, block, parts"),
    ));
    for terms in [&mut pass, &mut recording] {
        terms.push(term(
            "process baseline",
            PROCESS_BASELINE_BYTES,
            "binary, tokenizer, allocator slack (CPU)",
        ));
    }
    let total = |t: &[PlanTerm]| add(&t.iter().map(|t| t.bytes).collect::<Vec<_>>());
    let (pass_total, recording_total) = (total(&pass)?, total(&recording)?);
    let (peak_bytes, peak_phase, breakdown) = if pass_total >= recording_total {
        (pass_total, phase, pass)
    } else {
        (recording_total, "recording", recording)
    };
    let find = |name: &str| {
        breakdown
            .iter()
            .filter(|t| t.name == name)
            .map(|t| t.bytes)
            .sum::<u64>()
    };
    let (pass_forwards, pass_backwards) = passes;
    Ok(Plan {
        n_forward: map.n_forward(),
        n_backward: map.n_backward(),
        n_edges: graph.n_edges(),
        weights_bytes: weights,
        recorded_bytes: find("node outputs and Δa") + find("node outputs"),
        logits_bytes: find("logits and answer masks") + find("logits"),
        activations_bytes: bytes(activations)?,
        gradient_bytes: bytes(gradients)?,
        score_bytes: scores,
        peak_bytes,
        peak_phase,
        breakdown,
        forward_passes: mul(&[batches, add(&[2, pass_forwards])?])?,
        backward_passes: mul(&[batches, pass_backwards])?,
        request: req,
    })
}

fn term(name: &'static str, bytes: u64, detail: impl Into<String>) -> PlanTerm {
    PlanTerm {
        name,
        bytes,
        detail: detail.into(),
    }
}

/// A term in elements (converted to bytes by the caller).
type Elements = (&'static str, u64, String);

/// What a gradient method's probed pass keeps, and its passes per batch.
struct GradientPass {
    terms: Vec<Elements>,
    /// Saved activations of the passes in flight (weights copies and probes included).
    activations: u64,
    /// Reader gradients of the passes in flight.
    gradients: u64,
    /// Terms already in bytes: what the run keeps in f32 whatever its float type.
    f32_terms: Vec<(&'static str, u64, String)>,
    /// Forward and backward passes per batch, recording aside.
    passes: (u64, u64),
}

fn gradient_pass(
    s: &Shape,
    map: &NodeMap,
    req: &PlanRequest,
    method: Method,
    outputs: u64,
    per_batch: u64,
) -> Result<GradientPass> {
    let (b, p) = (u(req.batch_size), u(req.tokens));
    let ig = matches!(method, Method::EapIgInputs | Method::EapIgActivations);
    let copies = if ig { u(req.steps_per_pass) } else { 1 };
    let rows = mul(&[copies, b])?;
    let workers = if method == Method::EapIgActivations {
        u(req.workers)
    } else {
        1
    };
    let per_step = u(req.steps.div_ceil(req.steps_per_pass));
    let passes = match method {
        Method::Eap => 1,
        Method::CleanCorrupted => 2,
        Method::EapIgInputs => per_step,
        Method::EapIgActivations => mul(&[add(&[mul(&[2, s.layers])?, 1])?, per_step])?,
    };
    // Probes at every layer's q, per-query-head k and v ([R, p, heads, d_head] each) and MLP
    // input, and at the logits' input; the backward returns a gradient as large for each.
    let probe_elements = add(&[
        mul(&[
            s.layers,
            add(&[
                mul(&[3, rows, p, s.heads, s.d_head])?,
                mul(&[rows, p, s.d])?,
            ])?,
        ])?,
        mul(&[rows, p, s.d])?,
    ])?;
    let probes = mul(&[workers, probe_elements])?;
    let gradients = probes;
    // The residual entering every layer, recorded (detached) for the q/k/v input gradients.
    let resid = mul(&[workers, s.layers, rows, p, s.d])?;
    let saved = mul(&[workers, s.layers, s.saved_per_layer(rows, p)?])?;
    // EAP, clean-corrupted and EAP-IG on inputs keep Δa alone (flattened, in f32, below) and
    // the input rows; EAP-IG on activations interpolates node outputs, so it keeps the clean
    // and ablated outputs and Δa, the residual stream entering every layer, and per worker
    // one group's Δa rows and interpolated output (a layer's heads at most).
    let (recorded, recorded_detail) = if method == Method::EapIgActivations {
        let recorded = add(&[
            mul(&[3, outputs])?,
            mul(&[s.layers, b, p, s.d])?,
            mul(&[workers, add(&[b, rows])?, p, s.heads, s.d])?,
        ])?;
        let detail = format!(
            "clean and ablated outputs, Δa: 3 × [{b}, {p}, {}, {}], residual stream per \
             layer, a group's interpolation",
            map.n_forward(),
            s.d
        );
        (recorded, detail)
    } else {
        (
            mul(&[2, b, p, s.d])?,
            format!("the clean and ablated input rows 2 × [{b}, {p}, {}]", s.d),
        )
    };
    let logits = add(&[per_batch, mul(&[workers, 6, rows, s.vocab])?])?;
    let terms = vec![
        ("node outputs and Δa", recorded, recorded_detail),
        (
            "gradient probes",
            add(&[probes, resid])?,
            format!(
                "q, k and v per query head, MLP and logits inputs ({rows} rows × {p} tokens), \
                 the residual entering each layer{}",
                per_worker(workers)
            ),
        ),
        (
            "saved activations",
            saved,
            format!(
                "{} layers × norms, q/k/v, pattern, MLP ({} rows × {p} tokens{})",
                s.layers,
                rows,
                per_worker(workers)
            ),
        ),
        (
            "probe gradients",
            gradients,
            "as large as the probes, returned at once by the backward".to_string(),
        ),
    ];
    // In f32 whatever the model's type: Δa as the contraction reads it, the logits the metric
    // widens, and one layer's q/k/v input gradients `[R, p, heads, d]` with the norm's
    // backward in flight (about as many again).
    let f32_terms = vec![
        (
            "Δa and logits in f32",
            mul(&[4, add(&[outputs, logits])?])?,
            format!(
                "Δa [{}, {b}·{p}·{}], logits [{rows}, {}]",
                map.n_forward(),
                s.d,
                s.vocab
            ),
        ),
        (
            "one layer's input gradients",
            mul(&[4, workers, 6, rows, p, s.heads, s.d])?,
            format!(
                "3 × [{rows}, {p}, {}, {}] and the norm backward's",
                s.heads, s.d
            ),
        ),
    ];
    Ok(GradientPass {
        terms,
        f32_terms,
        activations: add(&[probes, resid, saved])?,
        gradients,
        passes: (passes, passes),
    })
}

fn per_worker(workers: u64) -> String {
    if workers > 1 {
        format!(", × {workers} workers")
    } else {
        String::new()
    }
}

/// What exact patching's forward keeps: Δa, the patch values of the reader groups one chunk of
/// edges touches, the forward's working set at a patched layer and the logits.
fn patching_pass(
    s: &Shape,
    map: &NodeMap,
    req: &PlanRequest,
    outputs: u64,
    per_batch: u64,
) -> Result<Vec<Elements>> {
    let (b, p) = (u(req.batch_size), u(req.tokens));
    let e = u(req.edges_per_pass);
    let rows = mul(&[e, b])?;
    let width = u(widest_chunk(map, req.edges_per_pass));
    Ok(vec![
        (
            "node outputs and Δa",
            mul(&[2, outputs])?,
            format!(
                "Δa and its transposed copy: 2 × [{b}, {p}, {}, {}]",
                map.n_forward(),
                s.d
            ),
        ),
        (
            "patch values",
            mul(&[rows, p, width, s.d])?,
            format!("{width} reader inputs × [{rows}, {p}, {}]", s.d),
        ),
        (
            "forward working set",
            add(&[
                mul(&[3, rows, p, s.heads, s.d])?,
                mul(&[3, rows, p, s.d_mlp])?,
            ])?,
            format!("per-head inputs and MLP of {rows} rows"),
        ),
        (
            "logits and answer masks",
            add(&[per_batch, mul(&[4, rows, s.vocab])?])?,
            format!("[{rows}, {}] per pass", s.vocab),
        ),
    ])
}

/// The most reader-input columns of patch values one chunk of `per_pass` edges needs: edges
/// run column by column (`a` column has one edge per row it sees), and every reader group a
/// chunk touches gets a patch value as wide as the group.
fn widest_chunk(map: &NodeMap, per_pass: usize) -> usize {
    let mut columns: Vec<(usize, usize)> = Vec::new(); // (edges, group index) per column
    for (g, r) in map.readers().iter().enumerate() {
        columns.extend(r.cols.clone().map(|_| (r.visible, g)));
    }
    let widths: Vec<usize> = map.readers().iter().map(|r| r.cols.len()).collect();
    // Slide over the edges chunk by chunk, tracking the groups each chunk touches.
    let (mut widest, mut in_chunk, mut touched) = (0, 0, Vec::<usize>::new());
    for (edges, g) in columns {
        let mut left = edges;
        while left > 0 {
            if touched.last() != Some(&g) {
                touched.push(g);
            }
            let take = left.min(per_pass - in_chunk);
            left -= take;
            in_chunk += take;
            if in_chunk == per_pass {
                widest = widest.max(touched.iter().map(|&g| widths[g]).sum());
                in_chunk = 0;
                touched.clear();
            }
        }
    }
    widest.max(touched.iter().map(|&g| widths[g]).sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GPT-2 with 2 layers, 2 heads of 4, d_model 8, d_mlp 32, 10 tokens, context 16: graph rows
    /// f = 1 + 2·(2 + 1) = 7, columns c = 2·(3·2 + 1) + 1 = 15.
    fn tiny() -> TransformerConfig {
        let text = r#"{"model_type":"gpt2","vocab_size":10,"n_positions":16,"n_embd":8,"n_layer":2,"n_head":2}"#;
        let cfg: fidelis_models::gpt2::Gpt2Config = serde_json::from_str(text).unwrap();
        cfg.to_transformer().unwrap()
    }

    fn request(method: EdgeMethod) -> PlanRequest {
        PlanRequest {
            batch_size: 2,
            ..PlanRequest::new(method, 3, 5)
        }
    }

    fn bytes_of(plan: &Plan) -> Vec<(&'static str, u64)> {
        plan.breakdown.iter().map(|t| (t.name, t.bytes)).collect()
    }

    /// Every term by hand, in f32 elements × 4 (b = 2, p = 5, R = 2, V = 10).
    #[test]
    fn eap_on_a_tiny_gpt2_counts_each_term_by_hand() {
        let plan = estimate(&tiny(), &request(EdgeMethod::Eap)).unwrap();
        assert_eq!((plan.n_forward, plan.n_backward), (7, 15));
        // weights: per layer attention 8·(2+2·2)·4 + 2·4·8 = 256, MLP 2·8·32 = 512, norms
        // 2 × (weight + bias) = 32; two layers 1600, final norm 16, tied embedding 10·8 = 80,
        // learned positions 16·8 = 128.
        let weights = (2 * (256 + 512 + 32) + 16 + 80 + 128) * 4;
        // EAP keeps the clean and ablated input rows 2 × [2, 5, 8] besides Δa.
        let inputs = 2 * 2 * 5 * 8 * 4;
        // per layer probes at q, k and v per head 3 × [2, 5, 2, 4] = 240 and the MLP input
        // [2, 5, 8] = 80, the logits' input 80; the residual records 2 × [2, 5, 8] = 160
        let probes = (2 * (240 + 80) + 80) * 4;
        let probes_and_resid = probes + 160 * 4;
        // per layer: norms 4 × [2, 5, 8] = 320, q/k/v and rotary 5 × [2, 5, 2, 4] = 400,
        // scores and pattern 2 × [2, 2, 5, 5] = 200, z 80, tanh GELU 3 × [2, 5, 32] = 960
        let saved = 2 * (320 + 400 + 200 + 80 + 960) * 4;
        // in f32: Δa [7, 2·5·8] = 560 and the logits: clean logits and two answer masks
        // [2, 10], per pass 6 × [2, 10]
        let f32_delta_logits = (560 + 3 * 2 * 10 + 6 * 2 * 10) * 4;
        // one layer's input gradients and the norm backward's: 6 × [2, 5, 2, 8] in f32
        let layer_grads = 6 * 2 * 5 * 2 * 8 * 4;
        let scores = 3 * 7 * 15 * 4;
        let want = vec![
            ("weights", weights),
            ("node outputs and Δa", inputs),
            ("gradient probes", probes_and_resid),
            ("saved activations", saved),
            ("probe gradients", probes),
            ("Δa and logits in f32", f32_delta_logits),
            ("one layer's input gradients", layer_grads),
            ("scores", scores),
            ("process baseline", PROCESS_BASELINE_BYTES),
        ];
        assert_eq!(bytes_of(&plan), want);
        assert_eq!(plan.peak_bytes, 38_076 + PROCESS_BASELINE_BYTES);
        assert_eq!(plan.peak_phase, "gradient pass");
        assert_eq!(plan.activations_bytes, probes_and_resid + saved);
        assert_eq!(plan.gradient_bytes, probes);
        // 2 batches (2 + 1 pairs), each: clean and corrupted recording, one gradient pass.
        assert_eq!((plan.forward_passes, plan.backward_passes), (6, 2));
    }

    #[test]
    fn half_precision_halves_the_model_tensors_and_steps_stack_rows() {
        let f32_plan = estimate(&tiny(), &request(EdgeMethod::Eap)).unwrap();
        let half = PlanRequest {
            bytes_per_element: 2,
            ..request(EdgeMethod::Eap)
        };
        let f16_plan = estimate(&tiny(), &half).unwrap();
        let in_f32 = [
            "Δa and logits in f32",
            "one layer's input gradients",
            "scores",
        ];
        for (a, b) in f32_plan.breakdown.iter().zip(&f16_plan.breakdown) {
            if in_f32.contains(&a.name) || a.name == "process baseline" {
                assert_eq!(a.bytes, b.bytes, "{}", a.name);
            } else {
                assert_eq!(a.bytes, 2 * b.bytes, "{}", a.name);
            }
        }
        // EAP-IG on inputs, 5 steps, 2 per pass: 3 passes per batch of 2·2 stacked rows.
        let ig = PlanRequest {
            steps_per_pass: 2,
            ..request(EdgeMethod::EapIgInputs)
        };
        let plan = estimate(&tiny(), &ig).unwrap();
        assert_eq!((plan.forward_passes, plan.backward_passes), (2 * 5, 2 * 3));
        let probes = |p: &Plan| {
            p.breakdown
                .iter()
                .find(|t| t.name == "gradient probes")
                .unwrap()
                .bytes
        };
        assert_eq!(probes(&plan), 2 * probes(&f32_plan));
        // EAP-IG on activations: 2·2 + 1 groups × 5 steps per batch.
        let act = estimate(&tiny(), &request(EdgeMethod::EapIgActivations)).unwrap();
        assert_eq!(act.backward_passes, 2 * 5 * 5);
    }

    #[test]
    fn exact_patching_has_no_backward_and_counts_chunks() {
        let plan = estimate(&tiny(), &request(EdgeMethod::Exact)).unwrap();
        let edges = plan.n_edges as u64;
        assert_eq!(plan.backward_passes, 0);
        assert_eq!(plan.forward_passes, 2 * (2 + edges.div_ceil(32)));
        assert_eq!(plan.activations_bytes, 0);
        let map = NodeMap::for_config(&tiny()).unwrap();
        // Edges per column are the rows a reader sees.
        let per_column: usize = map.readers().iter().map(|r| r.visible * r.cols.len()).sum();
        assert_eq!(per_column, plan.n_edges);
        // One edge per chunk: one head's group (2 wide); all edges at once: every column.
        assert_eq!(widest_chunk(&map, 1), 2);
        assert_eq!(widest_chunk(&map, plan.n_edges), 15);
        // 4 edges: layer 0's q (2 columns × 1 edge) and k (2 × 1) in the first chunk.
        assert_eq!(widest_chunk(&map, 4), 4);
    }

    #[test]
    fn absurd_sizes_are_errors_not_overflows() {
        let cfg = tiny();
        let err = |req: PlanRequest| estimate(&cfg, &req).unwrap_err().to_string();
        let r = || request(EdgeMethod::EapIgInputs);
        assert!(
            err(PlanRequest {
                batch_size: 0,
                ..r()
            })
            .contains("batch size must be at least 1")
        );
        assert!(err(PlanRequest { tokens: 0, ..r() }).contains("tokens must be at least 1"));
        assert!(err(PlanRequest { pairs: 0, ..r() }).contains("pairs must be at least 1"));
        assert!(err(PlanRequest { tokens: 17, ..r() }).contains("context of 16"));
        assert!(
            err(PlanRequest {
                tokens: usize::MAX,
                ..r()
            })
            .contains("context of 16")
        );
        let huge = PlanRequest {
            batch_size: usize::MAX,
            pairs: usize::MAX,
            ..r()
        };
        assert!(err(huge).contains("too large to count in 64 bits"));
        let huge = PlanRequest {
            steps: usize::MAX,
            steps_per_pass: usize::MAX,
            ..r()
        };
        assert!(err(huge).contains("too large"));
        assert!(
            err(PlanRequest {
                bytes_per_element: 0,
                ..r()
            })
            .contains("bytes per element")
        );
        // A batch larger than the pairs is the pairs.
        let capped = estimate(
            &cfg,
            &PlanRequest {
                batch_size: 1 << 40,
                ..r()
            },
        )
        .unwrap();
        assert_eq!(capped.request.batch_size, 3);
    }

    #[test]
    fn the_breakdown_sums_to_the_peak_on_published_shapes() {
        let configs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/configs");
        for file in [
            "gpt2-small.json",
            "pythia-160m.json",
            "qwen3-0.6b.json",
            "llama-3.1-8b.json",
        ] {
            let cfg = fidelis_models::model::config_from_file(&configs.join(file)).unwrap();
            for method in <EdgeMethod as strum::VariantArray>::VARIANTS {
                let plan = estimate(&cfg, &PlanRequest::new(*method, 16, 16)).unwrap();
                let sum: u64 = plan.breakdown.iter().map(|t| t.bytes).sum();
                assert_eq!(sum, plan.peak_bytes, "{file} {method}");
                assert!(plan.peak_bytes > plan.weights_bytes, "{file} {method}");
            }
        }
    }
}
