//! The keys written either as a string or as something richer (a table or a
//! list): `memory`, `takeover.display_manager`, `takeover.unload_modules`.
//! One visitor serves them all, so that a wrong type gets a message naming
//! every accepted form (serde's `untagged` would only say "did not match any
//! variant").

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Unexpected, Visitor};
use serde::Deserialize;

/// A key's value: a string parsed as `S`, or the richer form `R`.
#[derive(Debug)]
pub(crate) enum StringOr<S, R> {
    Str(S),
    Rich(R),
}

/// The richer form of a [`StringOr`] key.
pub(crate) trait Rich {
    /// Every accepted form, for the message when the value has none of them.
    const EXPECTING: &'static str;
    /// Written as a TOML table; otherwise as an array.
    const TABLE: bool;
}

impl<'de, S, R> Deserialize<'de> for StringOr<S, R>
where
    S: FromStr<Err: fmt::Display>,
    R: Rich + Deserialize<'de>,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StringOrVisitor(PhantomData))
    }
}

struct StringOrVisitor<S, R>(PhantomData<(S, R)>);

impl<'de, S, R> Visitor<'de> for StringOrVisitor<S, R>
where
    S: FromStr<Err: fmt::Display>,
    R: Rich + Deserialize<'de>,
{
    type Value = StringOr<S, R>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(R::EXPECTING)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        v.parse().map(StringOr::Str).map_err(E::custom)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        if !R::TABLE {
            return Err(de::Error::invalid_type(Unexpected::Map, &self));
        }
        let de = de::value::MapAccessDeserializer::new(map);
        R::deserialize(de).map(StringOr::Rich)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        if R::TABLE {
            return Err(de::Error::invalid_type(Unexpected::Seq, &self));
        }
        let de = de::value::SeqAccessDeserializer::new(seq);
        R::deserialize(de).map(StringOr::Rich)
    }
}
