//! PECoRe checked against independent references: CTI scores against per-prefix runs and a
//! separate KL computation, CCI scores against a direct token attribution of the prefix, the
//! selector on hand-made score vectors, templates and chat templates on hand-made strings, the
//! views, and clear errors for bad input.

use std::path::PathBuf;

use burn::prelude::*;
use burn::tensor::TensorData;
use fidelis_attribution::token::{TargetFunction, TokenMethod, attribute_tokens};
use fidelis_context::prompt::{ChatTemplate, format_template};
use fidelis_context::{
    ContextError, CtiMetric, PecoreConfig, attribute_context, pecore::cci_target, render, select,
};
use fidelis_models::{Hooks, Model};

fn device() -> Device {
    match std::env::var("FIDELIS_TEST_DEVICE").as_deref() {
        #[cfg(feature = "wgpu")]
        Ok("wgpu") => return Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        #[cfg(feature = "cuda")]
        Ok("cuda") => return Device::cuda(0),
        _ => {}
    }
    #[cfg(feature = "flex")]
    return Device::flex();
    #[cfg(all(not(feature = "flex"), feature = "ndarray"))]
    #[allow(deprecated)]
    return Device::ndarray();
    #[cfg(not(any(feature = "flex", feature = "ndarray")))]
    return Device::default();
}

fn load(name: &str) -> Model {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fidelis-models/tests/fixtures");
    Model::load(&dir.join(name), &device()).unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

const CONTEXT: &str = "Mary is sick.";
const CURRENT: &str = "Who is ill?";
const OUTPUT: &str = "Mary is.";

fn example() -> PecoreConfig {
    let mut cfg = PecoreConfig::new(CONTEXT, CURRENT);
    cfg.output_current = Some(OUTPUT.into());
    cfg
}

/// Next-token distribution (log-probabilities, f64) after `ids`, from a plain run of that prefix.
fn next_logprobs(model: &Model, ids: &[u32]) -> Vec<f64> {
    let data: Vec<i64> = ids.iter().map(|&t| i64::from(t)).collect();
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(data, [1, ids.len()]), &device());
    let logits = model
        .transformer
        .forward(tokens, &mut Hooks::new())
        .unwrap();
    let [_, pos, vocab] = logits.dims();
    let v: Vec<f32> = logits.into_data().convert::<f32>().try_into_vec().unwrap();
    let z: Vec<f64> = v[(pos - 1) * vocab..]
        .iter()
        .map(|&x| f64::from(x))
        .collect();
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = m + z.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
    z.iter().map(|x| x - lse).collect()
}

#[test]
fn cti_scores_equal_an_independent_two_distribution_computation() {
    for name in ["tiny-gpt2", "tiny-llama-gqa"] {
        let model = load(name);
        let tok = &model.tokenizer;
        for metric in [
            CtiMetric::Kl,
            CtiMetric::KlCtx,
            CtiMetric::ContrastProbDiff,
            CtiMetric::CtxProbDiff,
            CtiMetric::Pcxmi,
        ] {
            let mut cfg = example();
            cfg.cti_metric = metric;
            cfg.cti_std = None;
            cfg.cti_topk = Some(1);
            let out = attribute_context(&model, &cfg).unwrap();
            // The two texts, spelled out here rather than taken from the library's layout.
            let ctx_ids = tok
                .encode_prompt(&format!("{CONTEXT} {CURRENT} {OUTPUT}"), true)
                .unwrap();
            let less_ids = tok
                .encode_prompt(&format!("{CURRENT} {OUTPUT}"), true)
                .unwrap();
            let n = out.output_current_tokens.len();
            assert_eq!(ctx_ids[ctx_ids.len() - n..], less_ids[less_ids.len() - n..]);
            assert_eq!(out.cti_scores.len(), n);
            for j in 0..n {
                let (pc, pn) = (ctx_ids.len() - n + j, less_ids.len() - n + j);
                let p = next_logprobs(&model, &ctx_ids[..pc]);
                let q = next_logprobs(&model, &less_ids[..pn]);
                let t = ctx_ids[pc] as usize;
                // p contextual, q contextless; Inseq's orientation (the contextless run is
                // its original, the contextual run its contrast) for kl, contrast-prob-diff
                // and pcxmi (in bits).
                let kl = |a: &[f64], b: &[f64]| -> f64 {
                    a.iter().zip(b).map(|(x, y)| x.exp() * (x - y)).sum()
                };
                let want = match metric {
                    CtiMetric::Kl => kl(&q, &p),
                    CtiMetric::KlCtx => kl(&p, &q),
                    CtiMetric::ContrastProbDiff => q[t].exp() - p[t].exp(),
                    CtiMetric::CtxProbDiff => p[t].exp() - q[t].exp(),
                    CtiMetric::Pcxmi => (p[t] - q[t]) / std::f64::consts::LN_2,
                };
                let got = f64::from(out.cti_scores[j]);
                assert!(
                    (got - want).abs() < 1e-4 * want.abs().max(1e-2),
                    "{name} {metric:?} token {j}: {got} vs {want}"
                );
            }
            // Top-1: the token with the largest |score|.
            let best = (0..n)
                .max_by(|&a, &b| out.cti_scores[a].abs().total_cmp(&out.cti_scores[b].abs()))
                .unwrap();
            assert_eq!(out.cci_scores.len(), 1);
            assert_eq!(
                out.cci_scores[0].cti_idx, best,
                "{name} {metric:?} {:?}",
                out.cti_scores
            );
        }
    }
}

#[test]
fn cci_scores_are_the_token_attribution_of_the_contextual_prefix() {
    let model = load("tiny-gpt2");
    let tok = &model.tokenizer;
    for (method, function) in [
        (TokenMethod::Saliency, TargetFunction::ContrastProbDiff),
        (TokenMethod::InputXGradient, TargetFunction::KlDivergence),
        (TokenMethod::Occlusion, TargetFunction::Probability),
    ] {
        let mut cfg = example();
        cfg.cti_std = None; // every token
        cfg.attribution.method = method;
        cfg.cci_target = function;
        let out = attribute_context(&model, &cfg).unwrap();
        let ctx_ids = tok
            .encode_prompt(&format!("{CONTEXT} {CURRENT} {OUTPUT}"), true)
            .unwrap();
        let less_ids = tok
            .encode_prompt(&format!("{CURRENT} {OUTPUT}"), true)
            .unwrap();
        let context_len = tok.encode(CONTEXT).unwrap().len();
        assert_eq!(out.input_context_tokens.len(), context_len);
        let n = out.output_current_tokens.len();
        assert_eq!(out.cci_scores.len(), n);
        for c in &out.cci_scores {
            let (pc, pn) = (
                ctx_ids.len() - n + c.cti_idx,
                less_ids.len() - n + c.cti_idx,
            );
            let q = next_logprobs(&model, &less_ids[..pn]);
            let contrast = q
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap()
                .0 as u32;
            let q32: Vec<f32> = q.iter().map(|&x| x as f32).collect();
            let target = cci_target(function, ctx_ids[pc], contrast, q32);
            let direct = attribute_tokens(
                &model.transformer,
                &ctx_ids[..pc],
                &target,
                &cfg.attribution,
            )
            .unwrap();
            // BOS is position 0, the context follows.
            let want = &direct.scores[1..1 + context_len];
            for (a, b) in c.input_context_scores.iter().zip(want) {
                assert!(
                    (a - b).abs() < 1e-4 * b.abs().max(1e-3),
                    "{method:?}: {a} vs {b}"
                );
            }
            assert_eq!(
                c.contrast_token,
                fidelis_context::prompt::display_token(tok, contrast)
            );
            for &cue in &c.input_context_cues {
                assert!(cue < context_len);
            }
        }
    }
}

#[test]
fn output_context_gets_its_own_scores() {
    let model = load("tiny-llama-gqa");
    let mut cfg = example();
    cfg.output_context = Some("Yes.".into());
    cfg.cti_std = None;
    cfg.cti_topk = Some(2);
    let out = attribute_context(&model, &cfg).unwrap();
    let n_octx = out.output_context_tokens.as_ref().unwrap().len();
    assert!(n_octx > 0);
    assert_eq!(out.cci_scores.len(), 2);
    for c in &out.cci_scores {
        assert_eq!(c.output_context_scores.as_ref().unwrap().len(), n_octx);
        assert!(c.output_context_cues.iter().all(|&i| i < n_octx));
    }
    assert!(out.info.contextual_text.ends_with("Yes. Mary is."));
    assert!(!out.info.contextless_text.contains("Yes."));
}

#[test]
fn generated_output_is_used_when_none_is_given() {
    let model = load("tiny-gpt2");
    let mut cfg = PecoreConfig::new(CONTEXT, CURRENT);
    cfg.max_new_tokens = 4;
    match attribute_context(&model, &cfg) {
        Ok(out) => {
            assert!(out.info.generated);
            assert!(!out.output_current.is_empty());
            assert_eq!(out.cti_scores.len(), out.output_current_tokens.len());
        }
        // A random tiny model may produce only whitespace or EOS: that must be a clear error.
        Err(e) => assert!(e.to_string().contains("generated output"), "{e}"),
    }
}

fn check(scores: &[f32], std: Option<f32>, topk: Option<usize>, want: &[usize], threshold: f32) {
    let s = select(scores, std, topk).unwrap();
    assert_eq!(
        s.positions(),
        want,
        "scores {scores:?} std {std:?} topk {topk:?}"
    );
    assert!(
        (s.threshold - threshold).abs() < 1e-5,
        "threshold {} vs {threshold}",
        s.threshold
    );
}

#[test]
fn selector_cases() {
    // mean 2.5, sample std √(5/3) = 1.29099: threshold 3.79099 → only 4 (index 3).
    check(&[1.0, 2.0, 3.0, 4.0], Some(1.0), None, &[3], 3.790_994);
    // λ = 0.5 → 3.145 → 4.
    check(&[1.0, 2.0, 3.0, 4.0], Some(0.5), None, &[3], 3.145_497);
    // λ = 0 → the mean: 3 and 4, ranked by |score|.
    check(&[1.0, 2.0, 3.0, 4.0], Some(0.0), None, &[3, 2], 2.5);
    // No threshold: everything, ranked; top-k cuts.
    check(&[0.1, -0.5, 0.3], None, None, &[1, 2, 0], 0.0);
    check(&[0.1, -0.5, 0.3], None, Some(2), &[1, 2], 0.0);
    // Negative scores compare by absolute value against a threshold from signed scores.
    check(&[-4.0, 1.0, 1.0, 1.0], Some(1.0), None, &[0], 2.25);
    // Ties keep position order.
    check(&[2.0, 5.0, 5.0, 0.0, 5.0], None, Some(2), &[1, 2], 0.0);
    check(&[5.0, 5.0, 0.0, 0.0], Some(0.0), None, &[0, 1], 2.5);
    // All-equal scores: std 0, everything passes; top-k keeps the first positions.
    check(&[0.7; 4], Some(1.0), None, &[0, 1, 2, 3], 0.7);
    check(&[0.7; 4], Some(1.0), Some(2), &[0, 1], 0.7);
    // One score: threshold is the score itself.
    check(&[3.0], Some(2.0), None, &[0], 3.0);
    check(&[], Some(1.0), None, &[], 0.0);
    // Top-k larger than the selection.
    check(&[1.0, 2.0, 3.0, 4.0], Some(1.0), Some(10), &[3], 3.790_994);
    assert!(select(&[1.0, f32::NAN], Some(1.0), None).is_err());
    assert!(select(&[1.0], Some(f32::INFINITY), None).is_err());
}

#[test]
fn templates_and_chat_templates() {
    let f = format_template("{context} {current}", "Q?", Some("C.")).unwrap();
    assert_eq!(f.text, "C. Q?");
    assert_eq!(f.context, Some(0..2));
    assert_eq!(f.current, 3..5);
    let f = format_template("Q: {current}\nContext: {context}", "why", Some("because")).unwrap();
    assert_eq!(&f.text[f.current.clone()], "why");
    assert_eq!(&f.text[f.context.clone().unwrap()], "because");
    let err = |t: &str, ctx: Option<&str>| format_template(t, "x", ctx).unwrap_err().to_string();
    assert!(err("{context} only", Some("c")).contains("{current}"));
    assert!(err("{current}", Some("c")).contains("{context}"));
    assert!(err("{context} {current}", None).contains("no context was given"));
    assert!(err("{current} {other}", None).contains("only {context} and {current}"));

    let smol = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}";
    let chat = ChatTemplate::new(smol, "<|im_start|>", "<|im_end|>").unwrap();
    let (text, range) = chat.wrap_user("Hi").unwrap();
    assert_eq!(
        text,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging \
         Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    );
    assert_eq!(&text[range], "Hi");
    assert_eq!(chat.end_of_turn(), "<|im_end|>");
    // SmolLM2's BOS is `<|im_start|>` itself, which the template writes first.
    assert!(chat.uses_bos());
    // A Llama-3-style template written here: BOS text first, headers, `| trim`, a generation
    // prompt.
    let llama = "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}\
                 <|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}\
                 {% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\
                 \n\n{% endif %}";
    let chat = ChatTemplate::new(llama, "<|begin_of_text|>", "<|end_of_text|>").unwrap();
    let (text, range) = chat.wrap_user("Hi").unwrap();
    assert_eq!(
        text,
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>\
         <|start_header_id|>assistant<|end_header_id|>\n\n"
    );
    assert_eq!(&text[range], "Hi");
    assert_eq!(chat.end_of_turn(), "<|eot_id|>");
    assert!(chat.uses_bos());
    // Python string methods and raise_exception, as transformers' templates use them.
    let py = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('user first') }}{% endif %}\
              {{ messages[0]['content'].upper() }}";
    let err = ChatTemplate::new(py, "", "").unwrap_err().to_string();
    assert!(
        err.contains("does not write the user message as given"),
        "{err}"
    );
    assert!(
        ChatTemplate::new("{% for %}", "", "")
            .unwrap_err()
            .to_string()
            .contains("chat template")
    );
}

#[test]
fn views_and_json_carry_inseq_fields() {
    let model = load("tiny-gpt2");
    let mut cfg = example();
    cfg.cti_std = Some(0.0);
    let out = attribute_context(&model, &cfg).unwrap();
    let json: serde_json::Value = serde_json::to_value(&out).unwrap();
    for key in [
        "input_context",
        "input_context_tokens",
        "output_context",
        "output_context_tokens",
        "output_current",
        "output_current_tokens",
        "cti_scores",
        "cci_scores",
        "info",
    ] {
        assert!(json.get(key).is_some(), "missing {key}");
    }
    let cci = &json["cci_scores"][0];
    for key in [
        "cti_idx",
        "cti_token",
        "cti_score",
        "contrast_token",
        "contextual_output",
        "contextless_output",
        "input_context_scores",
        "output_context_scores",
    ] {
        assert!(cci.get(key).is_some(), "missing cci_scores[0].{key}");
    }
    let html = render::html(&out);
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(!html.contains("http://") && !html.contains("https://") && !html.contains(" src="));
    assert!(html.contains("<style>") && html.contains("<script>"));
    let term = render::terminal(&out, false);
    assert!(term.contains("Output:") && term.contains("input context cues:"));
    assert!(render::terminal(&out, true).contains("\x1b[1;31m"));
}

#[test]
fn bad_input_gets_clear_errors() {
    let model = load("tiny-gpt2");
    let run = |cfg: &PecoreConfig| attribute_context(&model, cfg).unwrap_err();
    let mut cfg = example();
    cfg.input_current = "  ".into();
    assert!(matches!(run(&cfg), ContextError::Empty(m) if m.contains("input current")));
    let mut cfg = example();
    cfg.output_current = Some(String::new());
    assert!(
        run(&cfg)
            .to_string()
            .contains("output current text is empty")
    );
    let mut cfg = example();
    cfg.input_context = "word ".repeat(40);
    let e = run(&cfg);
    assert!(matches!(e, ContextError::TooLong { n_ctx: 64, .. }), "{e}");
    assert!(e.to_string().contains("context window of 64"));
    let mut cfg = example();
    cfg.input_template = "{context} and more".into();
    assert!(run(&cfg).to_string().contains("{current}"));
    // The output glues onto the last input word, which differs with and without the context.
    let mut cfg = example();
    cfg.input_template = "{current} {context}".into();
    cfg.separator = String::new();
    cfg.input_current = "Who is il".into();
    cfg.input_context = "Mary is sick".into();
    cfg.output_current = Some("l".into());
    let e = run(&cfg);
    assert!(
        matches!(e, ContextError::TokenizationMismatch { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("tokenizes differently"));
}

#[derive(serde::Deserialize)]
struct ChatMessage {
    role: String,
    content: String,
}

#[derive(serde::Deserialize)]
struct ChatCase {
    messages: Vec<ChatMessage>,
    add_generation_prompt: bool,
    text: String,
}

#[derive(serde::Deserialize)]
struct ChatFixture {
    chat_template: String,
    bos_token: String,
    eos_token: String,
    cases: Vec<ChatCase>,
}

/// SmolLM2's own chat template, read from its GGUF by the fixtures script, rendered by
/// minijinja as transformers' `apply_chat_template` renders it (fixture
/// `smollm2/chat_template.json`).
#[test]
fn smollm2_chat_template_renders_as_transformers() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fidelis-models/tests/fixtures/smollm2/chat_template.json");
    let text = std::fs::read_to_string(path).unwrap();
    let fx: ChatFixture = serde_json::from_str(&text).unwrap();
    let chat = ChatTemplate::new(&fx.chat_template, &fx.bos_token, &fx.eos_token).unwrap();
    for case in &fx.cases {
        let messages: Vec<(&str, &str)> = case
            .messages
            .iter()
            .map(|m| (m.role.as_str(), m.content.as_str()))
            .collect();
        let got = chat.render(&messages, case.add_generation_prompt).unwrap();
        assert_eq!(got, case.text, "{:?}", case.messages.len());
    }
    assert_eq!(chat.end_of_turn(), "<|im_end|>");
}
