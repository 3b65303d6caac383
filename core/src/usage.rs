//! Provider usage objects → [`TokenCounts`].
//!
//! Accepted shapes (a whole response holding one of them under `usage` or `usageMetadata` works too):
//!
//! | format | prompt tokens (`input`) | completion (`output`) | cache read | cache write |
//! |---|---|---|---|---|
//! | OpenAI chat | `prompt_tokens` (includes cached) | `completion_tokens` (includes reasoning) | `prompt_tokens_details.cached_tokens` (DeepSeek: `prompt_cache_hit_tokens`) | — |
//! | OpenAI responses | `input_tokens` (includes cached) | `output_tokens` (includes reasoning) | `input_tokens_details.cached_tokens` | — |
//! | Anthropic | `input_tokens` + `cache_read_input_tokens` + `cache_creation_input_tokens` (Anthropic's `input_tokens` excludes both) | `output_tokens` | `cache_read_input_tokens` | `cache_creation_input_tokens`, split by `cache_creation.ephemeral_1h_input_tokens` into 1-hour and 5-minute writes |
//! | Gemini | `promptTokenCount` (includes cached) + `toolUsePromptTokenCount` | `candidatesTokenCount` + `thoughtsTokenCount` (thinking is billed as output and not part of candidates) | `cachedContentTokenCount` | — |
//!
//! An object with `input_tokens` is Anthropic when it has any `cache_read_input_tokens`,
//! `cache_creation_input_tokens` or `cache_creation` key, otherwise OpenAI responses; without
//! cache keys both readings give the same counts.

use crate::cost::TokenCounts;
use serde_json::{Map, Value};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OpenAiChat,
    OpenAiResponses,
    Anthropic,
    Gemini,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::OpenAiChat => "openai_chat",
            Format::OpenAiResponses => "openai_responses",
            Format::Anthropic => "anthropic",
            Format::Gemini => "gemini",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UsageError {
    NotAnObject(&'static str),
    Unrecognized(Vec<String>),
    BadCount { field: String, value: String },
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsageError::NotAnObject(kind) => write!(f, "usage must be a JSON object, not {kind}"),
            UsageError::Unrecognized(keys) => write!(
                f,
                "usage object has no recognized token counts (keys: {}); expected OpenAI \
                 prompt_tokens/completion_tokens, input_tokens/output_tokens, or Gemini \
                 promptTokenCount/candidatesTokenCount",
                if keys.is_empty() {
                    "none".to_string()
                } else {
                    // Bounded: an object may have any number of keys of any length.
                    let mut shown: Vec<String> = keys
                        .iter()
                        .take(10)
                        .map(|k| crate::limits::clip(k))
                        .collect();
                    if keys.len() > 10 {
                        shown.push(format!("and {} more", keys.len() - 10));
                    }
                    shown.join(", ")
                }
            ),
            UsageError::BadCount { field, value } => write!(
                f,
                "usage field \"{}\" must be a non-negative integer token count, not {}",
                crate::limits::clip(field),
                crate::limits::clip(value)
            ),
        }
    }
}

impl std::error::Error for UsageError {}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A count at `path` (dot-separated) under `obj`; absent or null is 0.
fn count(obj: &Map<String, Value>, path: &str) -> Result<i64, UsageError> {
    let mut cur = obj;
    let mut parts = path.split('.').peekable();
    while let Some(p) = parts.next() {
        let Some(v) = cur.get(p) else { return Ok(0) };
        if parts.peek().is_some() {
            match v {
                Value::Object(o) => cur = o,
                Value::Null => return Ok(0),
                other => {
                    return Err(UsageError::BadCount {
                        field: path.into(),
                        value: kind(other).into(),
                    });
                }
            }
            continue;
        }
        return match v {
            Value::Null => Ok(0),
            Value::Number(n) => {
                n.as_i64()
                    .filter(|x| *x >= 0)
                    .ok_or_else(|| UsageError::BadCount {
                        field: path.into(),
                        value: n.to_string(),
                    })
            }
            other => Err(UsageError::BadCount {
                field: path.into(),
                value: kind(other).into(),
            }),
        };
    }
    Ok(0)
}

fn add(a: i64, b: i64, field: &str) -> Result<i64, UsageError> {
    a.checked_add(b).ok_or_else(|| UsageError::BadCount {
        field: field.into(),
        value: "a count too large to add up".into(),
    })
}

/// Parses a provider usage object (or a response containing one).
pub fn parse(v: &Value) -> Result<(TokenCounts, Format), UsageError> {
    let Value::Object(o) = v else {
        return Err(UsageError::NotAnObject(kind(v)));
    };
    for key in ["usage", "usageMetadata"] {
        if let Some(inner @ Value::Object(_)) = o.get(key) {
            return parse(inner);
        }
    }
    let has = |k: &str| o.contains_key(k);
    if has("prompt_tokens") || has("completion_tokens") {
        let input = count(o, "prompt_tokens")?;
        let mut cached = count(o, "prompt_tokens_details.cached_tokens")?;
        if cached == 0 {
            cached = count(o, "prompt_cache_hit_tokens")?;
        }
        let t = TokenCounts {
            input,
            output: count(o, "completion_tokens")?,
            cached,
            ..Default::default()
        };
        return Ok((t, Format::OpenAiChat));
    }
    if has("promptTokenCount") || has("candidatesTokenCount") {
        let t = TokenCounts {
            input: add(
                count(o, "promptTokenCount")?,
                count(o, "toolUsePromptTokenCount")?,
                "promptTokenCount",
            )?,
            output: add(
                count(o, "candidatesTokenCount")?,
                count(o, "thoughtsTokenCount")?,
                "candidatesTokenCount",
            )?,
            cached: count(o, "cachedContentTokenCount")?,
            ..Default::default()
        };
        return Ok((t, Format::Gemini));
    }
    if has("input_tokens") || has("output_tokens") {
        let anthropic = has("cache_read_input_tokens")
            || has("cache_creation_input_tokens")
            || has("cache_creation");
        if !anthropic {
            let t = TokenCounts {
                input: count(o, "input_tokens")?,
                output: count(o, "output_tokens")?,
                cached: count(o, "input_tokens_details.cached_tokens")?,
                ..Default::default()
            };
            return Ok((t, Format::OpenAiResponses));
        }
        let read = count(o, "cache_read_input_tokens")?;
        let w1h = count(o, "cache_creation.ephemeral_1h_input_tokens")?;
        let mut written = count(o, "cache_creation_input_tokens")?;
        if !has("cache_creation_input_tokens") {
            written = add(
                count(o, "cache_creation.ephemeral_5m_input_tokens")?,
                w1h,
                "cache_creation",
            )?;
        }
        if w1h > written {
            return Err(UsageError::BadCount {
                field: "cache_creation.ephemeral_1h_input_tokens".into(),
                value: format!("{w1h} (more than cache_creation_input_tokens = {written})"),
            });
        }
        let input = add(
            add(count(o, "input_tokens")?, read, "cache_read_input_tokens")?,
            written,
            "cache_creation_input_tokens",
        )?;
        let t = TokenCounts {
            input,
            output: count(o, "output_tokens")?,
            cached: read,
            cache_write_5m: written - w1h,
            cache_write_1h: w1h,
        };
        return Ok((t, Format::Anthropic));
    }
    Err(UsageError::Unrecognized(o.keys().cloned().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tc(input: i64, output: i64, cached: i64, w5: i64, w1: i64) -> TokenCounts {
        TokenCounts {
            input,
            output,
            cached,
            cache_write_5m: w5,
            cache_write_1h: w1,
        }
    }

    #[test]
    fn openai_chat() {
        let u = json!({"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500,
                       "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
                       "completion_tokens_details": {"reasoning_tokens": 100}});
        assert_eq!(
            parse(&u).unwrap(),
            (tc(1200, 300, 1024, 0, 0), Format::OpenAiChat)
        );
        // A whole chat completion response.
        let r = json!({"id": "x", "choices": [], "usage": u});
        assert_eq!(parse(&r).unwrap().0, tc(1200, 300, 1024, 0, 0));
        let deepseek = json!({"prompt_tokens": 100, "completion_tokens": 5, "prompt_cache_hit_tokens": 64, "prompt_cache_miss_tokens": 36});
        assert_eq!(parse(&deepseek).unwrap().0, tc(100, 5, 64, 0, 0));
    }

    #[test]
    fn openai_responses() {
        let u = json!({"input_tokens": 500, "output_tokens": 20, "input_tokens_details": {"cached_tokens": 128},
                       "output_tokens_details": {"reasoning_tokens": 10}, "total_tokens": 520});
        assert_eq!(
            parse(&u).unwrap(),
            (tc(500, 20, 128, 0, 0), Format::OpenAiResponses)
        );
    }

    #[test]
    fn anthropic_counts_cache_tokens_into_input() {
        let u = json!({"input_tokens": 50, "output_tokens": 10, "cache_read_input_tokens": 1000,
                       "cache_creation_input_tokens": 300,
                       "cache_creation": {"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 100}});
        assert_eq!(
            parse(&u).unwrap(),
            (tc(1350, 10, 1000, 200, 100), Format::Anthropic)
        );
        let no_split = json!({"input_tokens": 5, "output_tokens": 1, "cache_creation_input_tokens": 7, "cache_read_input_tokens": 0});
        assert_eq!(parse(&no_split).unwrap().0, tc(12, 1, 0, 7, 0));
        let only_split = json!({"input_tokens": 5, "output_tokens": 1, "cache_creation": {"ephemeral_5m_input_tokens": 2, "ephemeral_1h_input_tokens": 3}});
        assert_eq!(parse(&only_split).unwrap().0, tc(10, 1, 0, 2, 3));
    }

    #[test]
    fn gemini() {
        let u = json!({"promptTokenCount": 4000, "candidatesTokenCount": 200, "thoughtsTokenCount": 50,
                       "cachedContentTokenCount": 2048, "totalTokenCount": 4250});
        assert_eq!(
            parse(&u).unwrap(),
            (tc(4000, 250, 2048, 0, 0), Format::Gemini)
        );
        let r = json!({"candidates": [], "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4}});
        assert_eq!(parse(&r).unwrap().0, tc(3, 4, 0, 0, 0));
    }

    #[test]
    fn malformed_usage_is_rejected() {
        assert_eq!(
            parse(&json!([1, 2])).unwrap_err(),
            UsageError::NotAnObject("an array")
        );
        assert!(
            matches!(parse(&json!({"tokens": 5})), Err(UsageError::Unrecognized(k)) if k == vec!["tokens"])
        );
        let bad = |v: Value| parse(&v).unwrap_err().to_string();
        assert!(bad(json!({"prompt_tokens": -1})).contains("\"prompt_tokens\""));
        assert!(bad(json!({"prompt_tokens": 1.5})).contains("1.5"));
        assert!(bad(json!({"prompt_tokens": "12"})).contains("a string"));
        assert!(
            bad(json!({"prompt_tokens": 10, "prompt_tokens_details": 3}))
                .contains("prompt_tokens_details.cached_tokens")
        );
        assert!(bad(json!({"input_tokens": 1, "cache_creation_input_tokens": 1, "cache_creation": {"ephemeral_1h_input_tokens": 2}})).contains("ephemeral_1h"));
        assert!(
            bad(json!({"promptTokenCount": i64::MAX, "toolUsePromptTokenCount": 1}))
                .contains("too large")
        );
        // null counts are absent counts
        assert_eq!(
            parse(&json!({"prompt_tokens": 5, "completion_tokens": null}))
                .unwrap()
                .0,
            tc(5, 0, 0, 0, 0)
        );
    }
}
