//! Loading examples from JSON Lines, with answers as text or as token ids.
//!
//! One object per line (blank lines skipped):
//! `{"clean": "...", "corrupted": "...", "answer": " Mary", "wrong": " John"}`. `answer` and
//! `wrong` may be a string or a list of strings; each must encode to exactly one token with the
//! given tokenizer. Instead of text, `correct_idx` / `incorrect_idx` may give token ids (a
//! number or a list of numbers), as in the EAP-IG CSV. Other fields are ignored.

use std::path::Path;

use serde_json::{Map, Value};

use crate::example::{prompt_lengths, require_single_token};
use crate::{Example, TaskError, TextTokenizer};

/// Loads examples from a JSON Lines file; see the module doc for the format.
///
/// Errors name the file and the 1-based line: bad JSON, a missing field, an answer that is not
/// one token (naming the answer and its tokens), unequal clean/corrupted token lengths.
pub fn load_jsonl(path: &Path, tok: &dyn TextTokenizer) -> Result<Vec<Example>, TaskError> {
    let text = std::fs::read_to_string(path).map_err(|source| TaskError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut examples = Vec::new();
    for (line_index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let line_number = line_index + 1;
        let example = parse_line(line, examples.len(), tok).map_err(|error| match error {
            LineError::Message(message) => TaskError::Parse {
                path: path.to_owned(),
                line: line_number,
                message,
            },
            LineError::Task(source) => TaskError::InFile {
                path: path.to_owned(),
                line: line_number,
                error: Box::new(source),
            },
        })?;
        examples.push(example);
    }
    Ok(examples)
}

/// What can go wrong on one line: a format problem, or a task error to be placed at the line.
enum LineError {
    Message(String),
    Task(TaskError),
}

impl From<TaskError> for LineError {
    fn from(error: TaskError) -> Self {
        LineError::Task(error)
    }
}

fn parse_line(line: &str, index: usize, tok: &dyn TextTokenizer) -> Result<Example, LineError> {
    let value: Value =
        serde_json::from_str(line).map_err(|e| LineError::Message(format!("bad JSON: {e}")))?;
    let Value::Object(object) = value else {
        return Err(LineError::Message("expected a JSON object".into()));
    };
    let prompt = |name: &str| match object.get(name) {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(_) => Err(LineError::Message(format!("`{name}` must be a string"))),
        None => Err(LineError::Message(format!("missing field `{name}`"))),
    };
    let (clean, corrupted) = (prompt("clean")?, prompt("corrupted")?);
    let (correct, correct_text) = answers(&object, "answer", "correct_idx", tok)?;
    let (incorrect, incorrect_text) = answers(&object, "wrong", "incorrect_idx", tok)?;
    let (clean_len, corrupted_len) = prompt_lengths(tok, &clean, &corrupted)?;
    if clean_len != corrupted_len {
        return Err(TaskError::UnequalLength {
            index,
            clean: clean_len,
            corrupted: corrupted_len,
        }
        .into());
    }
    Ok(Example {
        clean,
        corrupted,
        correct,
        incorrect,
        correct_text,
        incorrect_text,
    })
}

/// Reads one answer set from field `text_field` (strings, tokenized) or else `ids_field` (ids).
fn answers(
    object: &Map<String, Value>,
    text_field: &str,
    ids_field: &str,
    tok: &dyn TextTokenizer,
) -> Result<(Vec<u32>, Vec<String>), LineError> {
    let message = |m: String| LineError::Message(m);
    if let Some(value) = object.get(text_field) {
        let texts: Vec<String> = match value {
            Value::String(text) => vec![text.clone()],
            Value::Array(items) => items
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    message(format!(
                        "`{text_field}` must be a string or a list of strings"
                    ))
                })?,
            _ => {
                return Err(message(format!(
                    "`{text_field}` must be a string or a list of strings"
                )));
            }
        };
        if texts.is_empty() {
            return Err(message(format!("`{text_field}` is an empty list")));
        }
        let ids = texts
            .iter()
            .map(|text| require_single_token(tok, text))
            .collect::<Result<_, _>>()?;
        return Ok((ids, texts));
    }
    let Some(value) = object.get(ids_field) else {
        return Err(message(format!(
            "missing field `{text_field}` (or `{ids_field}`)"
        )));
    };
    let as_id = |item: &Value| item.as_u64().and_then(|id| u32::try_from(id).ok());
    let ids: Option<Vec<u32>> = match value {
        Value::Array(items) => items.iter().map(as_id).collect(),
        single => as_id(single).map(|id| vec![id]),
    };
    match ids {
        Some(ids) if !ids.is_empty() => Ok((ids, Vec::new())),
        _ => Err(message(format!(
            "`{ids_field}` must be a token id or a non-empty list of token ids"
        ))),
    }
}
