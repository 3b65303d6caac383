//! The one owner of pg_aicost's transaction callbacks.
//!
//! PostgreSQL calls one xact and one subxact callback, registered here from `_PG_init`; they call
//! each capability's step in this order, at every event:
//! 1. [`crate::budget`] (shared-memory mode only): at PRE_PREPARE refuses a transaction that
//!    charged a budget; at PRE_COMMIT moves this transaction's charges to committed spend and records
//!    the alerts they cross (the last point where the transaction may still write); at COMMIT /
//!    ABORT settles the amounts it held in flight. On a subtransaction's abort it releases the
//!    subtransaction's amounts; on its commit it hands them to the parent.
//! 2. [`crate::stats`]: at COMMIT / ABORT (also of a parallel worker) flushes this backend's
//!    batched counters into the statistics region.
//! 3. [`crate::pricing`]: at PRE_PREPARE refuses (shared-memory mode) a transaction that changed
//!    the catalog; at ABORT drops a catalog cache this transaction made stale, and at COMMIT tells
//!    other backends (the shared catalog's generation) after the change is visible. On a
//!    subtransaction's abort it drops a cache the subtransaction made stale.
//!
//! Budgets come first so that their pre-commit writes (alerts) are done before anything else
//! reacts to the commit; the pricing step's COMMIT bump must follow the commit's visibility.

use pgrx::pg_sys;
use pgrx::prelude::*;

/// Registers the callbacks; called once per backend from `_PG_init`.
pub fn init() {
    // SAFETY: registering C callbacks with PostgreSQL; pgrx has no safe wrapper for these.
    unsafe {
        pg_sys::RegisterXactCallback(Some(xact_callback), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(subxact_callback), std::ptr::null_mut());
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn xact_callback(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::XactEvent::*;
    crate::budget::on_xact(event);
    if matches!(
        event,
        XACT_EVENT_COMMIT
            | XACT_EVENT_PARALLEL_COMMIT
            | XACT_EVENT_ABORT
            | XACT_EVENT_PARALLEL_ABORT
    ) {
        crate::stats::flush();
    }
    crate::pricing::on_xact(event);
}

#[pg_guard]
unsafe extern "C-unwind" fn subxact_callback(
    event: pg_sys::SubXactEvent::Type,
    my: pg_sys::SubTransactionId,
    parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    crate::budget::on_subxact(event, my, parent);
    crate::pricing::on_subxact(event);
}
