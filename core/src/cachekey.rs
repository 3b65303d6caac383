//! Response-cache keys: SHA-256 over a canonical form of (namespace, model, request).
//!
//! Canonical JSON: object keys sorted bytewise, no insignificant whitespace, numbers written in
//! their shortest exact decimal form (`1.0`, `1.00` and `1` are the same number; `1e2` is `100`),
//! strings with the minimal JSON escapes. Every field of the request matters (messages, tools,
//! temperature, seed, ...), arrays keep their order. The prompt is hashed, never indexed, so
//! requests of any size work.

use rust_decimal::Decimal;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fmt::Write;
use std::str::FromStr;

/// Version tag mixed into every key: bump it if the canonical form ever changes.
const KEY_VERSION: &[u8] = b"pg_aicost/cache-key/v1\0";

/// Appends the canonical JSON text of `v` to `out`.
pub fn canonicalize(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => canonical_number(&n.to_string(), out),
        Value::String(s) => canonical_string(s, out),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonicalize(x, out);
            }
            out.push(']');
        }
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort_unstable();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_string(k, out);
                out.push(':');
                canonicalize(&o[k], out);
            }
            out.push('}');
        }
    }
}

/// Appends the canonical form of a JSON number given as its text.
pub fn canonical_number(text: &str, out: &mut String) {
    let d = Decimal::from_str(text).or_else(|_| Decimal::from_scientific(text));
    match d {
        Ok(d) => {
            let d = d.normalize();
            // -0 is 0
            if d.is_zero() {
                out.push('0');
            } else {
                write!(out, "{d}").expect("writing to a String");
            }
        }
        // Beyond 28 digits: keep the number's own text (still deterministic for equal input).
        Err(_) => out.push_str(text),
    }
}

/// Appends a string as canonical JSON (quoted, minimal escapes).
pub fn canonical_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                write!(out, "\\u{:04x}", c as u32).expect("writing to a String")
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The cache key: lowercase hex SHA-256 of the version tag, namespace, model and canonical request.
pub fn cache_key(namespace: &str, model: &str, request: &Value) -> String {
    let mut canon = String::with_capacity(256);
    canonicalize(request, &mut canon);
    cache_key_of_canonical(namespace, model, &canon)
}

/// The cache key of a request already in canonical form (see [`canonicalize`]): what
/// [`cache_key`] hashes, for callers that canonicalize another representation of the same JSON.
pub fn cache_key_of_canonical(namespace: &str, model: &str, canon: &str) -> String {
    let mut h = Sha256::new();
    h.update(KEY_VERSION);
    for part in [namespace, model] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.update(canon.as_bytes());
    let digest = h.finalize();
    let mut hex = String::with_capacity(64);
    for b in digest {
        write!(hex, "{b:02x}").expect("writing to a String");
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    fn canon(s: &str) -> String {
        let mut out = String::new();
        canonicalize(&parse(s), &mut out);
        out
    }

    #[test]
    fn key_order_whitespace_and_number_spelling_do_not_matter() {
        let a = r#"{"model": "gpt-4o", "temperature": 1.0, "messages": [{"role": "user", "content": "hi"}]}"#;
        let b = r#"{"messages":[{"content":"hi","role":"user"}],"temperature":1,"model":"gpt-4o"}"#;
        assert_eq!(canon(a), canon(b));
        assert_eq!(
            cache_key("ns", "gpt-4o", &parse(a)),
            cache_key("ns", "gpt-4o", &parse(b))
        );
        assert_eq!(canon("[1e2, 0.50, -0.0, 3]"), "[100,0.5,0,3]");
    }

    #[test]
    fn every_field_matters() {
        let base =
            parse(r#"{"messages": [{"role": "user", "content": "hi"}], "temperature": 0.2}"#);
        let k = |v: &Value| cache_key("default", "gpt-4o", v);
        let variants = [
            r#"{"messages": [{"role": "user", "content": "hi"}], "temperature": 0.3}"#,
            r#"{"messages": [{"role": "user", "content": "hi "}], "temperature": 0.2}"#,
            r#"{"messages": [{"role": "user", "content": "hi"}], "temperature": 0.2, "seed": 1}"#,
            r#"{"messages": [{"role": "user", "content": "hi"}], "temperature": 0.2, "tools": []}"#,
            r#"{"messages": [{"role": "system", "content": "hi"}], "temperature": 0.2}"#,
        ];
        for v in variants {
            assert_ne!(k(&base), k(&parse(v)), "{v}");
        }
        // Namespace and model are part of the key, unambiguously.
        assert_ne!(cache_key("a", "bc", &base), cache_key("ab", "c", &base));
        assert_ne!(
            cache_key("default", "gpt-4o", &base),
            cache_key("default", "gpt-4o-mini", &base)
        );
    }

    #[test]
    fn strings_are_escaped_canonically() {
        assert_eq!(
            canon(r#"["a\"b", "\u0041", "tab\t", "\u0001", "é"]"#),
            "[\"a\\\"b\",\"A\",\"tab\\t\",\"\\u0001\",\"é\"]"
        );
        let key = cache_key("default", "m", &parse(r#"{"x": 1}"#));
        assert_eq!(key.len(), 64);
        assert!(
            key.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
    }

    #[test]
    fn large_prompts_hash_fine() {
        let big = "x".repeat(5_000_000);
        let v = serde_json::json!({"messages": [{"role": "user", "content": big}]});
        assert_eq!(cache_key("default", "m", &v).len(), 64);
    }
}
