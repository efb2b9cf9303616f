//! Graphviz DOT export, and rendering DOT to SVG with the external `dot` program.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::{Graph, GraphError};

/// Pen width of the weakest drawn edge, as in the EAP-IG reference's `to_image`.
const MIN_PENWIDTH: f32 = 0.6;
/// Pen width of the strongest drawn edge.
const MAX_PENWIDTH: f32 = 5.0;

impl Graph {
    /// Finite |score| of flat edge index `i` (0 for NaN / ±∞, which get the thinnest pen).
    pub(crate) fn finite_abs_score(&self, i: usize) -> f32 {
        let s = self.scores[i];
        if s.is_finite() { s.abs() } else { 0.0 }
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
        let max = drawn
            .iter()
            .map(|&i| self.finite_abs_score(i))
            .fold(0.0f32, f32::max);
        let min = drawn
            .iter()
            .map(|&i| self.finite_abs_score(i))
            .fold(f32::INFINITY, f32::min);
        for i in drawn {
            let (f, b) = (i / self.n_backward, i % self.n_backward);
            let norm = if max > min {
                (self.finite_abs_score(i) - min) / (max - min)
            } else {
                1.0
            };
            let pen = (norm * MAX_PENWIDTH).max(MIN_PENWIDTH);
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

/// The first executable file called `name` in a directory of `PATH`.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| [dir.join(name), dir.join(format!("{name}.exe"))])
        .find(|p| p.is_file())
}

/// Renders DOT source (e.g. from [`Graph::to_dot`]) to SVG by piping it through Graphviz's
/// `dot -Tsvg`. Returns `None` when `dot` is not on `PATH` (use [`Graph::to_svg`] instead), and
/// `Some(Err(GraphError::Render(..)))` when it fails to run or exits with an error.
pub fn render_svg_with_dot(dot_source: &str) -> Option<Result<String, GraphError>> {
    let dot = find_on_path("dot")?;
    Some(run_dot(&dot, dot_source))
}

/// Runs `dot -Tsvg` on `source`, returning its standard output.
fn run_dot(dot: &std::path::Path, source: &str) -> Result<String, GraphError> {
    let err = |e: std::io::Error| GraphError::Render(e.to_string());
    let mut child = Command::new(dot)
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(err)?;
    // Write from another thread so a large output cannot deadlock against a full stdin pipe.
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = source.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().map_err(err)?;
    writer
        .join()
        .map_err(|_| GraphError::Render("stdin writer panicked".into()))?
        .map_err(err)?;
    if !output.status.success() {
        let msg = String::from_utf8_lossy(&output.stderr);
        return Err(GraphError::Render(format!(
            "{}: {}",
            output.status,
            msg.trim()
        )));
    }
    String::from_utf8(output.stdout).map_err(|e| GraphError::Render(e.to_string()))
}
