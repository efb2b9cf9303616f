//! Loading the EAP-IG reference CSV format.
//!
//! Columns `clean`, `corrupted`, `correct_idx`, `incorrect_idx` (token ids of the model the file
//! was made for; a cell holds one id, `47764`, or a list, `"[1, 2]"`). Other columns (the
//! reference's unnamed index, `corrupted_hard`) are ignored. A Greater-Than file in the
//! reference's form, with a `label` column (the start year's two-digit suffix) instead of the id
//! columns, is read too: its answer sets are built with the given tokenizer as
//! [`crate::Task::GreaterThan`] builds them.
//!
//! Quoting follows RFC 4180: fields may be wrapped in `"`, with `""` for a literal quote, and a
//! quoted field may hold commas and line breaks.

use std::path::Path;

use crate::example::prompt_lengths;
use crate::greater_than::{labels_for_start, year_suffix_tokens};
use crate::{Example, TaskError, TextTokenizer};

/// One CSV record: its fields and the 1-based line it starts on.
#[derive(Debug)]
struct Record {
    line: usize,
    fields: Vec<String>,
}

/// Loads examples from an EAP-IG reference CSV file; see the module doc for the format.
///
/// Every row is checked for equal clean/corrupted token length with `tok`. Errors name the file
/// and line: a missing column (listing the columns found), a malformed id cell, unequal lengths.
pub fn load_csv(path: &Path, tok: &dyn TextTokenizer) -> Result<Vec<Example>, TaskError> {
    let text = std::fs::read_to_string(path).map_err(|source| TaskError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut records = parse_records(&text, path)?.into_iter();
    let Some(header) = records.next() else {
        return Err(parse_error(
            path,
            1,
            "the file is empty; expected a header row".into(),
        ));
    };
    let names: Vec<&str> = header.fields.iter().map(|name| name.trim()).collect();
    let column = |name: &str| names.iter().position(|&found| found == name);
    let require = |name: &str| {
        column(name).ok_or_else(|| {
            parse_error(
                path,
                header.line,
                format!(
                    "missing column `{name}` (found columns: {})",
                    names.join(", ")
                ),
            )
        })
    };
    let clean_column = require("clean")?;
    let corrupted_column = require("corrupted")?;
    let answers = match (
        column("correct_idx"),
        column("incorrect_idx"),
        column("label"),
    ) {
        (None, None, Some(label)) => Answers::GreaterThanLabel(label, year_suffix_tokens(tok)?),
        _ => Answers::Ids(require("correct_idx")?, require("incorrect_idx")?),
    };

    let mut examples = Vec::new();
    for record in records {
        let cell = |column: usize| {
            record
                .fields
                .get(column)
                .map(String::as_str)
                .ok_or_else(|| {
                    let message = format!(
                        "row has {} fields but column `{}` is number {}",
                        record.fields.len(),
                        names[column],
                        column + 1
                    );
                    parse_error(path, record.line, message)
                })
        };
        let (clean, corrupted) = (
            cell(clean_column)?.to_owned(),
            cell(corrupted_column)?.to_owned(),
        );
        let at_line = |message: String| parse_error(path, record.line, message);
        let example = match &answers {
            Answers::Ids(correct, incorrect) => Example {
                clean,
                corrupted,
                correct: parse_ids(cell(*correct)?)
                    .map_err(|m| at_line(format!("correct_idx: {m}")))?,
                incorrect: parse_ids(cell(*incorrect)?)
                    .map_err(|m| at_line(format!("incorrect_idx: {m}")))?,
                correct_text: Vec::new(),
                incorrect_text: Vec::new(),
            },
            Answers::GreaterThanLabel(label, suffix_tokens) => {
                let start: u32 = cell(*label)?
                    .trim()
                    .parse()
                    .ok()
                    .filter(|&yy| yy < 100)
                    .ok_or_else(|| {
                        at_line(format!(
                            "label {:?} is not a year suffix 0-99",
                            cell(*label)
                        ))
                    })?;
                Example {
                    clean,
                    corrupted,
                    ..labels_for_start(suffix_tokens, start)
                }
            }
        };
        let (clean_len, corrupted_len) = prompt_lengths(tok, &example.clean, &example.corrupted)?;
        if clean_len != corrupted_len {
            let index = examples.len();
            let source = TaskError::UnequalLength {
                index,
                clean: clean_len,
                corrupted: corrupted_len,
            };
            return Err(TaskError::InFile {
                path: path.to_owned(),
                line: record.line,
                error: Box::new(source),
            });
        }
        examples.push(example);
    }
    Ok(examples)
}

/// Where a CSV's answers come from.
enum Answers {
    /// Columns `correct_idx` and `incorrect_idx`.
    Ids(usize, usize),
    /// Greater-Than's `label` column, with the tokenizer's year-suffix tokens.
    GreaterThanLabel(usize, Vec<Option<u32>>),
}

fn parse_error(path: &Path, line: usize, message: String) -> TaskError {
    TaskError::Parse {
        path: path.to_owned(),
        line,
        message,
    }
}

/// Parses a token-id cell: `47764` or `[1, 2]`.
pub(crate) fn parse_ids(cell: &str) -> Result<Vec<u32>, String> {
    let cell = cell.trim();
    let parse_one = |id: &str| {
        id.trim()
            .parse::<u32>()
            .map_err(|_| format!("{:?} is not a token id", id.trim()))
    };
    let ids = match cell.strip_prefix('[') {
        Some(rest) => {
            let inner = rest
                .strip_suffix(']')
                .ok_or_else(|| format!("{cell:?} has no closing `]`"))?;
            inner
                .split(',')
                .filter(|id| !id.trim().is_empty())
                .map(parse_one)
                .collect::<Result<Vec<_>, _>>()?
        }
        None => vec![parse_one(cell)?],
    };
    if ids.is_empty() {
        return Err(format!("{cell:?} holds no token ids"));
    }
    Ok(ids)
}

/// Splits CSV text into records (RFC 4180 quoting, read by the `csv` crate), skipping blank
/// lines. The `csv` crate reads malformed quoting leniently (a stray `"` becomes text, an
/// unclosed quote runs to the end of the file); a file with either is refused here with its
/// line, since it is almost always a cell that was meant to be quoted.
fn parse_records(text: &str, path: &Path) -> Result<Vec<Record>, TaskError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut records = Vec::new();
    let mut starts = Vec::new();
    for row in reader.records() {
        let row = row.map_err(|e| {
            let line = e.position().map_or(1, |p| p.line() as usize);
            parse_error(path, line, e.to_string())
        })?;
        let byte = row.position().map_or(0, |p| p.byte() as usize);
        // The record starts after any line break left before it (the reader's own line count
        // is one short after `\r\n`, so lines are counted here).
        let byte = byte + text[byte..].len() - text[byte..].trim_start_matches(['\r', '\n']).len();
        starts.push(byte);
        records.push(Record {
            line: 0,
            fields: row.iter().map(str::to_owned).collect(),
        });
    }
    let mut line_breaks = LineCounter::default();
    for (record, &byte) in records.iter_mut().zip(&starts) {
        record.line = line_breaks.line_at(text, byte);
    }
    for (i, (&byte, record)) in starts.iter().zip(&records).enumerate() {
        let (end, line) = (
            starts.get(i + 1).copied().unwrap_or(text.len()),
            record.line,
        );
        check_quoting(&text[byte..end])
            .map_err(|(offset, message)| parse_error(path, line + offset, message.into()))?;
    }
    Ok(records)
}

/// Counts lines (`\n`, `\r\n` or a lone `\r` ends one) up to increasing byte offsets.
#[derive(Default)]
struct LineCounter {
    byte: usize,
    breaks: usize,
}

impl LineCounter {
    /// The 1-based line of `byte`, which must not be before the previous call's.
    fn line_at(&mut self, text: &str, byte: usize) -> usize {
        let bytes = text.as_bytes();
        for i in self.byte..byte {
            let lone_cr = bytes[i] == b'\r' && bytes.get(i + 1) != Some(&b'\n');
            self.breaks += usize::from(bytes[i] == b'\n' || lone_cr);
        }
        self.byte = byte;
        self.breaks + 1
    }
}

/// Checks the quoting of one record's raw text: a field is either unquoted without any `"`,
/// or wholly quoted with `""` for a literal quote. Returns the line offset of the first error.
fn check_quoting(raw: &str) -> Result<(), (usize, &'static str)> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        FieldStart,
        Unquoted,
        Quoted,
        AfterQuote,
    }
    let mut state = State::FieldStart;
    let mut line = 0;
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        state = match (state, c) {
            (State::Quoted, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                State::Quoted
            }
            (State::Quoted, '"') => State::AfterQuote,
            (State::Quoted, c) => {
                line += usize::from(c == '\n');
                State::Quoted
            }
            (State::FieldStart, '"') => State::Quoted,
            (_, ',') => State::FieldStart,
            (_, '\r' | '\n') => break,
            (State::AfterQuote, _) => {
                return Err((
                    line,
                    "text after a closing `\"`; write a literal quote as `\"\"`",
                ));
            }
            (_, '"') => {
                return Err((
                    line,
                    "stray `\"` in a field; quote the whole field and write `\"\"`",
                ));
            }
            _ => State::Unquoted,
        };
    }
    if state == State::Quoted {
        return Err((0, "quoted field is never closed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_records(text: &str, expected: &[(usize, &[&str])]) {
        let records = parse_records(text, Path::new("t.csv")).unwrap();
        let got: Vec<(usize, Vec<&str>)> = records
            .iter()
            .map(|r| (r.line, r.fields.iter().map(String::as_str).collect()))
            .collect();
        let expected: Vec<(usize, Vec<&str>)> =
            expected.iter().map(|(l, f)| (*l, f.to_vec())).collect();
        assert_eq!(got, expected, "{text:?}");
    }

    #[test]
    fn records_follow_rfc_4180() {
        check_records("a,b\n1,2\n", &[(1, &["a", "b"]), (2, &["1", "2"])]);
        check_records("a,b\r\n1,2", &[(1, &["a", "b"]), (2, &["1", "2"])]);
        check_records("a\n\n\nb\n", &[(1, &["a"]), (4, &["b"])]);
        check_records(
            "\"x, y\",\"say \"\"hi\"\"\"\n",
            &[(1, &["x, y", "say \"hi\""])],
        );
        check_records(
            "\"two\nlines\",z\nnext,\n",
            &[(1, &["two\nlines", "z"]), (3, &["next", ""])],
        );
        check_records(",\n", &[(1, &["", ""])]);
        check_records("\"\"\n", &[(1, &[""])]);
    }

    #[test]
    fn malformed_quoting_is_an_error_with_its_line() {
        for (text, line) in [("a\n\"open,b\n", 2), ("a\nx\"y\n", 2), ("a\n\"q\"x\n", 2)] {
            match parse_records(text, Path::new("t.csv")) {
                Err(TaskError::Parse { line: got, .. }) => assert_eq!(got, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn id_cells() {
        assert_eq!(parse_ids("47764"), Ok(vec![47764]));
        assert_eq!(parse_ids(" [1, 2,3] "), Ok(vec![1, 2, 3]));
        assert_eq!(parse_ids("[7,]"), Ok(vec![7]));
        assert!(parse_ids("[]").unwrap_err().contains("no token ids"));
        assert!(parse_ids("[1, 2").unwrap_err().contains("closing"));
        assert!(parse_ids("Mary").unwrap_err().contains("not a token id"));
        assert!(parse_ids("-3").is_err());
    }
}
