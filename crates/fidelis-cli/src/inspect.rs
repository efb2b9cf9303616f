//! `fidelis inspect`: a model's architecture, size, graph and hook points, written for people
//! (`--json` writes the same facts for machines, with the config's own field names).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use fidelis_graph::{Graph, GraphConfig};
use fidelis_models::config::{ActivationFn, Architecture, NormKind, Positional, RopeScaling};
use fidelis_models::{Model, TransformerConfig, point};

use crate::progress::count;

/// Nodes and edges of the EAP-IG computational graph (input, heads, MLPs, logits; q/k/v inputs
/// of each head are separate).
pub fn graph_size(cfg: &TransformerConfig) -> (usize, usize) {
    let graph = Graph::new(GraphConfig::new(
        cfg.n_layers,
        cfg.n_heads,
        cfg.parallel_attn_mlp,
    ));
    (graph.n_nodes(), graph.n_edges())
}

/// `inspect --config`: what a `config.json` alone says (parameters estimated from the shapes).
pub fn config(path: &Path, cfg: &TransformerConfig, json: bool) -> Result<()> {
    let params = fidelis_models::model::estimate_elements(cfg);
    let (nodes, edges) = graph_size(cfg);
    let hook_points = point::all(cfg);
    if json {
        let value = serde_json::json!({
            "source": path,
            "config": cfg,
            "parameters_estimate": params,
            "graph": {"nodes": nodes, "edges": edges},
            "hook_points": hook_points,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let mut t = String::new();
    line(&mut t, "config", &path.display().to_string());
    line(&mut t, "architecture", &architecture(cfg));
    line(
        &mut t,
        "parameters",
        &format!(
            "≈ {} ({}; weight matrices and norms, from the shapes)",
            count(params as usize),
            millions(params)
        ),
    );
    shape(&mut t, cfg);
    graph_lines(&mut t, nodes, edges, hook_points.len());
    print!("{t}");
    Ok(())
}

/// `inspect --model`: the loaded model, its tokenizer's special tokens and its hook points.
pub fn model(model: &Model, json: bool) -> Result<()> {
    let cfg = model.config();
    let params = model.transformer.parameter_count();
    let (nodes, edges) = graph_size(cfg);
    let hook_points = point::all(cfg);
    if json {
        let value = serde_json::json!({
            "source": model.source,
            "config": cfg,
            "parameters": params,
            "graph": {"nodes": nodes, "edges": edges},
            "hook_points": hook_points,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    let mut t = String::new();
    let source = std::fs::canonicalize(&model.source).unwrap_or_else(|_| model.source.clone());
    line(&mut t, "source", &source.display().to_string());
    line(&mut t, "architecture", &architecture(cfg));
    line(
        &mut t,
        "parameters",
        &format!("{} ({})", count(params), millions(params as u64)),
    );
    shape(&mut t, cfg);
    let tok = &model.tokenizer;
    let special = |id: Option<u32>| match id {
        Some(id) => match tok.token_str(id) {
            Some(text) => format!("{text:?} (id {id})"),
            None => format!("id {id}"),
        },
        None => "none".to_string(),
    };
    line(
        &mut t,
        "tokens",
        &format!(
            "vocabulary of {} · BOS {} · EOS {}",
            count(tok.vocab_size()),
            special(tok.bos_id()),
            special(tok.eos_id())
        ),
    );
    graph_lines(&mut t, nodes, edges, hook_points.len());
    let _ = writeln!(t, "  per layer l:");
    for p in point::per_layer(cfg, 0) {
        let _ = writeln!(t, "    {}", p.replacen("blocks.0.", "blocks.{l}.", 1));
    }
    print!("{t}");
    Ok(())
}

/// One `label   value` line, labels aligned.
fn line(t: &mut String, label: &str, value: &str) {
    let _ = writeln!(t, "{label:<14}{value}");
}

/// `134.5 M` or `8.03 B` parameters.
fn millions(n: u64) -> String {
    if n >= 1_000_000_000 {
        format!("{:.2} B", n as f64 / 1e9)
    } else {
        format!("{:.1} M", n as f64 / 1e6)
    }
}

/// The family in its usual spelling, and the source's `model_type`.
fn architecture(cfg: &TransformerConfig) -> String {
    let family = match cfg.architecture {
        Architecture::Gpt2 => "GPT-2",
        Architecture::Llama => "Llama family",
        Architecture::GptNeoX => "GPT-NeoX",
        Architecture::Gemma2 => "Gemma 2",
    };
    format!("{family} (model_type {})", cfg.model_type)
}

fn norm(kind: NormKind) -> &'static str {
    match kind {
        NormKind::LayerNorm => "LayerNorm",
        NormKind::RmsNorm => "RMSNorm",
    }
}

fn activation(act: ActivationFn) -> &'static str {
    match act {
        ActivationFn::GeluTanh => "GELU (tanh approximation)",
        ActivationFn::Gelu => "GELU",
        ActivationFn::Silu => "SiLU",
        ActivationFn::Relu => "ReLU",
    }
}

/// How positions enter: `learned`, or `rotary (base 100000 · 64 of 64 head dimensions ·
/// Llama 3 scaling ×8)`.
fn positions(cfg: &TransformerConfig) -> String {
    match cfg.positional {
        Positional::Learned => "learned position embeddings".to_string(),
        Positional::Rotary {
            theta,
            rotary_dim,
            scaling,
        } => {
            let mut parts = vec![
                format!("base {theta}"),
                format!("{rotary_dim} of {} head dimensions", cfg.d_head),
            ];
            match scaling {
                RopeScaling::None => {}
                RopeScaling::Linear { factor } => parts.push(format!("linear scaling ×{factor}")),
                RopeScaling::Llama3 {
                    factor,
                    original_max_position_embeddings,
                    ..
                } => parts.push(format!(
                    "Llama 3 scaling ×{factor} from {} positions",
                    count(original_max_position_embeddings)
                )),
                RopeScaling::Factors(f) => parts.push(format!(
                    "{} per-frequency factors (GGUF rope_freqs)",
                    f.as_slice().len()
                )),
            }
            format!("rotary ({})", parts.join(" · "))
        }
    }
}

/// The shape, norm, MLP, position and attention lines.
fn shape(t: &mut String, cfg: &TransformerConfig) {
    let kv = if cfg.n_kv_heads == cfg.n_heads {
        String::new()
    } else {
        format!(" ({} key/value heads)", cfg.n_kv_heads)
    };
    line(
        t,
        "shape",
        &format!(
            "n_layers {} · d_model {} · n_heads {}{kv} · d_head {} · d_mlp {} · d_vocab {} · n_ctx {}",
            cfg.n_layers,
            cfg.d_model,
            cfg.n_heads,
            cfg.d_head,
            cfg.d_mlp,
            count(cfg.d_vocab),
            count(cfg.n_ctx)
        ),
    );
    line(
        t,
        "norm",
        &format!("{} (eps {:e})", norm(cfg.norm), cfg.norm_eps as f32),
    );
    let gated = if cfg.gated_mlp { "gated " } else { "" };
    let parallel = if cfg.parallel_attn_mlp {
        " · attention and MLP in parallel"
    } else {
        ""
    };
    line(
        t,
        "mlp",
        &format!("{gated}{}{parallel}", activation(cfg.act_fn)),
    );
    line(t, "positions", &positions(cfg));
    let extras = attention_extras(cfg);
    if !extras.is_empty() {
        line(t, "attention", &extras.join(" · "));
    }
}

/// What sets a model's attention apart from plain causal softmax attention.
fn attention_extras(cfg: &TransformerConfig) -> Vec<String> {
    let mut extras = Vec::new();
    if cfg.qk_norm {
        extras.push("queries and keys RMS-normalised per head".to_string());
    }
    if cfg.post_norms {
        extras.push("norms after attention and MLP".to_string());
    }
    if let Some(s) = cfg.embed_scale {
        extras.push(format!("embeddings × {}", round4(s)));
    }
    if let Some(s) = cfg.query_pre_attn_scalar {
        extras.push(format!("scores / √{s}"));
    }
    if let Some(c) = cfg.attn_softcap {
        extras.push(format!("scores capped at ±{c}"));
    }
    if let Some(c) = cfg.final_softcap {
        extras.push(format!("logits capped at ±{c}"));
    }
    let sliding = cfg.attention_windows.iter().filter(|w| w.is_some()).count();
    if sliding > 0 {
        let w = cfg
            .attention_windows
            .iter()
            .flatten()
            .max()
            .copied()
            .unwrap_or(0);
        extras.push(format!(
            "{sliding} of {} layers see a window of {} tokens",
            cfg.n_layers,
            count(w)
        ));
    }
    extras
}

/// `s` to four decimals, without trailing zeros (`48`, `47.9583`).
fn round4(s: f64) -> f64 {
    (s * 1e4).round() / 1e4
}

/// The graph and hook-point lines.
fn graph_lines(t: &mut String, nodes: usize, edges: usize, hook_points: usize) {
    line(
        t,
        "graph",
        &format!(
            "{} nodes · {} edges (EAP-IG edge graph)",
            count(nodes),
            count(edges)
        ),
    );
    line(t, "hook points", &format!("{} in all", count(hook_points)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpt2_small() -> TransformerConfig {
        let text = r#"{"model_type":"gpt2","vocab_size":50257,"n_positions":1024,"n_embd":768,"n_layer":12,"n_head":12}"#;
        let cfg: fidelis_models::gpt2::Gpt2Config = serde_json::from_str(text).unwrap();
        cfg.to_transformer().unwrap()
    }

    #[test]
    fn gpt2_small_has_32491_edges() {
        assert_eq!(graph_size(&gpt2_small()), (158, 32_491));
    }

    #[test]
    fn the_shape_reads_without_rust_debug_output() {
        let mut cfg = gpt2_small();
        let mut t = String::new();
        shape(&mut t, &cfg);
        assert!(t.contains("LayerNorm (eps 1e-5)"), "{t}");
        assert!(t.contains("GELU (tanh approximation)"), "{t}");
        assert!(t.contains("learned position embeddings"), "{t}");
        cfg.positional = Positional::Rotary {
            theta: 100_000.0,
            rotary_dim: 64,
            scaling: RopeScaling::None,
        };
        cfg.d_head = 64;
        let text = positions(&cfg);
        assert_eq!(text, "rotary (base 100000 · 64 of 64 head dimensions)");
        for debug in ["Rotary {", "Some(", "None", "GeluTanh", "theta:"] {
            assert!(
                !t.contains(debug) && !text.contains(debug),
                "{debug}: {t}{text}"
            );
        }
    }
}
