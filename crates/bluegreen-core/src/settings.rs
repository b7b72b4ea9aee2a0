//! Release settings read into a provider's own typed struct.
//!
//! A [`Release`](crate::Release) carries its provider-specific settings as text
//! (`settings.port = "8080"`). A provider declares what it reads as a struct that
//! derives [`serde::Deserialize`] and reads it with
//! [`Release::settings_as`](crate::Release::settings_as); every provider then refuses an unknown or bad
//! setting the same way, before any side effect, with [`Error::Invalid`] naming
//! `settings.<key>`:
//!
//! - an unknown key: `invalid settings.comand: the local fleet does not know it (it
//!   reads command, args)` (the keys are the struct's fields, in their order);
//! - a value that does not parse: `invalid settings.port: `80x` is not a whole number
//!   (0 to 65535)`;
//! - a missing key that has no default: `invalid settings.command: is required`.
//!
//! Values are parsed from text: whole numbers, decimals, `true`/`false`, strings,
//! `Option` (a key that is present is `Some`), unit enum variants by name, and the
//! helpers [`Millis`] (whole milliseconds) and [`Words`] (whitespace-separated).
//!
//! ```
//! use bluegreen_core::settings::{parse, Millis};
//! use serde::Deserialize;
//! use std::collections::BTreeMap;
//! use std::time::Duration;
//!
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct MySettings {
//!     #[serde(default = "default_port")]
//!     port: u16,
//!     stop_timeout_ms: Option<Millis>,
//! }
//! fn default_port() -> u16 { 8080 }
//!
//! let mut settings = BTreeMap::new();
//! settings.insert("stop_timeout_ms".to_string(), "2500".to_string());
//! let s: MySettings = parse("my fleet", &settings).unwrap();
//! assert_eq!((s.port, s.stop_timeout_ms.unwrap().0), (8080, Duration::from_millis(2500)));
//!
//! settings.insert("prot".to_string(), "80".to_string());
//! let e = parse::<MySettings>("my fleet", &settings).err().unwrap();
//! assert_eq!(
//!     e.to_string(),
//!     "invalid settings.prot: my fleet does not know it (it reads port, stop_timeout_ms)"
//! );
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde::Deserialize;

use crate::error::{Error, Result};

/// Reads `settings` into `T`; `provider` names the reader in errors (`the Docker
/// fleet`). See the [module docs](self) for the errors.
pub fn parse<T: DeserializeOwned>(
    provider: &str,
    settings: &BTreeMap<String, String>,
) -> Result<T> {
    T::deserialize(Settings { provider, settings }).map_err(|e| match e.key {
        Some(key) => Error::invalid(format!("settings.{key}"), e.message),
        None => Error::invalid("settings", e.message),
    })
}

/// The keys a settings struct reads: the fields of `T` (after serde's `rename`), in
/// their order, as its derived `Deserialize` gives them to `deserialize_struct`. A
/// provider derives its list of settings from its struct with it, so that the list
/// and what is read cannot disagree. Empty for a type that is not a plain struct
/// (one with `#[serde(flatten)]`, a map).
///
/// ```
/// use bluegreen_core::settings::{fields, Millis};
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct MySettings {
///     port: Option<u16>,
///     #[serde(rename = "stop_timeout_ms")]
///     stop_timeout: Option<Millis>,
/// }
/// assert_eq!(fields::<MySettings>(), ["port", "stop_timeout_ms"]);
/// ```
pub fn fields<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut seen = None;
    // the deserializer records the fields and stops: the error is expected
    let _ = T::deserialize(FieldNames { seen: &mut seen });
    seen.unwrap_or(&[])
}

/// A deserializer that records the fields a struct asks for, and reads nothing.
struct FieldNames<'a> {
    seen: &'a mut Option<&'static [&'static str]>,
}

impl<'de> de::Deserializer<'de> for FieldNames<'_> {
    type Error = SettingError;

    fn deserialize_any<V: Visitor<'de>>(
        self,
        _visitor: V,
    ) -> std::result::Result<V::Value, SettingError> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> std::result::Result<V::Value, SettingError> {
        *self.seen = Some(fields);
        Err(de::Error::custom("fields recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// A duration given in whole milliseconds (`"2500"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Millis(pub Duration);

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        u64::deserialize(d).map(|ms| Millis(Duration::from_millis(ms)))
    }
}

/// Words separated by whitespace (`"/app --port 8080"`); at least one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Words(pub Vec<String>);

impl<'de> Deserialize<'de> for Words {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let words: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
        if words.is_empty() {
            return Err(de::Error::custom("is empty; give at least one word"));
        }
        Ok(Words(words))
    }
}

/// An error while reading settings: the key it concerns (once known) and what is
/// wrong.
#[derive(Debug)]
pub struct SettingError {
    key: Option<String>,
    message: String,
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "settings.{key}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for SettingError {}

impl de::Error for SettingError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        SettingError {
            key: None,
            message: msg.to_string(),
        }
    }

    fn missing_field(field: &'static str) -> Self {
        SettingError {
            key: Some(field.to_owned()),
            message: "is required".to_owned(),
        }
    }
}

impl SettingError {
    fn at(key: &str, message: impl Into<String>) -> Self {
        SettingError {
            key: Some(key.to_owned()),
            message: message.into(),
        }
    }
}

/// The whole map, read as a struct.
struct Settings<'a> {
    provider: &'a str,
    settings: &'a BTreeMap<String, String>,
}

impl<'de> de::Deserializer<'de> for Settings<'_> {
    type Error = SettingError;

    fn deserialize_any<V: Visitor<'de>>(
        self,
        visitor: V,
    ) -> std::result::Result<V::Value, SettingError> {
        visitor.visit_map(Entries {
            iter: self.settings.iter(),
            key: None,
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> std::result::Result<V::Value, SettingError> {
        if let Some(key) = self.settings.keys().find(|k| !fields.contains(&k.as_str())) {
            return Err(SettingError::at(
                key,
                format!(
                    "{} does not know it (it reads {})",
                    self.provider,
                    fields.join(", ")
                ),
            ));
        }
        self.deserialize_any(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// The map's entries, each value read from its text.
struct Entries<'a> {
    iter: std::collections::btree_map::Iter<'a, String, String>,
    key: Option<(&'a str, &'a str)>,
}

impl<'de> de::MapAccess<'de> for Entries<'_> {
    type Error = SettingError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> std::result::Result<Option<K::Value>, SettingError> {
        match self.iter.next() {
            Some((k, v)) => {
                self.key = Some((k, v));
                seed.deserialize(k.as_str().into_deserializer()).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<S: de::DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> std::result::Result<S::Value, SettingError> {
        let (key, text) = self.key.take().expect("a value follows its key");
        seed.deserialize(Text { key, text }).map_err(|mut e| {
            e.key.get_or_insert_with(|| key.to_owned());
            e
        })
    }
}

/// One setting's text, parsed as whatever the field asks for.
struct Text<'a> {
    key: &'a str,
    text: &'a str,
}

impl Text<'_> {
    fn number<N: std::str::FromStr>(&self, what: &str) -> std::result::Result<N, SettingError> {
        self.text
            .trim()
            .parse::<N>()
            .map_err(|_| SettingError::at(self.key, format!("`{}` is not {what}", self.text)))
    }
}

macro_rules! whole {
    ($($method:ident $visit:ident $ty:ty,)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> std::result::Result<V::Value, SettingError> {
            let what = format!("a whole number ({} to {})", <$ty>::MIN, <$ty>::MAX);
            visitor.$visit(self.number::<$ty>(&what)?)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Text<'_> {
    type Error = SettingError;

    fn deserialize_any<V: Visitor<'de>>(
        self,
        visitor: V,
    ) -> std::result::Result<V::Value, SettingError> {
        visitor.visit_str(self.text)
    }

    whole! {
        deserialize_u8 visit_u8 u8,
        deserialize_u16 visit_u16 u16,
        deserialize_u32 visit_u32 u32,
        deserialize_u64 visit_u64 u64,
        deserialize_i8 visit_i8 i8,
        deserialize_i16 visit_i16 i16,
        deserialize_i32 visit_i32 i32,
        deserialize_i64 visit_i64 i64,
    }

    fn deserialize_f32<V: Visitor<'de>>(
        self,
        visitor: V,
    ) -> std::result::Result<V::Value, SettingError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(
        self,
        visitor: V,
    ) -> std::result::Result<V::Value, SettingError> {
        let n = self.number::<f64>("a number")?;
        if !n.is_finite() {
            return Err(SettingError::at(
                self.key,
                format!("`{}` is not a finite number", self.text),
            ));
        }
        visitor.visit_f64(n)
    }

    fn deserialize_bool<V: Visitor<'de>>(
        self,
        visitor: V,
    ) -> std::result::Result<V::Value, SettingError> {
        match self.text.trim() {
            "true" => visitor.visit_bool(true),
            "false" => visitor.visit_bool(false),
            _ => Err(SettingError::at(
                self.key,
                format!("`{}` is not true or false", self.text),
            )),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(
        self,
        visitor: V,
    ) -> std::result::Result<V::Value, SettingError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> std::result::Result<V::Value, SettingError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> std::result::Result<V::Value, SettingError> {
        let text = self.text.trim();
        if !variants.contains(&text) {
            return Err(SettingError::at(
                self.key,
                format!("`{}` is not one of {}", self.text, variants.join(", ")),
            ));
        }
        visitor.visit_enum(text.into_deserializer())
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char str string bytes byte_buf unit unit_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "kebab-case")]
    enum Restart {
        No,
        Always,
        OnFailure,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct S {
        #[serde(default = "port")]
        port: u16,
        command: Option<Words>,
        cpus: Option<f64>,
        stop_timeout_ms: Option<Millis>,
        restart: Option<Restart>,
        debug: Option<bool>,
        name: Option<String>,
    }

    fn port() -> u16 {
        8080
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn err(pairs: &[(&str, &str)]) -> String {
        parse::<S>("the test fleet", &map(pairs))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn reads_every_kind_of_value() {
        let s: S = parse(
            "the test fleet",
            &map(&[
                ("port", " 9000 "),
                ("command", "/app  --port 9000"),
                ("cpus", "0.5"),
                ("stop_timeout_ms", "2500"),
                ("restart", "on-failure"),
                ("debug", "true"),
                ("name", "a b"),
            ]),
        )
        .unwrap();
        assert_eq!(
            s,
            S {
                port: 9000,
                command: Some(Words(vec!["/app".into(), "--port".into(), "9000".into()])),
                cpus: Some(0.5),
                stop_timeout_ms: Some(Millis(Duration::from_millis(2500))),
                restart: Some(Restart::OnFailure),
                debug: Some(true),
                name: Some("a b".into()),
            }
        );
        let empty: S = parse("the test fleet", &BTreeMap::new()).unwrap();
        assert_eq!(
            (empty.port, empty.command, empty.restart),
            (8080, None, None)
        );
        let _ = (Restart::No, Restart::Always);
    }

    #[test]
    fn every_bad_setting_names_its_key_and_the_problem() {
        assert_eq!(
            err(&[("prot", "1")]),
            "invalid settings.prot: the test fleet does not know it (it reads port, command, \
             cpus, stop_timeout_ms, restart, debug, name)"
        );
        assert_eq!(
            err(&[("port", "80x")]),
            "invalid settings.port: `80x` is not a whole number (0 to 65535)"
        );
        assert_eq!(
            err(&[("port", "70000")]),
            "invalid settings.port: `70000` is not a whole number (0 to 65535)"
        );
        assert_eq!(
            err(&[("stop_timeout_ms", "-1")]),
            "invalid settings.stop_timeout_ms: `-1` is not a whole number (0 to 18446744073709551615)"
        );
        assert_eq!(
            err(&[("cpus", "NaN")]),
            "invalid settings.cpus: `NaN` is not a finite number"
        );
        assert_eq!(
            err(&[("cpus", "half")]),
            "invalid settings.cpus: `half` is not a number"
        );
        assert_eq!(
            err(&[("debug", "yes")]),
            "invalid settings.debug: `yes` is not true or false"
        );
        assert_eq!(
            err(&[("restart", "sometimes")]),
            "invalid settings.restart: `sometimes` is not one of no, always, on-failure"
        );
        assert_eq!(
            err(&[("command", "  ")]),
            "invalid settings.command: is empty; give at least one word"
        );
    }

    #[test]
    fn a_required_setting_that_is_missing_is_named() {
        #[derive(Debug, Deserialize)]
        struct Needs {
            #[allow(dead_code)]
            command: Words,
        }
        let e = parse::<Needs>("the test fleet", &BTreeMap::new()).unwrap_err();
        assert_eq!(e.to_string(), "invalid settings.command: is required");
    }
}
