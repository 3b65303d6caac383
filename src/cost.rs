//! `ai_cost` and `ai_cost_explain`: thin glue from SQL arguments to the core's exact arithmetic.
//!
//! All four functions are STABLE (they read the catalog, which changes between statements) and
//! PARALLEL SAFE (each parallel worker loads its own cache; nothing is written).

use crate::error::{raise_cost, raise_usage};
use crate::json::JsonArg;
use crate::numeric::NumericDatum;
use crate::pricing::{catalog_for, exact_number, resolve};
use aicost_core::{Cost, Decimal, MatchKind, Model, ServiceTier, TokenCounts, compute, usage};
use pgrx::JsonB;
use pgrx::PgSqlErrorCode::*;
use pgrx::prelude::*;
use serde_json::{Value, json};

fn tier(name: &str) -> ServiceTier {
    ServiceTier::parse(name).unwrap_or_else(|| {
        crate::error::raise_full(
            ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "unknown service tier \"{}\"",
                aicost_core::limits::clip(name)
            ),
            None,
            Some("Service tiers are standard, batch, flex and priority.".into()),
        )
    })
}

/// Whether `aicost.unknown_model = null`.
fn unknown_is_null() -> bool {
    crate::guc::UNKNOWN_MODEL.get() == crate::guc::UnknownModel::Null
}

/// Prices `counts` and hands the result to `f`; None when the model is unknown (or unpriced at
/// that instant) and `unknown_null`.
pub(crate) fn with_cost<R>(
    model: &str,
    counts: &TokenCounts,
    service_tier: &str,
    at: TimestampWithTimeZone,
    unknown_null: bool,
    f: impl FnOnce(&Model, MatchKind, &Cost<'_>) -> R,
) -> Option<R> {
    let mut track = Track::start();
    let tier = tier(service_tier);
    // Validate counts before resolving, so bad input is reported as such even for unknown models.
    aicost_core::cost::validate(counts).unwrap_or_else(|e| raise_cost(&e));
    let catalog = catalog_for(model);
    let Some((m, kind)) = resolve(&catalog, model, unknown_null) else {
        track.finish(None, counts, None);
        return None;
    };
    match compute(m, counts, tier, at.into_inner()) {
        Ok(c) => {
            track.finish(Some(&m.name), counts, Some(&c.total));
            Some(f(m, kind, &c))
        }
        Err(aicost_core::CostError::NoPrice { .. }) if unknown_null => {
            track.finish(Some(&m.name), counts, None);
            None
        }
        Err(e) => {
            track.fail(Some(&m.name));
            raise_cost(&e)
        }
    }
}

/// Statistics of one pricing call (aicost.track): recorded on return, or as an error when an
/// ERROR unwinds through it.
struct Track {
    /// aicost.track when the call started: the call is counted.
    on: bool,
    /// Set when this call's latency is measured (one in `stats::LATENCY_SAMPLE_EVERY`).
    start: Option<std::time::Instant>,
}

impl Track {
    fn start() -> Track {
        let on = crate::guc::TRACK.get();
        Track {
            on,
            start: (on && crate::stats::time_this_call()).then(std::time::Instant::now),
        }
    }

    fn elapsed_ns(&self) -> Option<u64> {
        self.start
            .map(|s| u64::try_from(s.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    fn finish(&mut self, model: Option<&str>, counts: &TokenCounts, cost: Option<&Decimal>) {
        if self.on {
            let ns = self.elapsed_ns();
            crate::stats::record_cost(model, counts.input, counts.output, cost, ns);
        }
        self.on = false;
    }

    fn fail(&mut self, model: Option<&str>) {
        if self.on {
            crate::stats::record_cost_error(model, self.elapsed_ns());
        }
        self.on = false;
    }
}

impl Drop for Track {
    fn drop(&mut self) {
        // An ERROR raised before the model was resolved (bad arguments, unknown model).
        if std::thread::panicking() {
            self.fail(None);
        }
    }
}

pub(crate) fn parse_usage(u: &Value) -> TokenCounts {
    usage::parse(u).unwrap_or_else(|e| raise_usage(&e)).0
}

/// Cost in US dollars of a request to `model`: exact numeric. `in_tokens` counts all prompt tokens,
/// cached and cache-write ones included; `at` picks the prices valid at that instant.
#[allow(clippy::too_many_arguments)]
#[pg_extern(stable, parallel_safe, strict)]
fn ai_cost(
    model: &str,
    in_tokens: i64,
    out_tokens: i64,
    cached_tokens: default!(i64, 0),
    cache_write_tokens: default!(i64, 0),
    service_tier: default!(&str, "'standard'"),
    at: default!(TimestampWithTimeZone, "now()"),
    cache_write_1h_tokens: default!(i64, 0),
) -> Option<NumericDatum> {
    let counts = TokenCounts::new(
        in_tokens,
        out_tokens,
        cached_tokens,
        cache_write_tokens,
        cache_write_1h_tokens,
    );
    with_cost(
        model,
        &counts,
        service_tier,
        at,
        unknown_is_null(),
        |_, _, c| NumericDatum::from_decimal(c.total),
    )
}

/// Cost in US dollars of a request to `model` from the provider's own usage object (OpenAI chat or
/// responses, Anthropic, Gemini; a whole response holding `usage`/`usageMetadata` works too).
#[pg_extern(stable, parallel_safe, strict, name = "ai_cost")]
fn ai_cost_usage(
    model: &str,
    usage: JsonArg,
    service_tier: default!(&str, "'standard'"),
    at: default!(TimestampWithTimeZone, "now()"),
) -> Option<NumericDatum> {
    let counts = parse_usage(&usage.0);
    with_cost(
        model,
        &counts,
        service_tier,
        at,
        unknown_is_null(),
        |_, _, c| NumericDatum::from_decimal(c.total),
    )
}

fn explain(
    model: &str,
    m: &Model,
    kind: MatchKind,
    counts: &TokenCounts,
    tier: &str,
    at: TimestampWithTimeZone,
    c: &Cost<'_>,
) -> JsonB {
    let ts = |v: i64| -> Value {
        if v == i64::MIN || v == i64::MAX {
            Value::Null
        } else {
            json!(
                TimestampWithTimeZone::try_from(v)
                    .map(|t| t.to_iso_string())
                    .unwrap_or_default()
            )
        }
    };
    let terms: Vec<Value> = c
        .terms
        .iter()
        .flatten()
        .map(|t| {
            json!({
                "usage_type": t.usage.as_str(),
                "tokens": t.tokens,
                "price_id": t.price.price_id,
                "priced_as": t.price.usage.as_str(),
                "service_tier": t.price.tier.as_str(),
                "threshold_tokens": t.price.threshold_tokens,
                "usd_per_mtok": exact_number(t.price.usd_per_mtok),
                "valid_from": ts(t.price.valid_from),
                "valid_to": ts(t.price.valid_to),
                "fallback": t.fallback,
                "cost": exact_number(t.cost().unwrap_or_else(|e| raise_cost(&e))),
            })
        })
        .collect();
    JsonB(json!({
        "requested_model": model,
        "model": m.name,
        "provider": m.provider,
        "matched_by": kind.as_str(),
        "aliases": m.aliases,
        "service_tier": ServiceTier::parse(tier).map(ServiceTier::as_str),
        "at": TimestampWithTimeZone::try_from(at.into_inner()).map(|t| t.to_iso_string()).unwrap_or_default(),
        "tokens": {
            "in": counts.input, "out": counts.output, "cached": counts.cached,
            "cache_write_5m": counts.cache_write_5m, "cache_write_1h": counts.cache_write_1h,
        },
        "terms": terms,
        "total": exact_number(c.total),
        "currency": "USD",
    }))
}

/// How `ai_cost` with the same arguments is computed: the model row and how the name matched,
/// the price versions used (ids, validity, tier, fallbacks) and each term of the sum.
#[allow(clippy::too_many_arguments)]
#[pg_extern(stable, parallel_safe, strict)]
fn ai_cost_explain(
    model: &str,
    in_tokens: i64,
    out_tokens: i64,
    cached_tokens: default!(i64, 0),
    cache_write_tokens: default!(i64, 0),
    service_tier: default!(&str, "'standard'"),
    at: default!(TimestampWithTimeZone, "now()"),
    cache_write_1h_tokens: default!(i64, 0),
) -> Option<JsonB> {
    let counts = TokenCounts::new(
        in_tokens,
        out_tokens,
        cached_tokens,
        cache_write_tokens,
        cache_write_1h_tokens,
    );
    with_cost(
        model,
        &counts,
        service_tier,
        at,
        unknown_is_null(),
        |m, k, c| explain(model, m, k, &counts, service_tier, at, c),
    )
}

/// `ai_cost_explain` for a provider usage object; also reports the detected usage format.
#[pg_extern(stable, parallel_safe, strict, name = "ai_cost_explain")]
fn ai_cost_explain_usage(
    model: &str,
    usage: JsonArg,
    service_tier: default!(&str, "'standard'"),
    at: default!(TimestampWithTimeZone, "now()"),
) -> Option<JsonB> {
    let (counts, format) = usage::parse(&usage.0).unwrap_or_else(|e| raise_usage(&e));
    with_cost(
        model,
        &counts,
        service_tier,
        at,
        unknown_is_null(),
        |m, k, c| {
            let mut j = explain(model, m, k, &counts, service_tier, at, c);
            j.0["usage_format"] = json!(format.as_str());
            j
        },
    )
}
