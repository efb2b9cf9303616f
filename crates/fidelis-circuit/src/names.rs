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

/// Defines an option enum with one name table: `Display`, `name()`, `FromStr` (its error an
/// [`UnknownName`] naming `$what` and listing the names), strum's `VariantNames` and
/// `VariantArray`, and serde, all from the variant names under the enum's own `#[strum]` and
/// `#[serde]` renaming attributes (which must agree; `fidelis-cli`'s tests check every enum).
/// The calling crate depends on `strum` and `serde`.
///
/// ```
/// fidelis_circuit::option_enum! {
///     "colour",
///     /// A colour.
///     #[strum(serialize_all = "kebab-case")]
///     #[serde(rename_all = "kebab-case")]
///     pub enum Colour {
///         /// Red.
///         DeepRed,
///         /// Blue.
///         Blue,
///     }
/// }
/// assert_eq!(Colour::DeepRed.to_string(), "deep-red");
/// let err = "green".parse::<Colour>().unwrap_err().to_string();
/// assert_eq!(err, r#"unknown colour "green" (expected one of deep-red, blue)"#);
/// ```
#[macro_export]
macro_rules! option_enum {
    ($what:literal, $(#[$meta:meta])* $vis:vis enum $name:ident { $($body:tt)* }) => {
        #[derive(
            Debug,
            Clone,
            Copy,
            PartialEq,
            Eq,
            Hash,
            ::strum::Display,
            ::strum::EnumString,
            ::strum::VariantNames,
            ::strum::VariantArray,
            ::strum::IntoStaticStr,
            ::serde::Serialize,
            ::serde::Deserialize,
        )]
        #[strum(parse_err_ty = $crate::names::UnknownName, parse_err_fn = $name::unknown_name)]
        $(#[$meta])*
        $vis enum $name { $($body)* }

        impl $name {
            /// The name (`Display` writes it, `FromStr` reads it).
            pub fn name(self) -> &'static str {
                self.into()
            }

            /// The error for `given`, a name that is not one of this enum's.
            pub fn unknown_name(given: &str) -> $crate::names::UnknownName {
                $crate::names::UnknownName::of::<$name>($what, given)
            }
        }
    };
}
