//! README.md's commands for the shipped organism, run as written against the binary this test
//! builds, in the order the README gives them, in an empty folder, so that the README cannot
//! drift from the CLI.
//!
//! A command is one line of a ```sh block that starts with `fidelis ` (the README installs the
//! binary once with `cargo install --path crates/fidelis-cli`), continued over lines that end in
//! `\`, with a trailing `# comment` dropped. It is run when it needs no download and no GPU:
//! its `--model` is absent or `organism`, it has no `--config` (a file of the checkout), no
//! `--device` other than the CPU, and it is not `serve` (which runs until stopped) or `models`
//! (the network).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The command prefix the README uses for the binary.
const PREFIX: &str = "fidelis";

/// The README's shell lines, continuation lines joined and comments dropped.
fn shell_lines(readme: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for raw in readme.lines() {
        let trimmed = raw.trim();
        if trimmed.starts_with("```") {
            in_sh = !in_sh && (trimmed == "```sh" || trimmed == "```bash");
            continue;
        }
        if !in_sh {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                pending.push_str(head);
                pending.push(' ');
            }
            None => {
                pending.push_str(trimmed);
                let line = strip_comment(&pending).trim().to_string();
                if !line.is_empty() {
                    lines.push(line);
                }
                pending.clear();
            }
        }
    }
    lines
}

/// `line` without a `#` comment that starts outside quotes after whitespace.
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if prev_space => return &line[..i],
            _ => {}
        }
        prev_space = c.is_whitespace();
    }
    line
}

/// Splits a command line as a POSIX shell would for the quoting the README uses: words split on
/// whitespace, `"..."` and `'...'` quote (no variables, no globs), `\` escapes outside single
/// quotes.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                word.extend(chars.by_ref().take_while(|&c| c != '\''));
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => word.extend(chars.next()),
                        c => word.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// The value of `--flag VALUE` or `--flag=VALUE` in `args`.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let eq = format!("{name}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if a == name {
            args.get(i + 1).map(String::as_str)
        } else {
            a.strip_prefix(&eq)
        }
    })
}

/// Whether the README command `args` (after the prefix) runs offline on the organism.
fn runs_on_the_organism(args: &[String]) -> bool {
    let offline = !matches!(
        args.first().map(String::as_str),
        Some("serve" | "models") | None
    );
    let organism = flag(args, "--model").is_none_or(|m| m == "organism");
    let cpu = flag(args, "--device").is_none_or(|d| matches!(d, "cpu" | "flex"));
    offline && organism && cpu && flag(args, "--config").is_none()
}

/// The organism commands of README.md, as argument lists after the prefix. A command that
/// reads a file under `fidelis-out/` which a skipped command (one on SmolLM2, say) writes is
/// skipped too, and so on down the chain.
fn organism_commands(readme: &str) -> Vec<Vec<String>> {
    let mut skipped_outputs: Vec<String> = Vec::new();
    let mut commands = Vec::new();
    for words in shell_lines(readme).iter().map(|line| shell_words(line)) {
        if words.first().is_none_or(|w| w != PREFIX) {
            continue;
        }
        let args = words[1..].to_vec();
        let reads_skipped = args.iter().any(|a| skipped_outputs.contains(a));
        if runs_on_the_organism(&args) && !reads_skipped {
            commands.push(args);
        } else {
            let outputs = args.iter().filter(|a| a.starts_with("fidelis-out/"));
            skipped_outputs.extend(outputs.cloned());
        }
    }
    commands
}

fn readme() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// An empty folder of this test's own.
fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fidelis-readme-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_parser_reads_shell_as_written() {
    let text = "text\n```sh\nfidelis a --x \"b c\" 'd \"e\"' \\\n    --y z   # comment\ncargo build\n```\n```\nfidelis not-sh\n```\n";
    assert_eq!(shell_lines(text).len(), 2);
    assert_eq!(shell_lines(text)[1], "cargo build");
    assert_eq!(
        shell_words(&shell_lines(text)[0]),
        ["fidelis", "a", "--x", "b c", "d \"e\"", "--y", "z"]
    );
    assert_eq!(
        strip_comment("fidelis x --t \"a # b\" # c"),
        "fidelis x --t \"a # b\" "
    );
    let args = |s: &str| shell_words(s);
    assert!(runs_on_the_organism(&args("inspect")));
    assert!(runs_on_the_organism(&args("inspect --model organism")));
    assert!(!runs_on_the_organism(&args("inspect --model=smollm2")));
    assert!(!runs_on_the_organism(&args("inspect --config c.json")));
    assert!(!runs_on_the_organism(&args("generate --device wgpu")));
    assert!(!runs_on_the_organism(&args("serve")));
    assert!(!runs_on_the_organism(&args("models fetch smollm2")));
    let chain = "```sh\nfidelis circuit discover --model smollm2 --out fidelis-out/s.json\nfidelis circuit show fidelis-out/s.json --svg fidelis-out/s.svg\nfidelis circuit show fidelis-out/s.svg\nfidelis inspect\n```\n";
    assert_eq!(organism_commands(chain), [["inspect"]]);
}

/// One build profile throughout: the README installs the binary once and never mixes in
/// `cargo run` (each profile is a 10–15 minute Burn build on two cores).
#[test]
fn the_readme_installs_once_and_never_runs_cargo_run() {
    let lines = shell_lines(&readme());
    assert!(
        lines
            .iter()
            .any(|l| l == "cargo install --path crates/fidelis-cli"),
        "no install line"
    );
    let mixed: Vec<_> = lines.iter().filter(|l| l.contains("cargo run")).collect();
    assert!(mixed.is_empty(), "{mixed:?}");
}

#[test]
fn the_readme_organism_commands_run_as_written() {
    let commands = organism_commands(&readme());
    // Every command family is exercised, so that a parsing slip cannot pass by running none.
    let firsts: Vec<String> = commands
        .iter()
        .map(|a| a[..a.len().min(2)].join(" "))
        .collect();
    for wanted in [
        "inspect",
        "generate --prompt",
        "circuit discover",
        "circuit show",
        "circuit evaluate",
        "circuit compare",
        "attribute --prompt",
        "context --input-context",
    ] {
        assert!(
            firsts.iter().any(|f| f.starts_with(wanted)),
            "no `fidelis {wanted}` among the README's organism commands: {firsts:?}"
        );
    }
    let dir = scratch();
    for args in &commands {
        let shown = format!("{PREFIX} {}", args.join(" "));
        let run = Command::new(env!("CARGO_BIN_EXE_fidelis"))
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "README command failed: {shown}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
        eprintln!("ok: {shown}");
    }
    // Everything they wrote is in the one ignored output folder.
    let mut written: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(written, ["fidelis-out"]);
    for file in [
        "graph.json",
        "graph.curve.svg",
        "graph.curve.png",
        "eap.json",
        "context.html",
    ] {
        assert!(dir.join("fidelis-out").join(file).is_file(), "{file}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// What the README promises about where outputs go holds for git too.
#[test]
fn the_output_folder_is_ignored() {
    let gitignore = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.gitignore");
    let text = std::fs::read_to_string(gitignore).unwrap();
    assert!(text.lines().any(|l| l.trim() == "/fidelis-out/"), "{text}");
}
