//! Seeded sampling of distinct valid examples from a product of word lists and templates.
//!
//! A generator describes its candidates as a mixed-radix index space (one digit per template,
//! word slot, ...) and a `build` function that turns one digit vector into an example, or into
//! `None` when the candidate is invalid for this tokenizer. Small spaces are visited in a seeded
//! random permutation, so "fewer than n valid" is exact; large spaces are sampled with a seeded
//! generator and a bounded number of draws.

use std::collections::HashSet;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::{Example, Task, TaskError};

/// Spaces up to this many candidates are searched exhaustively (in a shuffled order).
const EXHAUSTIVE_LIMIT: u64 = 50_000;

/// In larger spaces, draws allowed per requested example (plus [`EXHAUSTIVE_LIMIT`] draws).
const DRAWS_PER_EXAMPLE: u64 = 50;

/// Samples `n` distinct valid examples from the candidate space with digit ranges `dims`.
///
/// Examples are distinct by their (clean, corrupted) text. The result is a deterministic
/// function of `seed`, `dims`, `build` and the tokenizer behind `build`.
pub(crate) fn sample_examples(
    task: Task,
    dims: &[usize],
    n: usize,
    seed: u64,
    hint: &str,
    mut build: impl FnMut(&[usize]) -> Result<Option<Example>, TaskError>,
) -> Result<Vec<Example>, TaskError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let total = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .unwrap_or(u64::MAX);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut found = Vec::with_capacity(n);
    let mut seen_text = HashSet::new();
    let mut digits = vec![0; dims.len()];
    let mut try_candidate = |index: u64, found: &mut Vec<Example>| -> Result<(), TaskError> {
        decode(index, dims, &mut digits);
        if let Some(example) = build(&digits)?
            && seen_text.insert((example.clean.clone(), example.corrupted.clone()))
        {
            found.push(example);
        }
        Ok(())
    };

    let exhaustive = total <= EXHAUSTIVE_LIMIT;
    if exhaustive {
        let mut order: Vec<u64> = (0..total).collect();
        order.shuffle(&mut rng);
        for index in order {
            if found.len() == n {
                break;
            }
            try_candidate(index, &mut found)?;
        }
    } else {
        let max_draws = EXHAUSTIVE_LIMIT + DRAWS_PER_EXAMPLE * n as u64;
        let mut seen_index = HashSet::new();
        for _ in 0..max_draws {
            if found.len() == n {
                break;
            }
            let index = rng.random_range(0..total);
            if seen_index.insert(index) {
                try_candidate(index, &mut found)?;
            }
        }
    }

    if found.len() < n {
        let searched = if exhaustive {
            format!("all {total} candidates were tried")
        } else {
            format!("a sample of the {total} candidates was tried")
        };
        return Err(TaskError::TooFewExamples {
            task,
            wanted: n,
            valid: found.len(),
            hint: format!("{hint} ({searched})"),
        });
    }
    Ok(found)
}

/// Writes the mixed-radix digits of `index` (last digit fastest) into `digits`.
fn decode(mut index: u64, dims: &[usize], digits: &mut [usize]) {
    for (digit, &dim) in digits.iter_mut().zip(dims).rev() {
        *digit = (index % dim as u64) as usize;
        index /= dim as u64;
    }
}

/// Digit ranges for choosing `k` distinct items from a list of `len`: `len, len-1, ...`
/// (a range is 0, and the space empty, when `len < k`).
pub(crate) fn distinct_dims(len: usize, k: usize) -> impl Iterator<Item = usize> {
    (0..k).map(move |i| len.saturating_sub(i))
}

/// Maps digits drawn from [`distinct_dims`] to distinct list positions: the i-th digit picks
/// among the positions not taken by the earlier ones.
pub(crate) fn distinct_positions(digits: &[usize]) -> Vec<usize> {
    let mut chosen: Vec<usize> = Vec::with_capacity(digits.len());
    for &digit in digits {
        let mut sorted = chosen.clone();
        sorted.sort_unstable();
        let mut position = digit;
        for taken in sorted {
            if position >= taken {
                position += 1;
            }
        }
        chosen.push(position);
    }
    chosen
}

/// The items of `words` that encode to exactly one token, each with that token.
pub(crate) fn single_token_words<'a>(
    tok: &dyn crate::TextTokenizer,
    words: impl IntoIterator<Item = &'a str>,
    format: impl Fn(&str) -> String,
) -> Result<Vec<(&'a str, u32)>, TaskError> {
    let mut kept = Vec::new();
    for word in words {
        if let Some(id) = crate::example::single_token(tok, &format(word))? {
            kept.push((word, id));
        }
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_distinct(len: usize, k: usize) {
        let dims: Vec<usize> = distinct_dims(len, k).collect();
        let total: usize = dims.iter().product();
        let mut all = HashSet::new();
        let mut digits = vec![0; k];
        for index in 0..total as u64 {
            decode(index, &dims, &mut digits);
            let positions = distinct_positions(&digits);
            assert!(positions.iter().all(|&p| p < len), "{positions:?}");
            let unique: HashSet<_> = positions.iter().collect();
            assert_eq!(unique.len(), k, "{positions:?}");
            all.insert(positions);
        }
        assert_eq!(
            all.len(),
            total,
            "every ordered choice appears exactly once"
        );
    }

    #[test]
    fn distinct_positions_cover_every_ordered_choice_once() {
        check_distinct(3, 3);
        check_distinct(5, 2);
        check_distinct(6, 3);
        check_distinct(4, 1);
    }

    #[test]
    fn decode_is_mixed_radix() {
        let mut digits = [0; 3];
        decode(12 + 2 * 4 + 3, &[2, 3, 4], &mut digits);
        assert_eq!(digits, [1, 2, 3]);
    }
}
