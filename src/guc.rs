//! `aicost.*` configuration parameters.

use std::ffi::CString;

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting, PostgresGucEnum};

/// What `ai_cost` does for a model it cannot price: raise an error or return NULL. Never 0.
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum UnknownModel {
    #[name = c"error"]
    Error,
    #[name = c"null"]
    Null,
}

pub static UNKNOWN_MODEL: GucSetting<UnknownModel> =
    GucSetting::<UnknownModel>::new(UnknownModel::Error);
pub static PRICING_CACHE: GucSetting<bool> = GucSetting::<bool>::new(true);
// Read by sql/cache.sql through current_setting(); registered here so SET validates them.
static CACHE_DEFAULT_TTL: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"1 day"));
static CACHE_MAX_ENTRIES: GucSetting<i32> = GucSetting::<i32>::new(100_000);
static CACHE_MAX_RESPONSE_BYTES: GucSetting<i32> = GucSetting::<i32>::new(1 << 20);

pub fn register() {
    GucRegistry::define_enum_guc(
        c"aicost.unknown_model",
        c"What ai_cost() returns for a model (or price) that is not in the catalog: error or null.",
        c"error raises SQLSTATE 42704 naming the model and close names; null returns NULL. A cost is never silently 0.",
        &UNKNOWN_MODEL,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"aicost.pricing_cache",
        c"Price from the backend's in-memory catalog cache.",
        c"off reads the catalog tables on every call (for comparison and debugging).",
        &PRICING_CACHE,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"aicost.cache_default_ttl",
        c"Time to live of response-cache entries when neither the call nor the namespace sets one.",
        c"An interval such as '1 hour'; '0' means entries never expire.",
        &CACHE_DEFAULT_TTL,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"aicost.cache_max_entries",
        c"Entry limit of response-cache namespaces that do not set max_entries.",
        c"",
        &CACHE_MAX_ENTRIES,
        1,
        i32::MAX,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"aicost.cache_max_response_bytes",
        c"Largest response ai_cache_put accepts, in bytes (as stored).",
        c"",
        &CACHE_MAX_RESPONSE_BYTES,
        1,
        i32::MAX,
        GucContext::Userset,
        GucFlags::default(),
    );
}
