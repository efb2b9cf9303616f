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

/// Defines an option enum with one name table, strum's: `Display`, `name()`, `FromStr` (its
/// error an [`UnknownName`] naming `$what` and listing the names), `VariantNames`,
/// `VariantArray`, and serde (which writes `name()` and reads through `FromStr`, so it has no
/// names of its own). Names come from the variants under the enum's `#[strum]` attributes. The
/// calling crate depends on `strum` and `serde`.
///
/// ```
/// fidelis_circuit::option_enum! {
///     "colour",
///     /// A colour.
///     #[strum(serialize_all = "kebab-case")]
///     pub enum Colour {
///         /// Red.
///         DeepRed,
///         /// Blue.
///         Blue,
///     }
/// }
/// assert_eq!(Colour::DeepRed.to_string(), "deep-red");
/// assert_eq!(serde_json::to_string(&Colour::DeepRed).unwrap(), r#""deep-red""#);
/// let blue: Colour = serde_json::from_str(r#""blue""#).unwrap();
/// assert_eq!(blue, Colour::Blue);
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

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> ::std::result::Result<S::Ok, S::Error> {
                serializer.serialize_str($name::name(*self))
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(deserializer: D) -> ::std::result::Result<Self, D::Error> {
                let name = <::std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                name.parse().map_err(<D::Error as ::serde::de::Error>::custom)
            }
        }
    };
}
