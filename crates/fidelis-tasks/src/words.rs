//! The word lists under `data/`, compiled in.
//!
//! Each file has one item per line; lines starting with `#` are comments (each file's header
//! says where its items come from) and blank lines are skipped. Pair files write
//! `key: value` on a line.

/// Common U.S. first names (IOI).
pub(crate) const NAMES: &str = include_str!("../data/names.txt");
/// Places for IOI templates.
pub(crate) const IOI_PLACES: &str = include_str!("../data/ioi_places.txt");
/// Objects handed over in IOI templates.
pub(crate) const IOI_OBJECTS: &str = include_str!("../data/ioi_objects.txt");
/// Nouns for events that last a span of years (Greater-Than).
pub(crate) const GT_NOUNS: &str = include_str!("../data/greater_than_nouns.txt");
/// `singular: plural` noun pairs (SVA).
pub(crate) const SVA_NOUNS: &str = include_str!("../data/sva_nouns.txt");
/// `singular: plural` verb pairs (SVA).
pub(crate) const SVA_VERBS: &str = include_str!("../data/sva_verbs.txt");
/// Occupations held mostly by men (Gender-Bias).
pub(crate) const PROFESSIONS_MALE: &str = include_str!("../data/professions_male.txt");
/// Occupations held mostly by women (Gender-Bias).
pub(crate) const PROFESSIONS_FEMALE: &str = include_str!("../data/professions_female.txt");
/// `country: capital` pairs (Country-Capital).
pub(crate) const COUNTRY_CAPITALS: &str = include_str!("../data/country_capitals.txt");
/// `item: hypernym` pairs (Hypernymy).
pub(crate) const HYPERNYMS: &str = include_str!("../data/hypernyms.txt");

/// The items of a word-list file, without comments and blank lines.
pub(crate) fn items(file: &'static str) -> Vec<&'static str> {
    file.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect()
}

/// The `key: value` items of a pair file.
///
/// # Panics
/// On a line without `:` (the files are compiled in, and a unit test reads every one).
pub(crate) fn pairs(file: &'static str) -> Vec<(&'static str, &'static str)> {
    items(file)
        .into_iter()
        .map(|line| {
            let (key, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("word list line {line:?} is not `key: value`"));
            (key.trim(), value.trim())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn check_list(name: &str, list: Vec<&str>, min_len: usize) {
        assert!(
            list.len() >= min_len,
            "{name}: {} items, want at least {min_len}",
            list.len()
        );
        let unique: HashSet<_> = list.iter().collect();
        assert_eq!(unique.len(), list.len(), "{name} has duplicates");
        for item in list {
            assert!(
                !item.contains('\t') && item.trim() == item,
                "{name}: {item:?}"
            );
        }
    }

    #[test]
    fn every_list_parses_without_duplicates() {
        check_list("names", items(NAMES), 40);
        check_list("ioi places", items(IOI_PLACES), 8);
        check_list("ioi objects", items(IOI_OBJECTS), 8);
        check_list("gt nouns", items(GT_NOUNS), 20);
        check_list("professions (m)", items(PROFESSIONS_MALE), 10);
        check_list("professions (f)", items(PROFESSIONS_FEMALE), 10);
        for (name, file, min_len) in [
            ("sva nouns", SVA_NOUNS, 20),
            ("sva verbs", SVA_VERBS, 3),
            ("country capitals", COUNTRY_CAPITALS, 30),
            ("hypernyms", HYPERNYMS, 50),
        ] {
            let pairs = pairs(file);
            check_list(name, pairs.iter().map(|p| p.0).collect(), min_len);
            assert!(
                pairs.iter().all(|(k, v)| !k.is_empty() && !v.is_empty()),
                "{name}"
            );
        }
    }

    #[test]
    fn profession_lists_do_not_overlap() {
        let male: HashSet<_> = items(PROFESSIONS_MALE).into_iter().collect();
        assert!(items(PROFESSIONS_FEMALE).iter().all(|p| !male.contains(p)));
    }

    #[test]
    fn capitals_are_distinct() {
        let capitals: Vec<_> = pairs(COUNTRY_CAPITALS).into_iter().map(|p| p.1).collect();
        let unique: HashSet<_> = capitals.iter().collect();
        assert_eq!(unique.len(), capitals.len());
    }
}
