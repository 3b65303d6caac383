//! pg_aicost: price, cache and budget LLM calls inside PostgreSQL.
//!
//! The pgrx layer is thin glue over `aicost-core` (pure Rust): one module per capability.
//! - [`pricing`]: the catalog cache with transactional invalidation, import and default catalog;
//! - [`cost`]: `ai_cost` / `ai_cost_explain`;
//! - [`cache`]: the LLM response cache's keys (its logic is SQL, `sql/cache.sql`);
//! - [`ledger`]: pricing usage-ledger rows for the budget triggers (`sql/ledger.sql`);
//! - [`breaker`]: circuit breakers per model and provider (`sql/breaker.sql`).

use pgrx::prelude::*;

mod breaker;
mod budget;
mod cache;
mod catalog_shm;
mod cost;
mod error;
mod guc;
mod json;
mod ledger;
mod numeric;
mod pricing;
mod security;
mod shmem;
mod stats;
mod xact;

::pgrx::pg_module_magic!(name, version);

extension_sql_file!("../sql/catalog.sql", name = "catalog", bootstrap);
extension_sql_file!(
    "../sql/pricing_api.sql",
    name = "pricing_api",
    requires = [
        "catalog",
        ai_model_resolve,
        pricing::aicost::_invalidate_pricing_cache
    ]
);
extension_sql_file!(
    "../sql/tenants.sql",
    name = "tenants",
    requires = [
        "catalog",
        security::aicost::_invalidate_tenants,
        security::aicost::_tenant_org
    ]
);
extension_sql_file!(
    "../sql/cache.sql",
    name = "cache",
    requires = [
        "catalog",
        "tenants",
        cache::ai_cache_key,
        cache::aicost::_cache_ns,
        cache::aicost::_cache_ns_prefix,
        security::aicost::_guc,
        cache::aicost::_cache_model,
        cache::aicost::_response_cost
    ]
);
extension_sql_file!(
    "../sql/ledger.sql",
    name = "ledger",
    requires = [
        "catalog",
        "tenants",
        security::aicost::_visible,
        security::aicost::_guc,
        security::aicost::_ledger_maintenance,
        security::aicost::_check_created_at,
        security::aicost::_may_record,
        ledger::aicost::_ledger_price,
        ledger::aicost::_usage_counts,
        ledger::aicost::_ledger_mark_recorded,
        ledger::aicost::_ledger_take_recorded,
        budget::aicost::_shmem_budgets,
        budget::aicost::_stat_budget,
        budget::aicost::_admit_shared,
        budget::aicost::_charge_shared
    ]
);
extension_sql_file!(
    "../sql/stats.sql",
    name = "stats",
    requires = [
        "cache",
        "ledger",
        stats::aicost::_stat_cost_rows,
        stats::aicost::_stat_cache_rows,
        stats::aicost::_stat_budget_rows,
        stats::aicost::_stat_reset
    ]
);
extension_sql_file!(
    "../sql/breaker.sql",
    name = "breaker",
    requires = [
        "catalog",
        "ledger",
        breaker::ai_call_allowed,
        breaker::aicost::_breaker_rows,
        breaker::aicost::_invalidate_breaker_config,
        breaker::aicost::_route_candidates
    ]
);
extension_sql_file!("../sql/finalize.sql", name = "finalize", finalize);

/// PostgreSQL's CHECK_FOR_INTERRUPTS, for the core's long loops.
fn check_interrupts() {
    pg_sys::check_for_interrupts!();
}

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    shmem::refuse_shmem_gucs();
    aicost_core::limits::set_interrupt_hook(check_interrupts);
    guc::register();
    shmem::init();
    pricing::init();
    breaker::init();
    security::init();
    xact::init();
}

#[cfg(any(test, feature = "pg_test"))]
mod tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        // `AICOST_PRELOAD=1` runs the same tests in shared-memory mode.
        if std::env::var("AICOST_PRELOAD").is_ok_and(|v| v == "1") {
            vec!["shared_preload_libraries = 'pg_aicost'"]
        } else {
            vec![]
        }
    }
}
