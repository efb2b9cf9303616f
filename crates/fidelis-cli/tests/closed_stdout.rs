//! A closed stdout (`fidelis inspect | head -5`) ends the program quietly: status 0 or the
//! conventional 141 (killed by SIGPIPE), never a panic (issue 18).

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};

#[test]
fn a_closed_stdout_ends_quietly() {
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/configs");
    let config = std::fs::read_dir(&config)
        .expect("models/configs")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("a config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_fidelis"))
        .args(["inspect", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fidelis");
    // Close the read end at once, as `head` does once it has its lines.
    drop(child.stdout.take());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    let status = child.wait().expect("wait");
    #[cfg(unix)]
    let by_sigpipe = std::os::unix::process::ExitStatusExt::signal(&status) == Some(13);
    #[cfg(not(unix))]
    let by_sigpipe = false;
    assert!(
        status.success() || status.code() == Some(141) || by_sigpipe,
        "{status:?}: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
