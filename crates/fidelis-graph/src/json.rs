//! JSON in the EAP-IG reference format (`Graph.to_json` / `Graph.from_json` in
//! `src/eap/graph.py` of the reference):
//!
//! ```text
//! {"cfg":   {"n_layers": L, "n_heads": H, "parallel_attn_mlp": bool, "d_model": D},
//!  "nodes": {"a0.h3": {"in_graph": bool,
//!                      "score": f,                      // only with node scores
//!                      "neurons": [bool; D],            // only when neuron-level
//!                      "neurons_scores": [f; D]}, ...}, // only when neuron-level
//!  "edges": {"a0.h3->m2": {"score": f, "in_graph": bool}, ...}}
//! ```
//!
//! Quirk kept for compatibility: the reference indexes neuron rows of an attention head with
//! the slice of *all* heads of its layer, so each head's `neurons` / `neurons_scores` hold the
//! whole `[H, D]` block of its layer. Writing one row instead would make the reference's
//! `from_json` broadcast it over every head of the layer; so this crate writes the block, and
//! reads either the block (taking row `h`) or a single row.
//!
//! Non-finite numbers: NaN is written as `null`; ±∞ as `±1e39`, a finite JSON number that
//! overflows to ±∞ when converted to `f32` (here and in PyTorch). Python's `json.dump` writes
//! bare `NaN` / `Infinity`, which the reader accepts as well. Older files with
//! `"nodes": {name: bool}` are read too.

use std::borrow::Cow;

use serde_json::{Map, Value, json};

use crate::{Graph, GraphConfig, GraphError, Node};

/// Stand-in for ±∞: finite in JSON, infinite once converted to `f32`.
const F32_OVERFLOW: f64 = 1e39;

/// JSON value of a score: a number, `null` for NaN, `±1e39` for ±∞.
fn score_value(s: f32) -> Value {
    if s.is_nan() {
        Value::Null
    } else if s.is_infinite() {
        json!(F32_OVERFLOW.copysign(f64::from(s)))
    } else {
        json!(f64::from(s))
    }
}

/// Reads a score written by [`score_value`] or by Python (`null` = NaN).
fn read_score(v: &Value, what: &dyn Fn() -> String) -> Result<f32, GraphError> {
    match v {
        Value::Null => Ok(f32::NAN),
        v => v
            .as_f64()
            .map(|x| x as f32)
            .ok_or_else(|| GraphError::Json(format!("{}: expected a number", what()))),
    }
}

/// Reads a membership flag: a bool, or a number (non-zero = in) as PyTorch float masks give.
fn read_flag(v: &Value, what: &dyn Fn() -> String) -> Result<bool, GraphError> {
    match v {
        Value::Bool(b) => Ok(*b),
        v => v
            .as_f64()
            .map(|x| x != 0.0)
            .ok_or_else(|| GraphError::Json(format!("{}: expected a bool", what()))),
    }
}

/// Replaces Python's bare `NaN` / `Infinity` tokens outside strings by `null` / `1e39`.
fn python_literals_to_json(s: &str) -> Cow<'_, str> {
    if !s.contains("NaN") && !s.contains("Infinity") {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(s.len());
    let (mut i, mut in_string, mut escaped) = (0, false, false);
    while i < bytes.len() {
        let c = bytes[i];
        if in_string {
            in_string = escaped || c != b'"';
            escaped = !escaped && c == b'\\';
        } else if bytes[i..].starts_with(b"NaN") {
            out.extend_from_slice(b"null");
            i += 3;
            continue;
        } else if bytes[i..].starts_with(b"Infinity") {
            out.extend_from_slice(b"1e39");
            i += 8;
            continue;
        } else {
            in_string = c == b'"';
        }
        out.push(c);
        i += 1;
    }
    // Only ASCII runs outside strings were replaced, so the bytes are still UTF-8.
    Cow::Owned(String::from_utf8(out).expect("replacement keeps UTF-8"))
}

impl Graph {
    /// The neuron values written for forward node `f`: its own row of `[n_forward, d_model]`
    /// data, or for a head the `[n_heads, d_model]` block of its layer (reference layout).
    fn neuron_json<T: Copy>(&self, data: &[T], f: usize, to: impl Fn(T) -> Value) -> Value {
        let d = self.cfg.d_model.unwrap_or(0);
        let row =
            |r: usize| Value::Array(data[r * d..(r + 1) * d].iter().map(|x| to(*x)).collect());
        match self.forward_node(f) {
            Node::Head { layer, .. } => self.forward_range_of_layer(layer).map(row).collect(),
            _ => row(f),
        }
    }

    /// The `nodes` object: membership of every node, plus node and neuron data when present.
    fn nodes_json(&self) -> Map<String, Value> {
        let mut nodes = Map::new();
        for i in 0..self.n_nodes() {
            let mut entry = Map::new();
            entry.insert("in_graph".into(), self.nodes_in_graph[i].into());
            // `logits` is no forward node: it has no score and no neurons.
            if i < self.n_forward {
                if let Some(s) = &self.node_scores {
                    entry.insert("score".into(), score_value(s[i]));
                }
                if let (Some(m), Some(s)) = (&self.neurons_in_graph, &self.neuron_scores) {
                    entry.insert("neurons".into(), self.neuron_json(m, i, Value::Bool));
                    entry.insert("neurons_scores".into(), self.neuron_json(s, i, score_value));
                }
            }
            nodes.insert(self.node(i).name(), Value::Object(entry));
        }
        nodes
    }

    /// Serializes to JSON in the EAP-IG reference format (see the module docs of `json.rs`:
    /// `cfg`, `nodes` with `in_graph` and optional `score` / `neurons` / `neurons_scores`,
    /// `edges` with `score` and `in_graph`).
    pub fn to_json_string(&self) -> String {
        let mut edges = Map::new();
        for e in self.edges() {
            let entry = json!({"score": score_value(e.score), "in_graph": e.in_graph});
            edges.insert(e.name, entry);
        }
        let cfg = serde_json::to_value(self.cfg).expect("config serializes");
        json!({"cfg": cfg, "nodes": self.nodes_json(), "edges": edges}).to_string()
    }

    /// Reads a graph from EAP-IG JSON (this crate's, the reference's, or the older
    /// `"nodes": {name: bool}` form). Unknown node or edge names and invalid configs are errors;
    /// nodes or edges absent from the file stay out of the graph with score 0; `null` scores
    /// read as NaN. Node membership is taken from the file as written. Node scores (neuron data)
    /// are present iff some node entry has a `score` (`neurons` or `neurons_scores`); entries
    /// without them read as NaN scores and neurons out of the circuit.
    pub fn from_json_str(s: &str) -> Result<Self, GraphError> {
        let text = python_literals_to_json(s);
        let v: Value = serde_json::from_str(&text).map_err(|e| GraphError::Json(e.to_string()))?;
        let obj = v
            .as_object()
            .ok_or_else(|| GraphError::Json("top level is not an object".into()))?;
        let cfg_v = obj
            .get("cfg")
            .ok_or_else(|| GraphError::InvalidConfig("missing `cfg`".into()))?;
        let cfg: GraphConfig = serde_json::from_value(cfg_v.clone())
            .map_err(|e| GraphError::InvalidConfig(e.to_string()))?;
        // Sizes from the file are checked before they size anything.
        let mut g = Graph::try_new(cfg)?;
        if let Some(nodes) = obj.get("nodes") {
            let nodes = nodes
                .as_object()
                .ok_or_else(|| GraphError::Json("`nodes` is not an object".into()))?;
            for (name, entry) in nodes {
                g.read_node(name, entry)?;
            }
        }
        if let Some(edges) = obj.get("edges") {
            let edges = edges
                .as_object()
                .ok_or_else(|| GraphError::Json("`edges` is not an object".into()))?;
            for (name, entry) in edges {
                g.read_edge(name, entry)?;
            }
        }
        Ok(g)
    }

    /// Reads one `edges` entry `{"score": f, "in_graph": bool}`.
    fn read_edge(&mut self, name: &str, entry: &Value) -> Result<(), GraphError> {
        let (f, b) = self.edge_index(name)?;
        let i = f * self.n_backward + b;
        let what = || format!("edge `{name}`");
        self.scores[i] = entry
            .get("score")
            .map_or(Ok(f32::NAN), |v| read_score(v, &what))?;
        self.in_graph[i] = entry
            .get("in_graph")
            .map_or(Ok(false), |v| read_flag(v, &what))?;
        Ok(())
    }

    /// Reads one `nodes` entry: a bool (older files) or an object.
    fn read_node(&mut self, name: &str, entry: &Value) -> Result<(), GraphError> {
        let i = self.node_index_by_name(name)?;
        let what = || format!("node `{name}`");
        let obj = match entry {
            Value::Object(obj) => obj,
            flag => {
                self.nodes_in_graph[i] = read_flag(flag, &what)?;
                return Ok(());
            }
        };
        self.nodes_in_graph[i] = obj
            .get("in_graph")
            .map_or(Ok(false), |v| read_flag(v, &what))?;
        if i == self.n_forward {
            return Ok(()); // `logits` carries no scores (the reference skips it too)
        }
        if let Some(v) = obj.get("score") {
            let n = self.n_forward;
            self.node_scores.get_or_insert_with(|| vec![f32::NAN; n])[i] = read_score(v, &what)?;
        }
        if let Some(v) = obj.get("neurons") {
            let row = self.read_neuron_row(i, v, |x| read_flag(x, &what))?;
            self.write_neuron_row(i, Some(&row), None)?;
        }
        if let Some(v) = obj.get("neurons_scores") {
            let row = self.read_neuron_row(i, v, |x| read_score(x, &what))?;
            self.write_neuron_row(i, None, Some(&row))?;
        }
        Ok(())
    }

    /// Reads forward node `f`'s neuron row `[d_model]` from a row, or for a head from its
    /// layer's `[n_heads, d_model]` block.
    fn read_neuron_row<T>(
        &self,
        f: usize,
        v: &Value,
        read: impl Fn(&Value) -> Result<T, GraphError>,
    ) -> Result<Vec<T>, GraphError> {
        let d = self.d_model()?;
        let bad = || GraphError::Json(format!("node `{}`: bad neuron array", self.node(f).name()));
        let mut arr = v.as_array().ok_or_else(bad)?;
        if let (Node::Head { head, .. }, Some(Value::Array(_))) =
            (self.forward_node(f), arr.first())
        {
            if arr.len() != self.cfg.n_heads {
                return Err(bad());
            }
            arr = arr[head].as_array().ok_or_else(bad)?;
        }
        if arr.len() != d {
            return Err(bad());
        }
        arr.iter().map(read).collect()
    }

    /// Stores neuron membership and/or scores `[d_model]` of forward node `f`.
    fn write_neuron_row(
        &mut self,
        f: usize,
        mask: Option<&[bool]>,
        scores: Option<&[f32]>,
    ) -> Result<(), GraphError> {
        let d = self.d_model()?;
        self.enable_neurons()?;
        if let (Some(row), Some(m)) = (mask, &mut self.neurons_in_graph) {
            m[f * d..(f + 1) * d].copy_from_slice(row);
        }
        if let (Some(row), Some(s)) = (scores, &mut self.neuron_scores) {
            s[f * d..(f + 1) * d].copy_from_slice(row);
        }
        Ok(())
    }
}
