//! `fidelis inspect --plan` from a config file and from a model folder: the JSON's terms add up
//! to its peak, passes follow the method, and absurd sizes are errors that name the option.

use std::path::PathBuf;
use std::process::{Command, Output};

fn fidelis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fidelis"))
        .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .args(args)
        .output()
        .unwrap()
}

fn plan_json(args: &[&str]) -> serde_json::Value {
    let out = fidelis(&[&["inspect", "--plan", "--json"], args].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_documented_example_adds_up_and_counts_its_passes() {
    let config = "models/configs/llama-3.2-1b.json";
    let args = [
        "--config",
        config,
        "--method",
        "eap-ig-inputs",
        "--batch",
        "8",
        "--tokens",
        "16",
    ];
    let v = plan_json(&args);
    let terms = v["breakdown"].as_array().unwrap();
    let sum: u64 = terms.iter().map(|t| t["bytes"].as_u64().unwrap()).sum();
    assert_eq!(sum, v["peak_bytes"].as_u64().unwrap(), "{v}");
    // 64 pairs (discover's default) in 8 batches: 2 recording forwards + 5 steps each.
    assert_eq!(v["forward_passes"], 8 * 7);
    assert_eq!(v["backward_passes"], 8 * 5);
    assert!(v["verdict"].as_str().unwrap().contains("GiB"), "{v}");
    // Half precision halves the tensors; the text form prints the same peak.
    let half = plan_json(&[&args[..], &["--dtype", "bf16"]].concat());
    assert!(half["peak_bytes"].as_u64() < v["peak_bytes"].as_u64());
    let out = fidelis(&[&["inspect", "--plan"], &args[..]].concat());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("peak memory") && text.contains("weights") && text.contains("verdict"),
        "{text}"
    );
}

#[test]
fn a_model_folder_is_planned_from_its_config_alone() {
    let v = plan_json(&[
        "--model", "organism", "--method", "exact", "--tokens", "8", "--pairs", "4",
    ]);
    assert_eq!(v["backward_passes"], 0);
    assert_eq!(v["peak_phase"], "patching pass");
}

#[test]
fn absurd_sizes_are_named_errors() {
    let config = "models/configs/gpt2-small.json";
    let cases: [(&[&str], &str); 5] = [
        (&["--tokens", "0"], "tokens must be at least 1"),
        (&["--tokens", "1025"], "context of 1024"),
        (&["--tokens", "18446744073709551615"], "context of 1024"),
        (
            &["--tokens", "8", "--batch", "0"],
            "batch size must be at least 1",
        ),
        (
            &[
                "--tokens",
                "1024",
                "--batch",
                "18446744073709551615",
                "--pairs",
                "18446744073709551615",
            ],
            "too large",
        ),
    ];
    for (args, want) in cases {
        let out = fidelis(&[&["inspect", "--plan", "--config", config], args].concat());
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // Plan flags without --plan, and --plan without --tokens, are usage errors.
    assert!(
        !fidelis(&["inspect", "--config", config, "--tokens", "8"])
            .status
            .success()
    );
    assert!(
        !fidelis(&["inspect", "--config", config, "--plan"])
            .status
            .success()
    );
}
