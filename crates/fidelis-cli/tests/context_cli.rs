//! `fidelis attribute` and `fidelis context` end to end on a fixture model: the files they
//! write, and clear errors for bad input.

use std::path::PathBuf;
use std::process::Command;

fn fixture(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fidelis-models/tests/fixtures")
        .join(name);
    p.to_string_lossy().into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fidelis-ctx-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fidelis(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fidelis"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn context_writes_json_and_html() {
    let dir = scratch("context");
    let (json, html) = (dir.join("ctx.json"), dir.join("ctx.html"));
    let model = fixture("tiny-gpt2");
    let run = fidelis(&[
        "context",
        "--model",
        &model,
        "--input-context",
        "the cat sat on the mat",
        "--input-current",
        "where is the cat",
        "--max-new-tokens",
        "6",
        "--no-color",
        "--json",
        json.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(value.is_object(), "{value}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<html") && !page.contains("http://") && !page.contains("https://"));
    assert!(
        page.contains("Legend:") && page.contains("CTI score"),
        "{page}"
    );
    assert!(!page.contains("-0.000"), "{page}");
}

#[test]
fn attribute_writes_json_for_every_method() {
    let dir = scratch("attribute");
    let model = fixture("tiny-llama-gqa");
    for method in ["saliency", "ixg", "ig", "attention", "occlusion"] {
        let json = dir.join(format!("{method}.json"));
        let run = fidelis(&[
            "attribute",
            "--model",
            &model,
            "--prompt",
            "the cat sat on the",
            "--method",
            method,
            "--json",
            json.to_str().unwrap(),
        ]);
        assert!(
            run.status.success(),
            "{method}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        let value: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert!(value.is_object(), "{method}: {value}");
    }
    // The HTML view has a colour legend, scores for people and, with --words, a word table.
    let html = dir.join("words.html");
    let run = fidelis(&[
        "attribute",
        "--model",
        &model,
        "--prompt",
        "the cat sat on the",
        "--words",
        "--html",
        html.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let page = std::fs::read_to_string(&html).unwrap();
    for want in [
        "Legend:",
        "positive",
        "negative",
        "Per word",
        ">cat <small>",
    ] {
        assert!(page.contains(want), "{want:?} missing: {page}");
    }
    assert!(!page.contains("-0.000"), "{page}");
}

#[test]
fn bad_context_input_is_a_clear_error() {
    let model = fixture("tiny-gpt2");
    let long = "word ".repeat(200);
    let cases: [(&[&str], &str); 3] = [
        (
            &["--input-context", "the cat", "--input-current", ""],
            "empty",
        ),
        (
            &["--input-context", &long, "--input-current", "where"],
            "context",
        ),
        (
            &[
                "--input-context",
                "the cat",
                "--input-current",
                "where",
                "--input-template",
                "{context}",
            ],
            "{current}",
        ),
    ];
    for (args, needle) in cases {
        let run = fidelis(&[&["context", "--model", model.as_str()][..], args].concat());
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{args:?} should fail");
        assert!(
            err.contains("error:") && err.contains(needle) && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
}

/// `context --dataset`: every line run over the flags, one JSON object per line out; a line
/// with an unknown field is refused by line and field before any model work.
#[test]
fn context_dataset_writes_one_result_per_line() {
    let dir = scratch("dataset");
    let data = dir.join("examples.jsonl");
    std::fs::write(
        &data,
        "{\"input_context\": \"The coin is blue. The key is in the red box.\", \
         \"input_current\": \"Question: Where is the key? Answer:\"}\n\n\
         {\"input_context\": \"The cat is black.\", \"input_current\": \"Question: What colour is \
         the cat? Answer:\", \"max_new_tokens\": 2}\n",
    )
    .unwrap();
    let out = dir.join("results.jsonl");
    let run = fidelis(&[
        "context",
        "--dataset",
        data.to_str().unwrap(),
        "--json",
        out.to_str().unwrap(),
        "--input-template",
        "Context: {context} {current}",
        "--max-new-tokens",
        "4",
        "--cti-std",
        "0",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        lines[0]["input_context"],
        "The coin is blue. The key is in the red box."
    );
    assert!(lines[1]["output_current_tokens"].as_array().unwrap().len() <= 2);
    std::fs::write(
        &data,
        "{\"input_current\": \"a\"}\n{\"input_current\": \"b\", \"bogus\": 1}\n",
    )
    .unwrap();
    let bad = fidelis(&[
        "context",
        "--dataset",
        data.to_str().unwrap(),
        "--json",
        out.to_str().unwrap(),
    ]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("examples.jsonl:2") && err.contains("unknown field `bogus`"),
        "{err}"
    );
}

/// `attribute --dataset` (Inseq's `attribute-dataset`): one report per line; a bad value is
/// refused by line and field.
#[test]
fn attribute_dataset_writes_one_report_per_line() {
    let dir = scratch("attr-dataset");
    let data = dir.join("prompts.jsonl");
    std::fs::write(
        &data,
        "{\"prompt\": \"When Mary and John went to the store, John gave a drink to\"}\n\
         {\"prompt\": \"The cat sat on the\", \"method\": \"ixg\", \"max_new_tokens\": 2}\n",
    )
    .unwrap();
    let out = dir.join("reports.jsonl");
    let run = fidelis(&[
        "attribute",
        "--dataset",
        data.to_str().unwrap(),
        "--json",
        out.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let reports: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[1]["method"], "ixg");
    assert_eq!(reports[1]["steps"].as_array().unwrap().len(), 2);
    std::fs::write(&data, "{\"prompt\": \"a b\", \"max_new_tokens\": 0}\n").unwrap();
    let bad = fidelis(&[
        "attribute",
        "--dataset",
        data.to_str().unwrap(),
        "--json",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(
        err.contains("prompts.jsonl:1") && err.contains("max_new_tokens"),
        "{err}"
    );
}

fn seq2seq_organism() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/seq2seq-organism")
        .to_string_lossy()
        .into_owned()
}

/// `fidelis context` on the encoder-decoder organism: the model kind is detected, the output
/// (generated after the forced output context) is the reference translation, the pronoun is the
/// one flagged token, its antecedent is a cue, and the views show both contexts.
#[test]
fn context_runs_on_the_seq2seq_organism() {
    let dir = scratch("context-seq2seq");
    let (json, html) = (dir.join("ctx.json"), dir.join("ctx.html"));
    let model = seq2seq_organism();
    let run = fidelis(&[
        "context",
        "--model",
        &model,
        "--input-context",
        "the clock follows the bulb .",
        "--input-current",
        "it is near the factory .",
        "--output-context",
        "l' horloge suit l' ampoule .",
        "--input-template",
        "{context} <brk> {current}",
        "--output-template",
        "{context} <brk> {current}",
        "--method",
        "occlusion",
        "--cci-topk",
        "3",
        "--cci-std",
        "-1",
        "--no-color",
        "--json",
        json.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("output context cues:"), "{stdout}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["output_current"], "elle est pres l' usine .");
    assert_eq!(v["output_context_tokens"][1], "horloge");
    let cci = &v["cci_scores"][0];
    assert_eq!(cci["cti_token"], "elle");
    assert_eq!(cci["contrast_token"], "il");
    let input_cues = cci["input_context_cues"].as_array().unwrap();
    let output_cues = cci["output_context_cues"].as_array().unwrap();
    assert_eq!(input_cues.len() + output_cues.len(), 3);
    assert!(
        input_cues.contains(&1.into()) || output_cues.contains(&1.into()),
        "the antecedent (clock / horloge) is a cue: {cci}"
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("Output context:") && page.contains("horloge"),
        "{page}"
    );
}

/// `fidelis attribute` on the encoder-decoder organism: every step is attributed to the source
/// and the decoder prefix, for every method.
#[test]
fn attribute_runs_on_the_seq2seq_organism() {
    let dir = scratch("attribute-seq2seq");
    let model = seq2seq_organism();
    let prompt = "the clock follows the bulb . <brk> it is near the factory .";
    for method in ["saliency", "ixg", "ig", "attention", "occlusion"] {
        let json = dir.join(format!("{method}.json"));
        let run = fidelis(&[
            "attribute",
            "--model",
            &model,
            "--prompt",
            prompt,
            "--output",
            "l' horloge suit l' ampoule . <brk> elle",
            "--method",
            method,
            "--words",
            "--json",
            json.to_str().unwrap(),
        ]);
        assert!(
            run.status.success(),
            "{method}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let source_len = v["source_len"].as_u64().unwrap() as usize;
        assert_eq!(source_len, 14, "13 words and </s>");
        let steps = v["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 8);
        for (j, s) in steps.iter().enumerate() {
            // Source, decoder start token, earlier output tokens.
            assert_eq!(s["scores"].as_array().unwrap().len(), source_len + 1 + j);
            assert_eq!(s["words"].as_array().unwrap().len(), 13);
        }
        assert_eq!(steps[7]["token"], "elle");
    }
}

/// mBART and M2M100 sources carry a language token: `--source-lang` names it, and without it
/// the error says so.
#[test]
fn context_takes_source_languages() {
    for name in ["tiny-mbart", "tiny-m2m100"] {
        let model = fixture(name);
        let base = [
            "context",
            "--model",
            &model,
            "--input-context",
            "The cat sat on the mat.",
            "--input-current",
            "Where is the cat?",
            "--output-current",
            "On the mat.",
            "--no-color",
        ];
        let run = fidelis(&base);
        assert!(!run.status.success());
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(err.contains("source-language token"), "{name}: {err}");
        let run = fidelis(
            &[
                &base[..],
                &["--source-lang", "en_XX", "--target-lang", "de_DE"],
            ]
            .concat(),
        );
        assert!(
            run.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(String::from_utf8_lossy(&run.stdout).contains("CTI (kl)"));
        let run = fidelis(&[
            "attribute",
            "--model",
            &model,
            "--prompt",
            "The cat sat on the mat.",
            "--max-new-tokens",
            "3",
            "--source-lang",
            "en_XX",
        ]);
        assert!(
            run.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
    // Languages are for encoder-decoders.
    let run = fidelis(&[
        "context",
        "--model",
        &fixture("tiny-gpt2"),
        "--input-context",
        "a b",
        "--input-current",
        "c d",
        "--output-current",
        "e",
        "--source-lang",
        "en_XX",
    ]);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("encoder-decoder"));
}
