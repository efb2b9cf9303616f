//! Hook points: read, record, replace, add to, or differentiate any named activation.
//!
//! Names follow TransformerLens so that users recognise them (`blocks.3.attn.hook_result`).
//! A [`Hooks`] value is passed to every forward. It holds, per hook point, a list of operations
//! applied in order when the model reaches that point. Expensive decompositions are computed
//! only when some operation asks for them: per-head attention results (`attn.hook_result`) and
//! per-head split q/k/v inputs (`hook_q_input`, `hook_k_input`, `hook_v_input`).
//!
//! Gradient probes ([`Hooks::probe`]) add a zero tensor that requires grad at a point; after
//! `backward`, [`Hooks::probe_grad`] returns ∂loss/∂activation at that point. The model's weights
//! stay outside autodiff, so a backward pass differentiates only through activations.

use std::collections::HashMap;

use burn::prelude::*;
use burn::tensor::Gradients;

use crate::error::{ModelError, Result};

/// Names of hook points, with the shape each activation has.
pub mod point {
    use crate::config::{Positional, TransformerConfig};

    /// Token embedding `[batch, pos, d_model]`.
    pub const EMBED: &str = "hook_embed";
    /// Learned positional embedding (GPT-2 only) `[batch, pos, d_model]`.
    pub const POS_EMBED: &str = "hook_pos_embed";
    /// Output of the final norm `[batch, pos, d_model]`.
    pub const LN_FINAL: &str = "ln_final.hook_normalized";
    /// Residual stream entering block `l` `[batch, pos, d_model]`.
    pub fn resid_pre(l: usize) -> String {
        format!("blocks.{l}.hook_resid_pre")
    }
    /// Residual stream between attention and MLP `[batch, pos, d_model]`.
    pub fn resid_mid(l: usize) -> String {
        format!("blocks.{l}.hook_resid_mid")
    }
    /// Residual stream leaving block `l` `[batch, pos, d_model]`.
    pub fn resid_post(l: usize) -> String {
        format!("blocks.{l}.hook_resid_post")
    }
    /// Per-head query input, before the norm `[batch, pos, head, d_model]` (opt-in).
    pub fn q_input(l: usize) -> String {
        format!("blocks.{l}.hook_q_input")
    }
    /// Per-head key input, one per *query* head under GQA `[batch, pos, head, d_model]` (opt-in).
    pub fn k_input(l: usize) -> String {
        format!("blocks.{l}.hook_k_input")
    }
    /// Per-head value input, one per *query* head under GQA `[batch, pos, head, d_model]` (opt-in).
    pub fn v_input(l: usize) -> String {
        format!("blocks.{l}.hook_v_input")
    }
    /// Queries before rotary `[batch, pos, head, d_head]`.
    pub fn q(l: usize) -> String {
        format!("blocks.{l}.attn.hook_q")
    }
    /// Keys before rotary `[batch, pos, kv_head, d_head]` (`head` when q/k/v inputs are split).
    pub fn k(l: usize) -> String {
        format!("blocks.{l}.attn.hook_k")
    }
    /// Values `[batch, pos, kv_head, d_head]` (`head` when q/k/v inputs are split).
    pub fn v(l: usize) -> String {
        format!("blocks.{l}.attn.hook_v")
    }
    /// Keys before rotary, one copy per *query* head (each kv head repeated over its group
    /// under grouped-query attention) `[batch, pos, head, d_head]` (opt-in): a gradient probe
    /// here tells the query heads' uses of a shared key apart.
    pub fn k_rep(l: usize) -> String {
        format!("blocks.{l}.attn.hook_k_rep")
    }
    /// Values, one copy per *query* head `[batch, pos, head, d_head]` (opt-in); see [`k_rep`].
    pub fn v_rep(l: usize) -> String {
        format!("blocks.{l}.attn.hook_v_rep")
    }
    /// Scaled, masked attention scores `[batch, head, query_pos, key_pos]`.
    pub fn attn_scores(l: usize) -> String {
        format!("blocks.{l}.attn.hook_attn_scores")
    }
    /// Attention pattern after softmax `[batch, head, query_pos, key_pos]`.
    pub fn pattern(l: usize) -> String {
        format!("blocks.{l}.attn.hook_pattern")
    }
    /// Weighted values per head `[batch, pos, head, d_head]`.
    pub fn z(l: usize) -> String {
        format!("blocks.{l}.attn.hook_z")
    }
    /// Per-head output written to the residual, without the output bias
    /// `[batch, pos, head, d_model]` (opt-in). Under a post-attention RMSNorm (Gemma 2) it is
    /// each head's share of the normalised output, `result_h · w / rms(Σ result)`, the norm's
    /// factor taken from the whole layer, so the heads still sum to `hook_attn_out`.
    pub fn result(l: usize) -> String {
        format!("blocks.{l}.attn.hook_result")
    }
    /// Attention output including the output bias `[batch, pos, d_model]`.
    pub fn attn_out(l: usize) -> String {
        format!("blocks.{l}.hook_attn_out")
    }
    /// MLP input, before its norm `[batch, pos, d_model]`.
    pub fn mlp_in(l: usize) -> String {
        format!("blocks.{l}.hook_mlp_in")
    }
    /// MLP pre-activation (the gate projection for gated MLPs) `[batch, pos, d_mlp]`.
    pub fn mlp_pre(l: usize) -> String {
        format!("blocks.{l}.mlp.hook_pre")
    }
    /// MLP post-activation `[batch, pos, d_mlp]`.
    pub fn mlp_post(l: usize) -> String {
        format!("blocks.{l}.mlp.hook_post")
    }
    /// MLP output `[batch, pos, d_model]`.
    pub fn mlp_out(l: usize) -> String {
        format!("blocks.{l}.hook_mlp_out")
    }

    /// A hook point of every block: its name, and whether only sequential blocks have it
    /// (GPT-NeoX-style parallel blocks have no `resid_mid`).
    struct BlockPoint {
        name: fn(usize) -> String,
        sequential_only: bool,
    }

    impl BlockPoint {
        /// A point every block has.
        const fn every(name: fn(usize) -> String) -> Self {
            Self {
                name,
                sequential_only: false,
            }
        }

        /// A point only sequential (attention, then MLP) blocks have.
        const fn sequential(name: fn(usize) -> String) -> Self {
            Self {
                name,
                sequential_only: true,
            }
        }
    }

    /// The points of one block in the order the forward reaches them. A new per-block point
    /// goes here as well as into the forward; the `hooks` tests check that the two agree.
    const BLOCK: [BlockPoint; 20] = [
        BlockPoint::every(resid_pre),
        BlockPoint::every(q_input),
        BlockPoint::every(k_input),
        BlockPoint::every(v_input),
        BlockPoint::every(q),
        BlockPoint::every(k),
        BlockPoint::every(k_rep),
        BlockPoint::every(v),
        BlockPoint::every(v_rep),
        BlockPoint::every(attn_scores),
        BlockPoint::every(pattern),
        BlockPoint::every(z),
        BlockPoint::every(result),
        BlockPoint::every(attn_out),
        BlockPoint::sequential(resid_mid),
        BlockPoint::every(mlp_in),
        BlockPoint::every(mlp_pre),
        BlockPoint::every(mlp_post),
        BlockPoint::every(mlp_out),
        BlockPoint::every(resid_post),
    ];

    /// The hook points of block `l` of a model with config `cfg`, in forward order, opt-in
    /// decompositions included.
    pub fn per_layer(cfg: &TransformerConfig, l: usize) -> Vec<String> {
        BLOCK
            .iter()
            .filter(|p| !(p.sequential_only && cfg.parallel_attn_mlp))
            .map(|p| (p.name)(l))
            .collect()
    }

    /// Every hook point the forward of a model with config `cfg` offers, in forward order:
    /// the embeddings, each block's points ([`per_layer`]), and the final norm. Opt-in
    /// decompositions (split q/k/v inputs, per-head results) are included.
    pub fn all(cfg: &TransformerConfig) -> Vec<String> {
        let mut points = vec![EMBED.to_string()];
        if cfg.positional == Positional::Learned {
            points.push(POS_EMBED.to_string());
        }
        points.extend((0..cfg.n_layers).flat_map(|l| per_layer(cfg, l)));
        points.push(LN_FINAL.to_string());
        points
    }
}

/// An activation at a hook point: rank 3 (`[batch, pos, d]`) or rank 4 (per head).
#[derive(Debug, Clone)]
pub enum Activation {
    /// `[batch, pos, d]` activations.
    Rank3(Tensor<3>),
    /// `[batch, pos, head, d]` or `[batch, head, query, key]` activations.
    Rank4(Tensor<4>),
}

impl Activation {
    /// The shape of the activation.
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Self::Rank3(t) => t.dims().to_vec(),
            Self::Rank4(t) => t.dims().to_vec(),
        }
    }

    /// The rank-3 tensor, if this is one.
    pub fn rank3(&self) -> Option<Tensor<3>> {
        match self {
            Self::Rank3(t) => Some(t.clone()),
            Self::Rank4(_) => None,
        }
    }

    /// The rank-4 tensor, if this is one.
    pub fn rank4(&self) -> Option<Tensor<4>> {
        match self {
            Self::Rank4(t) => Some(t.clone()),
            Self::Rank3(_) => None,
        }
    }
}

impl From<Tensor<3>> for Activation {
    fn from(t: Tensor<3>) -> Self {
        Self::Rank3(t)
    }
}

impl From<Tensor<4>> for Activation {
    fn from(t: Tensor<4>) -> Self {
        Self::Rank4(t)
    }
}

/// A user function run at a hook point; it gets the activation and returns its replacement.
pub type HookFn = Box<dyn FnMut(Activation) -> Activation + Send>;

enum HookOp {
    Record,
    RecordDetached,
    Replace(Activation),
    Add(Activation),
    Probe,
    Map(HookFn),
}

/// The hooks of one forward pass: what to do at which point, and what was recorded.
#[derive(Default)]
pub struct Hooks {
    ops: HashMap<String, Vec<HookOp>>,
    recorded: HashMap<String, Activation>,
    probes: HashMap<String, Activation>,
    /// Record at every point the forward reaches ([`Hooks::record_all`]).
    record_all: bool,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut points: Vec<&String> = self.ops.keys().collect();
        points.sort();
        f.debug_struct("Hooks")
            .field("points", &points)
            .field("record_all", &self.record_all)
            .finish()
    }
}

impl Hooks {
    /// No hooks: the plain forward.
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&mut self, point: impl Into<String>, op: HookOp) -> &mut Self {
        self.ops.entry(point.into()).or_default().push(op);
        self
    }

    /// Records the activation at `point` (read back with [`Hooks::recorded`]).
    pub fn record(&mut self, point: impl Into<String>) -> &mut Self {
        self.push(point, HookOp::Record)
    }

    /// Records the activation at `point` detached from the autodiff graph: its value only, which
    /// keeps none of the forward's saved state alive after a backward (what a gradient pass
    /// that needs an activation's value, not its graph, should record).
    pub fn record_detached(&mut self, point: impl Into<String>) -> &mut Self {
        self.push(point, HookOp::RecordDetached)
    }

    /// Records the activation at every hook point the forward reaches, as TransformerLens's
    /// `run_with_cache` does ([`point::all`] lists them). It asks for the opt-in decompositions
    /// too (per-head results, split q/k/v inputs), so it costs more than a plain forward. Each
    /// activation is recorded after the operations registered at its point.
    pub fn record_all(&mut self) -> &mut Self {
        self.record_all = true;
        self
    }

    /// Replaces the activation at `point` with `value` (same shape).
    pub fn replace(&mut self, point: impl Into<String>, value: impl Into<Activation>) -> &mut Self {
        self.push(point, HookOp::Replace(value.into()))
    }

    /// Adds `value` (same shape) to the activation at `point`.
    pub fn add(&mut self, point: impl Into<String>, value: impl Into<Activation>) -> &mut Self {
        self.push(point, HookOp::Add(value.into()))
    }

    /// Adds a zero tensor that requires grad at `point`; its gradient is the gradient of the
    /// loss with respect to the activation there ([`Hooks::probe_grad`]).
    pub fn probe(&mut self, point: impl Into<String>) -> &mut Self {
        self.push(point, HookOp::Probe)
    }

    /// Runs `f` on the activation at `point` and uses what it returns.
    pub fn map(
        &mut self,
        point: impl Into<String>,
        f: impl FnMut(Activation) -> Activation + Send + 'static,
    ) -> &mut Self {
        self.push(point, HookOp::Map(Box::new(f)))
    }

    /// Whether any operation is registered at `point`.
    pub fn wants(&self, point: &str) -> bool {
        self.record_all || (!self.ops.is_empty() && self.ops.contains_key(point))
    }

    /// Whether no hook is registered at all (and nothing is recorded).
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && !self.record_all
    }

    /// The hook points that have operations registered, sorted.
    pub fn points(&self) -> Vec<&str> {
        let mut points: Vec<&str> = self.ops.keys().map(String::as_str).collect();
        points.sort_unstable();
        points
    }

    /// The activation recorded at `point` during the last forward.
    pub fn recorded(&self, point: &str) -> Option<&Activation> {
        self.recorded.get(point)
    }

    /// Takes the recorded activations out, leaving the registered operations in place.
    pub fn take_recorded(&mut self) -> HashMap<String, Activation> {
        std::mem::take(&mut self.recorded)
    }

    /// ∂loss/∂activation at a probed point, after `loss.backward()`.
    pub fn probe_grad(&self, point: &str, grads: &Gradients) -> Option<Activation> {
        match self.probes.get(point)? {
            Activation::Rank3(p) => p.grad(grads).map(Activation::Rank3),
            Activation::Rank4(p) => p.grad(grads).map(Activation::Rank4),
        }
    }

    /// Runs the operations registered at `point` on a rank-3 activation.
    pub(crate) fn apply3(&mut self, point: impl AsRef<str>, x: Tensor<3>) -> Result<Tensor<3>> {
        if self.is_empty() {
            return Ok(x);
        }
        let point = point.as_ref();
        match self.apply(point, Activation::Rank3(x))? {
            Activation::Rank3(t) => Ok(t),
            Activation::Rank4(_) => Err(rank_error(point, 3)),
        }
    }

    /// Runs the operations registered at `point` on a rank-4 activation.
    pub(crate) fn apply4(&mut self, point: impl AsRef<str>, x: Tensor<4>) -> Result<Tensor<4>> {
        if self.is_empty() {
            return Ok(x);
        }
        let point = point.as_ref();
        match self.apply(point, Activation::Rank4(x))? {
            Activation::Rank4(t) => Ok(t),
            Activation::Rank3(_) => Err(rank_error(point, 4)),
        }
    }

    fn apply(&mut self, point: &str, x: Activation) -> Result<Activation> {
        let x = self.run_ops(point, x)?;
        if self.record_all {
            self.recorded.insert(point.to_string(), x.clone());
        }
        Ok(x)
    }

    /// The operations registered at `point`, in order.
    fn run_ops(&mut self, point: &str, mut x: Activation) -> Result<Activation> {
        let Some(ops) = self.ops.get_mut(point) else {
            return Ok(x);
        };
        for op in ops.iter_mut() {
            x = match op {
                HookOp::Record => {
                    self.recorded.insert(point.to_string(), x.clone());
                    x
                }
                HookOp::RecordDetached => {
                    let value = match &x {
                        Activation::Rank3(t) => Activation::Rank3(t.clone().detach()),
                        Activation::Rank4(t) => Activation::Rank4(t.clone().detach()),
                    };
                    self.recorded.insert(point.to_string(), value);
                    x
                }
                HookOp::Replace(value) => {
                    check_same_shape(point, &x, value)?;
                    value.clone()
                }
                HookOp::Add(value) => {
                    check_same_shape(point, &x, value)?;
                    add(x, value.clone())
                }
                HookOp::Probe => {
                    let probe = zero_probe(&x);
                    self.probes.insert(point.to_string(), probe.clone());
                    add(x, probe)
                }
                HookOp::Map(f) => {
                    let dims = x.dims();
                    let y = f(x);
                    if y.dims() != dims {
                        return Err(ModelError::Hook {
                            point: point.to_string(),
                            message: format!(
                                "hook function changed the shape from {dims:?} to {:?}",
                                y.dims()
                            ),
                        });
                    }
                    y
                }
            };
        }
        Ok(x)
    }
}

fn rank_error(point: &str, rank: usize) -> ModelError {
    ModelError::Hook {
        point: point.to_string(),
        message: format!("expected a rank-{rank} tensor"),
    }
}

fn check_same_shape(point: &str, x: &Activation, value: &Activation) -> Result<()> {
    if x.dims() != value.dims() {
        return Err(ModelError::Hook {
            point: point.to_string(),
            message: format!(
                "value has shape {:?}, activation has {:?}",
                value.dims(),
                x.dims()
            ),
        });
    }
    Ok(())
}

fn add(x: Activation, y: Activation) -> Activation {
    match (x, y) {
        (Activation::Rank3(a), Activation::Rank3(b)) => Activation::Rank3(a + b),
        (Activation::Rank4(a), Activation::Rank4(b)) => Activation::Rank4(a + b),
        // Shapes were checked equal, so ranks agree.
        (x, _) => x,
    }
}

/// A zero tensor on the autodiff version of the activation's device, requiring grad.
fn zero_probe(x: &Activation) -> Activation {
    match x {
        Activation::Rank3(t) => {
            let device = t.device().autodiff();
            Activation::Rank3(Tensor::zeros(t.dims(), &device).require_grad())
        }
        Activation::Rank4(t) => {
            let device = t.device().autodiff();
            Activation::Rank4(Tensor::zeros(t.dims(), &device).require_grad())
        }
    }
}
