//! Views of a [`ContextAttribution`]: a coloured terminal view and a self-contained HTML page
//! (inline CSS and JavaScript, nothing fetched).

use std::fmt::Write;

use fidelis_graph::format_score;

use crate::pecore::ContextAttribution;

const RED: &str = "\x1b[1;31m";
const GREEN: &str = "\x1b[1;32m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

/// The terminal view: the output with context-sensitive tokens marked (and their CTI scores),
/// then for each of them the contrast token and the context with its cues marked. ANSI colours
/// when `color`, brackets otherwise.
pub fn terminal(out: &ContextAttribution, color: bool) -> String {
    let paint = |s: &str, code: &str| {
        if color {
            format!("{code}{s}{RESET}")
        } else {
            s.to_string()
        }
    };
    let gap = gap(out);
    let mut t = String::new();
    let _ = writeln!(t, "{} {}", paint("Input context:", DIM), out.input_context);
    if let Some(oc) = &out.output_context {
        let _ = writeln!(t, "{} {oc}", paint("Output context:", DIM));
    }
    let mut line = String::new();
    for (j, tok) in out.output_current_tokens.iter().enumerate() {
        if j > 0 {
            line.push_str(gap);
        }
        if out.cci_scores.iter().any(|c| c.cti_idx == j) {
            let marked = format!("[{tok}]({})", format_score(out.cti_scores[j]));
            line.push_str(&paint(&marked, RED));
        } else {
            line.push_str(tok);
        }
    }
    let _ = writeln!(t, "{} {line}", paint("Output:", DIM));
    let _ = writeln!(
        t,
        "{}",
        paint(
            &format!(
                "CTI ({}): {} of {} tokens above threshold {:.4}",
                out.info.cti_metric.name(),
                out.cci_scores.len(),
                out.output_current_tokens.len(),
                out.cti_threshold
            ),
            DIM
        )
    );
    for c in &out.cci_scores {
        let _ = writeln!(
            t,
            "\n{} {:?} (CTI {:.4}) vs contextless {:?}; {} = {:.4}",
            paint("Token", DIM),
            c.cti_token,
            c.cti_score,
            c.contrast_token,
            out.info.attributed_fn,
            c.target_value
        );
        let mut ctx = String::new();
        for (i, tok) in out.input_context_tokens.iter().enumerate() {
            if i > 0 {
                ctx.push_str(gap);
            }
            if c.input_context_cues.contains(&i) {
                ctx.push_str(&paint(
                    &format!("[{tok}]({})", format_score(c.input_context_scores[i])),
                    GREEN,
                ));
            } else {
                ctx.push_str(tok);
            }
        }
        let _ = writeln!(t, "  {} {ctx}", paint("input context cues:", DIM));
        if let (Some(tokens), Some(scores)) = (&out.output_context_tokens, &c.output_context_scores)
        {
            let mut octx = String::new();
            for (i, tok) in tokens.iter().enumerate() {
                if i > 0 {
                    octx.push_str(gap);
                }
                if c.output_context_cues.contains(&i) {
                    octx.push_str(&paint(
                        &format!("[{tok}]({})", format_score(scores[i])),
                        GREEN,
                    ));
                } else {
                    octx.push_str(tok);
                }
            }
            let _ = writeln!(t, "  {} {octx}", paint("output context cues:", DIM));
        }
    }
    t
}

/// What goes between two displayed tokens: nothing for decoder-only results (their tokens carry
/// their spaces), a space for encoder-decoder results (a target's tokens are shown without the
/// word boundaries of SentencePiece or word-level vocabularies).
fn gap(out: &ContextAttribution) -> &'static str {
    if out.info.contextual_target_text.is_some() {
        " "
    } else {
        ""
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Background alpha in [0, 1] for a score relative to the largest `|score|`.
fn alpha(score: f32, max: f32) -> f32 {
    if max > 0.0 {
        (score.abs() / max).min(1.0)
    } else {
        0.0
    }
}

fn token_span(tok: &str, score: f32, max: f32, rgb: &str, class: &str, attrs: &str) -> String {
    format!(
        "<span class=\"tok {class}\" style=\"background:rgba({rgb},{:.3})\" title=\"{}\"{attrs}>{}</span>",
        alpha(score, max),
        format_score(score),
        escape(tok).replace(' ', "&nbsp;").replace('\n', "⏎")
    )
}

/// The HTML view: one self-contained page. Output tokens are shaded by CTI score (red); clicking
/// a context-sensitive token shows its cues in the context (blue, selected cues outlined).
pub fn html(out: &ContextAttribution) -> String {
    let max_cti = out.cti_scores.iter().fold(0f32, |m, s| m.max(s.abs()));
    let mut body = String::new();
    let gap = gap(out);
    let _ = write!(body, "<h2>Output</h2><p class=\"seq\">");
    for (j, tok) in out.output_current_tokens.iter().enumerate() {
        if j > 0 {
            body.push_str(gap);
        }
        let selected = out.cci_scores.iter().any(|c| c.cti_idx == j);
        let (class, attrs) = if selected {
            ("sel", format!(" data-cci=\"{j}\" onclick=\"show({j})\""))
        } else {
            ("", String::new())
        };
        body.push_str(&token_span(
            tok,
            out.cti_scores[j],
            max_cti,
            "220,40,40",
            class,
            &attrs,
        ));
    }
    let _ = write!(
        body,
        "</p><p class=\"note\">CTI metric {} · threshold {} · {} of {} tokens context-sensitive (outlined; click one)</p>",
        out.info.cti_metric.name(),
        format_score(out.cti_threshold),
        out.cci_scores.len(),
        out.output_current_tokens.len()
    );
    for c in &out.cci_scores {
        let max = c
            .input_context_scores
            .iter()
            .chain(c.output_context_scores.iter().flatten())
            .fold(0f32, |m, s| m.max(s.abs()));
        let _ = write!(
            body,
            "<div class=\"cci\" id=\"cci{}\"><h3>{} <small>(CTI {}; contextless model: {}; {} = {}; cue threshold {})</small></h3><p class=\"seq\"><b>Input context:</b> ",
            c.cti_idx,
            escape(&c.cti_token),
            format_score(c.cti_score),
            escape(&c.contrast_token),
            escape(&out.info.attributed_fn),
            format_score(c.target_value),
            format_score(c.cci_threshold)
        );
        for (i, tok) in out.input_context_tokens.iter().enumerate() {
            if i > 0 {
                body.push_str(gap);
            }
            let class = if c.input_context_cues.contains(&i) {
                "cue"
            } else {
                ""
            };
            body.push_str(&token_span(
                tok,
                c.input_context_scores[i],
                max,
                "40,90,220",
                class,
                "",
            ));
        }
        body.push_str("</p>");
        if let (Some(tokens), Some(scores)) = (&out.output_context_tokens, &c.output_context_scores)
        {
            body.push_str("<p class=\"seq\"><b>Output context:</b> ");
            for (i, tok) in tokens.iter().enumerate() {
                if i > 0 {
                    body.push_str(gap);
                }
                let class = if c.output_context_cues.contains(&i) {
                    "cue"
                } else {
                    ""
                };
                body.push_str(&token_span(tok, scores[i], max, "40,90,220", class, ""));
            }
            body.push_str("</p>");
        }
        body.push_str("</div>");
    }
    let first = out.cci_scores.first().map_or(-1, |c| c.cti_idx as i64);
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Fidelis context attribution</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60em; margin: 2em auto; color: #222; }}
.seq {{ line-height: 2.2; font-family: ui-monospace, monospace; }}
.tok {{ padding: 2px 1px; border-radius: 3px; }}
.sel {{ outline: 2px solid #b00; cursor: pointer; }}
.cue {{ outline: 2px solid #036; font-weight: bold; }}
.cci {{ display: none; border-top: 1px solid #ccc; }}
.cci.shown {{ display: block; }}
.note, small {{ color: #666; }}
</style></head><body>
<h1>Context attribution (PECoRe)</h1>
<p><b>Input context:</b> {ctx}</p>
<p><b>Contextless run:</b> <code>{cur}</code></p>{targets}
<p class="legend"><b>Legend:</b> <span class="tok" style="background:rgba(220,40,40,0.6)">red</span> output token, shaded by its context sensitivity (CTI score, relative to the largest); <span class="tok sel">outlined</span> above the CTI threshold, click to see its cues · <span class="tok" style="background:rgba(40,90,220,0.6)">blue</span> context token, shaded by |CCI score| for the chosen output token (relative to the largest); <span class="tok cue">bold outlined</span> a selected cue. Hover a token for its score.</p>
{body}
<script>
function show(j) {{
  document.querySelectorAll('.cci').forEach(function (d) {{ d.classList.remove('shown'); }});
  var d = document.getElementById('cci' + j);
  if (d) d.classList.add('shown');
}}
show({first});
</script>
</body></html>
"#,
        ctx = escape(&out.input_context),
        cur = escape(out.info.contextless_text.as_str()),
        targets = match (&out.output_context, &out.info.contextless_target_text) {
            (Some(oc), Some(less)) => format!(
                "\n<p><b>Output context:</b> {}</p>\n<p><b>Contextless target:</b> <code>{}</code></p>",
                escape(oc),
                escape(less)
            ),
            (None, Some(less)) => format!(
                "\n<p><b>Contextless target:</b> <code>{}</code></p>",
                escape(less)
            ),
            _ => String::new(),
        },
    )
}
