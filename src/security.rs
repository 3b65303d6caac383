//! The trust boundary's Rust side (README "Roles and privileges").
//!
//! - [`as_owner`]: internal reads of the extension's tables (the pricing catalog, the tenant map)
//!   run as the extension's owner with `search_path` pinned, like a SECURITY DEFINER function: what a
//!   caller may do is decided by EXECUTE on the function it called, the same in both modes, and
//!   nothing on the caller's search path can capture a name in those queries.
//! - the tenant of a session: `aicost.tenants` maps roles to orgs; the acting role is
//!   `GetOuterUserId()` (the login or `SET ROLE` role, unchanged inside SECURITY DEFINER functions),
//!   cached per backend and invalidated transactionally when the map changes.
//! - settings read by SQL go through `aicost._guc()`, never `current_setting()`: calling it loads
//!   this library, which validates any placeholder a caller set before loading (a SUSET value set
//!   by a non-superuser is discarded), so PL/pgSQL never trusts a placeholder.

use crate::error::{ErrorExt, raise_full};
use pgrx::PgSqlErrorCode::*;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::cell::{Cell, RefCell};
use std::ffi::CStr;

/// The oid of table `aicost.<name>` (InvalidOid if missing; ERROR if the schema is missing).
pub fn relid(name: &CStr) -> pg_sys::Oid {
    // SAFETY: syscache lookups by name; no permission checks, nothing is opened.
    unsafe {
        let nsp = pg_sys::get_namespace_oid(c"aicost".as_ptr(), false);
        pg_sys::get_relname_relid(name.as_ptr(), nsp)
    }
}

/// The role owning the extension's tables (the superuser who ran CREATE EXTENSION).
fn extension_owner() -> pg_sys::Oid {
    let relid = relid(c"prices");
    // SAFETY: a relcache entry that is opened and closed right here.
    unsafe {
        if relid == pg_sys::InvalidOid {
            raise_full(
                ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                "pg_aicost is not installed in this database".into(),
                None,
                Some("Run CREATE EXTENSION pg_aicost CASCADE.".into()),
            );
        }
        let rel = pg_sys::RelationIdGetRelation(relid);
        let owner = (*(*rel).rd_rel).relowner;
        pg_sys::RelationClose(rel);
        owner
    }
}

/// Restores the caller's user id when [`as_owner`] returns or unwinds; a GUC nest level left
/// behind by an ERROR is popped by the (sub)transaction abort.
struct RestoreUser {
    user: pg_sys::Oid,
    sec: i32,
}

impl Drop for RestoreUser {
    fn drop(&mut self) {
        // SAFETY: restores the values read in `as_owner`; a plain assignment in PostgreSQL.
        unsafe { pg_sys::SetUserIdAndSecContext(self.user, self.sec) };
    }
}

/// Runs `f` (internal SPI reads) as the extension's owner with `search_path = pg_catalog, pg_temp`,
/// as PostgreSQL runs a SECURITY DEFINER function with a `SET search_path` clause.
pub fn as_owner<R>(f: impl FnOnce() -> R) -> R {
    let owner = extension_owner();
    // SAFETY: the same calls fmgr_security_definer makes; both are undone below or by abort.
    let (restore, nest) = unsafe {
        let mut user = pg_sys::InvalidOid;
        let mut sec = 0;
        pg_sys::GetUserIdAndSecContext(&mut user, &mut sec);
        let nest = pg_sys::NewGUCNestLevel();
        pg_sys::SetUserIdAndSecContext(owner, sec | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32);
        pg_sys::set_config_option(
            c"search_path".as_ptr(),
            c"pg_catalog, pg_temp".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
        (RestoreUser { user, sec }, nest)
    };
    let r = f();
    // SAFETY: pops the nest level opened above (restoring search_path).
    unsafe { pg_sys::AtEOXact_GUC(true, nest) };
    drop(restore);
    r
}

/// The acting role: the session's role after `SET ROLE`, unchanged inside SECURITY DEFINER code.
fn acting_role() -> pg_sys::Oid {
    // SAFETY: reads a backend global.
    unsafe { pg_sys::GetOuterUserId() }
}

/// The role the session logged in as.
fn login_role() -> pg_sys::Oid {
    // SAFETY: reads a backend global.
    unsafe { pg_sys::GetSessionUserId() }
}

/// The (acting role, login role) a tenant lookup was made for.
type Roles = (pg_sys::Oid, pg_sys::Oid);

// The tenant map cache: the roles last asked about and their org, valid until the map changes.
thread_local! {
    static TENANT: RefCell<Option<(Roles, Option<String>)>> = const { RefCell::new(None) };
}
// Touched by the relcache callback: a plain Cell, never borrowed across a call.
struct TenantFlags {
    relid: Cell<pg_sys::Oid>,
    valid: Cell<bool>,
}
// SAFETY: a PostgreSQL backend runs extension code on one thread only.
unsafe impl Sync for TenantFlags {}
static TENANT_FLAGS: TenantFlags = TenantFlags {
    relid: Cell::new(pg_sys::InvalidOid),
    valid: Cell::new(false),
};

#[pg_guard]
unsafe extern "C-unwind" fn relcache_callback(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    if relid == pg_sys::InvalidOid || relid == TENANT_FLAGS.relid.get() {
        TENANT_FLAGS.valid.set(false);
    }
}

/// Reserves the `aicost.` prefix (PostgreSQL 15+: a later `SET aicost.unknown` is an ERROR and
/// placeholders already set are dropped) and keeps Rust backtraces out of error messages. Called
/// last in `_PG_init`, after every setting is defined.
pub fn init() {
    // SAFETY: registers a C callback; reserves a GUC prefix.
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(Some(relcache_callback), pg_sys::Datum::from(0));
        #[cfg(not(any(feature = "pg13", feature = "pg14")))]
        pg_sys::MarkGUCPrefixReserved(c"aicost".as_ptr());
        #[cfg(any(feature = "pg13", feature = "pg14"))]
        pg_sys::EmitWarningsOnPlaceholders(c"aicost".as_ptr());
        // pgrx's panic hook captures a backtrace when RUST_BACKTRACE is set in the server's
        // environment and appends it to the error's DETAIL; RUST_LIB_BACKTRACE=0 wins over it.
        // The backend is single-threaded and nothing reads the environment concurrently.
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
}

/// The org the session is confined to (`aicost.tenants`), or None when it acts for any org: the
/// acting role's org if it is listed, else the login role's, so that a confined login cannot shed
/// its org with `SET ROLE` to an unlisted group it belongs to (a shared, unlisted login that does
/// `SET ROLE` to a listed tenant role is confined to that tenant).
pub fn tenant_org() -> Option<String> {
    let who = (acting_role(), login_role());
    if TENANT_FLAGS.valid.get()
        && let Some(org) = TENANT.with(|t| {
            t.borrow()
                .as_ref()
                .filter(|(r, _)| *r == who)
                .map(|(_, o)| o.clone())
        })
    {
        return org;
    }
    // Valid before reading: an invalidation arriving during the read marks it stale again.
    TENANT_FLAGS.valid.set(true);
    TENANT_FLAGS.relid.set(relid(c"tenants"));
    let org = as_owner(|| {
        Spi::get_one_with_args::<String>(
            // Always one row (NULL when neither role is listed).
            "SELECT (SELECT t.org_id FROM aicost.tenants t WHERE t.role IN ($1, $2)
                      ORDER BY t.role OPERATOR(pg_catalog.=) $1 DESC LIMIT 1)",
            &[who.0.into(), who.1.into()],
        )
        .or_internal("reading aicost.tenants")
    });
    TENANT.with(|t| *t.borrow_mut() = Some((who, org.clone())));
    org
}

/// Whether the acting role is trusted with recorded spend: a superuser or a member of aicost_admin
/// (may give a ledger row its cost or an earlier `created_at`, e.g. for backfills).
fn caller_trusted() -> bool {
    let who = acting_role();
    // SAFETY: catalog lookups by name and oid (cached by PostgreSQL's role cache).
    unsafe {
        if pg_sys::superuser_arg(who) {
            return true;
        }
        let admin = pg_sys::get_role_oid(c"aicost_admin".as_ptr(), true);
        admin != pg_sys::InvalidOid && pg_sys::has_privs_of_role(who, admin)
    }
}

/// Seconds a ledger row's `created_at` may lie before the transaction's start
/// (`aicost.ledger_max_backdate`) and after the clock (fixed: clocks of application servers drift).
const MAX_CLOCK_AHEAD_US: i64 = 5 * 60 * 1_000_000;

fn check_created_at(created_at: i64) {
    if caller_trusted() {
        return;
    }
    let back_us = i64::from(crate::guc::LEDGER_MAX_BACKDATE.get()) * 1_000_000;
    // SAFETY: reads the transaction's start and the clock.
    let (start, now) = unsafe {
        (
            pg_sys::GetCurrentTransactionStartTimestamp(),
            pg_sys::GetCurrentTimestamp(),
        )
    };
    if created_at < start.saturating_sub(back_us)
        || created_at > now.saturating_add(MAX_CLOCK_AHEAD_US)
    {
        raise_full(
            ERRCODE_INVALID_PARAMETER_VALUE,
            "created_at of a usage row must be near the present".into(),
            Some(format!(
                "Rows may be dated at most aicost.ledger_max_backdate ({} s) before the transaction started and 5 minutes ahead of the clock.",
                back_us / 1_000_000
            )),
            Some("Leave created_at to its default; backfills need aicost_admin.".into()),
        );
    }
}

#[pg_schema]
mod aicost {
    use super::*;

    /// Whether the acting role may give a ledger row the extension's own columns (`budget_ids`,
    /// `cost`, `cache_hit`, `price_ids`): it holds INSERT on `aicost.usage.budget_ids` (admins,
    /// superusers). Checked in the trigger on the values, because a column privilege is not
    /// checked for a value that comes from a default (e.g. of a view over the table).
    #[pg_extern(stable, parallel_safe)]
    fn _may_record() -> bool {
        let relid = relid(c"usage");
        let (role, insert) = (acting_role(), pg_sys::ACL_INSERT as pg_sys::AclMode);
        // SAFETY: catalog lookups by oid and name; no relation is opened. As has_column_privilege:
        // the table's privilege (superusers have it) or the column's.
        unsafe {
            if pg_sys::pg_class_aclcheck(relid, role, insert) == pg_sys::AclResult::ACLCHECK_OK {
                return true;
            }
            let attnum = pg_sys::get_attnum(relid, c"budget_ids".as_ptr());
            attnum != pg_sys::InvalidAttrNumber as i16
                && pg_sys::pg_attribute_aclcheck(relid, attnum, role, insert)
                    == pg_sys::AclResult::ACLCHECK_OK
        }
    }

    /// The org the acting role is confined to, NULL when it acts for any org.
    #[pg_extern(stable, parallel_safe)]
    fn _tenant_org() -> Option<String> {
        tenant_org()
    }

    /// Whether the acting role may see or use rows of org `org` (NULL: rows of no org): every org
    /// unless aicost.tenants confines it. Rust, not SQL: views call it as the querying user, whose
    /// search_path must not be able to capture its comparison.
    #[pg_extern(stable, parallel_safe)]
    fn _visible(org: Option<&str>) -> bool {
        tenant_org().is_none_or(|t| Some(t.as_str()) == org)
    }

    /// Called by the statement trigger on aicost.tenants: every backend drops its cached map when
    /// the change commits.
    #[pg_extern(volatile, parallel_unsafe)]
    fn _invalidate_tenants() {
        TENANT_FLAGS.valid.set(false);
        // SAFETY: queues an invalidation message for a relation oid.
        unsafe { pg_sys::CacheInvalidateRelcacheByRelid(relid(c"tenants")) };
    }

    /// The value of an `aicost.*` setting as this library defines it (never a placeholder).
    #[pg_extern(stable, parallel_safe, strict)]
    fn _guc(name: &str) -> Option<String> {
        if !name.starts_with("aicost.") {
            raise_full(
                ERRCODE_INVALID_PARAMETER_VALUE,
                format!("\"{name}\" is not a pg_aicost setting"),
                None,
                None,
            );
        }
        let cname = std::ffi::CString::new(name).ok()?;
        // SAFETY: reads a setting by name; NULL when it does not exist. The result is copied.
        unsafe {
            let v = pg_sys::GetConfigOption(cname.as_ptr(), true, false);
            (!v.is_null()).then(|| CStr::from_ptr(v).to_string_lossy().into_owned())
        }
    }

    /// Whether ai_reprice_unpriced() is updating ledger rows in this transaction.
    #[pg_extern(stable, parallel_safe)]
    fn _ledger_maintenance() -> bool {
        crate::guc::LEDGER_MAINTENANCE.get()
    }

    /// Refuses a ledger row dated outside the window an application role may use (22023).
    #[pg_extern(stable, parallel_safe, strict)]
    fn _check_created_at(created_at: TimestampWithTimeZone) {
        check_created_at(created_at.into_inner());
    }
}
