//! Response cache glue: key canonicalization and hashing (in `aicost-core::cachekey`), and the
//! helpers the SQL functions in `sql/cache.sql` call. The cache logic itself is SQL.

use crate::error::{raise, raise_full};
use crate::json::{JsonArg, JsonbDatum, canonical_object};
use crate::pricing::catalog_for;
use aicost_core::{Resolved, ServiceTier, cachekey, compute, usage};
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

fn check_request(request: Option<&JsonArg>) -> &Value {
    match request {
        None => raise_full(
            ERRCODE_NULL_VALUE_NOT_ALLOWED,
            "request must not be NULL".into(),
            None,
            Some("Pass the request body as a JSON object, e.g. {\"messages\": [...], \"temperature\": 0}.".into()),
        ),
        Some(JsonArg(v @ Value::Object(_))) => v,
        Some(JsonArg(other)) => raise(
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

/// The namespace a cache call uses: trimmed, 1 to 256 bytes, and for a role confined to an org
/// (aicost.tenants) prefixed with that org, so tenants never share entries. Every cache function
/// (SQL and the key) goes through this one normalization.
fn cache_namespace(namespace: Option<&str>) -> String {
    use aicost_core::limits::{MAX_NAMESPACE_BYTES, check_len};
    let ns = check_name("namespace", namespace);
    if let Err(e) = check_len("namespace", &ns, MAX_NAMESPACE_BYTES) {
        raise(ERRCODE_INVALID_PARAMETER_VALUE, e.to_string());
    }
    format!("{}{ns}", tenant_prefix())
}

/// `"org"/` for a role confined to org (quoted like an identifier, so no two orgs' prefixes
/// overlap), empty otherwise.
fn tenant_prefix() -> String {
    crate::security::tenant_org()
        .map(|o| format!("\"{}\"/", o.replace('"', "\"\"")))
        .unwrap_or_default()
}

/// Cache key of (namespace, model, request): hex SHA-256 of a canonical form in which key order,
/// whitespace and number spelling do not matter and every request field does.
///
/// The request is canonicalized straight from jsonb's binary form (no text round trip); a request
/// that is not an object, or nests too deep, goes through the parsed path for its error.
#[pg_extern(stable, parallel_safe)]
fn ai_cache_key(
    model: Option<&str>,
    request: Option<JsonbDatum>,
    namespace: default!(Option<&str>, "'default'"),
) -> String {
    let model = check_name("model", model);
    let namespace = cache_namespace(namespace);
    let Some(canon) = request.and_then(canonical_object) else {
        let parsed = request.map(JsonbDatum::parse);
        let request = check_request(parsed.as_ref());
        return cachekey::cache_key(&namespace, &key_model(&model), request);
    };
    cachekey::cache_key_of_canonical(&namespace, &key_model(&model), &canon)
}

#[pg_schema]
mod aicost {
    use super::*;

    /// The namespace a cache call uses (see `cache_namespace`).
    #[pg_extern(stable, parallel_safe)]
    fn _cache_ns(namespace: Option<&str>) -> String {
        cache_namespace(namespace)
    }

    /// The prefix of the namespaces the acting role may see ('' when it is not confined).
    #[pg_extern(stable, parallel_safe)]
    fn _cache_ns_prefix() -> String {
        tenant_prefix()
    }

    /// The model name stored with a cache entry (see `key_model`).
    #[pg_extern(stable, parallel_safe, strict)]
    fn _cache_model(model: &str) -> String {
        key_model(model)
    }

    /// Cost of producing `response` from its own usage object, or NULL when it has none or the
    /// model cannot be priced: caching never fails over pricing.
    #[pg_extern(stable, parallel_safe, strict)]
    fn _response_cost(model: &str, response: JsonArg) -> Option<crate::numeric::NumericDatum> {
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
