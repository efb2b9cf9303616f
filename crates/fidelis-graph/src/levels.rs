//! Node-level and neuron-level data, as in the EAP-IG reference's `Graph.from_model(...,
//! node_scores=True, neuron_level=True)`: optional scores per forward node `[n_forward]`, and
//! optional scores and membership per residual-stream dimension of each forward node's output
//! `[n_forward, d_model]`. A NaN score marks a node or neuron that was not scored; the
//! reference keeps such components in the graph under node- or neuron-level selection.

use crate::graph::check_shape;
use crate::{Graph, GraphError};

impl Graph {
    /// Node scores `[n_forward]` by forward index, if the graph has them.
    pub fn node_scores(&self) -> Option<&[f32]> {
        self.node_scores.as_deref()
    }

    /// Sets node scores `[n_forward]` by forward index (NaN = unscored), enabling node scores.
    pub fn set_node_scores(&mut self, scores: &[f32]) -> Result<(), GraphError> {
        if scores.len() != self.n_forward {
            return Err(GraphError::LengthMismatch {
                expected: self.n_forward,
                got: scores.len(),
            });
        }
        self.node_scores = Some(scores.to_vec());
        Ok(())
    }

    /// Drops node scores.
    pub fn clear_node_scores(&mut self) {
        self.node_scores = None;
    }

    /// Node scores derived from edge scores, `[n_forward]`: for each forward node, the sum of
    /// the scores of all its outgoing edges (in the circuit or not). NaN edge scores are
    /// skipped; a row holding both +∞ and −∞ sums to NaN, i.e. "unscored". Under EAP the score of an edge `u -> v` approximates the effect of patching
    /// `u`'s contribution to `v` alone, so the sum approximates patching `u` everywhere (to
    /// first order; DESIGN.md, "Node-level scores").
    pub fn node_scores_from_edges(&self) -> Vec<f32> {
        (0..self.n_forward)
            .map(|f| {
                let row = f * self.n_backward..(f + 1) * self.n_backward;
                let sum: f64 = self.scores[row.clone()]
                    .iter()
                    .zip(&self.valid[row])
                    .filter(|(s, v)| **v && !s.is_nan())
                    .map(|(s, _)| f64::from(*s))
                    .sum();
                sum as f32
            })
            .collect()
    }

    /// Residual width for neuron-level data, or [`GraphError::NoDModel`] when the config has
    /// none (or 0).
    pub(crate) fn d_model(&self) -> Result<usize, GraphError> {
        self.cfg
            .d_model
            .filter(|d| *d > 0)
            .ok_or(GraphError::NoDModel)
    }

    /// Whether the graph carries neuron-level data.
    pub fn is_neuron_level(&self) -> bool {
        self.neurons_in_graph.is_some()
    }

    /// Makes the graph neuron-level if it is not yet: all neurons unscored (NaN) and out of the
    /// circuit. Needs `cfg.d_model`.
    pub fn enable_neurons(&mut self) -> Result<(), GraphError> {
        let len = self.n_forward * self.d_model()?;
        if self.neurons_in_graph.is_none() {
            self.neuron_scores = Some(vec![f32::NAN; len]);
            self.neurons_in_graph = Some(vec![false; len]);
        }
        Ok(())
    }

    /// Drops neuron-level data.
    pub fn clear_neurons(&mut self) {
        self.neuron_scores = None;
        self.neurons_in_graph = None;
    }

    /// Neuron scores, row-major `[n_forward, d_model]`, if the graph is neuron-level.
    pub fn neuron_scores(&self) -> Option<&[f32]> {
        self.neuron_scores.as_deref()
    }

    /// Neuron membership, row-major `[n_forward, d_model]`, if the graph is neuron-level.
    pub fn neurons_in_graph(&self) -> Option<&[bool]> {
        self.neurons_in_graph.as_deref()
    }

    /// Sets neuron scores from a row-major `[rows, cols]` matrix that must be
    /// `[n_forward, d_model]`, enabling neuron-level data.
    pub fn set_neuron_scores(
        &mut self,
        data: &[f32],
        rows: usize,
        cols: usize,
    ) -> Result<(), GraphError> {
        check_shape(data.len(), [rows, cols], [self.n_forward, self.d_model()?])?;
        self.enable_neurons()?;
        self.neuron_scores = Some(data.to_vec());
        Ok(())
    }

    /// Sets neuron membership from a row-major `[rows, cols]` mask that must be
    /// `[n_forward, d_model]`, enabling neuron-level data.
    pub fn set_neurons_in_graph(
        &mut self,
        mask: &[bool],
        rows: usize,
        cols: usize,
    ) -> Result<(), GraphError> {
        check_shape(mask.len(), [rows, cols], [self.n_forward, self.d_model()?])?;
        self.enable_neurons()?;
        self.neurons_in_graph = Some(mask.to_vec());
        Ok(())
    }

    /// Whether forward node `f` has at least one neuron in the circuit (always true for a graph
    /// that is not neuron-level).
    pub(crate) fn has_neurons(&self, f: usize) -> bool {
        match (&self.neurons_in_graph, self.cfg.d_model) {
            (Some(m), Some(d)) => m[f * d..(f + 1) * d].iter().any(|x| *x),
            _ => true,
        }
    }
}
