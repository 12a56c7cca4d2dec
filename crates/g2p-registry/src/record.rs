//! Records and the paths of their fields.

use serde_json::{Map, Value};

/// One record of a registry: a JSON object (key order kept).
pub type Record = Map<String, Value>;

/// A field of a record: a name, or a dotted path into nested objects (`address.city`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    text: String,
}

impl FieldPath {
    /// Parses a path.
    ///
    /// # Errors
    /// A message when a part of the path is empty (`a..b`, `.a`, ``).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.split('.').any(str::is_empty) {
            return Err(format!("{text:?} is not a field path"));
        }
        Ok(FieldPath {
            text: text.to_string(),
        })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value at this path, reached only through objects; `None` when absent.
    pub fn find_mut<'a>(&self, record: &'a mut Record) -> Option<&'a mut Value> {
        let mut parts = self.text.split('.');
        let first = record.get_mut(parts.next()?)?;
        parts.try_fold(first, |value, name| value.as_object_mut()?.get_mut(name))
    }
}

impl std::fmt::Display for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// What a JSON value is, for messages ("a number is not text").
pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(value: Value) -> Record {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn paths_reach_nested_fields_only_through_objects() {
        let mut r = record(json!({"name": "A", "address": {"city": "Kano"}, "tags": ["x"]}));
        let path = |p: &str| FieldPath::parse(p).unwrap();
        assert_eq!(
            path("address.city").find_mut(&mut r),
            Some(&mut json!("Kano"))
        );
        assert!(path("address.zip").find_mut(&mut r).is_none());
        assert!(path("tags.0").find_mut(&mut r).is_none());
        assert!(path("name.first").find_mut(&mut r).is_none());
        for bad in ["a..b", ".a", "a.", ""] {
            assert!(FieldPath::parse(bad).is_err(), "{bad:?}");
        }
    }
}
