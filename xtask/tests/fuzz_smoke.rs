//! A short run of `cargo xtask fuzz` (a few hundred inputs per format, seconds): no loader
//! panics, aborts or hangs on them (issue 18). The long runs are in docs/reliability.md.

#[test]
fn a_short_fuzz_run_finds_no_failures() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["fuzz", "--inputs", "200", "--minutes", "5"])
        .output()
        .expect("run xtask fuzz");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for format in [
        "safetensors",
        "gguf",
        "config",
        "tokenizer",
        "graph",
        "tasks",
    ] {
        assert!(
            stdout.contains(&format!("| {format} | 200 |")),
            "{format} did not run 200 inputs:\n{stdout}"
        );
    }
}
