//! # fidelis-graph
//!
//! Circuit graphs over the components of a transformer language model, in the form used by
//! edge attribution patching (EAP / EAP-IG).
//!
//! ## Model of the graph
//!
//! * **Nodes**: `input` (embeddings), `a{l}.h{h}` (one per attention head), `m{l}` (one per
//!   MLP) and `logits`.
//! * **Forward nodes** (rows) are the residual-stream *writers*, in write order: `input`, then
//!   for each layer the heads `a{l}.h0 .. a{l}.h{H-1}` followed by `m{l}`.
//! * **Backward nodes** (columns) are the residual-stream *readers*, in the EAP-IG reference's
//!   order: for each layer the `<q>` inputs of all heads, then all `<k>` inputs, then all `<v>`
//!   inputs, then `m{l}`; finally `logits`. So column `l (3H + 1) + x H + h` is
//!   `a{l}.h{h}<x>` (`x` = 0, 1, 2 for q, k, v); [`Graph::reader_columns`] gives a layer's
//!   contiguous column ranges and [`Graph::forward_range_of_layer`] its head rows, so per-layer
//!   tensors `[batch, pos, n_heads, d_model]` map onto the matrix without reordering.
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
//! forward order, then `logits`). Optional node scores `[n_forward]` and neuron-level scores and
//! membership `[n_forward, d_model]` follow the reference's `node_scores` / `neuron_level`.
//!
//! ## Operations
//!
//! * Selection: [`Graph::apply_topn`], [`Graph::apply_threshold`], [`Graph::apply_greedy`]
//!   (growth from the logits), each by absolute or signed score; [`Graph::apply_node_topn`]
//!   for node-level circuits; [`Graph::top_edges`] for listings.
//! * [`Graph::prune`]: drops edges and nodes without a path from `input` and to `logits`.
//! * Files: JSON in the EAP-IG reference format ([`Graph::to_json_string`],
//!   [`Graph::from_json_str`]) so graphs move between Fidelis and the Python tools; pictures as
//!   Graphviz DOT ([`Graph::to_dot`], [`render_svg_with_dot`]) or as self-contained SVG with a
//!   built-in layered layout ([`Graph::to_svg`]).
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

mod dot;
mod error;
mod graph;
mod json;
mod levels;
mod node;
mod prune;
mod select;
mod svg;

pub use dot::render_svg_with_dot;
pub use error::GraphError;
pub use graph::{Graph, GraphConfig, LayerColumns, limits};
pub use node::{Edge, Node, Qkv, Reader, parse_node, parse_reader};
pub use svg::{SvgOptions, format_score};

#[cfg(test)]
mod tests;

/// The README's examples, compiled and run as doctests so that they cannot go stale.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
