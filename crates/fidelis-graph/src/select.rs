//! Circuit selection (top-n, threshold, greedy, node-level top-n), ranking and pruning.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::{Edge, Graph, GraphError};

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

/// Ranking key of a score: |score| if `absolute`, else the score; NaN ranks below everything.
fn select_key(score: f32, absolute: bool) -> f32 {
    if score.is_nan() {
        f32::NEG_INFINITY
    } else if absolute {
        score.abs()
    } else {
        score
    }
}

/// Sorts `idx` best-first by `select_key(score(i))`; ties by ascending index.
fn rank_by(idx: &mut [usize], score: impl Fn(usize) -> f32, absolute: bool) {
    idx.sort_by(|&a, &b| {
        select_key(score(b), absolute)
            .total_cmp(&select_key(score(a), absolute))
            .then(a.cmp(&b))
    });
}

impl Graph {
    /// Valid edge indices sorted best-first by key; ties by ascending flat index.
    fn ranked(&self, absolute: bool) -> Vec<usize> {
        let mut idx: Vec<usize> = self.edge_indices().collect();
        rank_by(&mut idx, |i| self.scores[i], absolute);
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

    /// The `n` best edges (all of them if `n >= n_edges`), best first: by |score| if
    /// `absolute`, else by signed score; NaN scores last; ties by ascending row-major index
    /// (forward, then backward). Membership is not consulted or changed.
    pub fn top_edges(&self, n: usize, absolute: bool) -> Vec<Edge> {
        let mut ranked = self.ranked(absolute);
        ranked.truncate(n);
        ranked.into_iter().map(|i| self.edge_at(i)).collect()
    }

    /// Replaces the circuit with the `n` edges of highest score (|score| if `absolute`, else the
    /// signed score); ties go to the lower row-major index. NaN scores rank last. Node masks
    /// follow the edges; nothing is pruned.
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

    /// Pushes every edge into a reader input of node `node` onto the greedy heap.
    fn push_inputs(&self, node: usize, absolute: bool, heap: &mut BinaryHeap<Cand>) {
        for b in (0..self.n_backward).filter(|&b| self.reader_node_index(b) == node) {
            for f in 0..self.visible_forward(b) {
                let idx = f * self.n_backward + b;
                let key = select_key(self.scores[idx], absolute);
                heap.push(Cand { key, idx });
            }
        }
    }

    /// Replaces the circuit by greedy growth from the logits: starting with only `logits` in the
    /// graph, repeatedly adds the best-scoring edge (|score| if `absolute`) whose downstream node
    /// is already in the graph, and puts that edge's upstream node in the graph. Stops after `n`
    /// edges; since every writer feeds `logits`, every edge is eventually a candidate and
    /// exactly `n` edges are selected.
    pub fn apply_greedy(&mut self, n: usize, absolute: bool) -> Result<(), GraphError> {
        self.check_edge_budget(n)?;
        self.in_graph.fill(false);
        let mut reached = vec![false; self.n_nodes()];
        let mut heap = BinaryHeap::new();
        reached[self.n_forward] = true;
        self.push_inputs(self.n_forward, absolute, &mut heap);
        for _ in 0..n {
            let Some(Cand { idx, .. }) = heap.pop() else {
                break;
            };
            self.in_graph[idx] = true;
            let f = idx / self.n_backward;
            if !reached[f] {
                reached[f] = true;
                self.push_inputs(f, absolute, &mut heap);
            }
        }
        self.update_nodes();
        Ok(())
    }

    /// Node-level circuit: selects the `n` scored forward nodes of highest node score (|score|
    /// if `absolute`; ties by forward index), keeps every unscored (NaN) node as the EAP-IG
    /// reference does, puts `logits` in, and replaces the edges with all edges between selected
    /// nodes. Node masks are the selection itself; call [`Graph::prune`] to drop selected nodes
    /// left without a path. Errors without node scores or when `n` exceeds the scored nodes.
    pub fn apply_node_topn(&mut self, n: usize, absolute: bool) -> Result<(), GraphError> {
        let scores = self.node_scores.as_ref().ok_or(GraphError::NoNodeScores)?;
        let mut scored: Vec<usize> = (0..self.n_forward)
            .filter(|&f| !scores[f].is_nan())
            .collect();
        if n > scored.len() {
            return Err(GraphError::TooManyNodes {
                requested: n,
                available: scored.len(),
            });
        }
        rank_by(&mut scored, |f| scores[f], absolute);
        let mut selected: Vec<bool> = scores.iter().map(|s| s.is_nan()).collect();
        for &f in &scored[..n] {
            selected[f] = true;
        }
        selected.push(true); // logits
        for i in 0..self.valid.len() {
            let (f, b) = (i / self.n_backward, i % self.n_backward);
            self.in_graph[i] = self.valid[i] && selected[f] && selected[self.reader_node_index(b)];
        }
        self.nodes_in_graph = selected;
        Ok(())
    }
}
