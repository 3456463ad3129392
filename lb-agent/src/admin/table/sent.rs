//! Results shown as `key  value` lines (`status`, `vip show`, the answers to changes):
//! the fields the agent sent, each rendered from the typed value, in the order the type
//! declares them; fields this client does not know follow as sent. Which fields were
//! sent matters: an older agent's reply lists only what it has.

use serde::{
    de::{self, DeserializeOwned},
    Deserialize, Deserializer, Serialize,
};
use serde_json::{Map, Value};

/// A result read as a `T`, with the JSON object it was read from.
#[derive(Clone, Debug, PartialEq)]
pub struct Sent<T> {
    pub value: T,
    pub fields: Map<String, Value>,
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Sent<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let fields = Map::deserialize(d)?;
        let value = T::deserialize(&Value::Object(fields.clone())).map_err(de::Error::custom)?;
        Ok(Sent { value, fields })
    }
}

impl<T: Serialize + DeserializeOwned> Sent<T> {
    /// The fields that were sent, valued as `value` has them: a field of `T` that `value`
    /// leaves out (an empty list it skips) is left out; anything `T` does not know, at
    /// the top or inside a nested object, is kept as sent.
    pub fn shown(&self, value: &T) -> Map<String, Value> {
        let typed = match serde_json::to_value(value) {
            Ok(Value::Object(typed)) => typed,
            _ => Map::new(),
        };
        let known = field_names::<T>();
        let mut sent = self.fields.clone();
        sent.retain(|k, _| !known.contains(&k.as_str()) || typed.contains_key(k));
        overlay(&sent, &typed)
    }
}

/// Every key of `sent`, valued as `typed` has it where it does (nested objects alike),
/// else as sent.
fn overlay(sent: &Map<String, Value>, typed: &Map<String, Value>) -> Map<String, Value> {
    sent.iter()
        .map(|(k, sent)| {
            let value = match (sent, typed.get(k)) {
                (Value::Object(sent), Some(Value::Object(typed))) => {
                    Value::Object(overlay(sent, typed))
                }
                (_, Some(typed)) => typed.clone(),
                (sent, None) => sent.clone(),
            };
            (k.clone(), value)
        })
        .collect()
}

/// The names of struct `T`'s fields as serde reads them, in declaration order (empty
/// for a type that is not a struct). serde hands the deserializer the list of fields of
/// the struct it wants; this deserializer notes the list and stops there.
pub fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut names: &'static [&'static str] = &[];
    // Always an error: only the list noted on the way is wanted.
    let _: Result<T, _> = T::deserialize(FieldNames(&mut names));
    names
}

struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("only the field names are wanted"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
        identifier ignored_any
    }
}
