//! The node map: where every row and column of a circuit graph lives among the model's hook
//! points.
//!
//! [`NodeMap`] is built once from a [`Graph`] and the model's config, using only
//! `fidelis-graph`'s layout API (`node_index`, `forward_range_of_layer`, `mlp_row`,
//! `reader_columns`, `logits_column`, `visible_forward`). It is the one place outside the graph
//! crate that knows how graph indices meet hook points; recording, probing, stacking, ablated
//! runs, exact patching and EAP-IG on activations all read their ranges from it.
//!
//! Writers (forward nodes, graph rows) and their hook points, in row order:
//! `input` = `blocks.0.hook_resid_pre` (embeddings plus positions), then per layer the heads
//! `a{l}.h{h}` = `blocks.{l}.attn.hook_result[:, :, h]` and the MLP `m{l}` =
//! `blocks.{l}.hook_mlp_out`.
//!
//! Readers (backward nodes, graph columns), in column order: per layer the q inputs of all
//! heads (`blocks.{l}.hook_q_input`), the k inputs, the v inputs, the MLP input
//! (`blocks.{l}.hook_mlp_in`); last the logits, whose input is the final residual
//! (`blocks.{L-1}.hook_resid_post`, before `ln_final`).
//!
//! The constructor checks that the groups tile the rows and columns exactly, in order, so a
//! graph layout the map does not know is an error rather than a silently wrong run.

use std::ops::Range;

use burn::prelude::*;
use burn::tensor::{DType, Gradients};
use fidelis_graph::{Graph, GraphConfig, Node, Qkv};
use fidelis_models::precision::to_f32;
use fidelis_models::{Activation, Hooks, ModelError, Transformer, TransformerConfig, point};

use crate::{CircuitError, Result};

/// A hook point whose output fills a contiguous range of graph rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterGroup {
    /// The hook point (`blocks.0.hook_resid_pre`, `blocks.{l}.attn.hook_result`,
    /// `blocks.{l}.hook_mlp_out`).
    pub point: String,
    /// The graph rows it writes, in order.
    pub rows: Range<usize>,
    /// Whether the activation is per head (`[batch, pos, head, d]`) rather than `[batch, pos, d]`.
    pub per_head: bool,
    /// The block that writes it: a pass that changes only this output can start there from the
    /// clean residual stream. `None` for the embeddings (the pass starts at the tokens).
    pub layer: Option<usize>,
}

/// What a reader group reads for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReaderKind {
    /// The q, k or v inputs of a layer's heads.
    Attention(Qkv),
    /// An MLP input.
    Mlp,
    /// The input of the unembedding.
    Logits,
}

/// A hook point whose input gradient fills a contiguous range of graph columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderGroup {
    /// The hook point (`blocks.{l}.hook_{q,k,v}_input`, `blocks.{l}.hook_mlp_in`,
    /// `blocks.{L-1}.hook_resid_post`).
    pub point: String,
    /// The graph columns it feeds, in order.
    pub cols: Range<usize>,
    /// The writers it sees are the rows `0..visible`.
    pub visible: usize,
    /// Whether the activation is per head (`[batch, pos, head, d]`).
    pub per_head: bool,
    /// The layer it belongs to (`n_layers` for the logits).
    pub layer: usize,
    /// What it reads for.
    pub kind: ReaderKind,
}

/// Where a graph's rows and columns live among a model's hook points (see the module docs).
#[derive(Debug, Clone)]
pub struct NodeMap {
    writers: Vec<WriterGroup>,
    readers: Vec<ReaderGroup>,
    n_forward: usize,
    n_backward: usize,
    n_layers: usize,
}

impl NodeMap {
    /// The map of `graph` on a model of config `cfg`. Errors when the graph was built for
    /// another layer or head count or attention/MLP arrangement, or when its layout is not one
    /// the map can place.
    pub fn new(cfg: &TransformerConfig, graph: &Graph) -> Result<Self> {
        check_fits(cfg, graph.cfg())?;
        let n_layers = cfg.n_layers;
        let layout = |what: &str| CircuitError::Data(format!("graph layout: {what}"));
        let input_row = graph
            .node_index(Node::Input)
            .ok_or_else(|| layout("no input node"))?;
        let mut writers = vec![WriterGroup {
            point: point::resid_pre(0),
            rows: input_row..input_row + 1,
            per_head: false,
            layer: None,
        }];
        let mut readers = Vec::with_capacity(4 * n_layers + 1);
        for l in 0..n_layers {
            writers.push(WriterGroup {
                point: point::result(l),
                rows: graph.forward_range_of_layer(l),
                per_head: true,
                layer: Some(l),
            });
            let mlp = graph.mlp_row(l);
            writers.push(WriterGroup {
                point: point::mlp_out(l),
                rows: mlp..mlp + 1,
                per_head: false,
                layer: Some(l),
            });
            let cols = graph.reader_columns(l);
            for qkv in Qkv::ALL {
                let range = cols.qkv(qkv);
                let point = match qkv {
                    Qkv::Q => point::q_input(l),
                    Qkv::K => point::k_input(l),
                    Qkv::V => point::v_input(l),
                };
                readers.push(ReaderGroup {
                    point,
                    visible: graph.visible_forward(range.start),
                    cols: range,
                    per_head: true,
                    layer: l,
                    kind: ReaderKind::Attention(qkv),
                });
            }
            readers.push(ReaderGroup {
                point: point::mlp_in(l),
                visible: graph.visible_forward(cols.mlp),
                cols: cols.mlp..cols.mlp + 1,
                per_head: false,
                layer: l,
                kind: ReaderKind::Mlp,
            });
        }
        let logits = graph.logits_column();
        readers.push(ReaderGroup {
            point: point::resid_post(n_layers.saturating_sub(1)),
            visible: graph.visible_forward(logits),
            cols: logits..logits + 1,
            per_head: false,
            layer: n_layers,
            kind: ReaderKind::Logits,
        });
        let map = Self {
            writers,
            readers,
            n_forward: graph.n_forward(),
            n_backward: graph.n_backward(),
            n_layers,
        };
        map.check_tiling()?;
        Ok(map)
    }

    /// The map of `graph` on `model`.
    pub fn for_model(model: &Transformer, graph: &Graph) -> Result<Self> {
        Self::new(model.config(), graph)
    }

    /// The map of the full graph of a model of config `cfg`.
    pub fn for_config(cfg: &TransformerConfig) -> Result<Self> {
        let graph = Graph::new(GraphConfig::new(
            cfg.n_layers,
            cfg.n_heads,
            cfg.parallel_attn_mlp,
        ));
        Self::new(cfg, &graph)
    }

    /// Errors unless the writers tile `0..n_forward` and the readers `0..n_backward`, in order,
    /// with per-head groups as wide as the activations they stand for.
    fn check_tiling(&self) -> Result<()> {
        let bad = |what: String| CircuitError::Data(format!("graph layout: {what}"));
        let mut next = 0;
        for w in &self.writers {
            if w.rows.start != next || w.rows.is_empty() {
                return Err(bad(format!("{} does not continue at row {next}", w.point)));
            }
            next = w.rows.end;
        }
        if next != self.n_forward {
            return Err(bad(format!(
                "writers cover {next} of {} rows",
                self.n_forward
            )));
        }
        next = 0;
        for r in &self.readers {
            if r.cols.start != next || r.cols.is_empty() {
                return Err(bad(format!(
                    "{} does not continue at column {next}",
                    r.point
                )));
            }
            if r.visible > self.n_forward {
                return Err(bad(format!("{} sees more rows than exist", r.point)));
            }
            next = r.cols.end;
        }
        if next != self.n_backward {
            return Err(bad(format!(
                "readers cover {next} of {} columns",
                self.n_backward
            )));
        }
        Ok(())
    }

    /// Number of graph rows (writers).
    pub fn n_forward(&self) -> usize {
        self.n_forward
    }

    /// Number of graph columns (reader inputs).
    pub fn n_backward(&self) -> usize {
        self.n_backward
    }

    /// The writer groups in row order.
    pub fn writers(&self) -> &[WriterGroup] {
        &self.writers
    }

    /// The reader groups in column order.
    pub fn readers(&self) -> &[ReaderGroup] {
        &self.readers
    }

    /// The first column read by layer `layer` or later (the logits count as layer
    /// `n_layers`): the number of columns a pass starting at `layer` leaves out.
    pub fn first_column(&self, layer: usize) -> usize {
        self.readers
            .iter()
            .find(|r| r.layer >= layer)
            .map_or(self.n_backward, |r| r.cols.start)
    }

    /// The columns of layer `layer`'s q, k and v inputs when they are contiguous and see the
    /// same writers, so that one product can correct all three; `None` otherwise.
    pub fn attention_columns(&self, layer: usize) -> Option<Range<usize>> {
        let group = |qkv: Qkv| {
            self.readers
                .iter()
                .find(|r| r.layer == layer && r.kind == ReaderKind::Attention(qkv))
        };
        let (q, k, v) = (group(Qkv::Q)?, group(Qkv::K)?, group(Qkv::V)?);
        let contiguous = q.cols.end == k.cols.start && k.cols.end == v.cols.start;
        let same_view = q.visible == k.visible && k.visible == v.visible;
        (contiguous && same_view).then_some(q.cols.start..v.cols.end)
    }

    /// Registers recording of every writer's output.
    pub fn record_outputs(&self, hooks: &mut Hooks) {
        for w in &self.writers {
            hooks.record(w.point.clone());
        }
    }

    /// Stacks the recorded writer outputs in graph row order.
    ///
    /// # Shapes
    /// - returns `[batch, pos, n_forward, d_model]`, detached from any autodiff graph
    pub fn stack_outputs(&self, hooks: &Hooks) -> Result<Tensor<4>> {
        let parts = self
            .writers
            .iter()
            .map(|w| {
                let missing = || ModelError::Hook {
                    point: w.point.clone(),
                    message: "activation was not recorded".into(),
                };
                let a = hooks.recorded(&w.point).ok_or_else(missing)?;
                let t = if w.per_head {
                    a.rank4()
                } else {
                    a.rank3().map(|t| t.unsqueeze_dim::<4>(2))
                };
                Ok(t.ok_or_else(missing)?)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(parts, 2).detach())
    }

    /// Registers what the input gradients of every reader of layer `first` or later (and the
    /// logits) are computed from: a probe at each MLP input and at the logits' input, and per
    /// layer probes at the queries, the per-query-head keys and values (`hook_q`, `hook_k_rep`,
    /// `hook_v_rep`) and a record of the residual stream entering the block, from which
    /// [`NodeMap::for_each_input_grad`] derives the per-head q/k/v input gradients without the
    /// split forward's `[batch, pos, head, d_model]` copies.
    pub fn probe_inputs_from(&self, hooks: &mut Hooks, first: usize) {
        for r in self.readers.iter().filter(|r| r.layer >= first) {
            match r.kind {
                ReaderKind::Attention(which) => {
                    hooks.probe(qkv_probe(which, r.layer));
                    if which == Qkv::Q {
                        hooks.record_detached(point::resid_pre(r.layer));
                    }
                }
                ReaderKind::Mlp | ReaderKind::Logits => {
                    hooks.probe(r.point.clone());
                }
            }
        }
    }

    /// Calls `f` with every reader group of layer `first` or later, in column order, and
    /// ∂loss/∂its input `[batch, pos, columns, d_model]` (`None` when the loss does not depend
    /// on it), after a backward of a pass set up by [`NodeMap::probe_inputs_from`]. A layer's
    /// q/k/v input gradients come from [`Transformer::qkv_input_grads`] when its first group
    /// is reached and are dropped once its last is handed out, so at most one layer's reader
    /// gradients are alive at a time.
    pub fn for_each_input_grad(
        &self,
        model: &Transformer,
        hooks: &Hooks,
        grads: &Gradients,
        first: usize,
        mut f: impl FnMut(&ReaderGroup, Option<Tensor<4>>) -> Result<()>,
    ) -> Result<()> {
        let mut layer: Option<(usize, [Option<Tensor<4>>; 3])> = None;
        for r in self.readers.iter().filter(|r| r.layer >= first) {
            let g = match r.kind {
                ReaderKind::Attention(which) => {
                    if layer.as_ref().map(|(l, _)| *l) != Some(r.layer) {
                        layer = Some((r.layer, qkv_grads(model, hooks, grads, r.layer)?));
                    }
                    let slot = match which {
                        Qkv::Q => 0,
                        Qkv::K => 1,
                        Qkv::V => 2,
                    };
                    layer.as_mut().and_then(|(_, g)| g[slot].take())
                }
                ReaderKind::Mlp | ReaderKind::Logits => match hooks.probe_grad(&r.point, grads) {
                    Some(Activation::Rank4(g)) => Some(g),
                    Some(Activation::Rank3(g)) => Some(g.unsqueeze_dim::<4>(2)),
                    None => None,
                },
            };
            f(r, g)?;
        }
        Ok(())
    }

    /// ∂loss/∂input of every reader of layer `first` or later, stacked in graph column order:
    /// the last `n_backward − first_column(first)` columns. A reader the loss does not depend
    /// on gets zeros.
    ///
    /// # Shapes
    /// - `shape`: `[batch, pos, d_model]` of the run
    /// - returns `[batch, pos, n_backward − first_column(first), d_model]`
    pub fn stack_input_grads_from(
        &self,
        model: &Transformer,
        hooks: &Hooks,
        grads: &Gradients,
        first: usize,
        shape: [usize; 3],
    ) -> Result<Tensor<4>> {
        let [b, p, d] = shape;
        let mut parts = Vec::new();
        self.for_each_input_grad(model, hooks, grads, first, |r, g| {
            parts.push(match g {
                Some(g) => to_f32(g),
                None => Tensor::zeros([b, p, r.cols.len(), d], (model.device(), DType::F32)),
            });
            Ok(())
        })?;
        Ok(Tensor::cat(parts, 2))
    }

    /// The number of layers of the model the map was built for.
    pub fn n_layers(&self) -> usize {
        self.n_layers
    }
}

/// The probe a reader's q, k or v input gradient is derived from.
fn qkv_probe(which: Qkv, l: usize) -> String {
    match which {
        Qkv::Q => point::q(l),
        Qkv::K => point::k_rep(l),
        Qkv::V => point::v_rep(l),
    }
}

/// Layer `l`'s q, k and v input gradients from its probes (see
/// [`NodeMap::probe_inputs_from`]); all `None` when the loss depends on none of them.
fn qkv_grads(
    model: &Transformer,
    hooks: &Hooks,
    grads: &Gradients,
    l: usize,
) -> Result<[Option<Tensor<4>>; 3]> {
    let probe = |which| {
        hooks
            .probe_grad(&qkv_probe(which, l), grads)
            .and_then(|a| a.rank4())
    };
    let (dq, dk, dv) = (probe(Qkv::Q), probe(Qkv::K), probe(Qkv::V));
    if dq.is_none() && dk.is_none() && dv.is_none() {
        return Ok([None, None, None]);
    }
    let pt = point::resid_pre(l);
    let resid = hooks
        .recorded(&pt)
        .and_then(|a| a.rank3())
        .ok_or_else(|| ModelError::Hook {
            point: pt,
            message: "activation was not recorded".into(),
        })?;
    let cfg = model.config();
    let [b, p, _] = resid.dims();
    let zeros = || Tensor::zeros([b, p, cfg.n_heads, cfg.d_head], model.device());
    let [gq, gk, gv] = model.qkv_input_grads(
        l,
        resid,
        dq.unwrap_or_else(zeros),
        dk.unwrap_or_else(zeros),
        dv.unwrap_or_else(zeros),
    )?;
    Ok([Some(gq), Some(gk), Some(gv)])
}

/// Errors unless a graph of config `g` fits a model of config `cfg`: the same layer and head
/// counts and the same attention/MLP arrangement.
pub fn check_fits(cfg: &TransformerConfig, g: &GraphConfig) -> Result<()> {
    if g.n_layers != cfg.n_layers || g.n_heads != cfg.n_heads {
        return Err(CircuitError::Data(format!(
            "the graph has {} layers × {} heads but the model has {} × {}",
            g.n_layers, g.n_heads, cfg.n_layers, cfg.n_heads
        )));
    }
    if g.parallel_attn_mlp != cfg.parallel_attn_mlp {
        return Err(CircuitError::Data(
            "the graph and the model disagree on parallel attention/MLP".into(),
        ));
    }
    Ok(())
}
