//! A configuration string that becomes a value when the file is read (a camera's URL,
//! a rule's schedule): parsed exactly once, at load.
//!
//! Promises: reading a file never stops at the first bad value: a string that does not
//! parse is kept with its reason, and `Config::load` reports it with every other
//! problem and returns no configuration. So every `Parsed` in a loaded configuration
//! holds its value, and [`Parsed::get`] is the parsed value, never a fallback.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, PartialEq)]
pub struct Parsed<T>(Result<T, String>);

impl<T> Parsed<T> {
    /// The value. Only a configuration that `Config::load` returned is used, and it
    /// returns none with an unparsed value, so this holds.
    pub fn get(&self) -> &T {
        match &self.0 {
            Ok(v) => v,
            Err(why) => panic!("a configuration value that did not parse was used ({why}); Config::load refuses those"),
        }
    }

    /// Why the string did not parse.
    pub fn problem(&self) -> Option<&str> {
        self.0.as_ref().err().map(String::as_str)
    }
}

impl<T> From<T> for Parsed<T> {
    fn from(v: T) -> Parsed<T> {
        Parsed(Ok(v))
    }
}

impl<'de, T: TryFrom<String, Error = String>> Deserialize<'de> for Parsed<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Parsed<T>, D::Error> {
        Ok(Parsed(T::try_from(String::deserialize(d)?)))
    }
}

impl<T: Serialize> Serialize for Parsed<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Ok(v) => v.serialize(s),
            Err(_) => s.serialize_str("(invalid)"),
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Parsed<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Ok(v) => v.fmt(f),
            Err(why) => write!(f, "invalid ({why})"),
        }
    }
}
