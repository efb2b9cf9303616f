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

/// Splits CSV text into records (RFC 4180 quoting), skipping blank lines.
fn parse_records(text: &str, path: &Path) -> Result<Vec<Record>, TaskError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = Vec::new();
    let mut fields = Vec::new();
    let mut field = String::new();
    let (mut line, mut record_line) = (1, 1);
    let (mut in_quotes, mut quoted) = (false, false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => in_quotes = false,
                _ => {
                    line += usize::from(c == '\n');
                    field.push(c);
                }
            }
            continue;
        }
        match c {
            '"' if field.is_empty() && !quoted => (in_quotes, quoted) = (true, true),
            '"' => {
                let message =
                    "stray `\"` in a field; quote the whole field and write `\"\"`".into();
                return Err(parse_error(path, line, message));
            }
            ',' => {
                fields.push(std::mem::take(&mut field));
                quoted = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' | '\r' => {
                let is_blank = fields.is_empty() && field.is_empty() && !quoted;
                fields.push(std::mem::take(&mut field));
                quoted = false;
                let fields = std::mem::take(&mut fields);
                if !is_blank {
                    records.push(Record {
                        line: record_line,
                        fields,
                    });
                }
                line += 1;
                record_line = line;
            }
            _ if quoted => {
                let message = "text after a closing `\"`; write a literal quote as `\"\"`".into();
                return Err(parse_error(path, line, message));
            }
            _ => field.push(c),
        }
    }
    if in_quotes {
        return Err(parse_error(
            path,
            record_line,
            "quoted field is never closed".into(),
        ));
    }
    if !field.is_empty() || !fields.is_empty() || quoted {
        fields.push(field);
        records.push(Record {
            line: record_line,
            fields,
        });
    }
    Ok(records)
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
