//! The error of the name tables: every option enum (metrics, ablations, methods, selections)
//! derives `Display`, `FromStr` and its list of names from one table with strum; an unknown
//! name is an [`UnknownName`] that lists the known ones.

/// A name that is not in an option enum's table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {given:?} (expected one of {expected})")]
pub struct UnknownName {
    /// What was being named (`metric`, `ablation`, ...).
    pub what: &'static str,
    /// The name given.
    pub given: String,
    /// The known names, comma-separated.
    pub expected: String,
}

impl UnknownName {
    /// The error for `given`, an unknown name of a `T`.
    pub fn of<T: strum::VariantNames>(what: &'static str, given: &str) -> Self {
        Self {
            what,
            given: given.to_string(),
            expected: T::VARIANTS.join(", "),
        }
    }
}
