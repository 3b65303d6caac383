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

/// What the ledger's insert trigger does with a row it cannot price.
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum LedgerUnknownModel {
    #[name = c"error"]
    Error,
    #[name = c"unpriced"]
    Unpriced,
}

pub static UNKNOWN_MODEL: GucSetting<UnknownModel> =
    GucSetting::<UnknownModel>::new(UnknownModel::Error);
pub static PRICING_CACHE: GucSetting<bool> = GucSetting::<bool>::new(true);
// Read by sql/cache.sql through aicost._guc() (never current_setting(), which trusts placeholders).
// Settings that could weaken enforcement (size limits, unpriced ledger rows) are SUSET.
static CACHE_DEFAULT_TTL: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"1 day"));
static CACHE_MAX_ENTRIES: GucSetting<i32> = GucSetting::<i32>::new(100_000);
static LEDGER_UNKNOWN_MODEL: GucSetting<LedgerUnknownModel> =
    GucSetting::<LedgerUnknownModel>::new(LedgerUnknownModel::Error);
static BUDGET_TIMEZONE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"UTC"));
pub static LEDGER_MAINTENANCE: GucSetting<bool> = GucSetting::<bool>::new(false);
static CACHE_MAX_RESPONSE_BYTES: GucSetting<i32> = GucSetting::<i32>::new(1 << 20);
/// Seconds before its transaction's start that an application role may date a ledger row.
pub static LEDGER_MAX_BACKDATE: GucSetting<i32> = GucSetting::<i32>::new(3600);

// Shared-memory mode (pg_aicost in shared_preload_libraries). Sizes are read once, at server start.
/// Bytes of shared memory for the frozen pricing catalog (kB unit in SQL).
pub static SHMEM_CATALOG_SIZE: GucSetting<i32> = GucSetting::<i32>::new(SHMEM_CATALOG_SIZE_DEFAULT);
const SHMEM_CATALOG_SIZE_DEFAULT: i32 = 4 * 1024;
/// Databases that can each have a shared catalog at a time.
pub static SHMEM_CATALOG_DATABASES: GucSetting<i32> = GucSetting::<i32>::new(4);
/// Models tracked by aicost.stat_cost.
pub static STAT_MAX_MODELS: GucSetting<i32> = GucSetting::<i32>::new(STAT_MAX_MODELS_DEFAULT);
const STAT_MAX_MODELS_DEFAULT: i32 = 5000;
/// Budget periods tracked by shared-memory admission (and budgets by aicost.stat_budget).
pub static SHMEM_BUDGETS: GucSetting<i32> = GucSetting::<i32>::new(SHMEM_BUDGETS_DEFAULT);
const SHMEM_BUDGETS_DEFAULT: i32 = 10_000;
/// Circuit breakers (models and providers) kept in shared memory.
pub static SHMEM_BREAKERS: GucSetting<i32> = GucSetting::<i32>::new(4096);
/// Whether statistics are collected.
pub static TRACK: GucSetting<bool> = GucSetting::<bool>::new(true);

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
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"aicost.cache_max_response_bytes",
        c"Largest response ai_cache_put accepts, in bytes (as stored).",
        c"",
        &CACHE_MAX_RESPONSE_BYTES,
        1,
        i32::MAX,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"aicost.ledger_unknown_model",
        c"What inserting a usage row does when its model cannot be priced: error or unpriced.",
        c"unpriced stores the row with NULL cost and status 'unpriced' (not charged) until ai_reprice_unpriced(); never 0.",
        &LEDGER_UNKNOWN_MODEL,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"aicost.budget_timezone",
        c"Time zone of calendar budget periods created without one, and of aicost.spend_daily.",
        c"",
        &BUDGET_TIMEZONE,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"aicost.ledger_maintenance",
        c"Internal: set by ai_reprice_unpriced() while it updates ledger rows.",
        c"Superuser only, so that the insert-only ledger cannot be opened by any session.",
        &LEDGER_MAINTENANCE,
        GucContext::Suset,
        GucFlags::NO_SHOW_ALL,
    );
    GucRegistry::define_int_guc(
        c"aicost.ledger_max_backdate",
        c"How long before its transaction started an application role may date a usage row.",
        c"Superusers and members of aicost_admin may date rows at any time (backfills).",
        &LEDGER_MAX_BACKDATE,
        0,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_bool_guc(
        c"aicost.track",
        c"Collects the statistics shown by aicost.stat_cost, aicost.stat_cache and aicost.stat_budget.",
        c"",
        &TRACK,
        GucContext::Suset,
        GucFlags::default(),
    );
}

/// The shared-memory sizes: defined only while preloading (PGC_POSTMASTER settings cannot be
/// created after start).
pub fn register_shmem() {
    GucRegistry::define_int_guc(
        c"aicost.shmem_catalog_size",
        c"Shared memory for one database's shared pricing catalog (needs shared_preload_libraries).",
        c"A catalog that does not fit is priced from each backend's own cache, with a WARNING.",
        &SHMEM_CATALOG_SIZE,
        64,
        1024 * 1024,
        GucContext::Postmaster,
        GucFlags::UNIT_KB,
    );
    GucRegistry::define_int_guc(
        c"aicost.shmem_catalog_databases",
        c"Databases that can have a shared pricing catalog at the same time (needs shared_preload_libraries).",
        c"Beyond this, the least recently used database's shared catalog is replaced.",
        &SHMEM_CATALOG_DATABASES,
        1,
        1024,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"aicost.stat_max_models",
        c"Models tracked by aicost.stat_cost (needs shared_preload_libraries to be shared).",
        c"Calls of models beyond this are counted in one row with model NULL.",
        &STAT_MAX_MODELS,
        16,
        1_000_000,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"aicost.shmem_budgets",
        c"Budget periods tracked by shared-memory budget admission (needs shared_preload_libraries).",
        c"Periods that ended are recycled; charging more live periods than this raises SQLSTATE 53400.",
        &SHMEM_BUDGETS,
        16,
        10_000_000,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"aicost.shmem_breakers",
        c"Circuit breakers (one per model and one per provider of each database, for the whole server) kept in shared memory (needs shared_preload_libraries).",
        c"Calls to a model whose breaker does not fit are admitted untracked, with a WARNING.",
        &SHMEM_BREAKERS,
        16,
        1_000_000,
        GucContext::Postmaster,
        GucFlags::default(),
    );
}

/// Names of the settings [`register_shmem`] defines.
pub const SHMEM_GUCS: [&std::ffi::CStr; 5] = [
    c"aicost.shmem_catalog_size",
    c"aicost.shmem_catalog_databases",
    c"aicost.stat_max_models",
    c"aicost.shmem_budgets",
    c"aicost.shmem_breakers",
];
