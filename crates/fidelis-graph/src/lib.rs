//! # fidelis-graph
//!
//! Circuit graphs over the components of a transformer language model, in the form used by
//! edge attribution patching (EAP / EAP-IG).
//!
//! ## Model of the graph
//!
//! * **Nodes**: `input` (embeddings), `a{l}.h{h}` (one per attention head), `m{l}` (one per
//!   MLP) and `logits`.
//! * **Forward nodes** are the residual-stream *writers*, in write order: `input`, then for each
//!   layer the heads `a{l}.h0 .. a{l}.h{H-1}` followed by `m{l}`.
//! * **Backward nodes** are the residual-stream *readers*, in order: for each layer, every head's
//!   three inputs `a{l}.h{h}<q>`, `<k>`, `<v>`, then `m{l}`; finally `logits`.
//! * An **edge** `u -> v` exists iff `u` writes the residual stream before `v` reads it. An MLP
//!   reads the heads of its own layer unless attention and MLP run in parallel (GPT-NeoX style).
//!   Edge names follow the EAP-IG reference: `a0.h3->m2`, `input->a1.h0<q>`, `m3->logits`.
//!   GPT-2 small (12 layers, 12 heads) has 158 nodes and 32,491 edges; all counts are derived from
//!   the [`GraphConfig`], never hard-coded.
//!
//! ## Data layout
//!
//! Scores are a dense row-major `[n_forward, n_backward]` matrix of `f32`, with a validity mask
//! of the same shape (entries that are not edges are never selected) and an `in_graph` boolean
//! mask of the same shape. Node membership is a separate mask over all nodes (forward nodes in
//! forward order, then `logits`).
//!
//! ## Operations
//!
//! * Selection: [`Graph::apply_topn`], [`Graph::apply_threshold`], [`Graph::apply_greedy`]
//!   (growth from the logits), each by absolute or signed score.
//! * [`Graph::prune`]: drops nodes without a path from `input` and to `logits`.
//! * Files: JSON in the EAP-IG reference format ([`Graph::to_json_string`],
//!   [`Graph::from_json_str`]) so graphs move between Fidelis and the Python tools; Graphviz DOT
//!   export ([`Graph::to_dot`]).
//!
//! ## Example
//!
//! ```
//! use fidelis_graph::{Graph, GraphConfig};
//!
//! let mut g = Graph::new(GraphConfig::new(12, 12, false)); // GPT-2 small
//! assert_eq!(g.n_edges(), 32_491);
//! let (f, b) = g.edge_index("a0.h3->m2").unwrap();
//! g.set_score(f, b, 1.5);
//! g.apply_topn(1, true).unwrap();
//! g.prune(); // a0.h3 has no path from `input`, so the edge is pruned
//! assert_eq!(g.n_edges_in_graph(), 0);
//! let json = g.to_json_string();
//! assert_eq!(Graph::from_json_str(&json).unwrap(), g);
//! ```
//!
//! ## Invariant
//!
//! This crate is pure data manipulation: it depends only on `serde`, `serde_json` and
//! `thiserror`, and **never on Burn** (or any tensor library), so it builds fast and can be used
//! by tools that do not run models.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// Errors from building, filling, selecting in, or reading a [`Graph`].
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GraphError {
    /// A score matrix had the wrong shape.
    #[error("score matrix has shape [{got_rows}, {got_cols}], expected [{rows}, {cols}]")]
    ShapeMismatch {
        /// Expected number of rows (forward nodes).
        rows: usize,
        /// Expected number of columns (backward nodes).
        cols: usize,
        /// Rows given.
        got_rows: usize,
        /// Columns given.
        got_cols: usize,
    },
    /// A flat buffer did not have `rows * cols` entries.
    #[error("score buffer has {got} entries, expected {expected}")]
    LengthMismatch {
        /// Expected length.
        expected: usize,
        /// Length given.
        got: usize,
    },
    /// More edges were requested than the graph has.
    #[error("requested {requested} edges but the graph only has {available}")]
    TooManyEdges {
        /// Edges requested.
        requested: usize,
        /// Edges in the graph.
        available: usize,
    },
    /// A node name did not match any node of this graph.
    #[error("unknown node name `{0}`")]
    UnknownNode(String),
    /// An edge name did not match any edge of this graph.
    #[error("unknown edge name `{0}`")]
    UnknownEdge(String),
    /// The configuration in a file was missing or invalid.
    #[error("invalid graph config: {0}")]
    InvalidConfig(String),
    /// The JSON could not be parsed or had the wrong structure.
    #[error("invalid graph JSON: {0}")]
    Json(String),
}

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
    /// Residual width; carried through files for the Python tools, unused by the graph itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d_model: Option<usize>,
}

impl GraphConfig {
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

/// Which input of an attention head an edge feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Qkv {
    /// Query input.
    Q,
    /// Key input.
    K,
    /// Value input.
    V,
}

impl Qkv {
    const ALL: [Qkv; 3] = [Qkv::Q, Qkv::K, Qkv::V];

    /// The single letter used in names (`q`, `k`, `v`).
    pub fn letter(self) -> char {
        match self {
            Qkv::Q => 'q',
            Qkv::K => 'k',
            Qkv::V => 'v',
        }
    }

    fn index(self) -> usize {
        match self {
            Qkv::Q => 0,
            Qkv::K => 1,
            Qkv::V => 2,
        }
    }
}

/// A node of the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Node {
    /// The embeddings.
    Input,
    /// Attention head `head` of layer `layer`.
    Head {
        /// Layer index.
        layer: usize,
        /// Head index within the layer.
        head: usize,
    },
    /// The MLP of a layer.
    Mlp(usize),
    /// The unembedding / logits.
    Logits,
}

impl Node {
    /// EAP-IG name of the node (`input`, `a0.h3`, `m2`, `logits`).
    pub fn name(&self) -> String {
        match self {
            Node::Input => "input".to_string(),
            Node::Head { layer, head } => format!("a{layer}.h{head}"),
            Node::Mlp(l) => format!("m{l}"),
            Node::Logits => "logits".to_string(),
        }
    }
}

/// A downstream input (backward node): the node reading the residual stream and, for heads,
/// which of its q/k/v inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reader {
    /// The reading node.
    pub node: Node,
    /// For attention heads, which input; `None` for MLPs and logits.
    pub qkv: Option<Qkv>,
}

impl Reader {
    /// EAP-IG name of the input (`a1.h0<q>`, `m2`, `logits`).
    pub fn name(&self) -> String {
        match self.qkv {
            Some(q) => format!("{}<{}>", self.node.name(), q.letter()),
            None => self.node.name(),
        }
    }
}

/// One edge of the graph with its current score and membership.
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    /// Row in the score matrix.
    pub forward: usize,
    /// Column in the score matrix.
    pub backward: usize,
    /// EAP-IG name, e.g. `a0.h3->m2`.
    pub name: String,
    /// Current score.
    pub score: f32,
    /// Whether the edge is in the circuit.
    pub in_graph: bool,
}

/// A circuit graph: the static edge structure for a [`GraphConfig`] plus dense scores and
/// edge/node membership masks.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    cfg: GraphConfig,
    n_forward: usize,
    n_backward: usize,
    valid: Vec<bool>,
    scores: Vec<f32>,
    in_graph: Vec<bool>,
    nodes_in_graph: Vec<bool>,
}

/// Ordered (key, index) pair for the greedy heap: larger key first, then smaller index.
#[derive(PartialEq)]
struct Cand {
    key: f32,
    idx: usize,
}
impl Eq for Cand {}
impl PartialOrd for Cand {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Cand {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key
            .total_cmp(&other.key)
            .then_with(|| other.idx.cmp(&self.idx))
    }
}

fn select_key(score: f32, absolute: bool) -> f32 {
    if score.is_nan() {
        f32::NEG_INFINITY
    } else if absolute {
        score.abs()
    } else {
        score
    }
}

impl Graph {
    /// Builds the full graph for `cfg`: all valid edges, zero scores, nothing in the circuit.
    pub fn new(cfg: GraphConfig) -> Self {
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
        };
        for b in 0..n_backward {
            // Forward nodes are numbered in write order, so a reader sees a prefix of them.
            let visible = g.visible_prefix(b);
            for f in 0..visible {
                g.valid[f * n_backward + b] = true;
            }
        }
        g
    }

    /// Number of forward nodes written before backward node `b` reads.
    fn visible_prefix(&self, b: usize) -> usize {
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
        let per = 3 * self.cfg.n_heads + 1;
        if b == self.n_backward - 1 {
            return Reader {
                node: Node::Logits,
                qkv: None,
            };
        }
        let (layer, pos) = (b / per, b % per);
        if pos == 3 * self.cfg.n_heads {
            Reader {
                node: Node::Mlp(layer),
                qkv: None,
            }
        } else {
            Reader {
                node: Node::Head {
                    layer,
                    head: pos / 3,
                },
                qkv: Some(Qkv::ALL[pos % 3]),
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

    /// Backward index of a reader input, if it exists in this graph.
    pub fn backward_index(&self, reader: Reader) -> Option<usize> {
        let per = 3 * self.cfg.n_heads + 1;
        match (reader.node, reader.qkv) {
            (Node::Head { layer, head }, Some(q))
                if layer < self.cfg.n_layers && head < self.cfg.n_heads =>
            {
                Some(layer * per + 3 * head + q.index())
            }
            (Node::Mlp(layer), None) if layer < self.cfg.n_layers => Some(layer * per + per - 1),
            (Node::Logits, None) => Some(self.n_backward - 1),
            _ => None,
        }
    }

    /// Node index of the node owning backward column `b`.
    fn reader_node_index(&self, b: usize) -> usize {
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
        let parent = parse_node(parent).ok_or_else(unknown)?;
        let f = match parent {
            Node::Logits => return Err(unknown()),
            n => self.node_index(n).ok_or_else(unknown)?,
        };
        let (child_node, qkv) = match child.strip_suffix('>') {
            Some(rest) => {
                let (node, letter) = rest.split_once('<').ok_or_else(unknown)?;
                let q = match letter {
                    "q" => Qkv::Q,
                    "k" => Qkv::K,
                    "v" => Qkv::V,
                    _ => return Err(unknown()),
                };
                (node, Some(q))
            }
            None => (child, None),
        };
        let child_node = parse_node(child_node).ok_or_else(unknown)?;
        let b = self
            .backward_index(Reader {
                node: child_node,
                qkv,
            })
            .ok_or_else(unknown)?;
        if self.valid[f * self.n_backward + b] {
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

    /// All edges, row-major (by forward index, then backward index), with names.
    pub fn edges(&self) -> impl Iterator<Item = Edge> + '_ {
        self.edge_indices().map(|i| {
            let (f, b) = (i / self.n_backward, i % self.n_backward);
            Edge {
                forward: f,
                backward: b,
                name: self.edge_name(f, b),
                score: self.scores[i],
                in_graph: self.in_graph[i],
            }
        })
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

    /// Node membership mask, indexed by node index (see [`Graph::node_index`]).
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
        if rows != self.n_forward || cols != self.n_backward {
            return Err(GraphError::ShapeMismatch {
                rows: self.n_forward,
                cols: self.n_backward,
                got_rows: rows,
                got_cols: cols,
            });
        }
        if data.len() != rows * cols {
            return Err(GraphError::LengthMismatch {
                expected: rows * cols,
                got: data.len(),
            });
        }
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

    /// Removes every edge and node from the circuit.
    pub fn clear(&mut self) {
        self.in_graph.fill(false);
        self.nodes_in_graph.fill(false);
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

    /// Valid edge indices sorted best-first by key; ties by ascending flat index.
    fn ranked(&self, absolute: bool) -> Vec<usize> {
        let mut idx: Vec<usize> = self.edge_indices().collect();
        idx.sort_by(|&a, &b| {
            select_key(self.scores[b], absolute)
                .total_cmp(&select_key(self.scores[a], absolute))
                .then(a.cmp(&b))
        });
        idx
    }

    /// Errors when more edges are asked for than the graph has.
    fn check_edge_budget(&self, n: usize) -> Result<(), GraphError> {
        let available = self.n_edges();
        if n > available {
            return Err(GraphError::TooManyEdges {
                requested: n,
                available,
            });
        }
        Ok(())
    }

    /// Replaces the circuit with the `n` edges of highest score (|score| if `absolute`, else the
    /// signed score); ties go to the lower row-major index. NaN scores rank last.
    pub fn apply_topn(&mut self, n: usize, absolute: bool) -> Result<(), GraphError> {
        self.check_edge_budget(n)?;
        let ranked = self.ranked(absolute);
        self.in_graph.fill(false);
        for &i in &ranked[..n] {
            self.in_graph[i] = true;
        }
        self.update_nodes();
        Ok(())
    }

    /// Replaces the circuit with all edges whose score (|score| if `absolute`) is `>= threshold`.
    pub fn apply_threshold(&mut self, threshold: f32, absolute: bool) {
        for i in 0..self.valid.len() {
            self.in_graph[i] = self.valid[i] && select_key(self.scores[i], absolute) >= threshold;
        }
        self.update_nodes();
    }

    /// Replaces the circuit by greedy growth from the logits: starting with only `logits` in the
    /// graph, repeatedly adds the best-scoring edge (|score| if `absolute`) whose downstream node
    /// is already in the graph, and puts that edge's upstream node in the graph. Stops after `n`
    /// edges.
    pub fn apply_greedy(&mut self, n: usize, absolute: bool) -> Result<(), GraphError> {
        self.check_edge_budget(n)?;
        self.in_graph.fill(false);
        let mut reached = vec![false; self.n_nodes()];
        let mut heap = BinaryHeap::new();
        let push_inputs = |g: &Graph, node: usize, heap: &mut BinaryHeap<Cand>| {
            for b in 0..g.n_backward {
                if g.reader_node_index(b) == node {
                    for f in 0..g.n_forward {
                        let i = f * g.n_backward + b;
                        if g.valid[i] {
                            heap.push(Cand {
                                key: select_key(g.scores[i], absolute),
                                idx: i,
                            });
                        }
                    }
                }
            }
        };
        reached[self.n_forward] = true;
        push_inputs(self, self.n_forward, &mut heap);
        let mut added = 0;
        while added < n {
            let Some(Cand { idx, .. }) = heap.pop() else {
                break;
            };
            self.in_graph[idx] = true;
            added += 1;
            let f = idx / self.n_backward;
            if !reached[f] {
                reached[f] = true;
                push_inputs(self, f, &mut heap);
            }
        }
        self.update_nodes();
        Ok(())
    }

    /// Removes, until stable, every node without a path from `input` through in-graph edges and
    /// a path on to `logits`, together with the edges touching it; then recomputes node masks.
    pub fn prune(&mut self) {
        let nb = self.n_backward;
        let logits = self.n_forward;
        loop {
            // Edges always go from a lower node index to a higher one, so one pass each way
            // in index order computes reachability.
            let mut from_input = vec![false; self.n_nodes()];
            from_input[0] = true;
            for b in 0..nb {
                let child = self.reader_node_index(b);
                for f in 0..self.n_forward {
                    if self.in_graph[f * nb + b] && from_input[f] {
                        from_input[child] = true;
                    }
                }
            }
            let mut to_logits = vec![false; self.n_nodes()];
            to_logits[logits] = true;
            for f in (0..self.n_forward).rev() {
                to_logits[f] = (0..nb)
                    .any(|b| self.in_graph[f * nb + b] && to_logits[self.reader_node_index(b)]);
            }
            let mut changed = false;
            for i in 0..self.in_graph.len() {
                if self.in_graph[i] {
                    let (f, b) = (i / nb, i % nb);
                    let c = self.reader_node_index(b);
                    let keep = from_input[f] && to_logits[f] && from_input[c] && to_logits[c];
                    if !keep {
                        self.in_graph[i] = false;
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        self.update_nodes();
    }

    /// Serializes to JSON in the EAP-IG reference format:
    /// `{"cfg": {...}, "nodes": {name: bool}, "edges": {name: {"score": f, "in_graph": bool}}}`.
    /// Non-finite scores are written as `null`.
    pub fn to_json_string(&self) -> String {
        let mut nodes = serde_json::Map::new();
        for i in 0..self.n_nodes() {
            nodes.insert(self.node(i).name(), self.nodes_in_graph[i].into());
        }
        let mut edges = serde_json::Map::new();
        for e in self.edges() {
            let score = serde_json::Number::from_f64(f64::from(e.score))
                .map_or(serde_json::Value::Null, serde_json::Value::Number);
            edges.insert(
                e.name,
                serde_json::json!({"score": score, "in_graph": e.in_graph}),
            );
        }
        let cfg = serde_json::to_value(self.cfg).expect("config serializes");
        serde_json::json!({"cfg": cfg, "nodes": nodes, "edges": edges}).to_string()
    }

    /// Reads a graph from EAP-IG JSON. Unknown node or edge names and invalid configs are
    /// errors; nodes or edges absent from the file stay out of the graph with score 0; a `null`
    /// score reads as NaN. Node membership is taken from the file as written.
    pub fn from_json_str(s: &str) -> Result<Self, GraphError> {
        let v: serde_json::Value =
            serde_json::from_str(s).map_err(|e| GraphError::Json(e.to_string()))?;
        let obj = v
            .as_object()
            .ok_or_else(|| GraphError::Json("top level is not an object".into()))?;
        let cfg_v = obj
            .get("cfg")
            .ok_or_else(|| GraphError::InvalidConfig("missing `cfg`".into()))?;
        let cfg: GraphConfig = serde_json::from_value(cfg_v.clone())
            .map_err(|e| GraphError::InvalidConfig(e.to_string()))?;
        let mut g = Graph::new(cfg);
        if let Some(nodes) = obj.get("nodes") {
            let nodes = nodes
                .as_object()
                .ok_or_else(|| GraphError::Json("`nodes` is not an object".into()))?;
            for (name, val) in nodes {
                let i = g.node_index_by_name(name)?;
                g.nodes_in_graph[i] = val
                    .as_bool()
                    .ok_or_else(|| GraphError::Json(format!("node `{name}`: expected a bool")))?;
            }
        }
        if let Some(edges) = obj.get("edges") {
            let edges = edges
                .as_object()
                .ok_or_else(|| GraphError::Json("`edges` is not an object".into()))?;
            for (name, info) in edges {
                let (f, b) = g.edge_index(name)?;
                let i = f * g.n_backward + b;
                let bad = |what: &str| GraphError::Json(format!("edge `{name}`: {what}"));
                match info.get("score") {
                    None | Some(serde_json::Value::Null) => g.scores[i] = f32::NAN,
                    Some(s) => {
                        g.scores[i] = s.as_f64().ok_or_else(|| bad("score is not a number"))? as f32
                    }
                }
                g.in_graph[i] = match info.get("in_graph") {
                    None => false,
                    Some(b) => b.as_bool().ok_or_else(|| bad("in_graph is not a bool"))?,
                };
            }
        }
        Ok(g)
    }

    /// Graphviz DOT of the circuit: nodes in the graph, and in-graph edges with `penwidth`
    /// scaled by |score| (0.6 to 5.0 between the smallest and largest |score| drawn) and colored
    /// blue for positive, red for negative scores. Head inputs are labelled `q`/`k`/`v`.
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph circuit {\n  rankdir=BT;\n");
        out.push_str("  node [shape=box, style=\"filled, rounded\", fontname=Helvetica];\n");
        for i in 0..self.n_nodes() {
            if self.nodes_in_graph[i] {
                let _ = writeln!(out, "  \"{}\";", self.node(i).name());
            }
        }
        let drawn: Vec<usize> = self.edge_indices().filter(|&i| self.in_graph[i]).collect();
        let abs = |i: usize| {
            if self.scores[i].is_finite() {
                self.scores[i].abs()
            } else {
                0.0
            }
        };
        let max = drawn.iter().map(|&i| abs(i)).fold(0.0f32, f32::max);
        let min = drawn.iter().map(|&i| abs(i)).fold(f32::INFINITY, f32::min);
        for i in drawn {
            let (f, b) = (i / self.n_backward, i % self.n_backward);
            let norm = if max > min {
                (abs(i) - min) / (max - min)
            } else {
                1.0
            };
            let pen = (norm * 5.0).max(0.6);
            let color = if self.scores[i] < 0.0 { "red" } else { "blue" };
            let r = self.reader(b);
            let label = r
                .qkv
                .map(|q| format!(", label=\"{}\"", q.letter()))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  \"{}\" -> \"{}\" [penwidth={pen:.3}, color={color}{label}];",
                self.forward_node(f).name(),
                r.node.name()
            );
        }
        out.push_str("}\n");
        out
    }
}

/// Parses a node name (`input`, `a0.h3`, `m2`, `logits`), without checking it against a config.
pub fn parse_node(name: &str) -> Option<Node> {
    let num = |s: &str| -> Option<usize> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match name {
        "input" => Some(Node::Input),
        "logits" => Some(Node::Logits),
        _ => {
            if let Some(rest) = name.strip_prefix('a') {
                let (l, h) = rest.split_once(".h")?;
                Some(Node::Head {
                    layer: num(l)?,
                    head: num(h)?,
                })
            } else {
                Some(Node::Mlp(num(name.strip_prefix('m')?)?))
            }
        }
    }
}

#[cfg(test)]
mod tests;
