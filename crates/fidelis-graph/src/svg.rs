//! Self-contained SVG export with a layered layout (no Graphviz needed).
//!
//! Rows from bottom to top: `input`, then per layer its heads (one row, in head order) and its
//! MLP, then `logits`; rows without a drawn node are left out. Edges are cubic curves from the
//! top of the writer to the bottom of the reader; a head's q, k and v inputs enter at the left,
//! middle and right of its box (marked `q k v` there) and are drawn solid, dashed and dotted.
//! An edge that skips a row bows out sideways so that it does not read as passing through the
//! nodes between its ends. A legend to the right explains colour (sign), width (|score|) and
//! dash (head input).

use std::fmt::Write as _;

use crate::{Graph, Node, Qkv};

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
    /// Text size of node labels and the legend.
    pub font_size: f32,
    /// Width of the legend column at the right (0 leaves the legend out).
    pub legend_width: f32,
}

impl Default for SvgOptions {
    fn default() -> Self {
        Self {
            node_width: 68.0,
            node_height: 38.0,
            column_gap: 16.0,
            row_gap: 56.0,
            margin: 20.0,
            max_edge_width: 6.0,
            min_edge_width: 0.5,
            font_size: 13.0,
            legend_width: 230.0,
        }
    }
}

/// Stroke colour of a positive edge score.
const POSITIVE: &str = "#2166ac";
/// Stroke colour of a negative edge score.
const NEGATIVE: &str = "#b2182b";
/// Stroke colour of a NaN score.
const UNSCORED: &str = "#999999";

/// Text size of the `q k v` marks under a head's name.
const QKV_MARK_SIZE: f32 = 12.0;
/// Height of one legend row.
const LEGEND_ROW: f32 = 20.0;
/// Length of a legend's sample stroke.
const LEGEND_SAMPLE: f32 = 36.0;

/// SVG dash pattern of an edge into a head's q, k or v input (`None`: an MLP or the logits).
fn qkv_dash(qkv: Option<Qkv>) -> &'static str {
    match qkv {
        None | Some(Qkv::Q) => "",
        Some(Qkv::K) => " stroke-dasharray=\"7 3\"",
        Some(Qkv::V) => " stroke-dasharray=\"2 3\"",
    }
}

/// A score for people: 3 significant digits, `0` for |x| < 1e-6 (never `-0.000`), scientific
/// notation outside [1e-3, 1e5).
pub fn format_score(x: f32) -> String {
    let a = x.abs();
    if x.is_nan() {
        "NaN".to_string()
    } else if a < 1e-6 {
        "0".to_string()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{x:.2e}")
    } else {
        let decimals = (2 - a.log10().floor() as i32).max(0) as usize;
        let text = format!("{x:.decimals$}");
        if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            text
        }
    }
}

/// Escapes text for SVG content and attribute values.
fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A legend sample stroke: colour, width, dash attribute.
type LegendSample = (&'static str, f32, &'static str);

/// Lines of the legend: three headings and eight samples.
const LEGEND_LINES: usize = 11;
/// Sideways bow of an edge skipping one row, in node widths ...
const BOW_BASE: f32 = 0.75;
/// ... plus this much per further skipped row.
const BOW_STEP: f32 = 10.0;
/// A cubic Bézier whose two control points sit `d` to the side reaches `0.75 d` at its middle.
const BEZIER_BULGE: f32 = 0.75;

/// Room left on each side of the rows for edges that bow out around nodes.
fn bow_room(o: &SvgOptions) -> f32 {
    o.node_width
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
        let width = 2.0 * (o.margin + bow_room(o)) + (widest * pitch - o.column_gap).max(0.0);
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
        let (places, graph_width, graph_height) = self.svg_layout(&drawn, opts);
        let legend = opts.legend_width > 0.0 && self.n_edges_in_graph() > 0;
        let (width, height) = if legend {
            (
                graph_width + opts.legend_width,
                graph_height.max(2.0 * opts.margin + LEGEND_LINES as f32 * LEGEND_ROW),
            )
        } else {
            (graph_width, graph_height)
        };
        // Rows stay bottom-up when the legend makes the canvas taller.
        let lift = height - graph_height;
        let places: Vec<Option<Place>> = places
            .into_iter()
            .map(|p| {
                p.map(|p| Place {
                    x: p.x,
                    y: p.y + lift,
                })
            })
            .collect();
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
        out.push_str("</g>\n");
        if legend {
            self.svg_legend(&mut out, graph_width, opts);
        }
        out.push_str("</svg>\n");
        out
    }

    /// The largest finite |score| among in-graph edges (0 when none).
    fn max_abs_in_graph(&self) -> f32 {
        self.edge_indices()
            .filter(|&i| self.in_graph[i])
            .map(|i| self.finite_abs_score(i))
            .fold(0.0f32, f32::max)
    }

    /// Appends the legend at `x0`: colour by sign, width by |score| (with the scores that the
    /// sample widths stand for), dash by head input.
    fn svg_legend(&self, out: &mut String, x0: f32, o: &SvgOptions) {
        let max_abs = self.max_abs_in_graph();
        let thinnest = max_abs * o.min_edge_width / o.max_edge_width;
        let widths = [
            (
                o.max_edge_width,
                format!("|score| {}", format_score(max_abs)),
            ),
            (
                o.max_edge_width / 2.0,
                format!("|score| {}", format_score(max_abs / 2.0)),
            ),
            (
                o.min_edge_width,
                format!("|score| ≤ {}", format_score(thinnest)),
            ),
        ];
        let lines: [(&str, Option<LegendSample>); LEGEND_LINES] = [
            ("Edge colour: sign of score", None),
            ("positive", Some((POSITIVE, 2.0, ""))),
            ("negative", Some((NEGATIVE, 2.0, ""))),
            ("Edge width ∝ |score|", None),
            (&widths[0].1, Some(("#555555", widths[0].0, ""))),
            (&widths[1].1, Some(("#555555", widths[1].0, ""))),
            (&widths[2].1, Some(("#555555", widths[2].0, ""))),
            ("Head input", None),
            ("q (query)", Some(("#555555", 2.0, qkv_dash(Some(Qkv::Q))))),
            ("k (key)", Some(("#555555", 2.0, qkv_dash(Some(Qkv::K))))),
            ("v (value)", Some(("#555555", 2.0, qkv_dash(Some(Qkv::V))))),
        ];
        let _ = writeln!(out, "<g class=\"legend\" font-size=\"{:.0}\">", o.font_size);
        let x = x0 + 8.0;
        for (k, (text, sample)) in lines.iter().enumerate() {
            let y = o.margin + LEGEND_ROW * (k as f32 + 0.5);
            let text = xml_escape(text);
            match sample {
                None => {
                    let _ = writeln!(
                        out,
                        "<text x=\"{x:.1}\" y=\"{y:.1}\" dominant-baseline=\"central\" \
                         font-weight=\"bold\">{text}</text>"
                    );
                }
                Some((color, width, dash)) => {
                    let _ = writeln!(
                        out,
                        "<line x1=\"{x:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" \
                         stroke=\"{color}\" stroke-width=\"{width:.2}\"{dash}/>\
                         <text x=\"{:.1}\" y=\"{y:.1}\" dominant-baseline=\"central\">{text}</text>",
                        x + LEGEND_SAMPLE,
                        x + LEGEND_SAMPLE + 8.0
                    );
                }
            }
        }
        out.push_str("</g>\n");
    }

    /// Appends one `<path>` per in-graph edge.
    fn svg_edges(&self, out: &mut String, places: &[Option<Place>], o: &SvgOptions) {
        let edges: Vec<usize> = self.edge_indices().filter(|&i| self.in_graph[i]).collect();
        let max_abs = self.max_abs_in_graph();
        let centre = places.iter().flatten().map(|p| p.x).sum::<f32>()
            / places.iter().flatten().count().max(1) as f32;
        let row_pitch = o.node_height + o.row_gap;
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
            // Rows skipped between the ends: such an edge bows out to the side it leans to,
            // further for longer spans, so that it passes beside the nodes in between.
            let skipped = ((y1 - y2 - o.row_gap) / row_pitch).round().max(0.0);
            let side = match (x1 + x2).partial_cmp(&(2.0 * centre)) {
                Some(std::cmp::Ordering::Less) => -1.0,
                Some(std::cmp::Ordering::Greater) => 1.0,
                _ if f % 2 == 0 => 1.0,
                _ => -1.0,
            };
            let bow = if skipped > 0.0 {
                side * bow_room(o).min(BOW_BASE * o.node_width + BOW_STEP * skipped) / BEZIER_BULGE
            } else {
                0.0
            };
            let (c1, c2) = (y1 + (y2 - y1) / 3.0, y1 + 2.0 * (y2 - y1) / 3.0);
            let (cx1, cx2) = (x1 + bow, x2 + bow);
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
            let (c1, c2) = if skipped > 0.0 {
                (c1, c2)
            } else {
                let mid = (y1 + y2) / 2.0;
                (mid, mid)
            };
            let dash = qkv_dash(reader.qkv);
            let _ = writeln!(
                out,
                "<path d=\"M{x1:.1},{y1:.1} C{cx1:.1},{c1:.1} {cx2:.1},{c2:.1} {x2:.1},{y2:.1}\" \
                 stroke=\"{color}\" stroke-width=\"{w:.2}\" stroke-opacity=\"0.8\"{dash}>\
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
        let is_head = matches!(node, Node::Head { .. });
        // A head's name sits in the upper part of its box, its `q k v` entry marks below.
        let name_y = if is_head { y + h / 3.0 } else { y + h / 2.0 };
        let marks = if is_head {
            let mark_y = y + h - QKV_MARK_SIZE / 2.0 - 2.0;
            (0..3)
                .map(|k| {
                    format!(
                        "<text x=\"{:.1}\" y=\"{mark_y:.1}\" text-anchor=\"middle\" \
                         dominant-baseline=\"central\" font-size=\"{QKV_MARK_SIZE:.0}\" \
                         fill=\"#555555\">{}</text>",
                        p.x + (k as f32 - 1.0) * o.node_width / 4.0,
                        ["q", "k", "v"][k]
                    )
                })
                .collect()
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "<g class=\"node\"><title>{name}{score}</title>\
             <rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" rx=\"6\" \
             fill=\"{fill}\" stroke=\"#333333\"/>\
             <text x=\"{:.1}\" y=\"{name_y:.1}\" text-anchor=\"middle\" \
             dominant-baseline=\"central\" font-size=\"{:.0}\">{name}</text>{marks}</g>",
            p.x, o.font_size
        );
    }
}
