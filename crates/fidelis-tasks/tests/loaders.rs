//! CSV and JSONL loaders, on small files written by each test.

mod common;

use std::path::PathBuf;

use common::WordTokenizer;
use fidelis_tasks::{Example, TaskError, TextTokenizer, load_csv, load_jsonl};

/// Writes `contents` to a fresh file under Cargo's per-test temp directory.
fn write(name: &str, contents: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("fidelis-tasks")
        .join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, contents).unwrap();
    path
}

fn ids_example(clean: &str, corrupted: &str, correct: &[u32], incorrect: &[u32]) -> Example {
    Example {
        clean: clean.into(),
        corrupted: corrupted.into(),
        correct: correct.to_vec(),
        incorrect: incorrect.to_vec(),
        correct_text: vec![],
        incorrect_text: vec![],
    }
}

#[test]
fn csv_in_the_reference_format() {
    // As the EAP-IG reference writes it: an unnamed index column, quoted prompts with commas,
    // an extra `corrupted_hard` column; plus a list-valued cell and a CRLF line.
    let path = write(
        "reference.csv",
        ",clean,corrupted,corrupted_hard,correct_idx,incorrect_idx\n\
         470,\"Then, Anna and Paul met. Paul gave it to\",\"Then, Anna and Paul met. Kyle gave it to\",\"x\",47764,26757\n\
         \n\
         12,\"She said \"\"hi\"\", then\",\"He said \"\"no\"\", then\",,\"[1, 2]\",[3]\r\n",
    );
    let examples = load_csv(&path, &WordTokenizer::new()).unwrap();
    assert_eq!(
        examples,
        [
            ids_example(
                "Then, Anna and Paul met. Paul gave it to",
                "Then, Anna and Paul met. Kyle gave it to",
                &[47764],
                &[26757]
            ),
            ids_example(
                "She said \"hi\", then",
                "He said \"no\", then",
                &[1, 2],
                &[3]
            ),
        ]
    );
}

#[test]
fn csv_missing_column_names_it_and_the_file() {
    let path = write("missing.csv", "clean,corrupted,correct_idx\na b,a c,5\n");
    let error = load_csv(&path, &WordTokenizer::new()).unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, TaskError::Parse { line: 1, .. }),
        "{error:?}"
    );
    assert!(
        message.contains("missing column `incorrect_idx`"),
        "{message}"
    );
    assert!(message.contains("missing.csv"), "{message}");
    assert!(
        message.contains("found columns: clean, corrupted, correct_idx"),
        "{message}"
    );
}

#[test]
fn csv_bad_cells_and_short_rows_name_their_line() {
    let tok = WordTokenizer::new();
    let cases = [
        (
            "bad_id.csv",
            "clean,corrupted,correct_idx,incorrect_idx\na,b,1,2\na,b,Mary,2\n",
            3,
            "correct_idx: \"Mary\" is not a token id",
        ),
        (
            "short.csv",
            "clean,corrupted,correct_idx,incorrect_idx\n\"a,\nb\",c d,1\n",
            2,
            "row has 3 fields",
        ),
        (
            "open.csv",
            "clean,corrupted,correct_idx,incorrect_idx\n\"a,b,1,2\n",
            2,
            "never closed",
        ),
    ];
    for (name, contents, line, fragment) in cases {
        match load_csv(&write(name, contents), &tok) {
            Err(TaskError::Parse {
                line: got, message, ..
            }) => {
                assert_eq!(got, line, "{name}: {message}");
                assert!(message.contains(fragment), "{name}: {message}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn csv_rows_of_unequal_token_length_are_rejected_with_counts() {
    let path = write(
        "unequal.csv",
        "clean,corrupted,correct_idx,incorrect_idx\none two,one three,1,2\n\"a, b\",\"a, b c\",1,2\n",
    );
    let error = load_csv(&path, &WordTokenizer::new()).unwrap_err();
    let message = error.to_string();
    match error {
        TaskError::InFile {
            line: 3,
            error: source,
            ..
        } => {
            assert!(
                matches!(
                    *source,
                    TaskError::UnequalLength {
                        index: 1,
                        clean: 2,
                        corrupted: 3
                    }
                ),
                "{source:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        message.contains(
            "unequal.csv:3: example 1: clean prompt has 2 tokens but corrupted prompt has 3"
        ),
        "{message}"
    );
}

#[test]
fn csv_greater_than_label_column() {
    let path = write(
        "greater_than.csv",
        "clean,corrupted,label\nThe plan lasted from the year 1645 to the year 16,The plan lasted from the year 1601 to the year 16,45\n",
    );
    let tok = WordTokenizer::splitting(&["99"]);
    let [example] = &load_csv(&path, &tok).unwrap()[..] else {
        panic!("one row")
    };
    // "YY" is id YY in this tokenizer; "99" is two tokens and belongs to neither set.
    assert_eq!(example.correct, (46..99).collect::<Vec<u32>>());
    assert_eq!(example.incorrect, (0..=45).collect::<Vec<u32>>());
    assert_eq!(example.correct_text.first().map(String::as_str), Some("46"));
    assert_eq!(
        example.incorrect_text.last().map(String::as_str),
        Some("45")
    );
}

#[test]
fn missing_file_is_an_io_error() {
    let error = load_csv(
        &PathBuf::from("/nonexistent/tasks.csv"),
        &WordTokenizer::new(),
    )
    .unwrap_err();
    assert!(matches!(error, TaskError::Io { .. }));
    assert!(
        error
            .to_string()
            .starts_with("cannot read /nonexistent/tasks.csv"),
        "{error}"
    );
}

#[test]
fn jsonl_with_text_answers_lists_and_ids() {
    let path = write(
        "tasks.jsonl",
        r#"{"clean": "When Mary and John left, John gave it to", "corrupted": "When Mary and John left, Kyle gave it to", "answer": " Mary", "wrong": " John"}

{"clean": "The year 1745 to 17", "corrupted": "The year 1701 to 17", "answer": ["46", "47"], "wrong": ["45"], "note": "ignored"}
{"clean": "a b", "corrupted": "a c", "correct_idx": [5, 6], "incorrect_idx": 7}
"#,
    );
    let tok = WordTokenizer::new();
    let examples = load_jsonl(&path, &tok).unwrap();
    assert_eq!(examples.len(), 3);
    assert_eq!(examples[0].correct, tok.encode(" Mary").unwrap());
    assert_eq!(examples[0].incorrect, tok.encode(" John").unwrap());
    assert_eq!(examples[0].correct_text, [" Mary"]);
    assert_eq!(examples[0].incorrect_text, [" John"]);
    assert_eq!(
        (
            examples[1].correct.as_slice(),
            examples[1].incorrect.as_slice()
        ),
        (&[46, 47][..], &[45][..])
    );
    assert_eq!(examples[2], ids_example("a b", "a c", &[5, 6], &[7]));
}

#[test]
fn jsonl_multi_token_answer_names_line_and_answer() {
    let path = write(
        "multi.jsonl",
        "{\"clean\": \"a b\", \"corrupted\": \"a c\", \"answer\": \" x\", \"wrong\": \" y\"}\n\
         {\"clean\": \"a b\", \"corrupted\": \"a c\", \"answer\": \" Zyx\", \"wrong\": \" y\"}\n",
    );
    let tok = WordTokenizer::splitting(&[" Zyx"]);
    let error = load_jsonl(&path, &tok).unwrap_err();
    let message = error.to_string();
    match error {
        TaskError::InFile {
            line: 2,
            error: source,
            ..
        } => match *source {
            TaskError::NotSingleToken { answer, tokens } => {
                assert_eq!(answer, " Zyx");
                assert_eq!(tokens, tok.encode(" Zyx").unwrap());
                assert_eq!(tokens.len(), 4);
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    assert!(
        message.contains("multi.jsonl:2: answer \" Zyx\" encodes to 4 tokens"),
        "{message}"
    );
}

#[test]
fn jsonl_format_errors_name_their_line() {
    let tok = WordTokenizer::new();
    let good = r#"{"clean": "a b", "corrupted": "a c", "answer": " x", "wrong": " y"}"#;
    let cases = [
        (
            r#"{"clean": "a b", "corrupted": "a c", "wrong": " y"}"#,
            "missing field `answer` (or `correct_idx`)",
        ),
        (
            r#"{"clean": "a b", "answer": " x", "wrong": " y"}"#,
            "missing field `corrupted`",
        ),
        (
            r#"{"clean": "a b", "corrupted": "a c", "answer": [], "wrong": " y"}"#,
            "`answer` is an empty list",
        ),
        (
            r#"{"clean": "a b", "corrupted": "a c", "answer": " x", "incorrect_idx": -1}"#,
            "`incorrect_idx` must be a token id",
        ),
        (r#"["not", "an", "object"]"#, "expected a JSON object"),
        (r#"{"clean": "a b""#, "bad JSON"),
    ];
    for (index, (line, fragment)) in cases.into_iter().enumerate() {
        let path = write(&format!("bad{index}.jsonl"), &format!("{good}\n{line}\n"));
        match load_jsonl(&path, &tok) {
            Err(TaskError::Parse {
                line: 2, message, ..
            }) => assert!(message.contains(fragment), "{message}"),
            other => panic!("{line}: {other:?}"),
        }
    }
}

#[test]
fn jsonl_unequal_lengths_are_rejected() {
    let path = write(
        "unequal.jsonl",
        r#"{"clean": "a b", "corrupted": "a b c", "answer": " x", "wrong": " y"}"#,
    );
    match load_jsonl(&path, &WordTokenizer::new()) {
        Err(TaskError::InFile {
            line: 1,
            error: source,
            ..
        }) => {
            assert!(matches!(
                *source,
                TaskError::UnequalLength {
                    index: 0,
                    clean: 2,
                    corrupted: 3
                }
            ));
        }
        other => panic!("{other:?}"),
    }
}

/// A word-level vocabulary maps every word it lacks to one unknown token: an answer outside
/// the vocabulary is one token, but not the answer's, and must be refused, not scored.
struct WithUnknown {
    known: Vec<&'static str>,
}

impl TextTokenizer for WithUnknown {
    fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        Ok(text
            .split_inclusive(' ')
            .map(|w| {
                let w = w.trim();
                self.known
                    .iter()
                    .position(|k| *k == w)
                    .map_or(0, |i| i as u32 + 1)
            })
            .collect())
    }

    fn unknown_id(&self) -> Option<u32> {
        Some(0)
    }
}

#[test]
fn an_answer_outside_the_vocabulary_is_refused_by_name() {
    let path = write(
        "unknown.jsonl",
        "{\"clean\": \"a b\", \"corrupted\": \"a c\", \"answer\": \"x\", \"wrong\": \"Zorblax\"}\n",
    );
    let tok = WithUnknown {
        known: vec!["a", "b", "c", "x"],
    };
    let message = load_jsonl(&path, &tok).unwrap_err().to_string();
    assert!(
        message.contains("unknown.jsonl:1")
            && message.contains("\"Zorblax\" is not in the model's vocabulary"),
        "{message}"
    );
    // Known answers load.
    let path = write(
        "known.jsonl",
        "{\"clean\": \"a b\", \"corrupted\": \"a c\", \"answer\": \"x\", \"wrong\": \"b\"}\n",
    );
    assert_eq!(load_jsonl(&path, &tok).unwrap().len(), 1);
}
