//! Quoting for the exported shell command and Rust snippet.

/// `argv` as one POSIX shell command line: words made only of safe characters stay bare, the
/// rest are single-quoted (`'` written as `'\''`).
pub fn shell_command(argv: &[String]) -> String {
    argv.iter()
        .map(|w| shell_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One word quoted for a POSIX shell.
pub fn shell_quote(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-./:,+=@%".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// A Rust string literal for `text`.
pub fn rust_string(text: &str) -> String {
    // `{:?}` of a str escapes quotes, backslashes and control characters the way Rust reads
    // them back.
    format!("{text:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("organism"), "organism");
        assert_eq!(shell_quote("--cti-std=-1"), "--cti-std=-1");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("Where's the key?"), r"'Where'\''s the key?'");
        assert_eq!(shell_quote("{context} {current}"), "'{context} {current}'");
        assert_eq!(rust_string("a \"b\"\n"), r#""a \"b\"\n""#);
    }
}
