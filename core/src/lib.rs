//! pg_aicost's pure-Rust core: no PostgreSQL, no pgrx.
//!
//! - [`catalog`]: the resolved pricing catalog (models, aliases, price versions) and name resolution.
//! - [`frozen`]: a catalog serialized into one offset-only byte buffer, read in place (shared memory).
//! - [`cost`]: exact cost arithmetic with long-context tiers, service tiers and cache usage types.
//! - [`usage`]: parsing of provider usage objects (OpenAI, Anthropic, Gemini) into token counts.
//! - [`cachekey`]: canonical JSON and SHA-256 keys for the response cache.
//! - [`breaker`]: the circuit breaker's state machine (per model and per provider).
//! - [`litellm`]: reading LiteLLM's `model_prices_and_context_window.json` into price rows.
//!
//! Money is `rust_decimal::Decimal` throughout; no floating point touches a price or a cost.

pub mod breaker;
pub mod cachekey;
pub mod catalog;
pub mod cost;
pub mod frozen;
pub mod limits;
pub mod litellm;
pub mod shtable;
pub mod usage;

pub use catalog::{Catalog, MatchKind, Model, PriceVersion, Resolved};
pub use cost::{Cost, CostError, Term, TokenCounts, compute};
pub use rust_decimal::Decimal;

/// What a token is billed as. Prices are stored per usage type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UsageType {
    /// Prompt tokens that were neither read from nor written to a prompt cache.
    Input,
    /// Completion tokens (reasoning tokens included).
    Output,
    /// Prompt tokens read from the provider's prompt cache.
    CacheRead,
    /// Prompt tokens written to a 5-minute prompt cache (Anthropic's default TTL; OpenAI-style implicit caches).
    CacheWrite5m,
    /// Prompt tokens written to a 1-hour prompt cache.
    CacheWrite1h,
}

impl UsageType {
    pub const ALL: [UsageType; 5] = [
        UsageType::Input,
        UsageType::Output,
        UsageType::CacheRead,
        UsageType::CacheWrite5m,
        UsageType::CacheWrite1h,
    ];

    /// The name used in SQL (`aicost.prices.usage_type`).
    pub fn as_str(self) -> &'static str {
        match self {
            UsageType::Input => "input",
            UsageType::Output => "output",
            UsageType::CacheRead => "cache_read",
            UsageType::CacheWrite5m => "cache_write_5m",
            UsageType::CacheWrite1h => "cache_write_1h",
        }
    }

    pub fn parse(s: &str) -> Option<UsageType> {
        UsageType::ALL.into_iter().find(|u| u.as_str() == s)
    }
}

/// The provider's service tier of a request. Standard is the list price.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceTier {
    Standard,
    Batch,
    Flex,
    Priority,
}

impl ServiceTier {
    pub const ALL: [ServiceTier; 4] = [
        ServiceTier::Standard,
        ServiceTier::Batch,
        ServiceTier::Flex,
        ServiceTier::Priority,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ServiceTier::Standard => "standard",
            ServiceTier::Batch => "batch",
            ServiceTier::Flex => "flex",
            ServiceTier::Priority => "priority",
        }
    }

    /// Parses a tier name. Also accepts the names providers echo back in responses:
    /// OpenAI's `default`/`auto` are the standard tier, LiteLLM's `batches` is batch.
    pub fn parse(s: &str) -> Option<ServiceTier> {
        let t = s.trim();
        ServiceTier::ALL
            .into_iter()
            .find(|x| x.as_str().eq_ignore_ascii_case(t))
            .or_else(|| {
                if t.eq_ignore_ascii_case("default") || t.eq_ignore_ascii_case("auto") {
                    Some(ServiceTier::Standard)
                } else if t.eq_ignore_ascii_case("batches") {
                    Some(ServiceTier::Batch)
                } else {
                    None
                }
            })
    }
}

/// Levenshtein distance over chars, for "did you mean" suggestions (error path only).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for u in UsageType::ALL {
            assert_eq!(UsageType::parse(u.as_str()), Some(u));
        }
        for t in ServiceTier::ALL {
            assert_eq!(ServiceTier::parse(t.as_str()), Some(t));
        }
        assert_eq!(ServiceTier::parse("Default"), Some(ServiceTier::Standard));
        assert_eq!(ServiceTier::parse("batches"), Some(ServiceTier::Batch));
        assert_eq!(ServiceTier::parse("scale"), None);
        assert_eq!(UsageType::parse("cache_write"), None);
    }

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("gpt-4o", "gpt-4o"), 0);
        assert_eq!(edit_distance("gpt4o", "gpt-4o"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("claude", "clade"), 1);
    }
}
