//! Node and reader types, and parsing of EAP-IG node names.

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
    /// The three inputs in column order (`q`, then `k`, then `v`).
    pub const ALL: [Qkv; 3] = [Qkv::Q, Qkv::K, Qkv::V];

    /// The single letter used in names (`q`, `k`, `v`).
    pub fn letter(self) -> char {
        match self {
            Qkv::Q => 'q',
            Qkv::K => 'k',
            Qkv::V => 'v',
        }
    }

    /// Position in [`Qkv::ALL`]: 0 for `q`, 1 for `k`, 2 for `v`.
    pub fn index(self) -> usize {
        match self {
            Qkv::Q => 0,
            Qkv::K => 1,
            Qkv::V => 2,
        }
    }

    /// Parses the letter of a name (`q`, `k`, `v`).
    pub fn from_letter(letter: &str) -> Option<Qkv> {
        match letter {
            "q" => Some(Qkv::Q),
            "k" => Some(Qkv::K),
            "v" => Some(Qkv::V),
            _ => None,
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

/// Parses a reader name (`a1.h0<q>`, `m2`, `logits`), without checking it against a config.
pub fn parse_reader(name: &str) -> Option<Reader> {
    match name.strip_suffix('>') {
        Some(rest) => {
            let (node, letter) = rest.split_once('<')?;
            Some(Reader {
                node: parse_node(node)?,
                qkv: Some(Qkv::from_letter(letter)?),
            })
        }
        None => Some(Reader {
            node: parse_node(name)?,
            qkv: None,
        }),
    }
}
