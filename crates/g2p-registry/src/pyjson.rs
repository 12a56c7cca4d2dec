//! JSON written the way Python's `json.dumps` writes it by default — separators `", "` and
//! `": "`, every character outside printable ASCII escaped as `\uXXXX` (lower-case hex,
//! surrogate pairs above U+FFFF) — so that a record sealed here carries the very bytes
//! OpenG2P's registry would have sealed.

use serde_json::Value;

/// `json.dumps(value)` with Python's defaults.
pub fn dumps(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(members) => {
            out.push('{');
            for (i, (name, item)) in members.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_string(out, name);
                out.push_str(": ");
                write_value(out, item);
            }
            out.push('}');
        }
    }
}

/// Integers as Python prints them; floats in Python's `repr` shape (`1.0`, `1e+16`), which
/// differs from Rust's only in those two details.
fn write_number(out: &mut String, n: &serde_json::Number) {
    match n.as_f64() {
        Some(f) if n.is_f64() => {
            if !f.is_finite() {
                // serde_json never holds these; Python would write NaN / Infinity.
                out.push_str(if f.is_nan() { "NaN" } else { "Infinity" });
                return;
            }
            let abs = f.abs();
            if abs != 0.0 && !(1e-4..1e16).contains(&abs) {
                let text = format!("{f:e}");
                let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
                let (sign, digits) = match exponent.strip_prefix('-') {
                    Some(d) => ('-', d),
                    None => ('+', exponent),
                };
                out.push_str(mantissa);
                out.push('e');
                out.push(sign);
                if digits.len() < 2 {
                    out.push('0');
                }
                out.push_str(digits);
            } else {
                let text = f.to_string();
                out.push_str(&text);
                if !text.contains('.') {
                    out.push_str(".0");
                }
            }
        }
        _ => out.push_str(&n.to_string()),
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Each expected string is what CPython 3 prints for `json.dumps` of the same value.
    #[test]
    fn matches_python_json_dumps_defaults() {
        let cases = [
            (
                json!({"name": "Amina", "address": "12 Kano Rd"}),
                r#"{"name": "Amina", "address": "12 Kano Rd"}"#,
            ),
            (
                json!({"name": "José Ñúñez"}),
                r#"{"name": "Jos\u00e9 \u00d1\u00fa\u00f1ez"}"#,
            ),
            (
                json!({"n": "أمينة"}),
                r#"{"n": "\u0623\u0645\u064a\u0646\u0629"}"#,
            ),
            (json!({"e": "😀"}), r#"{"e": "\ud83d\ude00"}"#),
            (json!({"q": "a\"b\\c/d"}), r#"{"q": "a\"b\\c/d"}"#),
            (
                json!({"c": "\n\r\t\u{8}\u{c}\u{1}\u{7f}"}),
                r#"{"c": "\n\r\t\b\f\u0001\u007f"}"#,
            ),
            (
                json!({"a": [1, 2.5, true, null, {}], "b": []}),
                r#"{"a": [1, 2.5, true, null, {}], "b": []}"#,
            ),
            (
                json!({"f": 1.0, "g": 1e16, "h": 1.5e-7, "i": -0.0001, "j": 123456789012345678u64}),
                r#"{"f": 1.0, "g": 1e+16, "h": 1.5e-07, "i": -0.0001, "j": 123456789012345678}"#,
            ),
            (json!({}), "{}"),
        ];
        for (value, expected) in cases {
            assert_eq!(dumps(&value), expected, "{value}");
        }
    }
}
