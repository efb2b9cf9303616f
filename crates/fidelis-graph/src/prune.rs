//! Pruning: keeping only the part of a circuit that connects `input` to `logits`.

use crate::Graph;

impl Graph {
    /// Node mask `[n_nodes]`: nodes reachable from `input` through in-graph edges.
    fn reachable_from_input(&self) -> Vec<bool> {
        let nb = self.n_backward;
        let mut reached = vec![false; self.n_nodes()];
        reached[0] = true;
        // Edges go from a lower node index to a higher one and columns are ordered by reader
        // node, so one pass over the columns in order sees every parent before its children.
        for b in 0..nb {
            let child = self.reader_node_index(b);
            if (0..self.visible_forward(b)).any(|f| self.in_graph[f * nb + b] && reached[f]) {
                reached[child] = true;
            }
        }
        reached
    }

    /// Node mask `[n_nodes]`: nodes from which `logits` is reachable through in-graph edges.
    fn reaches_logits(&self) -> Vec<bool> {
        let nb = self.n_backward;
        let mut reaches = vec![false; self.n_nodes()];
        reaches[self.n_forward] = true;
        for f in (0..self.n_forward).rev() {
            reaches[f] =
                (0..nb).any(|b| self.in_graph[f * nb + b] && reaches[self.reader_node_index(b)]);
        }
        reaches
    }

    /// Reduces the circuit to what connects `input` to `logits`: removes every in-graph edge
    /// `u -> v` unless `u` has a path from `input` and `v` a path to `logits` through in-graph
    /// edges, then recomputes node masks from the edges. Never adds an edge; idempotent.
    ///
    /// Neuron-level graphs: as in the EAP-IG reference, a writer with no neuron in the circuit
    /// is removed first (with its outgoing edges), and afterwards the neurons of every node that
    /// left the circuit are switched off.
    pub fn prune(&mut self) {
        let nb = self.n_backward;
        for f in 0..self.n_forward {
            if !self.has_neurons(f) {
                self.in_graph[f * nb..(f + 1) * nb].fill(false);
            }
        }
        // One pass suffices: every edge on a path input -> u -> v -> logits passes the same
        // test, so removing the others cannot disconnect a kept edge.
        let (from_input, to_logits) = (self.reachable_from_input(), self.reaches_logits());
        for i in 0..self.in_graph.len() {
            if self.in_graph[i] {
                let (f, b) = (i / nb, i % nb);
                self.in_graph[i] = from_input[f] && to_logits[self.reader_node_index(b)];
            }
        }
        self.update_nodes();
        if let (Some(mask), Some(d)) = (&mut self.neurons_in_graph, self.cfg.d_model) {
            for (f, row) in mask.chunks_mut(d).enumerate() {
                if !self.nodes_in_graph[f] {
                    row.fill(false);
                }
            }
        }
    }
}
