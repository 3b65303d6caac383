//! Response cache glue: key canonicalization and hashing (in `aicost-core::cachekey`), and the
//! helpers the SQL functions in `sql/cache.sql` call. The cache logic itself is SQL.

use crate::error::{raise, raise_full};
use crate::pricing::catalog_for;
use aicost_core::{Resolved, ServiceTier, cachekey, compute, usage};
use pgrx::JsonB;
use pgrx::PgSqlErrorCode::*;
use pgrx::prelude::*;
use serde_json::Value;

/// The model part of a cache key: the canonical name when the catalog knows the model (so
/// `openai/gpt-4o` and `gpt-4o` share entries), else the name as given, trimmed.
pub fn key_model(model: &str) -> String {
    let catalog = catalog_for(model);
    match catalog.resolve(model) {
        Resolved::Found(m, _) => m.name.clone(),
        _ => model.trim().to_string(),
    }
}

fn check_request(request: Option<&JsonB>) -> &Value {
    match request {
        None => raise_full(
            ERRCODE_NULL_VALUE_NOT_ALLOWED,
            "request must not be NULL".into(),
            None,
            Some("Pass the request body as a JSON object, e.g. {\"messages\": [...], \"temperature\": 0}.".into()),
        ),
        Some(JsonB(v @ Value::Object(_))) => v,
        Some(JsonB(other)) => raise(
            ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "request must be a JSON object, not {}",
                match other {
                    Value::Array(_) => "an array",
                    Value::String(_) => "a string",
                    Value::Number(_) => "a number",
                    Value::Bool(_) => "a boolean",
                    _ => "null",
                }
            ),
        ),
    }
}

fn check_name(what: &str, v: Option<&str>) -> String {
    match v.map(str::trim) {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => raise(
            ERRCODE_INVALID_PARAMETER_VALUE,
            format!("{what} must be a non-empty name"),
        ),
    }
}

/// Cache key of (namespace, model, request): hex SHA-256 of a canonical form in which key order,
/// whitespace and number spelling do not matter and every request field does.
#[pg_extern(stable, parallel_safe)]
fn ai_cache_key(
    model: Option<&str>,
    request: Option<JsonB>,
    namespace: default!(Option<&str>, "'default'"),
) -> String {
    let model = check_name("model", model);
    let namespace = check_name("namespace", namespace);
    let request = check_request(request.as_ref());
    cachekey::cache_key(&namespace, &key_model(&model), request)
}

#[pg_schema]
mod aicost {
    use super::*;

    /// The model name stored with a cache entry (see `key_model`).
    #[pg_extern(stable, parallel_safe, strict)]
    fn _cache_model(model: &str) -> String {
        key_model(model)
    }

    /// Cost of producing `response` from its own usage object, or NULL when it has none or the
    /// model cannot be priced: caching never fails over pricing.
    #[pg_extern(stable, parallel_safe, strict)]
    fn _response_cost(model: &str, response: JsonB) -> Option<crate::numeric::NumericDatum> {
        let (counts, _) = usage::parse(&response.0).ok()?;
        let catalog = catalog_for(model);
        let Resolved::Found(m, _) = catalog.resolve(model) else {
            return None;
        };
        let now = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
        let cost = compute(m, &counts, ServiceTier::Standard, now).ok()?;
        Some(crate::numeric::NumericDatum::from_decimal(cost.total))
    }
}
