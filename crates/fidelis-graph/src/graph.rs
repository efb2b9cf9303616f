//! The [`Graph`] type: static edge structure, index layout, scores and membership masks.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::{Edge, GraphError, Node, Qkv, Reader, parse_node, parse_reader};

/// Shape of the model the graph describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphConfig {
    /// Number of transformer layers.
    pub n_layers: usize,
    /// Number of attention heads per layer.
    pub n_heads: usize,
    /// Whether attention and MLP read the same residual stream (GPT-NeoX style), so that an MLP
    /// does not read the heads of its own layer.
    pub parallel_attn_mlp: bool,
    /// Residual width. Needed for neuron-level data; the EAP-IG reference's `from_json` also
    /// requires it in every file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d_model: Option<usize>,
}

/// The largest graph a config may describe, so that a small file cannot size an allocation
/// beyond what a workstation holds: Llama 3 70B (80 layers × 64 heads) has 8.0e7 score-matrix
/// entries, GPT-2 small 7.0e4; Llama 3.1 405B's 7.9e8 (4.7 GB dense) is refused.
pub mod limits {
    /// Layers (Llama 3.1 405B: 126).
    pub const MAX_LAYERS: usize = 4096;
    /// Heads per layer (Llama 3.1 405B: 128).
    pub const MAX_HEADS: usize = 4096;
    /// Residual width (Llama 3.1 405B: 16,384).
    pub const MAX_D_MODEL: usize = 1 << 20;
    /// Entries of the `[n_forward, n_backward]` score matrix, and of the neuron-level
    /// `[n_forward, d_model]` data (each entry costs 6 bytes: score, validity, membership;
    /// 1.6 GB at this limit).
    pub const MAX_CELLS: usize = 1 << 28;
}

impl GraphConfig {
    /// Errors unless the sizes are positive where they must be and the graph they describe
    /// stays within [`limits`]: `n_layers` and `n_heads` between 1 and their limits, `d_model`
    /// (when given) between 1 and [`limits::MAX_D_MODEL`], and the score matrix and neuron
    /// data at most [`limits::MAX_CELLS`] entries. The error names the field and the limit.
    pub fn check(&self) -> Result<(), GraphError> {
        let bad = |m: String| Err(GraphError::InvalidConfig(m));
        let counts = [
            ("n_layers", self.n_layers, limits::MAX_LAYERS),
            ("n_heads", self.n_heads, limits::MAX_HEADS),
            ("d_model", self.d_model.unwrap_or(1), limits::MAX_D_MODEL),
        ];
        for (name, value, max) in counts {
            if value == 0 || value > max {
                return bad(format!("{name} = {value} (it must be between 1 and {max})"));
            }
        }
        // Both at most 4096 × 12289 + 1, so these products cannot overflow.
        let n_forward = 1 + self.n_layers * (self.n_heads + 1);
        let n_backward = self.n_layers * (3 * self.n_heads + 1) + 1;
        let cells = [
            ("the score matrix", n_forward.checked_mul(n_backward)),
            (
                "the neuron data",
                n_forward.checked_mul(self.d_model.unwrap_or(0)),
            ),
        ];
        for (what, n) in cells {
            if n.is_none_or(|n| n > limits::MAX_CELLS) {
                return bad(format!(
                    "{} layers of {} heads (d_model {:?}): {what} would have more than {} \
                     entries (limits::MAX_CELLS)",
                    self.n_layers,
                    self.n_heads,
                    self.d_model,
                    limits::MAX_CELLS
                ));
            }
        }
        Ok(())
    }

    /// A config with no `d_model`.
    pub fn new(n_layers: usize, n_heads: usize, parallel_attn_mlp: bool) -> Self {
        Self {
            n_layers,
            n_heads,
            parallel_attn_mlp,
            d_model: None,
        }
    }
}

/// The score-matrix columns read by one layer (see [`Graph::reader_columns`]).
///
/// Columns of one input kind are contiguous and ordered by head, so a per-layer gradient
/// tensor `[batch, pos, n_heads, d_model]` for, say, the query inputs fills columns `q` in
/// head order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerColumns {
    /// Query inputs `a{l}.h0<q> .. a{l}.h{H-1}<q>`.
    pub q: Range<usize>,
    /// Key inputs, in head order.
    pub k: Range<usize>,
    /// Value inputs, in head order.
    pub v: Range<usize>,
    /// The MLP input `m{l}`.
    pub mlp: usize,
}

impl LayerColumns {
    /// The columns of one input kind.
    pub fn qkv(&self, qkv: Qkv) -> Range<usize> {
        match qkv {
            Qkv::Q => self.q.clone(),
            Qkv::K => self.k.clone(),
            Qkv::V => self.v.clone(),
        }
    }
}

/// A circuit graph: the static edge structure for a [`GraphConfig`] plus dense scores and
/// edge/node membership masks, and optional node- and neuron-level scores.
///
/// # Layout
///
/// * Rows (forward nodes, writers): `input`, then per layer `a{l}.h0 .. a{l}.h{H-1}`, `m{l}`;
///   `n_forward = 1 + L (H + 1)`.
/// * Columns (backward nodes, readers): per layer the `<q>` inputs of all heads, then the `<k>`
///   inputs, then the `<v>` inputs, then `m{l}`; `logits` last; `n_backward = L (3H + 1) + 1`.
///   Column of `a{l}.h{h}<x>` is `l (3H + 1) + x H + h` with `x` = 0, 1, 2 for q, k, v, as in
///   the EAP-IG reference (`Graph._backward_index`).
/// * Node indices: the forward index for writers, `n_forward` for `logits`.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    pub(crate) cfg: GraphConfig,
    pub(crate) n_forward: usize,
    pub(crate) n_backward: usize,
    /// `[n_forward, n_backward]`: whether the entry is an edge.
    pub(crate) valid: Vec<bool>,
    /// `[n_forward, n_backward]`: edge scores, 0 off the edges.
    pub(crate) scores: Vec<f32>,
    /// `[n_forward, n_backward]`: edge membership.
    pub(crate) in_graph: Vec<bool>,
    /// `[n_forward + 1]`: node membership by node index.
    pub(crate) nodes_in_graph: Vec<bool>,
    /// `[n_forward]`: node scores; NaN marks an unscored node.
    pub(crate) node_scores: Option<Vec<f32>>,
    /// `[n_forward, d_model]`: neuron scores; NaN marks an unscored neuron.
    pub(crate) neuron_scores: Option<Vec<f32>>,
    /// `[n_forward, d_model]`: neuron membership.
    pub(crate) neurons_in_graph: Option<Vec<bool>>,
}

impl Graph {
    /// Builds the full graph for `cfg`: all valid edges, zero scores, nothing in the circuit,
    /// no node or neuron scores.
    ///
    /// # Panics
    /// If `cfg` fails [`GraphConfig::check`] (zero layers or heads, or a graph over the
    /// [`limits`]); use [`Graph::try_new`] for a config read from a file.
    pub fn new(cfg: GraphConfig) -> Self {
        match Self::try_new(cfg) {
            Ok(g) => g,
            Err(e) => panic!("Graph::new: {e}"),
        }
    }

    /// Builds the full graph for `cfg` as [`Graph::new`] does, or the error of
    /// [`GraphConfig::check`] naming the size at fault before anything is allocated.
    pub fn try_new(cfg: GraphConfig) -> Result<Self, GraphError> {
        cfg.check()?;
        let n_forward = 1 + cfg.n_layers * (cfg.n_heads + 1);
        let n_backward = cfg.n_layers * (3 * cfg.n_heads + 1) + 1;
        let mut g = Graph {
            cfg,
            n_forward,
            n_backward,
            valid: vec![false; n_forward * n_backward],
            scores: vec![0.0; n_forward * n_backward],
            in_graph: vec![false; n_forward * n_backward],
            nodes_in_graph: vec![false; n_forward + 1],
            node_scores: None,
            neuron_scores: None,
            neurons_in_graph: None,
        };
        for b in 0..n_backward {
            for f in 0..g.visible_forward(b) {
                g.valid[f * n_backward + b] = true;
            }
        }
        Ok(g)
    }

    /// Number of forward rows visible to backward column `b`: forward nodes are numbered in
    /// write order, so the writers a reader sees are exactly the rows `0..visible_forward(b)`.
    /// Panics if `b` is out of range.
    pub fn visible_forward(&self, b: usize) -> usize {
        let h = self.cfg.n_heads;
        match self.reader(b).node {
            Node::Head { layer, .. } => 1 + layer * (h + 1),
            Node::Mlp(layer) if self.cfg.parallel_attn_mlp => 1 + layer * (h + 1),
            Node::Mlp(layer) => 1 + layer * (h + 1) + h,
            _ => self.n_forward,
        }
    }

    /// The config the graph was built from.
    pub fn cfg(&self) -> &GraphConfig {
        &self.cfg
    }

    /// Number of forward nodes (rows of the score matrix).
    pub fn n_forward(&self) -> usize {
        self.n_forward
    }

    /// Number of backward nodes (columns of the score matrix).
    pub fn n_backward(&self) -> usize {
        self.n_backward
    }

    /// Number of nodes: all forward nodes plus `logits`.
    pub fn n_nodes(&self) -> usize {
        self.n_forward + 1
    }

    /// Number of edges, counted from the validity mask.
    pub fn n_edges(&self) -> usize {
        self.valid.iter().filter(|v| **v).count()
    }

    /// Number of edges currently in the circuit.
    pub fn n_edges_in_graph(&self) -> usize {
        self.in_graph.iter().filter(|v| **v).count()
    }

    /// Columns per layer: `3 n_heads + 1`.
    fn columns_per_layer(&self) -> usize {
        3 * self.cfg.n_heads + 1
    }

    /// The forward node (writer) at row `f`. Panics if out of range.
    pub fn forward_node(&self, f: usize) -> Node {
        assert!(f < self.n_forward, "forward index {f} out of range");
        if f == 0 {
            return Node::Input;
        }
        let per = self.cfg.n_heads + 1;
        let (layer, pos) = ((f - 1) / per, (f - 1) % per);
        if pos == self.cfg.n_heads {
            Node::Mlp(layer)
        } else {
            Node::Head { layer, head: pos }
        }
    }

    /// The backward node (reader input) at column `b`. Panics if out of range.
    pub fn reader(&self, b: usize) -> Reader {
        assert!(b < self.n_backward, "backward index {b} out of range");
        if b == self.logits_column() {
            return Reader {
                node: Node::Logits,
                qkv: None,
            };
        }
        let h = self.cfg.n_heads;
        let per = self.columns_per_layer();
        let (layer, pos) = (b / per, b % per);
        if pos == 3 * h {
            Reader {
                node: Node::Mlp(layer),
                qkv: None,
            }
        } else {
            Reader {
                node: Node::Head {
                    layer,
                    head: pos % h,
                },
                qkv: Some(Qkv::ALL[pos / h]),
            }
        }
    }

    /// Node index (position in the node mask) of `node`: its forward index, or `n_forward` for
    /// `logits`. `None` if the node does not exist in this graph.
    pub fn node_index(&self, node: Node) -> Option<usize> {
        let (l_max, h_max) = (self.cfg.n_layers, self.cfg.n_heads);
        match node {
            Node::Input => Some(0),
            Node::Head { layer, head } if layer < l_max && head < h_max => {
                Some(1 + layer * (h_max + 1) + head)
            }
            Node::Mlp(layer) if layer < l_max => Some(1 + layer * (h_max + 1) + h_max),
            Node::Logits => Some(self.n_forward),
            _ => None,
        }
    }

    /// The node at node index `i` (inverse of [`Graph::node_index`]).
    pub fn node(&self, i: usize) -> Node {
        if i == self.n_forward {
            Node::Logits
        } else {
            self.forward_node(i)
        }
    }

    /// Backward index (column) of a reader input, if it exists in this graph.
    pub fn backward_index(&self, reader: Reader) -> Option<usize> {
        let (n_layers, h) = (self.cfg.n_layers, self.cfg.n_heads);
        match (reader.node, reader.qkv) {
            (Node::Head { layer, head }, Some(q)) if layer < n_layers && head < h => {
                Some(layer * self.columns_per_layer() + q.index() * h + head)
            }
            (Node::Mlp(layer), None) if layer < n_layers => Some(self.reader_columns(layer).mlp),
            (Node::Logits, None) => Some(self.logits_column()),
            _ => None,
        }
    }

    /// The contiguous column ranges of layer `layer`'s q, k and v head inputs (each in head
    /// order) and the column of its MLP. Panics if `layer >= n_layers`.
    pub fn reader_columns(&self, layer: usize) -> LayerColumns {
        assert!(layer < self.cfg.n_layers, "layer {layer} out of range");
        let h = self.cfg.n_heads;
        let start = layer * self.columns_per_layer();
        LayerColumns {
            q: start..start + h,
            k: start + h..start + 2 * h,
            v: start + 2 * h..start + 3 * h,
            mlp: start + 3 * h,
        }
    }

    /// The column of `logits` (the last one).
    pub fn logits_column(&self) -> usize {
        self.n_backward - 1
    }

    /// The rows of layer `layer`'s heads, contiguous and in head order, so a per-layer
    /// activation tensor `[batch, pos, n_heads, d_model]` maps onto them directly. Panics if
    /// `layer >= n_layers`.
    pub fn forward_range_of_layer(&self, layer: usize) -> Range<usize> {
        assert!(layer < self.cfg.n_layers, "layer {layer} out of range");
        let start = 1 + layer * (self.cfg.n_heads + 1);
        start..start + self.cfg.n_heads
    }

    /// The row of layer `layer`'s MLP. Panics if `layer >= n_layers`.
    pub fn mlp_row(&self, layer: usize) -> usize {
        self.forward_range_of_layer(layer).end
    }

    /// Node index of the node owning backward column `b`.
    pub(crate) fn reader_node_index(&self, b: usize) -> usize {
        self.node_index(self.reader(b).node)
            .expect("reader node exists")
    }

    /// Parses a node name (`input`, `a0.h3`, `m2`, `logits`) of this graph to its node index.
    pub fn node_index_by_name(&self, name: &str) -> Result<usize, GraphError> {
        parse_node(name)
            .and_then(|n| self.node_index(n))
            .ok_or_else(|| GraphError::UnknownNode(name.to_string()))
    }

    /// Looks up an edge by its EAP-IG name, returning `(forward index, backward index)`.
    pub fn edge_index(&self, name: &str) -> Result<(usize, usize), GraphError> {
        let unknown = || GraphError::UnknownEdge(name.to_string());
        let (parent, child) = name.split_once("->").ok_or_else(unknown)?;
        let f = match parse_node(parent).ok_or_else(unknown)? {
            Node::Logits => return Err(unknown()),
            n => self.node_index(n).ok_or_else(unknown)?,
        };
        let reader = parse_reader(child).ok_or_else(unknown)?;
        let b = self.backward_index(reader).ok_or_else(unknown)?;
        if self.is_edge(f, b) {
            Ok((f, b))
        } else {
            Err(unknown())
        }
    }

    /// EAP-IG name of the edge from row `f` to column `b`.
    pub fn edge_name(&self, f: usize, b: usize) -> String {
        format!("{}->{}", self.forward_node(f).name(), self.reader(b).name())
    }

    /// Whether `(f, b)` is an edge of the graph.
    pub fn is_edge(&self, f: usize, b: usize) -> bool {
        f < self.n_forward && b < self.n_backward && self.valid[f * self.n_backward + b]
    }

    /// Flat indices (`f * n_backward + b`) of all valid edges, in row-major order.
    pub fn edge_indices(&self) -> impl Iterator<Item = usize> + '_ {
        self.valid
            .iter()
            .enumerate()
            .filter(|(_, v)| **v)
            .map(|(i, _)| i)
    }

    /// The edge at flat index `i = f * n_backward + b` (which must be valid).
    pub(crate) fn edge_at(&self, i: usize) -> Edge {
        let (f, b) = (i / self.n_backward, i % self.n_backward);
        Edge {
            forward: f,
            backward: b,
            name: self.edge_name(f, b),
            score: self.scores[i],
            in_graph: self.in_graph[i],
        }
    }

    /// All edges, row-major (by forward index, then backward index), with names.
    pub fn edges(&self) -> impl Iterator<Item = Edge> + '_ {
        self.edge_indices().map(|i| self.edge_at(i))
    }

    /// Validity mask, row-major `[n_forward, n_backward]`.
    pub fn valid_mask(&self) -> &[bool] {
        &self.valid
    }

    /// Scores, row-major `[n_forward, n_backward]`; entries that are not edges are 0.
    pub fn scores(&self) -> &[f32] {
        &self.scores
    }

    /// Edge membership mask, row-major `[n_forward, n_backward]`.
    pub fn in_graph(&self) -> &[bool] {
        &self.in_graph
    }

    /// Node membership mask `[n_nodes]`, indexed by node index (see [`Graph::node_index`]).
    pub fn nodes_in_graph(&self) -> &[bool] {
        &self.nodes_in_graph
    }

    /// Score of edge `(f, b)`.
    pub fn score(&self, f: usize, b: usize) -> f32 {
        self.scores[f * self.n_backward + b]
    }

    /// Sets the score of one edge. Panics if `(f, b)` is not an edge.
    pub fn set_score(&mut self, f: usize, b: usize, score: f32) {
        assert!(self.is_edge(f, b), "({f}, {b}) is not an edge");
        self.scores[f * self.n_backward + b] = score;
    }

    /// Sets all scores from a row-major matrix of shape `[rows, cols]`, which must equal
    /// `[n_forward, n_backward]`. Entries that are not edges are stored as 0.
    pub fn set_scores(&mut self, data: &[f32], rows: usize, cols: usize) -> Result<(), GraphError> {
        check_shape(data.len(), [rows, cols], [self.n_forward, self.n_backward])?;
        for (i, (s, v)) in data.iter().zip(&self.valid).enumerate() {
            self.scores[i] = if *v { *s } else { 0.0 };
        }
        Ok(())
    }

    /// Puts edge `(f, b)` in or out of the circuit, without touching node masks (call
    /// [`Graph::update_nodes`] afterwards). Panics if `(f, b)` is not an edge.
    pub fn set_in_graph(&mut self, f: usize, b: usize, in_graph: bool) {
        assert!(self.is_edge(f, b), "({f}, {b}) is not an edge");
        self.in_graph[f * self.n_backward + b] = in_graph;
    }

    /// Removes every edge, node and neuron from the circuit (scores are kept).
    pub fn clear(&mut self) {
        self.in_graph.fill(false);
        self.nodes_in_graph.fill(false);
        if let Some(m) = &mut self.neurons_in_graph {
            m.fill(false);
        }
    }

    /// Recomputes node membership: a node is in the graph iff some in-graph edge touches it
    /// (a head counts as touched when an edge into any of its q/k/v inputs is in).
    pub fn update_nodes(&mut self) {
        self.nodes_in_graph.fill(false);
        for i in 0..self.in_graph.len() {
            if self.in_graph[i] {
                let (f, b) = (i / self.n_backward, i % self.n_backward);
                self.nodes_in_graph[f] = true;
                let n = self.reader_node_index(b);
                self.nodes_in_graph[n] = true;
            }
        }
    }
}

/// Checks a row-major buffer of `len` entries claimed to be `[rows, cols]` against the
/// expected shape.
pub(crate) fn check_shape(
    len: usize,
    [got_rows, got_cols]: [usize; 2],
    [rows, cols]: [usize; 2],
) -> Result<(), GraphError> {
    if (got_rows, got_cols) != (rows, cols) {
        return Err(GraphError::ShapeMismatch {
            rows,
            cols,
            got_rows,
            got_cols,
        });
    }
    if len != rows * cols {
        return Err(GraphError::LengthMismatch {
            expected: rows * cols,
            got: len,
        });
    }
    Ok(())
}
