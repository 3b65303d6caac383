//! Statistics behind `aicost.stat_cost`, `aicost.stat_cache` and `aicost.stat_budget` (stub: being
//! written).

use aicost_core::Decimal;

/// Catalog-cache events counted in `aicost.stat_cache`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CatalogEvent {
    /// A call priced from this backend's cached catalog (or its memo of the shared one).
    Hit,
    /// This backend loaded the whole catalog from the tables.
    LocalLoad,
    /// This backend read a model's entries from the shared catalog.
    SharedRead,
    /// This backend rebuilt the shared catalog after a committed change (or at first use).
    SharedBuild,
    /// The catalog did not fit in aicost.shmem_catalog_size.
    SharedTooBig,
}

/// Budget events counted per budget in `aicost.stat_budget`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BudgetEvent {
    /// ai_budget_check() call.
    Check,
    /// ai_budget_reserve() that succeeded.
    Reservation,
    /// A ledger row charged to the budget.
    Charge,
    /// A charge or reservation refused by the hard limit (AC001).
    Denial,
    /// A threshold alert recorded.
    Alert,
}

pub fn shmem_size() -> usize {
    0
}

/// # Safety
/// Startup hook only.
pub unsafe fn shmem_startup() {}

/// One pricing call: `model` is the canonical name (None when the name did not resolve).
pub fn record_cost(
    _model: Option<&str>,
    _in_tokens: i64,
    _out_tokens: i64,
    _cost: Option<&Decimal>,
    _elapsed_ns: u64,
) {
}

/// A pricing call that raised an error.
pub fn record_cost_error(_model: Option<&str>, _elapsed_ns: u64) {}

pub fn count_catalog(_ev: CatalogEvent) {}

pub fn count_budget(_budget_id: i64, _ev: BudgetEvent) {}
