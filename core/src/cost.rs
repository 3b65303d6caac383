//! Exact cost arithmetic.
//!
//! `cost = Σ tokens(u) × usd_per_mtok(u) / 1,000,000` over the usage types `u`, computed on integer
//! mantissas in `i128`, so the result is exact or an overflow error: never rounded. (`Decimal`'s own
//! multiplication silently drops digits when a product exceeds 96 bits; we do not use it here.)
//!
//! Token semantics: `input` counts all prompt tokens, cache reads and cache writes included (the
//! OpenAI and LiteLLM convention); the uncached input is `input - cached - cache_write_5m - cache_write_1h`.
//!
//! Price selection per usage type, for the requested service tier at instant `at`:
//! - long-context tiers: the price whose threshold is the highest below the prompt tokens applies to
//!   all tokens of that usage type in the request (LiteLLM's `*_above_Nk_tokens` semantics);
//! - flex and priority: a usage type without a price of the tier falls back to the standard price,
//!   and a standard long-context price whose threshold is crossed wins over the tier's base price
//!   (LiteLLM's rule); batch is a price list of its own (cache reads fall back to the batch input
//!   price first); a tier the model has no price at all for is an error, never a guessed discount;
//! - cache read and 5-minute cache write without a price of their own are billed at the input
//!   price; a 1-hour cache write falls back to the 5-minute price, then to input.

use crate::catalog::{Model, PgTimestamp, PriceVersion};
use crate::{ServiceTier, UsageType};
use rust_decimal::Decimal;
use std::fmt;

/// Token counts of one request. All counts are non-negative; see the module docs for `input`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenCounts {
    pub input: i64,
    pub output: i64,
    pub cached: i64,
    pub cache_write_5m: i64,
    pub cache_write_1h: i64,
}

impl TokenCounts {
    /// Counts in the order of `ai_cost`'s arguments: in, out, cached, 5-minute and 1-hour cache writes.
    pub fn new(
        input: i64,
        output: i64,
        cached: i64,
        cache_write_5m: i64,
        cache_write_1h: i64,
    ) -> TokenCounts {
        TokenCounts {
            input,
            output,
            cached,
            cache_write_5m,
            cache_write_1h,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CostError {
    /// A count is negative: (argument name, value).
    Negative(&'static str, i64),
    /// Cache reads plus cache writes exceed the prompt tokens they are part of.
    CachedExceedInput {
        input: i64,
        cached_and_written: i128,
    },
    /// The model has no price at all in the requested service tier at that instant.
    TierUnavailable { model: String, tier: ServiceTier },
    /// No price for a usage type the request needs, valid at that instant.
    NoPrice {
        model: String,
        usage: UsageType,
        tier: ServiceTier,
    },
    /// The exact result does not fit (96-bit mantissa).
    Overflow,
}

impl fmt::Display for CostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CostError::Negative(what, v) => write!(f, "{what} must not be negative (got {v})"),
            CostError::CachedExceedInput {
                input,
                cached_and_written,
            } => write!(
                f,
                "cached and cache-write tokens ({cached_and_written}) exceed in_tokens ({input}); \
                 in_tokens counts all prompt tokens, cached ones included"
            ),
            CostError::TierUnavailable { model, tier } => write!(
                f,
                "model \"{model}\" has no \"{}\" service tier prices at that time",
                tier.as_str()
            ),
            CostError::NoPrice { model, usage, tier } => write!(
                f,
                "model \"{model}\" has no {} price in the \"{}\" service tier at that time",
                usage.as_str(),
                tier.as_str()
            ),
            CostError::Overflow => write!(f, "cost is out of range"),
        }
    }
}

impl std::error::Error for CostError {}

/// One term of the sum: `tokens` billed as `usage` at `price`.
#[derive(Clone, Copy, Debug)]
pub struct Term<'a> {
    pub usage: UsageType,
    pub tokens: i64,
    pub price: &'a PriceVersion,
    /// True when the price came from a fallback (another tier or usage type).
    pub fallback: bool,
}

impl Term<'_> {
    /// `tokens × usd_per_mtok / 10^6`, exact.
    pub fn cost(&self) -> Result<Decimal, CostError> {
        let (m, s) = self.raw()?;
        to_decimal(m, s)
    }

    fn raw(&self) -> Result<(i128, u32), CostError> {
        let r = self.price.usd_per_mtok;
        let m = i128::from(self.tokens)
            .checked_mul(r.mantissa())
            .ok_or(CostError::Overflow)?;
        Ok((m, r.scale() + 6))
    }
}

/// A computed cost: the exact total and the terms it is the sum of (zero-token terms omitted).
#[derive(Clone, Debug)]
pub struct Cost<'a> {
    pub total: Decimal,
    pub terms: [Option<Term<'a>>; 5],
}

fn to_decimal(mantissa: i128, scale: u32) -> Result<Decimal, CostError> {
    Decimal::try_from_i128_with_scale(mantissa, scale)
        .map(|d| d.normalize())
        .map_err(|_| CostError::Overflow)
}

fn pow10(n: u32) -> Option<i128> {
    10i128.checked_pow(n)
}

/// Validates the counts and returns the uncached input tokens.
pub fn validate(t: &TokenCounts) -> Result<i64, CostError> {
    for (name, v) in [
        ("in_tokens", t.input),
        ("out_tokens", t.output),
        ("cached_tokens", t.cached),
        ("cache_write_tokens", t.cache_write_5m),
        ("cache_write_1h_tokens", t.cache_write_1h),
    ] {
        if v < 0 {
            return Err(CostError::Negative(name, v));
        }
    }
    let side = i128::from(t.cached) + i128::from(t.cache_write_5m) + i128::from(t.cache_write_1h);
    if side > i128::from(t.input) {
        return Err(CostError::CachedExceedInput {
            input: t.input,
            cached_and_written: side,
        });
    }
    Ok(t.input - side as i64)
}

/// The price of `usage` in `tier`, LiteLLM's way: in flex and priority the highest long-context
/// threshold crossed among the tier's and the standard prices decides, and at that threshold the
/// tier's own price wins over the standard one. Standard and batch look at their own prices only.
fn find_in_tier(
    model: &Model,
    usage: UsageType,
    tier: ServiceTier,
    prompt: i64,
    at: PgTimestamp,
) -> Option<&PriceVersion> {
    let own = model.find_price(usage, tier, prompt, at);
    if matches!(tier, ServiceTier::Standard | ServiceTier::Batch) {
        return own;
    }
    match (
        own,
        model.find_price(usage, ServiceTier::Standard, prompt, at),
    ) {
        (Some(t), Some(s)) if s.threshold_tokens > t.threshold_tokens => Some(s),
        (t, s) => t.or(s),
    }
}

/// The price for `usage` with the module's fallbacks; `fallback` tells whether one was used.
fn select(
    model: &Model,
    usage: UsageType,
    tier: ServiceTier,
    prompt: i64,
    at: PgTimestamp,
) -> Option<(&PriceVersion, bool)> {
    let chain: &[UsageType] = match usage {
        UsageType::Input => &[UsageType::Input],
        UsageType::Output => &[UsageType::Output],
        UsageType::CacheRead => &[UsageType::CacheRead, UsageType::Input],
        UsageType::CacheWrite5m => &[UsageType::CacheWrite5m, UsageType::Input],
        UsageType::CacheWrite1h => &[
            UsageType::CacheWrite1h,
            UsageType::CacheWrite5m,
            UsageType::Input,
        ],
    };
    // Batch prices are a price list of their own: its fallbacks stay within batch prices first.
    let (batch, one) = ([ServiceTier::Batch, ServiceTier::Standard], [tier]);
    let tiers: &[ServiceTier] = if tier == ServiceTier::Batch {
        &batch
    } else {
        &one
    };
    tiers.iter().find_map(|&t| {
        chain.iter().find_map(|&u| {
            find_in_tier(model, u, t, prompt, at).map(|p| (p, p.usage != usage || p.tier != tier))
        })
    })
}

/// Prices `tokens` for `model` in service tier `tier` with the prices valid at `at`.
pub fn compute<'a>(
    model: &'a Model,
    tokens: &TokenCounts,
    tier: ServiceTier,
    at: PgTimestamp,
) -> Result<Cost<'a>, CostError> {
    let uncached = validate(tokens)?;
    if tier != ServiceTier::Standard && !model.has_tier(tier, at) {
        return Err(CostError::TierUnavailable {
            model: model.name.clone(),
            tier,
        });
    }
    let counts = [
        (UsageType::Input, uncached),
        (UsageType::Output, tokens.output),
        (UsageType::CacheRead, tokens.cached),
        (UsageType::CacheWrite5m, tokens.cache_write_5m),
        (UsageType::CacheWrite1h, tokens.cache_write_1h),
    ];
    let mut terms: [Option<Term<'a>>; 5] = [None; 5];
    let mut raw = [(0i128, 0u32); 5];
    let mut scale = 0u32;
    for (i, (usage, n)) in counts.into_iter().enumerate() {
        if n == 0 {
            continue;
        }
        let (price, fallback) =
            select(model, usage, tier, tokens.input, at).ok_or_else(|| CostError::NoPrice {
                model: model.name.clone(),
                usage,
                tier,
            })?;
        let term = Term {
            usage,
            tokens: n,
            price,
            fallback,
        };
        raw[i] = term.raw()?;
        scale = scale.max(raw[i].1);
        terms[i] = Some(term);
    }
    let mut sum: i128 = 0;
    for (m, s) in raw {
        if m != 0 {
            let widened = pow10(scale - s)
                .and_then(|f| m.checked_mul(f))
                .ok_or(CostError::Overflow)?;
            sum = sum.checked_add(widened).ok_or(CostError::Overflow)?;
        }
    }
    Ok(Cost {
        total: to_decimal(sum, scale)?,
        terms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::tests::{model, price};
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn gpt4o() -> Model {
        use ServiceTier::*;
        use UsageType::*;
        model(
            "gpt-4o",
            "openai",
            &[],
            vec![
                price(Input, Standard, 0, "2.50"),
                price(Output, Standard, 0, "10"),
                price(CacheRead, Standard, 0, "1.25"),
                price(Input, Batch, 0, "1.25"),
                price(Output, Batch, 0, "5"),
            ],
        )
    }

    fn counts(input: i64, output: i64) -> TokenCounts {
        TokenCounts {
            input,
            output,
            ..Default::default()
        }
    }

    #[test]
    fn exact_decimal_result() {
        let m = gpt4o();
        let c = compute(&m, &counts(1_234_567, 0), ServiceTier::Standard, 0).unwrap();
        assert_eq!(c.total.to_string(), "3.0864175");
        let c = compute(&m, &counts(1000, 500), ServiceTier::Standard, 0).unwrap();
        assert_eq!(c.total, d("0.0075"));
        // 0.1 + 0.2 style sums stay exact.
        let c = compute(&m, &counts(40_000, 20_000), ServiceTier::Standard, 0).unwrap();
        assert_eq!(c.total, d("0.3"));
    }

    #[test]
    fn cached_tokens_are_part_of_input() {
        let m = gpt4o();
        let t = TokenCounts {
            input: 10_000,
            output: 0,
            cached: 4_000,
            ..Default::default()
        };
        let c = compute(&m, &t, ServiceTier::Standard, 0).unwrap();
        // 6000 × 2.50 + 4000 × 1.25 per million
        assert_eq!(c.total, d("0.02"));
        let input = c.terms[0].unwrap();
        assert_eq!((input.tokens, input.cost().unwrap()), (6000, d("0.015")));
    }

    #[test]
    fn cache_write_falls_back_to_input_price() {
        let m = gpt4o();
        let t = TokenCounts {
            input: 1000,
            cache_write_5m: 400,
            cache_write_1h: 100,
            ..Default::default()
        };
        let c = compute(&m, &t, ServiceTier::Standard, 0).unwrap();
        assert_eq!(c.total, d("0.0025"));
        assert!(c.terms[3].unwrap().fallback && c.terms[4].unwrap().fallback);
        assert!(!c.terms[0].unwrap().fallback);
    }

    #[test]
    fn service_tier_with_fallback_per_usage_type() {
        let m = gpt4o();
        let t = TokenCounts {
            input: 2000,
            output: 1000,
            cached: 1000,
            ..Default::default()
        };
        let c = compute(&m, &t, ServiceTier::Batch, 0).unwrap();
        // 1000 × 1.25 (batch input) + 1000 × 5 (batch output) + 1000 × 1.25 (standard cache read)
        assert_eq!(c.total, d("0.0075"));
        assert!(c.terms[2].unwrap().fallback);
        assert_eq!(
            compute(&m, &t, ServiceTier::Flex, 0).unwrap_err(),
            CostError::TierUnavailable {
                model: "gpt-4o".into(),
                tier: ServiceTier::Flex
            }
        );
    }

    #[test]
    fn long_context_tier_prices_the_whole_request() {
        use ServiceTier::Standard;
        use UsageType::*;
        let m = model(
            "gemini-2.5-pro",
            "gemini",
            &[],
            vec![
                price(Input, Standard, 0, "1.25"),
                price(Input, Standard, 200_000, "2.50"),
                price(Output, Standard, 0, "10"),
                price(Output, Standard, 200_000, "15"),
            ],
        );
        let at_limit = compute(&m, &counts(200_000, 1000), Standard, 0).unwrap();
        assert_eq!(at_limit.total, d("0.26"));
        let above = compute(&m, &counts(200_001, 1000), Standard, 0).unwrap();
        assert_eq!(above.total, d("0.5150025"));
    }

    #[test]
    fn tiers_and_long_context_follow_litellm() {
        use ServiceTier::*;
        use UsageType::*;
        let m = model(
            "x",
            "p",
            &[],
            vec![
                price(Input, Standard, 0, "1"),
                price(Input, Standard, 200_000, "2"),
                price(Output, Standard, 0, "10"),
                price(CacheRead, Standard, 0, "0.1"),
                price(Input, Priority, 0, "1.7"),
                price(Input, Batch, 0, "0.5"),
                price(Output, Batch, 0, "5"),
            ],
        );
        let at = |input, tier| compute(&m, &counts(input, 0), tier, 0).unwrap().total;
        // Priority base below the threshold; above it the standard long-context price wins.
        assert_eq!(at(100_000, Priority), d("0.17"));
        assert_eq!(at(300_000, Priority), d("0.6"));
        // Batch ignores standard long-context prices.
        assert_eq!(at(300_000, Batch), d("0.15"));
        // Batch cache reads without a batch cache price are billed as batch input.
        let t = TokenCounts {
            input: 1000,
            cached: 1000,
            ..Default::default()
        };
        let c = compute(&m, &t, Batch, 0).unwrap();
        assert_eq!(c.total, d("0.0005"));
        assert_eq!(c.terms[2].unwrap().price.tier, Batch);
        // Priority cache reads fall back to the standard cache price.
        let c = compute(&m, &t, Priority, 0).unwrap();
        assert_eq!(c.total, d("0.0001"));
    }

    #[test]
    fn bad_counts_are_errors() {
        let m = gpt4o();
        assert_eq!(
            compute(&m, &counts(-1, 0), ServiceTier::Standard, 0).unwrap_err(),
            CostError::Negative("in_tokens", -1)
        );
        let t = TokenCounts {
            input: 10,
            cached: 8,
            cache_write_5m: 3,
            ..Default::default()
        };
        assert!(matches!(
            compute(&m, &t, ServiceTier::Standard, 0),
            Err(CostError::CachedExceedInput {
                input: 10,
                cached_and_written: 11
            })
        ));
        let m = model(
            "x",
            "p",
            &[],
            vec![price(UsageType::Input, ServiceTier::Standard, 0, "1")],
        );
        assert!(matches!(
            compute(&m, &counts(1, 1), ServiceTier::Standard, 0),
            Err(CostError::NoPrice {
                usage: UsageType::Output,
                ..
            })
        ));
        // Zero output tokens need no output price.
        assert_eq!(
            compute(&m, &counts(1, 0), ServiceTier::Standard, 0)
                .unwrap()
                .total,
            d("0.000001")
        );
    }

    #[test]
    fn overflow_is_an_error_not_a_rounding() {
        let m = model(
            "x",
            "p",
            &[],
            vec![
                price(
                    UsageType::Input,
                    ServiceTier::Standard,
                    0,
                    "99999.123456789012",
                ),
                price(
                    UsageType::Output,
                    ServiceTier::Standard,
                    0,
                    "0.000000000001",
                ),
            ],
        );
        assert_eq!(
            compute(&m, &counts(i64::MAX, i64::MAX), ServiceTier::Standard, 0).unwrap_err(),
            CostError::Overflow
        );
        // Large but representable: exact to the last digit.
        let c = compute(&m, &counts(100_000_000_000, 1), ServiceTier::Standard, 0).unwrap();
        assert_eq!(c.total, d("9999912345.678901200000000001"));
    }
}
