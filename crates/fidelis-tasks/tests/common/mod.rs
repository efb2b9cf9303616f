//! A word-level test tokenizer: each space-separated word (with its leading space) is one
//! token, except words listed as "split", which become one token per character, and numbers,
//! which become groups of digits from the left: two by default, so " 1745" is " 17" + "45" as
//! in GPT-2; one as in Llama 2; three as in Llama 3.

#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use fidelis_tasks::TextTokenizer;

/// See the module doc. Ids are assigned in order of first use, except the two-digit strings
/// `"00"..="99"`, which are ids 0..=99, so tests can assert Greater-Than ids directly.
pub struct WordTokenizer {
    vocab: RefCell<HashMap<String, u32>>,
    split: HashSet<String>,
    digit_group: usize,
}

impl WordTokenizer {
    pub fn new() -> Self {
        Self::splitting(&[])
    }

    /// A tokenizer that splits each of `words` (written as they appear, e.g. `" Mary"` or `"46"`)
    /// into characters.
    pub fn splitting(words: &[&str]) -> Self {
        let vocab = (0..100).map(|yy| (format!("{yy:02}"), yy)).collect();
        let split = words.iter().map(|w| w.to_string()).collect();
        WordTokenizer {
            vocab: RefCell::new(vocab),
            split,
            digit_group: 2,
        }
    }

    /// A tokenizer that splits numbers into groups of `digit_group` digits from the left.
    pub fn grouping_digits(digit_group: usize) -> Self {
        WordTokenizer {
            digit_group,
            ..Self::new()
        }
    }

    /// The id of a one-token piece (assigning one if new).
    pub fn id(&self, piece: &str) -> u32 {
        let mut vocab = self.vocab.borrow_mut();
        let next = vocab.len() as u32;
        *vocab.entry(piece.to_owned()).or_insert(next)
    }

    fn pieces(&self, text: &str) -> Vec<String> {
        let mut pieces = Vec::new();
        for (i, word) in text.split(' ').enumerate() {
            let piece = if i == 0 {
                word.to_owned()
            } else {
                format!(" {word}")
            };
            if piece.is_empty() {
                continue;
            }
            let digits = piece.trim_start();
            if self.split.contains(&piece) {
                pieces.extend(piece.chars().map(String::from));
            } else if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) {
                let space = &piece[..piece.len() - digits.len()];
                let groups = digits.as_bytes().chunks(self.digit_group);
                for (j, group) in groups.enumerate() {
                    let group = std::str::from_utf8(group).unwrap();
                    pieces.push(if j == 0 {
                        format!("{space}{group}")
                    } else {
                        group.to_owned()
                    });
                }
            } else {
                pieces.push(piece);
            }
        }
        pieces
    }
}

impl TextTokenizer for WordTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        Ok(self
            .pieces(text)
            .iter()
            .map(|piece| self.id(piece))
            .collect())
    }
}
