//! Reading LiteLLM's `model_prices_and_context_window.json` into price rows.
//!
//! Token price keys are `<base>[_above_<N>k_tokens][_<tier>]` with
//! - base: `input_cost_per_token`, `output_cost_per_token`, `cache_read_input_token_cost`,
//!   `cache_creation_input_token_cost` (5-minute write) and `cache_creation_input_token_cost_above_1hr`
//!   (1-hour write);
//! - `_above_<N>k_tokens`: a long-context price for requests whose prompt exceeds N × 1000 tokens;
//! - tier: `_batches`, `_flex`, `_priority`.
//!
//! LiteLLM's prices are US dollars per token; rows here are per million tokens, converted exactly by
//! shifting the decimal point of the number's own text. Other keys (per image, per second, per
//! character, `_balanced`/`_ultrafast` tiers, ...) are not token prices we bill and are counted as skipped.
//! Keys starting with `_` and the `sample_spec` entry are not models. xAI's long-context prices
//! apply from N × 1000 prompt tokens on (LiteLLM compares inclusively for xAI), so they are
//! imported with threshold N × 1000 − 1.

use crate::{ServiceTier, UsageType};
use rust_decimal::Decimal;
use serde_json::Value;
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Debug, PartialEq)]
pub struct ImportPrice {
    pub usage: UsageType,
    pub tier: ServiceTier,
    pub threshold_tokens: i64,
    pub usd_per_mtok: Decimal,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ImportModel {
    pub name: String,
    pub provider: String,
    pub mode: Option<String>,
    pub max_input_tokens: Option<i64>,
    pub aliases: Vec<String>,
    pub source: Option<String>,
    pub as_of: Option<String>,
    pub prices: Vec<ImportPrice>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImportDoc {
    pub models: Vec<ImportModel>,
    /// Entries without any token price (image, audio-by-second, ... models).
    pub skipped_entries: usize,
    /// Price keys of imported entries that are not token prices we bill.
    pub skipped_keys: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportError(pub String);

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ImportError {}

/// Providers whose long-context prices start at N×1000 prompt tokens rather than above it
/// (LiteLLM's `_INCLUSIVE_THRESHOLD_PROVIDERS`); imported with threshold N×1000 − 1.
pub const INCLUSIVE_THRESHOLD_PROVIDERS: [&str; 1] = ["xai"];

/// Splits a price key into (usage type, threshold, tier), or None if it is not a token price.
pub fn parse_key(key: &str) -> Option<(UsageType, i64, ServiceTier)> {
    const BASES: [(&str, UsageType); 5] = [
        (
            "cache_creation_input_token_cost_above_1hr",
            UsageType::CacheWrite1h,
        ),
        ("cache_creation_input_token_cost", UsageType::CacheWrite5m),
        ("cache_read_input_token_cost", UsageType::CacheRead),
        ("input_cost_per_token", UsageType::Input),
        ("output_cost_per_token", UsageType::Output),
    ];
    let (usage, mut rest) = BASES
        .iter()
        .find_map(|(b, u)| key.strip_prefix(b).map(|r| (*u, r)))?;
    let mut tier = ServiceTier::Standard;
    for (suffix, t) in [
        ("_batches", ServiceTier::Batch),
        ("_flex", ServiceTier::Flex),
        ("_priority", ServiceTier::Priority),
    ] {
        if let Some(r) = rest.strip_suffix(suffix) {
            rest = r;
            tier = t;
            break;
        }
    }
    let mut threshold = 0;
    if !rest.is_empty() {
        let n = rest.strip_prefix("_above_")?.strip_suffix("k_tokens")?;
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        threshold = n.parse::<i64>().ok()?.checked_mul(1000)?;
    }
    Some((usage, threshold, tier))
}

/// Per-token price (a JSON number's exact text) → per-million price.
pub fn per_token_to_per_mtok(text: &str) -> Option<Decimal> {
    let d = Decimal::from_str(text)
        .or_else(|_| Decimal::from_scientific(text))
        .ok()?;
    let (m, s) = (d.mantissa(), d.scale());
    let per_m = if s >= 6 {
        Decimal::try_from_i128_with_scale(m, s - 6).ok()?
    } else {
        Decimal::try_from_i128_with_scale(m.checked_mul(10i128.pow(6 - s))?, 0).ok()?
    };
    Some(per_m.normalize())
}

fn opt_str(v: &serde_json::Map<String, Value>, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_string)
}

/// Parses a whole LiteLLM price document.
pub fn parse_doc(doc: &Value) -> Result<ImportDoc, ImportError> {
    let Value::Object(entries) = doc else {
        return Err(ImportError(
            "a LiteLLM price document must be a JSON object keyed by model name".into(),
        ));
    };
    let mut out = ImportDoc::default();
    for (i, (name, entry)) in entries.iter().enumerate() {
        if i % 256 == 0 {
            crate::limits::check_interrupts();
        }
        if name.starts_with('_') || name == "sample_spec" {
            continue;
        }
        let Value::Object(e) = entry else {
            return Err(ImportError(format!(
                "entry \"{name}\" must be a JSON object"
            )));
        };
        let mut prices = Vec::new();
        for (k, v) in e {
            if !(k.contains("cost") || k.contains("price")) {
                continue;
            }
            let Some((usage, threshold_tokens, tier)) = parse_key(k) else {
                out.skipped_keys += 1;
                continue;
            };
            let usd_per_mtok = match v {
                Value::Null => continue,
                Value::Number(n) => per_token_to_per_mtok(&n.to_string()),
                _ => None,
            }
            .filter(|d| !d.is_sign_negative())
            .ok_or_else(|| {
                ImportError(format!(
                    "entry \"{name}\": \"{k}\" must be a non-negative number, not {v}"
                ))
            })?;
            prices.push(ImportPrice {
                usage,
                tier,
                threshold_tokens,
                usd_per_mtok,
            });
        }
        if prices.is_empty() {
            out.skipped_entries += 1;
            continue;
        }
        let provider = opt_str(e, "litellm_provider")
            .or_else(|| name.split_once('/').map(|(p, _)| p.to_string()))
            .unwrap_or_else(|| "unknown".into());
        if INCLUSIVE_THRESHOLD_PROVIDERS.contains(&provider.as_str()) {
            for p in prices.iter_mut().filter(|p| p.threshold_tokens > 0) {
                p.threshold_tokens -= 1;
            }
        }
        prices.sort_by_key(|p| (p.usage, p.tier, p.threshold_tokens));
        let aliases = match e.get("aliases") {
            None | Some(Value::Null) => vec![],
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_str().map(str::to_string).ok_or_else(|| {
                        ImportError(format!("entry \"{name}\": aliases must be strings"))
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(ImportError(format!(
                    "entry \"{name}\": aliases must be an array"
                )));
            }
        };
        out.models.push(ImportModel {
            name: name.clone(),
            provider,
            mode: opt_str(e, "mode"),
            max_input_tokens: e
                .get("max_input_tokens")
                .and_then(Value::as_i64)
                .filter(|n| *n > 0),
            aliases,
            source: opt_str(e, "source"),
            as_of: opt_str(e, "as_of"),
            prices,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        use ServiceTier::*;
        use UsageType::*;
        assert_eq!(
            parse_key("input_cost_per_token"),
            Some((Input, 0, Standard))
        );
        assert_eq!(
            parse_key("output_cost_per_token_batches"),
            Some((Output, 0, Batch))
        );
        assert_eq!(
            parse_key("input_cost_per_token_above_200k_tokens"),
            Some((Input, 200_000, Standard))
        );
        assert_eq!(
            parse_key("cache_read_input_token_cost_above_272k_tokens_priority"),
            Some((CacheRead, 272_000, Priority))
        );
        assert_eq!(
            parse_key("cache_creation_input_token_cost_above_1hr"),
            Some((CacheWrite1h, 0, Standard))
        );
        assert_eq!(
            parse_key("cache_creation_input_token_cost_above_1hr_above_200k_tokens"),
            Some((CacheWrite1h, 200_000, Standard))
        );
        assert_eq!(
            parse_key("cache_creation_input_token_cost_flex"),
            Some((CacheWrite5m, 0, Flex))
        );
        for k in [
            "input_cost_per_token_balanced",
            "input_cost_per_token_cache_hit",
            "output_cost_per_image",
            "input_cost_per_token_above_k_tokens",
            "input_cost_per_second",
            "output_cost_per_reasoning_token",
        ] {
            assert_eq!(parse_key(k), None, "{k}");
        }
    }

    #[test]
    fn exact_conversion() {
        assert_eq!(per_token_to_per_mtok("2.5e-06").unwrap().to_string(), "2.5");
        assert_eq!(
            per_token_to_per_mtok("0.0000025").unwrap().to_string(),
            "2.5"
        );
        assert_eq!(
            per_token_to_per_mtok("1.25E-7").unwrap().to_string(),
            "0.125"
        );
        assert_eq!(per_token_to_per_mtok("3").unwrap().to_string(), "3000000");
        assert_eq!(
            per_token_to_per_mtok("1.3e-10").unwrap().to_string(),
            "0.00013"
        );
        assert_eq!(per_token_to_per_mtok("0").unwrap().to_string(), "0");
        assert!(per_token_to_per_mtok("abc").is_none());
    }

    #[test]
    fn document() {
        let doc: Value = serde_json::from_str(
            r#"{
              "sample_spec": {"input_cost_per_token": 0},
              "_meta": {"x": 1},
              "gpt-4o": {"litellm_provider": "openai", "mode": "chat",
                         "input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05,
                         "cache_read_input_token_cost": 1.25e-06, "input_cost_per_token_batches": 1.25e-06,
                         "output_cost_per_image": 0.01, "aliases": ["openai/gpt-4o"], "source": "s", "as_of": "2025-01-01"},
              "dall-e-3": {"litellm_provider": "openai", "output_cost_per_image": 0.04},
              "vertex_ai/x": {"input_cost_per_token": null, "output_cost_per_token": 1e-06},
              "xai/grok": {"litellm_provider": "xai", "input_cost_per_token": 2e-06, "input_cost_per_token_above_128k_tokens": 4e-06}
            }"#,
        )
        .unwrap();
        let d = parse_doc(&doc).unwrap();
        assert_eq!(d.models.len(), 3);
        assert_eq!(d.models[2].prices[1].threshold_tokens, 127_999);
        assert_eq!((d.skipped_entries, d.skipped_keys), (1, 2));
        let m = &d.models[0];
        assert_eq!(
            (m.name.as_str(), m.provider.as_str(), m.aliases.len()),
            ("gpt-4o", "openai", 1)
        );
        assert_eq!(m.prices.len(), 4);
        assert_eq!(m.prices[0].usd_per_mtok.to_string(), "2.5");
        assert_eq!(d.models[1].provider, "vertex_ai");
        let bad: Value = serde_json::from_str(r#"{"m": {"input_cost_per_token": -1}}"#).unwrap();
        assert!(parse_doc(&bad).unwrap_err().0.contains("non-negative"));
        let bad: Value = serde_json::from_str(r#"{"m": {"input_cost_per_token": "0.1"}}"#).unwrap();
        assert!(parse_doc(&bad).is_err());
        assert!(parse_doc(&Value::Array(vec![])).is_err());
    }
}
