//! Generators: every task, checked against a word-level tokenizer with known behaviour.

mod common;

use std::collections::HashSet;

use common::WordTokenizer;
use fidelis_tasks::{Example, Task, TaskError, TextTokenizer, check_equal_lengths, generate};

/// Checks the invariants every generated example must hold under `tok`.
fn check_examples(task: Task, examples: &[Example], tok: &WordTokenizer, n: usize) {
    assert_eq!(examples.len(), n, "{task}");
    check_equal_lengths(examples, tok).unwrap();
    let distinct: HashSet<_> = examples.iter().map(|e| (&e.clean, &e.corrupted)).collect();
    assert_eq!(distinct.len(), n, "{task}: examples are distinct");
    for example in examples {
        assert_ne!(example.clean, example.corrupted, "{task}");
        assert!(
            !example.correct.is_empty() && !example.incorrect.is_empty(),
            "{example:?}"
        );
        assert!(
            example
                .correct
                .iter()
                .all(|id| !example.incorrect.contains(id)),
            "{example:?}"
        );
        for (ids, texts) in [
            (&example.correct, &example.correct_text),
            (&example.incorrect, &example.incorrect_text),
        ] {
            assert_eq!(ids.len(), texts.len(), "{example:?}");
            for (id, text) in ids.iter().zip(texts) {
                assert_eq!(
                    tok.encode(text).unwrap(),
                    vec![*id],
                    "{task}: {text:?} is its own single token"
                );
            }
        }
    }
}

#[test]
fn every_task_generates_valid_examples() {
    let tok = WordTokenizer::new();
    for task in Task::ALL {
        let examples = generate(task, &tok, 40, 7).unwrap_or_else(|e| panic!("{task}: {e}"));
        check_examples(task, &examples, &tok, 40);
    }
}

#[test]
fn generation_is_deterministic_per_seed() {
    for task in Task::ALL {
        let first = generate(task, &WordTokenizer::new(), 25, 3).unwrap();
        let again = generate(task, &WordTokenizer::new(), 25, 3).unwrap();
        let other = generate(task, &WordTokenizer::new(), 25, 4).unwrap();
        assert_eq!(first, again, "{task}: same seed, same examples");
        assert_ne!(first, other, "{task}: another seed, other examples");
    }
}

#[test]
fn zero_examples_is_fine() {
    assert!(
        generate(Task::Ioi, &WordTokenizer::new(), 0, 0)
            .unwrap()
            .is_empty()
    );
}

/// Words of a prompt, for comparing clean and corrupted.
fn words(prompt: &str) -> Vec<&str> {
    prompt.split(' ').collect()
}

#[test]
fn ioi_repeats_the_subject_and_corrupts_it_with_a_third_name() {
    let tok = WordTokenizer::new();
    let mut orders = HashSet::new();
    for example in generate(Task::Ioi, &tok, 200, 11).unwrap() {
        let io = example.correct_text[0].trim_start();
        let s = example.incorrect_text[0].trim_start();
        let count = |prompt: &str, name: &str| words(prompt).iter().filter(|w| **w == name).count();
        assert_eq!(
            (count(&example.clean, io), count(&example.clean, s)),
            (1, 2),
            "{example:?}"
        );
        assert_eq!(
            (count(&example.corrupted, io), count(&example.corrupted, s)),
            (1, 1),
            "{example:?}"
        );
        // Exactly one word differs: the repeated subject became a third, distinct name.
        let (clean, corrupted) = (words(&example.clean), words(&example.corrupted));
        let diffs: Vec<_> = clean
            .iter()
            .zip(&corrupted)
            .filter(|(a, b)| a != b)
            .collect();
        assert_eq!(diffs.len(), 1, "{example:?}");
        let (&old, &new) = diffs[0];
        assert_eq!(old, s);
        assert!(
            new != io && new != s && new.chars().next().unwrap().is_uppercase(),
            "{example:?}"
        );
        // ABBA names IO first, BABA names S first.
        let first_name = clean.iter().find(|w| **w == io || **w == s).unwrap();
        orders.insert(*first_name == io);
    }
    assert_eq!(orders.len(), 2, "both ABBA and BABA templates occur");
}

#[test]
fn names_that_are_not_single_tokens_are_filtered_out() {
    let split = [" Mary", " John", " Emma"];
    let tok = WordTokenizer::splitting(&split);
    let examples = generate(Task::Ioi, &tok, 300, 5).unwrap();
    check_examples(Task::Ioi, &examples, &tok, 300);
    for example in &examples {
        for name in ["Mary", "John", "Emma"] {
            assert!(!words(&example.clean).contains(&name), "{example:?}");
            assert!(!words(&example.corrupted).contains(&name), "{example:?}");
        }
    }
}

#[test]
fn capitals_and_hypernyms_that_are_not_single_tokens_drop_their_items() {
    let tok = WordTokenizer::splitting(&[" Paris", " fruit"]);
    for example in generate(Task::CountryCapital, &tok, 300, 1).unwrap() {
        assert!(!example.clean.contains("France") && !example.corrupted.contains("France"));
    }
    for example in generate(Task::Hypernymy, &tok, 300, 1).unwrap() {
        for fruit in ["apple", "banana", "mango"] {
            assert!(
                !words(&example.clean).contains(&fruit)
                    && !words(&example.corrupted).contains(&fruit)
            );
        }
    }
}

#[test]
fn prompts_of_unequal_length_are_filtered_out() {
    // " children" splits into 8 tokens, so "child" can no longer be flipped in number.
    let tok = WordTokenizer::splitting(&[" children"]);
    let examples = generate(Task::Sva, &tok, 300, 2).unwrap();
    check_examples(Task::Sva, &examples, &tok, 300);
    assert!(
        examples
            .iter()
            .all(|e| !e.clean.contains("The child") && !e.corrupted.contains("The child"))
    );
}

/// The two-digit start year of a Greater-Than prompt ("... the year 1745 to ..." → 45).
fn start_suffix(prompt: &str) -> u32 {
    let year = words(prompt)
        .into_iter()
        .find(|w| w.len() == 4 && w.parse::<u32>().is_ok())
        .unwrap();
    year[2..].parse().unwrap()
}

#[test]
fn greater_than_labels_split_the_suffixes_at_the_start_year() {
    let tok = WordTokenizer::new();
    for example in generate(Task::GreaterThan, &tok, 100, 9).unwrap() {
        let start = start_suffix(&example.clean);
        assert!((2..=98).contains(&start), "{example:?}");
        assert_eq!(start_suffix(&example.corrupted), 1);
        assert_eq!(
            example.clean.replace(&format!("{start:02} "), "01 "),
            example.corrupted
        );
        // This tokenizer gives "YY" the id YY.
        assert_eq!(
            example.correct,
            (start + 1..100).collect::<Vec<_>>(),
            "{example:?}"
        );
        assert_eq!(
            example.incorrect,
            (0..=start).collect::<Vec<_>>(),
            "{example:?}"
        );
        assert_eq!(example.correct_text[0], format!("{:02}", start + 1));
        assert_eq!(example.incorrect_text[0], "00");
    }
}

#[test]
fn greater_than_skips_suffixes_that_are_not_single_tokens() {
    let tok = WordTokenizer::splitting(&["46", "07"]);
    let examples = generate(Task::GreaterThan, &tok, 300, 9).unwrap();
    for example in &examples {
        let start = start_suffix(&example.clean);
        assert!(start != 46 && start != 7, "{example:?}");
        assert!(!example.correct.contains(&46) && !example.incorrect.contains(&46));
        assert!(!example.correct.contains(&7) && !example.incorrect.contains(&7));
        assert_eq!(example.correct.len() + example.incorrect.len(), 98);
    }
    let with_45 = examples
        .iter()
        .find(|e| start_suffix(&e.clean) == 45)
        .expect("start 45 sampled");
    assert_eq!(with_45.correct, (47..100).collect::<Vec<_>>());
    let incorrect: Vec<u32> = (0..=45).filter(|&yy| yy != 7).collect();
    assert_eq!(with_45.incorrect, incorrect);
}

#[test]
fn sva_answers_agree_with_the_clean_subject() {
    let tok = WordTokenizer::new();
    let pairs = [(" is", " are"), (" was", " were"), (" has", " have")];
    for example in generate(Task::Sva, &tok, 200, 4).unwrap() {
        let (right, wrong) = (
            example.correct_text[0].as_str(),
            example.incorrect_text[0].as_str(),
        );
        let singular = pairs.contains(&(right, wrong));
        let plural = pairs.contains(&(wrong, right));
        assert!(singular ^ plural, "{example:?}");
        // The subject is the second word; a plural subject here ends in "s" or is irregular.
        let subject = words(&example.clean)[1];
        let looks_plural =
            subject.ends_with('s') || ["children", "women", "men"].contains(&subject);
        assert_eq!(looks_plural, plural, "{example:?}");
        let corrupted_subject = words(&example.corrupted)[1];
        assert_ne!(subject, corrupted_subject);
        assert_eq!(
            example.clean.replacen(subject, corrupted_subject, 1),
            example.corrupted
        );
    }
}

#[test]
fn gender_bias_answer_follows_the_clean_profession() {
    let tok = WordTokenizer::new();
    let examples = generate(Task::GenderBias, &tok, 400, 8).unwrap();
    let mut seen = HashSet::new();
    for example in &examples {
        let clean = words(&example.clean)[1];
        let corrupted = words(&example.corrupted)[1];
        for (profession, right, wrong) in [("nurse", " she", " he"), ("carpenter", " he", " she")] {
            if clean == profession {
                assert_eq!(
                    (
                        example.correct_text[0].as_str(),
                        example.incorrect_text[0].as_str()
                    ),
                    (right, wrong)
                );
                seen.insert(profession);
            }
            if corrupted == profession {
                assert_eq!(example.incorrect_text[0], right, "{example:?}");
            }
        }
    }
    assert_eq!(seen.len(), 2, "both professions appear as clean subjects");
}

#[test]
fn country_capital_and_hypernymy_contrast_two_items() {
    let tok = WordTokenizer::new();
    for example in generate(Task::CountryCapital, &tok, 50, 0).unwrap() {
        if example.clean.contains(" France ") {
            assert_eq!(example.correct_text, [" Paris"]);
        }
        if example.corrupted.contains(" Egypt ") {
            assert_eq!(example.incorrect_text, [" Cairo"]);
        }
    }
    for example in generate(Task::Hypernymy, &tok, 200, 0).unwrap() {
        assert_ne!(example.correct_text, example.incorrect_text, "{example:?}");
        if words(&example.clean).contains(&"apple") {
            assert_eq!(example.correct_text, [" fruit"]);
        }
    }
}

#[test]
fn too_few_examples_reports_the_exact_count_in_small_spaces() {
    // Hypernymy: 5 templates x ordered pairs of the 76 items from different categories
    // (76^2 minus the sum of squared category sizes, 420) = 5 x 5356.
    let tok = WordTokenizer::new();
    assert_eq!(
        generate(Task::Hypernymy, &tok, 26_780, 0).unwrap().len(),
        26_780
    );
    match generate(Task::Hypernymy, &tok, 26_781, 0) {
        Err(TaskError::TooFewExamples {
            task,
            wanted,
            valid,
            hint,
        }) => {
            assert_eq!((task, wanted, valid), (Task::Hypernymy, 26_781, 26_780));
            assert!(hint.contains("all 28880 candidates were tried"), "{hint}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn tokenizers_that_cannot_pose_a_task_get_too_few_examples() {
    let check = |task: Task, tok: &WordTokenizer, hint_part: &str| match generate(task, tok, 10, 0)
    {
        Err(error @ TaskError::TooFewExamples { valid: 0, .. }) => {
            assert!(error.to_string().contains(hint_part), "{error}");
            assert!(
                error
                    .to_string()
                    .starts_with(&format!("{task}: asked for 10 examples")),
                "{error}"
            );
        }
        other => panic!("{task}: {other:?}"),
    };
    check(
        Task::GreaterThan,
        &WordTokenizer::grouping_digits(1),
        "single digits (Llama 2",
    );
    check(
        Task::GreaterThan,
        &WordTokenizer::grouping_digits(3),
        "groups of three (Llama 3)",
    );
    check(
        Task::GenderBias,
        &WordTokenizer::splitting(&[" she"]),
        "\" she\"",
    );
    check(
        Task::Sva,
        &WordTokenizer::splitting(&[" is", " was", " has"]),
        "single-token verbs",
    );
    // IOI needs three distinct single-token names.
    let all_but_two: Vec<String> = include_str!("../data/names.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .skip(2)
        .map(|name| format!(" {name}"))
        .collect();
    let split: Vec<&str> = all_but_two.iter().map(String::as_str).collect();
    check(Task::Ioi, &WordTokenizer::splitting(&split), "first names");
}

#[test]
fn tokenizer_errors_propagate() {
    let failing = |_: &str| -> Result<Vec<u32>, String> { Err("no vocabulary loaded".into()) };
    match generate(Task::Ioi, &failing, 3, 0) {
        Err(TaskError::Tokenizer(message)) => {
            assert!(message.contains("no vocabulary loaded"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn task_names_round_trip() {
    let names: Vec<String> = Task::ALL.iter().map(Task::to_string).collect();
    assert_eq!(
        names,
        [
            "ioi",
            "greater-than",
            "sva",
            "gender-bias",
            "country-capital",
            "hypernymy"
        ]
    );
    for task in Task::ALL {
        assert_eq!(task.name().parse::<Task>(), Ok(task));
    }
    assert_eq!("Greater_Than".parse::<Task>(), Ok(Task::GreaterThan));
    let error = "docstring".parse::<Task>().unwrap_err();
    assert!(error.to_string().contains("\"docstring\"") && error.to_string().contains("hypernymy"));
}

#[test]
fn check_equal_lengths_names_the_first_offender() {
    let tok = WordTokenizer::new();
    let example = |clean: &str, corrupted: &str| Example {
        clean: clean.into(),
        corrupted: corrupted.into(),
        correct: vec![1],
        incorrect: vec![2],
        correct_text: vec![],
        incorrect_text: vec![],
    };
    let examples = [
        example("a b c", "a b d"),
        example("a b c", "a b c d"),
        example("a", "a b"),
    ];
    match check_equal_lengths(&examples, &tok) {
        Err(
            error @ TaskError::UnequalLength {
                index: 1,
                clean: 3,
                corrupted: 4,
            },
        ) => {
            assert!(
                error
                    .to_string()
                    .starts_with("example 1: clean prompt has 3 tokens but corrupted prompt has 4")
            );
        }
        other => panic!("{other:?}"),
    }
}
