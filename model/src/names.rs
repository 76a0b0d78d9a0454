//! Named settings: a unit enum whose serde names are its user-facing names (`snake_case`)
//! gets `FromStr` from those same names with [`from_str_by_name!`], so TOML keys and
//! command-line flags accept exactly the same values and report the same choices.

/// Parses `name` as one of `T`'s serde variant names; the error lists the allowed ones.
pub fn parse_name<T: serde::de::DeserializeOwned>(name: &str) -> Result<T, String> {
    use serde::de::IntoDeserializer;
    let de: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
        name.into_deserializer();
    T::deserialize(de).map_err(|e| e.to_string())
}

/// `impl FromStr` for unit enums through their serde names (see [`parse_name`]).
#[macro_export]
macro_rules! from_str_by_name {
    ($($t:ty),+ $(,)?) => {$(
        impl std::str::FromStr for $t {
            type Err = String;

            fn from_str(name: &str) -> Result<Self, String> {
                $crate::names::parse_name(name)
            }
        }
    )+};
}

/// `impl FromStr` through an existing parse function `fn(&str) -> Result<T, E>` (for enums
/// whose own errors name the option).
#[macro_export]
macro_rules! from_str_via {
    ($t:ty, $err:ty, $parse:path) => {
        impl std::str::FromStr for $t {
            type Err = $err;

            fn from_str(name: &str) -> Result<Self, $err> {
                $parse(name)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Mode {
        FullMask,
        Coupled,
    }
    crate::from_str_by_name!(Mode);

    #[test]
    fn names_parse_and_errors_list_the_choices() {
        assert_eq!("full_mask".parse::<Mode>(), Ok(Mode::FullMask));
        let err = "fullmask".parse::<Mode>().unwrap_err();
        assert!(
            err.contains("`full_mask`") && err.contains("`coupled`"),
            "{err}"
        );
    }
}
