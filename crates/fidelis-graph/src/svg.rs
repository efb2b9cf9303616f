//! Self-contained SVG export with a layered layout (no Graphviz needed).
//!
//! Rows from bottom to top: `input`, then per layer its heads (one row, in head order) and its
//! MLP, then `logits`; rows without a drawn node are left out. Edges are cubic curves from the
//! top of the writer to the bottom of the reader; a head's q, k and v inputs enter at the left,
//! middle and right of its box.

use std::fmt::Write as _;

use crate::{Graph, Node};

/// Sizes and pens for [`Graph::to_svg`], in SVG user units (pixels).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SvgOptions {
    /// Width of a node box.
    pub node_width: f32,
    /// Height of a node box.
    pub node_height: f32,
    /// Horizontal gap between boxes of a row.
    pub column_gap: f32,
    /// Vertical gap between rows.
    pub row_gap: f32,
    /// Margin around the drawing.
    pub margin: f32,
    /// Stroke width of the edge with the largest |score|; others are proportional to |score|.
    pub max_edge_width: f32,
    /// Smallest stroke width, so that weak edges stay visible.
    pub min_edge_width: f32,
}

impl Default for SvgOptions {
    fn default() -> Self {
        Self {
            node_width: 64.0,
            node_height: 28.0,
            column_gap: 16.0,
            row_gap: 56.0,
            margin: 20.0,
            max_edge_width: 6.0,
            min_edge_width: 0.5,
        }
    }
}

/// Stroke colour of a positive edge score.
const POSITIVE: &str = "#2166ac";
/// Stroke colour of a negative edge score.
const NEGATIVE: &str = "#b2182b";
/// Stroke colour of a NaN score.
const UNSCORED: &str = "#999999";

/// Escapes text for SVG content and attribute values.
fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Box position of a drawn node: centre `x`, top `y`.
#[derive(Clone, Copy)]
struct Place {
    x: f32,
    y: f32,
}

impl Graph {
    /// Layout row of node index `i`: 0 for `input`, then heads and MLP of each layer, `logits`
    /// last.
    fn svg_level(&self, i: usize) -> usize {
        match self.node(i) {
            Node::Input => 0,
            Node::Head { layer, .. } => 1 + 2 * layer,
            Node::Mlp(layer) => 2 + 2 * layer,
            Node::Logits => 1 + 2 * self.cfg.n_layers,
        }
    }

    /// Nodes to draw `[n_nodes]`: those in the graph and the ends of in-graph edges.
    fn svg_drawn_nodes(&self) -> Vec<bool> {
        let mut drawn = self.nodes_in_graph.clone();
        for i in self.edge_indices().filter(|&i| self.in_graph[i]) {
            drawn[i / self.n_backward] = true;
            drawn[self.reader_node_index(i % self.n_backward)] = true;
        }
        drawn
    }

    /// Places drawn nodes: each non-empty level is a row, centred; returns the places by node
    /// index and the canvas size `(width, height)`.
    fn svg_layout(&self, drawn: &[bool], o: &SvgOptions) -> (Vec<Option<Place>>, f32, f32) {
        let mut rows: Vec<Vec<usize>> = vec![Vec::new(); 2 + 2 * self.cfg.n_layers];
        for i in (0..self.n_nodes()).filter(|&i| drawn[i]) {
            rows[self.svg_level(i)].push(i);
        }
        rows.retain(|r| !r.is_empty());
        let widest = rows.iter().map(Vec::len).max().unwrap_or(0) as f32;
        let pitch = o.node_width + o.column_gap;
        let width = 2.0 * o.margin + (widest * pitch - o.column_gap).max(0.0);
        let height =
            2.0 * o.margin + (rows.len() as f32 * (o.node_height + o.row_gap) - o.row_gap).max(0.0);
        let mut places = vec![None; self.n_nodes()];
        for (r, row) in rows.iter().enumerate() {
            let y = height - o.margin - o.node_height - r as f32 * (o.node_height + o.row_gap);
            for (k, &i) in row.iter().enumerate() {
                let offset = k as f32 - (row.len() as f32 - 1.0) / 2.0;
                places[i] = Some(Place {
                    x: width / 2.0 + offset * pitch,
                    y,
                });
            }
        }
        (places, width, height)
    }

    /// Self-contained SVG of the circuit with a layered layout: `input` at the bottom, `logits`
    /// at the top, the heads of a layer side by side. Drawn are the nodes in the graph and the
    /// in-graph edges; edge stroke width is proportional to |score| (at least
    /// `min_edge_width`), blue for positive and red for negative scores. Every node and edge
    /// carries a `<title>` tooltip with its name and score.
    pub fn to_svg(&self, opts: &SvgOptions) -> String {
        let drawn = self.svg_drawn_nodes();
        let (places, width, height) = self.svg_layout(&drawn, opts);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
             viewBox=\"0 0 {width:.1} {height:.1}\" font-family=\"Helvetica, Arial, sans-serif\">"
        );
        out.push_str("<g class=\"edges\" fill=\"none\">\n");
        self.svg_edges(&mut out, &places, opts);
        out.push_str("</g>\n<g class=\"nodes\">\n");
        for (i, place) in places.iter().enumerate() {
            if let Some(p) = place {
                self.svg_node(&mut out, i, *p, opts);
            }
        }
        out.push_str("</g>\n</svg>\n");
        out
    }

    /// Appends one `<path>` per in-graph edge.
    fn svg_edges(&self, out: &mut String, places: &[Option<Place>], o: &SvgOptions) {
        let edges: Vec<usize> = self.edge_indices().filter(|&i| self.in_graph[i]).collect();
        let max_abs = edges
            .iter()
            .map(|&i| self.finite_abs_score(i))
            .fold(0.0f32, f32::max);
        for i in edges {
            let (f, b) = (i / self.n_backward, i % self.n_backward);
            let reader = self.reader(b);
            let (Some(from), Some(to)) = (places[f], places[self.reader_node_index(b)]) else {
                continue;
            };
            let entry = reader
                .qkv
                .map_or(0.0, |q| (q.index() as f32 - 1.0) * o.node_width / 4.0);
            let (x1, y1) = (from.x, from.y);
            let (x2, y2) = (to.x + entry, to.y + o.node_height);
            let mid = (y1 + y2) / 2.0;
            let s = self.scores[i];
            let w = if max_abs > 0.0 {
                (o.max_edge_width * self.finite_abs_score(i) / max_abs).max(o.min_edge_width)
            } else {
                o.min_edge_width
            };
            let color = match s {
                s if s.is_nan() => UNSCORED,
                s if s < 0.0 => NEGATIVE,
                _ => POSITIVE,
            };
            let _ = writeln!(
                out,
                "<path d=\"M{x1:.1},{y1:.1} C{x1:.1},{mid:.1} {x2:.1},{mid:.1} {x2:.1},{y2:.1}\" \
                 stroke=\"{color}\" stroke-width=\"{w:.2}\" stroke-opacity=\"0.8\">\
                 <title>{} (score {s})</title></path>",
                xml_escape(&self.edge_name(f, b))
            );
        }
    }

    /// Appends one node box with its label and tooltip.
    fn svg_node(&self, out: &mut String, i: usize, p: Place, o: &SvgOptions) {
        let node = self.node(i);
        let name = xml_escape(&node.name());
        let fill = match node {
            Node::Input | Node::Logits => "#e0e0e0",
            Node::Head { .. } => "#fde0c5",
            Node::Mlp(_) => "#d5ecd4",
        };
        let score = match self.node_scores.as_ref().filter(|_| i < self.n_forward) {
            Some(s) => format!(" (score {})", s[i]),
            None => String::new(),
        };
        let (x, y) = (p.x - o.node_width / 2.0, p.y);
        let (w, h) = (o.node_width, o.node_height);
        let _ = writeln!(
            out,
            "<g class=\"node\"><title>{name}{score}</title>\
             <rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" rx=\"6\" \
             fill=\"{fill}\" stroke=\"#333333\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" dominant-baseline=\"central\" \
             font-size=\"12\">{name}</text></g>",
            p.x,
            y + h / 2.0
        );
    }
}
