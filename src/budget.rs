//! Budget admission in shared memory (shared-memory mode), for the ledger triggers of
//! `sql/ledger.sql`.
//!
//! Per budget and period, shared memory holds `committed` (spend of committed transactions) and
//! `inflight` (charges and reservations of transactions still running). A charge is admitted by one
//! compare-and-add under the entry's spinlock: `committed + inflight + reserved + cost` must not pass
//! the hard limit. So concurrent writers of one budget never wait on each other's row locks, and
//! the limit holds exactly. Durably, each backend adds its charges to its own `aicost.budget_spend`
//! row (`slot` = its backend number), in the same transaction as the ledger row, so no two writers
//! ever update the same row.
//!
//! Transactions:
//! - the admitted amounts are remembered per (sub)transaction; at pre-commit charges move from
//!   `inflight` to `committed`, in commit order, which decides threshold alerts (see `precommit`);
//!   at commit (XACT_EVENT_COMMIT, after the commit is visible) reservations leave `inflight`
//!   (they are then counted from `aicost.budget_reservations`); at abort of the transaction or of
//!   the subtransaction that made them amounts leave `inflight` (or `committed`, if the
//!   transaction failed after pre-commit);
//! - a backend that exits runs the abort path; a backend killed hard makes the postmaster reset
//!   shared memory, after which every entry is rebuilt from the tables before its first admission;
//! - PREPARE TRANSACTION of a transaction holding admissions is refused (its end could come from
//!   another session).
//!
//! Rebuild: an entry missing from shared memory (first use since start, after a crash, or after
//! being recycled) is created from `aicost.budget_spend` (the committed spend of every slot, written
//! with each ledger row and checked against the ledger by `ai_budget_audit()`), whether the period
//! has active reservations, and the alerts already recorded, all read under the latest snapshot.
//! Only entries without in-flight amounts are ever recycled, so a rebuilt entry is exact.
//! A standby never admits (it cannot write); entries start empty after promotion.
//!
//! Reservations (`ai_budget_reserve`) count by reading the table under the latest snapshot, only for
//! periods that have had any. A reservation that commits between that read and the admission would
//! be missed, so its commit bumps the entry's `epoch` (under the spinlock, after it is visible) and
//! an admission that sees the epoch changed reads again.
//!
//! Locking: [`LOCK_BUDGETS`](crate::shmem::LOCK_BUDGETS) shared to find an entry, exclusive to
//! create or recycle one; the entry's spinlock for every read or write of its fields. No SPI, no
//! allocation and nothing that can ERROR under either.

use crate::error::{ErrorExt, raise_full};
use crate::shmem::{self, LOCK_BUDGETS, LwGuard, SpinLock, database};
use crate::stats::{BudgetEvent, count_budget};
use pgrx::PgSqlErrorCode::*;
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use pgrx::{AnyNumeric, pg_sys};
use std::cell::{RefCell, UnsafeCell};
use std::sync::atomic::{AtomicU32, Ordering};

/// Money in shared memory: units of 1e-24 USD (prices have at most 18 decimals per million tokens,
/// so a computed cost has at most 24; a finer caller-given cost is rounded up, never down).
type Units = i128;

/// An i128 stored as two words: shared memory is only guaranteed 8-byte alignment.
#[repr(C)]
#[derive(Clone, Copy)]
struct Money([u64; 2]);

impl Money {
    fn get(self) -> Units {
        ((u128::from(self.0[1]) << 64) | u128::from(self.0[0])) as i128
    }
    fn set(&mut self, v: Units) {
        let u = v as u128;
        self.0 = [u as u64, (u >> 64) as u64];
    }
}
const SCALE: u32 = 24;

const FREE: u32 = 0;
const USED: u32 = 1;
/// Recycled: free for reuse, but probing continues past it.
const TOMBSTONE: u32 = 2;

const ALERT: u8 = 1;
const THROTTLE: u8 = 2;
const HARD: u8 = 4;

#[repr(C)]
struct Entry {
    lock: SpinLock,
    /// FREE / USED / TOMBSTONE; changed only under the exclusive LWLock (and the spinlock).
    state: AtomicU32,
    /// Read and written only under `lock`.
    data: UnsafeCell<EntryData>,
}

#[repr(C)]
struct EntryData {
    /// Budgets are per database and per installation of the extension there: the key is
    /// (database, budgets table oid, budget_id, period_start), so that budget ids that start again
    /// after DROP EXTENSION; CREATE EXTENSION never meet the counters of the dropped budgets.
    database: u32,
    ledger: u32,
    budget_id: i64,
    period_start: i64,
    period_end: i64,
    committed: Money,
    inflight: Money,
    /// Reservations committed since start (see the module docs).
    epoch: u64,
    /// The period has (or had) reservations: admissions read the table.
    has_holds: bool,
    /// Thresholds whose alert is recorded (committed).
    alerts_done: u8,
}

#[repr(C)]
struct Header {
    capacity: u64,
}

static mut HEADER: *mut Header = std::ptr::null_mut();

fn capacity() -> usize {
    usize::try_from(crate::guc::SHMEM_BUDGETS.get()).unwrap_or(16)
}

pub fn shmem_size() -> usize {
    size_of::<Header>() + capacity() * size_of::<Entry>()
}

/// # Safety
/// Startup hook only (see `shmem`).
pub unsafe fn shmem_startup() {
    // SAFETY: under AddinShmemInitLock; a new segment is zeroed here (all entries FREE).
    unsafe {
        let (p, found) = shmem::init_struct(c"pg_aicost budgets", shmem_size());
        if !found {
            std::ptr::write_bytes(p, 0, shmem_size());
            p.cast::<Header>().write(Header {
                capacity: capacity() as u64,
            });
        }
        HEADER = p.cast();
    }
}

fn entries() -> &'static [Entry] {
    // SAFETY: set in the postmaster before forking; entries follow the header. Fields other than
    // atomics are only touched under the entry's spinlock.
    unsafe {
        let h = HEADER.as_ref().expect("shared memory is initialized");
        std::slice::from_raw_parts((HEADER.add(1)).cast::<Entry>(), h.capacity as usize)
    }
}

/// Mutable access to an entry's data; the caller holds its spinlock.
#[allow(clippy::mut_from_ref)]
fn fields(e: &Entry) -> &mut EntryData {
    // SAFETY: the entry's spinlock serializes all access to the data (see the module docs).
    unsafe { &mut *e.data.get() }
}

fn slot_of(budget_id: i64, period_start: i64, cap: usize) -> usize {
    let h = (budget_id as u64 ^ (u64::from(database()) << 40))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(29)
        ^ (period_start as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    (h % cap as u64) as usize
}

/// The entry's index, if it exists. Caller holds LOCK_BUDGETS (any mode).
fn find(budget_id: i64, period_start: i64, ledger: u32) -> Option<usize> {
    let es = entries();
    let start = slot_of(budget_id, period_start, es.len());
    for k in 0..es.len() {
        let i = (start + k) % es.len();
        let e = &es[i];
        match e.state.load(Ordering::Acquire) {
            FREE => return None,
            USED => {
                let _g = e.lock.lock();
                let f = fields(e);
                if f.budget_id == budget_id
                    && f.period_start == period_start
                    && f.database == database()
                    && f.ledger == ledger
                {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// What the tables say about a budget period, read before an entry is created.
struct Rebuilt {
    committed: Units,
    has_holds: bool,
    alerts_done: u8,
}

/// The entry of a budget period, created from the tables if missing.
/// The oid of this database's `aicost.budgets`: new with every CREATE EXTENSION.
fn ledger_incarnation() -> u32 {
    crate::security::relid(c"budgets").to_u32()
}

fn entry(budget_id: i64, period_start: i64, period_end: i64) -> usize {
    let ledger = ledger_incarnation();
    {
        let _l = LwGuard::shared(LOCK_BUDGETS);
        if let Some(i) = find(budget_id, period_start, ledger) {
            return i;
        }
    }
    // Read outside any lock (SPI); if another backend creates the entry meanwhile, its copy wins:
    // nobody can have charged the period without an entry, so both read the same committed spend.
    let r = rebuild(budget_id, period_start);
    let _l = LwGuard::exclusive(LOCK_BUDGETS);
    if let Some(i) = find(budget_id, period_start, ledger) {
        return i;
    }
    let es = entries();
    let mut slot = free_slot(budget_id, period_start);
    if slot.is_none() {
        recycle();
        slot = free_slot(budget_id, period_start);
    }
    let Some(i) = slot else {
        drop(_l);
        raise_full(
            ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
            format!(
                "pg_aicost: more than aicost.shmem_budgets = {} budget periods are in use",
                es.len()
            ),
            Some(
                "Every shared-memory budget entry has a transaction in flight or a current period."
                    .into(),
            ),
            Some("Raise aicost.shmem_budgets and restart the server.".into()),
        );
    };
    let e = &es[i];
    {
        let _g = e.lock.lock();
        let f = fields(e);
        f.database = database();
        f.ledger = ledger;
        f.budget_id = budget_id;
        f.period_start = period_start;
        f.period_end = period_end;
        f.committed.set(r.committed);
        f.inflight.set(0);
        f.epoch = 0;
        f.has_holds = r.has_holds;
        f.alerts_done = r.alerts_done;
    }
    e.state.store(USED, Ordering::Release);
    i
}

fn free_slot(budget_id: i64, period_start: i64) -> Option<usize> {
    let es = entries();
    let start = slot_of(budget_id, period_start, es.len());
    (0..es.len())
        .map(|k| (start + k) % es.len())
        .find(|&i| es[i].state.load(Ordering::Acquire) != USED)
}

/// Frees entries of ended periods with nothing in flight (caller holds LOCK_BUDGETS exclusively).
/// Safe for any idle entry: a later use rebuilds it exactly from the tables.
fn recycle() {
    // SAFETY: reads the transaction start time of this backend.
    let now = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
    for e in entries() {
        if e.state.load(Ordering::Acquire) != USED {
            continue;
        }
        let _g = e.lock.lock();
        let f = fields(e);
        if f.inflight.get() == 0 && f.period_end < now {
            e.state.store(TOMBSTONE, Ordering::Release);
        }
    }
}

fn rebuild(budget_id: i64, period_start: i64) -> Rebuilt {
    let mut r = Rebuilt {
        committed: 0,
        has_holds: false,
        alerts_done: 0,
    };
    scan_period(
        "SELECT (SELECT coalesce(sum(s.spent), 0)::text FROM aicost.budget_spend s
                  WHERE s.budget_id = $1 AND s.period_start = $2),
                EXISTS (SELECT FROM aicost.budget_reservations r
                         WHERE r.budget_id = $1 AND r.period_start = $2 AND r.settled_at IS NULL),
                (SELECT coalesce(array_agg(a.threshold), '{}') FROM aicost.budget_alerts a
                  WHERE a.budget_id = $1 AND a.period_start = $2)",
        budget_id,
        period_start,
        |row| {
            r.committed = units_ceil(&row.get::<String>(1).unwrap_or_default());
            r.has_holds = row.get::<bool>(2).unwrap_or(false);
            for t in row.get::<Vec<String>>(3).unwrap_or_default() {
                r.alerts_done |= threshold_bit(&t);
            }
        },
    );
    r
}

/// Runs `sql` with $1 = budget_id and $2 = period_start under the latest snapshot (see
/// `pricing::scan_latest`): what is committed now, whatever the caller's snapshot.
fn scan_period(
    sql: &str,
    budget_id: i64,
    period_start: i64,
    each: impl FnMut(&crate::pricing::LatestRow),
) {
    let args = [
        (pg_sys::INT8OID, pg_sys::Datum::from(budget_id)),
        (pg_sys::TIMESTAMPTZOID, pg_sys::Datum::from(period_start)),
    ];
    Spi::connect(|_| crate::pricing::scan_latest(sql, &args, each));
}

fn threshold_bit(name: &str) -> u8 {
    match name {
        "alert" => ALERT,
        "throttle" => THROTTLE,
        "hard" => HARD,
        _ => 0,
    }
}

/// Active reservations of a budget period, under the latest snapshot.
fn reserved_now(budget_id: i64, period_start: i64) -> Units {
    let mut v = 0;
    scan_period(
        "SELECT coalesce(sum(r.amount), 0)::text FROM aicost.budget_reservations r
          WHERE r.budget_id = $1 AND r.period_start = $2
            AND r.settled_at IS NULL AND r.expires_at > clock_timestamp()",
        budget_id,
        period_start,
        |row| v = units_ceil(&row.get::<String>(1).unwrap_or_default()),
    );
    v
}

/// A decimal string as units of 1e-24, rounded up (toward +infinity).
fn units_ceil(s: &str) -> Units {
    to_units(s, true)
}

/// Same, rounded down (for limits: a limit is never rounded up).
fn units_floor(s: &str) -> Units {
    to_units(s, false)
}

fn to_units(s: &str, ceil: bool) -> Units {
    let s = s.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let overflow = || -> ! {
        raise_full(
            ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
            format!("pg_aicost: amount {s} is out of range for budget admission"),
            None,
            None,
        )
    };
    let mut v: i128 = 0;
    for c in int.bytes().chain(
        frac.bytes()
            .chain(std::iter::repeat(b'0'))
            .take(SCALE as usize),
    ) {
        if !c.is_ascii_digit() {
            overflow();
        }
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(i128::from(c - b'0')))
            .unwrap_or_else(|| overflow());
    }
    let rest_nonzero =
        frac.len() > SCALE as usize && frac.bytes().skip(SCALE as usize).any(|c| c != b'0');
    // Rounding toward +inf for ceil (and -inf for floor), on the signed value.
    if rest_nonzero && (ceil != neg) {
        v += 1;
    }
    if neg { -v } else { v }
}

fn units_text(u: Units) -> String {
    let neg = u < 0;
    let a = u.unsigned_abs();
    let p = 10u128.pow(SCALE);
    let frac = format!("{:024}", a % p);
    let frac = frac.trim_end_matches('0');
    let sign = if neg { "-" } else { "" };
    if frac.is_empty() {
        format!("{sign}{}", a / p)
    } else {
        format!("{sign}{}.{frac}", a / p)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// A ledger row's cost: committed at commit.
    Spend,
    /// A reservation: counted from the table once committed.
    Hold,
}

struct Pending {
    index: usize,
    budget_id: i64,
    period_start: i64,
    amount: Units,
    kind: Kind,
    /// Alert, throttle and hard thresholds of the budget (charges only).
    thresholds: [Units; 3],
    /// Moved from `inflight` to `committed` at pre-commit (charges only).
    precommitted: bool,
    /// Alert bits this charge recorded, known done once the transaction commits.
    alerts: u8,
    subxact: pg_sys::SubTransactionId,
}

thread_local! {
    static PENDING: RefCell<Vec<Pending>> = const { RefCell::new(Vec::new()) };
    static PLANS: RefCell<Option<Plans>> = const { RefCell::new(None) };
}

struct Plans {
    budgets: OwnedPreparedStatement,
    upsert: OwnedPreparedStatement,
}

/// Applies (commit) or undoes (abort) the pending admissions selected by `which`.
fn settle(commit: bool, which: impl Fn(&Pending) -> bool) {
    let done: Vec<Pending> = PENDING.with(|p| {
        let mut p = p.borrow_mut();
        let (take, keep): (Vec<_>, Vec<_>) = p.drain(..).partition(|x| which(x));
        *p = keep;
        take
    });
    if done.is_empty() {
        return;
    }
    let es = entries();
    for x in done {
        let e = &es[x.index];
        let _g = e.lock.lock();
        let f = fields(e);
        // Entries with amounts in flight (or pre-committed) are never recycled: same period.
        debug_assert!(f.budget_id == x.budget_id && f.period_start == x.period_start);
        if x.precommitted {
            if !commit {
                f.committed.set(f.committed.get() - x.amount);
            }
        } else {
            f.inflight.set(f.inflight.get() - x.amount);
            if commit && x.kind == Kind::Spend {
                f.committed.set(f.committed.get() + x.amount);
            }
        }
        if commit {
            if x.kind == Kind::Hold {
                f.epoch += 1;
            }
            f.alerts_done |= x.alerts;
        }
    }
}

/// The budgets' step of a transaction event (see [`crate::xact`] for the order).
pub(crate) fn on_xact(event: pg_sys::XactEvent::Type) {
    use pg_sys::XactEvent::*;
    if !shmem::preloaded() {
        return;
    }
    match event {
        XACT_EVENT_PRE_PREPARE if PENDING.with(|p| !p.borrow().is_empty()) => raise_full(
            ERRCODE_FEATURE_NOT_SUPPORTED,
            "cannot PREPARE a transaction that charged a pg_aicost budget in shared-memory mode"
                .into(),
            None,
            Some("Insert usage rows and reserve budget in ordinary transactions.".into()),
        ),
        XACT_EVENT_PRE_COMMIT => precommit(),
        XACT_EVENT_COMMIT => settle(true, |_| true),
        XACT_EVENT_ABORT => settle(false, |_| true),
        _ => {}
    }
}

/// The alert bits a committed spend moving from `old` to `new` crosses, leaving out those done.
fn crossed(thresholds: [Units; 3], old: Units, new: Units, done: u8) -> u8 {
    thresholds
        .into_iter()
        .zip([ALERT, THROTTLE, HARD])
        .filter(|&(t, bit)| old < t && new >= t && done & bit == 0)
        .fold(0, |bits, (_, bit)| bits | bit)
}

/// Records (ON CONFLICT DO NOTHING) and NOTIFYs the thresholds of a budget period that spend
/// crossed going from `old` to `new`: the statement per-backend mode runs under the row lock.
/// Records the alerts of a crossing. As the extension's owner: at pre-commit no SECURITY DEFINER
/// function is running any more, and the committing role may not write budget_alerts.
fn record_alerts(budget_id: i64, period_start: i64, old: Units, new: Units) {
    crate::security::as_owner(|| {
        Spi::run_with_args(
            "SELECT aicost._budget_thresholds(b, $2, $3::numeric, $4::numeric) FROM aicost.budgets b WHERE b.budget_id = $1",
            &[
                budget_id.into(),
                timestamptz(period_start).into(),
                units_text(old).into(),
                units_text(new).into(),
            ],
        )
        .or_internal("recording budget alerts")
    });
}

/// Threshold alerts count committed spend only, so spend that rolls back never raises one:
/// - a charge records an alert at once when committed spend plus this transaction's own charges
///   crosses a threshold (see `_charge_shared`); if the transaction commits, committed spend has
///   then really crossed it;
/// - a crossing made by several transactions committing together, none of which saw it alone, is
///   caught here, at pre-commit (the last point where a transaction may still write): the charges
///   move from `inflight` to `committed` under the entry's spinlock one by one, in commit order,
///   and the charge that takes `committed` across a threshold records the alert in this
///   transaction, as the row lock orders crossings in per-backend mode.
///
/// Rows are unique per threshold (ON CONFLICT DO NOTHING waits for a concurrent recorder and sends
/// no second NOTIFY if it commits). A transaction that fails after pre-commit takes its amounts
/// back out of `committed`, and its alert rows are rolled back with it.
fn precommit() {
    let mut crossings: Vec<(i64, i64, Units, Units)> = Vec::new();
    PENDING.with(|p| {
        let mut p = p.borrow_mut();
        let es = entries();
        for k in 0..p.len() {
            if p[k].kind != Kind::Spend || p[k].precommitted {
                continue;
            }
            // Alerts this transaction recorded already for the same period.
            let recorded = p
                .iter()
                .filter(|y| y.index == p[k].index)
                .fold(0, |b, y| b | y.alerts);
            let x = &mut p[k];
            let e = &es[x.index];
            let (old, done) = {
                let _g = e.lock.lock();
                let f = fields(e);
                let old = f.committed.get();
                f.inflight.set(f.inflight.get() - x.amount);
                f.committed.set(old + x.amount);
                (old, f.alerts_done)
            };
            x.precommitted = true;
            let new = old + x.amount;
            let bits = crossed(x.thresholds, old, new, done | recorded);
            if bits != 0 {
                x.alerts |= bits;
                crossings.push((x.budget_id, x.period_start, old, new));
            }
        }
    });
    if crossings.is_empty() {
        return;
    }
    // Statements have ended: SPI needs a snapshot of its own here (an ERROR unwinds the
    // snapshot stack with the transaction).
    // SAFETY: the transaction is still in progress at pre-commit.
    unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot()) };
    for (id, start, old, new) in crossings {
        record_alerts(id, start, old, new);
    }
    // SAFETY: pops the snapshot pushed above.
    unsafe { pg_sys::PopActiveSnapshot() };
}

/// The budgets' step of a subtransaction event.
pub(crate) fn on_subxact(
    event: pg_sys::SubXactEvent::Type,
    my: pg_sys::SubTransactionId,
    parent: pg_sys::SubTransactionId,
) {
    use pg_sys::SubXactEvent::*;
    if !shmem::preloaded() {
        return;
    }
    match event {
        SUBXACT_EVENT_ABORT_SUB => settle(false, |x| x.subxact == my),
        SUBXACT_EVENT_COMMIT_SUB => PENDING.with(|p| {
            for x in p.borrow_mut().iter_mut().filter(|x| x.subxact == my) {
                x.subxact = parent;
            }
        }),
        _ => {}
    }
}

/// Why an admission was refused.
struct Denied {
    committed: Units,
    inflight: Units,
    reserved: Units,
}

/// What an admission saw, under its spinlock.
struct Admitted {
    committed: Units,
    alerts_done: u8,
}

/// Adds `amount` to the period's in-flight spend unless that would pass `hard`.
fn admit(
    index: usize,
    budget_id: i64,
    period_start: i64,
    hard: Units,
    amount: Units,
    kind: Kind,
) -> Result<Admitted, Denied> {
    let e = &entries()[index];
    loop {
        let (has_holds, epoch) = {
            let _g = e.lock.lock();
            let f = fields(e);
            (f.has_holds, f.epoch)
        };
        // This transaction's own reservations are in the table it reads (its own changes are
        // visible to it) and in `inflight`: count them once, as the table says (a reservation
        // this transaction settled no longer counts).
        let reserved = if has_holds {
            let own: Units = PENDING.with(|p| {
                p.borrow()
                    .iter()
                    .filter(|x| x.index == index && x.kind == Kind::Hold)
                    .map(|x| x.amount)
                    .sum()
            });
            reserved_now(budget_id, period_start) - own
        } else {
            0
        };
        let _g = e.lock.lock();
        let f = fields(e);
        if f.has_holds != has_holds || f.epoch != epoch {
            continue; // a reservation committed meanwhile: read the table again
        }
        let (committed, inflight) = (f.committed.get(), f.inflight.get());
        if committed + inflight + reserved + amount > hard {
            return Err(Denied {
                committed,
                inflight,
                reserved,
            });
        }
        f.inflight.set(inflight + amount);
        if kind == Kind::Hold {
            f.has_holds = true;
        }
        return Ok(Admitted {
            committed,
            alerts_done: f.alerts_done,
        });
    }
}

fn remember(
    index: usize,
    budget_id: i64,
    period_start: i64,
    amount: Units,
    kind: Kind,
    thresholds: [Units; 3],
    alerts: u8,
) {
    // SAFETY: reads the current subtransaction id.
    let subxact = unsafe { pg_sys::GetCurrentSubTransactionId() };
    PENDING.with(|p| {
        p.borrow_mut().push(Pending {
            index,
            budget_id,
            period_start,
            amount,
            kind,
            thresholds,
            precommitted: false,
            alerts,
            subxact,
        })
    });
}

/// A refused admission, returned to sql/ledger.sql, which raises AC001 with
/// `aicost._budget_exceeded` (PL/pgSQL can raise a custom SQLSTATE; pgrx cannot).
type Denial = TableIterator<
    'static,
    (
        name!(budget_id, i64),
        name!(period_start, TimestampWithTimeZone),
        name!(spent, AnyNumeric),
        name!(reserved, AnyNumeric),
        name!(amount, AnyNumeric),
    ),
>;

fn numeric(u: Units) -> AnyNumeric {
    units_text(u).parse().expect("a decimal is a numeric")
}

fn denial(budget_id: i64, period_start: i64, d: &Denied, amount: Units) -> Denial {
    count_budget(budget_id, BudgetEvent::Denial);
    // In-flight spend of other transactions counts as reserved in the message.
    TableIterator::once((
        budget_id,
        timestamptz(period_start),
        numeric(d.committed),
        numeric(d.inflight + d.reserved),
        numeric(amount),
    ))
}

/// Whether `aicost.budget_reservations` has 0.3.0's `org_id` (and so its SQL settles
/// reservations itself): a syscache lookup, no query.
fn reservations_have_orgs() -> bool {
    let relid = crate::security::relid(c"budget_reservations");
    // SAFETY: a syscache lookup by oid and name.
    unsafe { pg_sys::get_attnum(relid, c"org_id".as_ptr()) != pg_sys::InvalidAttrNumber as i16 }
}

fn timestamptz(t: i64) -> TimestampWithTimeZone {
    // SAFETY: a timestamptz datum is its i64 value.
    unsafe { TimestampWithTimeZone::from_datum(pg_sys::Datum::from(t), false) }
        .expect("a timestamptz")
}

fn plans<R>(f: impl FnOnce(&Plans, &mut pgrx::spi::SpiClient<'_>) -> R) -> R {
    Spi::connect_mut(|client| {
        PLANS.with(|p| {
            if p.borrow().is_none() {
                let budgets = client
                    .prepare(
                        "SELECT b.budget_id, p.start, aicost._period_end(b.period, b.time_zone, p.start),
                                (b.amount * b.hard_pct / 100)::text,
                                (b.amount * b.alert_pct / 100)::text,
                                (b.amount * b.throttle_pct / 100)::text
                           FROM aicost.budgets b
                          CROSS JOIN LATERAL (SELECT aicost._period_start(b.period, b.time_zone, $2) AS start) p
                          WHERE b.budget_id = ANY ($1)
                          ORDER BY b.budget_id",
                        &[pg_sys::INT8ARRAYOID.into(), pg_sys::TIMESTAMPTZOID.into()],
                    )
                    .or_internal("preparing the budget query")
                    .keep();
                let upsert = client
                    .prepare_mut(
                        "INSERT INTO aicost.budget_spend AS s (budget_id, period_start, slot, spent)
                         SELECT u.b, u.p, $3, $4 FROM unnest($1::bigint[], $2::timestamptz[]) AS u(b, p)
                         ON CONFLICT (budget_id, period_start, slot) DO UPDATE SET spent = s.spent + excluded.spent",
                        &[
                            pg_sys::INT8ARRAYOID.into(),
                            pg_sys::TIMESTAMPTZARRAYOID.into(),
                            pg_sys::INT4OID.into(),
                            pg_sys::NUMERICOID.into(),
                        ],
                    )
                    .or_internal("preparing the spend upsert")
                    .keep();
                *p.borrow_mut() = Some(Plans { budgets, upsert });
            }
            f(p.borrow().as_ref().expect("prepared above"), client)
        })
    })
}

/// This backend's slot in `aicost.budget_spend` (its backend number, 1 and up).
fn my_slot() -> i32 {
    // SAFETY: reads this backend's id, fixed for its lifetime (0-based ProcNumber from 17 on).
    #[cfg(any(feature = "pg13", feature = "pg14", feature = "pg15", feature = "pg16"))]
    unsafe {
        pg_sys::MyBackendId
    }
    #[cfg(not(any(feature = "pg13", feature = "pg14", feature = "pg15", feature = "pg16")))]
    unsafe {
        pg_sys::MyProcNumber + 1
    }
}

/// An amount to admit: finite and not negative (the SQL callers check first; this is the last line).
fn amount_units(n: &AnyNumeric, positive: bool) -> Units {
    let s = n.to_string();
    if s == "NaN"
        || s.contains("Infinity")
        || s.starts_with('-')
        || (positive && s.trim_start_matches(['0', '.']).is_empty())
    {
        raise_full(
            ERRCODE_INVALID_PARAMETER_VALUE,
            format!("pg_aicost: a budget amount must be a finite non-negative number, not {s}"),
            None,
            None,
        );
    }
    units_ceil(&s)
}

fn require_shared() {
    if !shmem::preloaded() {
        raise_full(
            ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "pg_aicost shared-memory budgets need pg_aicost in shared_preload_libraries".into(),
            None,
            None,
        );
    }
}

#[pg_schema]
mod aicost {
    use super::*;

    /// Whether budgets are admitted in shared memory (preloaded, and not a standby).
    #[pg_extern(stable, parallel_safe)]
    fn _shmem_budgets() -> bool {
        // SAFETY: reads recovery state.
        shmem::preloaded() && unsafe { !pg_sys::RecoveryInProgress() }
    }

    /// Counts a budget event for aicost.stat_budget (called by sql/ledger.sql).
    #[pg_extern(volatile, parallel_safe, strict)]
    fn _stat_budget(budget_id: i64, event: &str) {
        let ev = match event {
            "check" => BudgetEvent::Check,
            "reservation" => BudgetEvent::Reservation,
            "charge" => BudgetEvent::Charge,
            "denial" => BudgetEvent::Denial,
            "alert" => BudgetEvent::Alert,
            _ => return,
        };
        count_budget(budget_id, ev);
    }

    /// Shared-memory admission of a reservation (ai_budget_reserve): AC001 if it does not fit.
    #[pg_extern(volatile, parallel_unsafe, strict)]
    fn _admit_shared(
        budget_id: i64,
        period_start: TimestampWithTimeZone,
        amount: AnyNumeric,
        hold: bool,
    ) -> TableIterator<
        'static,
        (
            name!(budget_id, i64),
            name!(period_start, TimestampWithTimeZone),
            name!(spent, AnyNumeric),
            name!(reserved, AnyNumeric),
            name!(amount, AnyNumeric),
        ),
    > {
        require_shared();
        let start = period_start.into_inner();
        let (end, hard) = Spi::get_two_with_args::<TimestampWithTimeZone, AnyNumeric>(
            "SELECT aicost._period_end(b.period, b.time_zone, $2), b.amount * b.hard_pct / 100
               FROM aicost.budgets b WHERE b.budget_id = $1",
            &[budget_id.into(), period_start.into()],
        )
        .ok()
        .and_then(|(e, h)| Some((e?.into_inner(), h?)))
        .unwrap_or_else(|| {
            raise_full(
                ERRCODE_UNDEFINED_OBJECT,
                format!("no budget {budget_id}"),
                None,
                None,
            )
        });
        let amount = amount_units(&amount, hold);
        let kind = if hold { Kind::Hold } else { Kind::Spend };
        let i = entry(budget_id, start, end);
        match admit(
            i,
            budget_id,
            start,
            units_floor(&hard.to_string()),
            amount,
            kind,
        ) {
            Ok(_) => {
                remember(i, budget_id, start, amount, kind, [Units::MAX; 3], 0);
                TableIterator::empty()
            }
            Err(d) => denial(budget_id, start, &d, amount),
        }
    }

    /// Charges a ledger row's cost to its budgets in shared-memory mode (from aicost._charge):
    /// settles its reservations, admits the cost against each hard limit (AC001), adds it to this
    /// backend's spend rows and records threshold alerts.
    #[pg_extern(volatile, parallel_unsafe)]
    fn _charge_shared(
        budget_ids: Vec<i64>,
        cost: AnyNumeric,
        created_at: TimestampWithTimeZone,
        request_id: Option<&str>,
        usage_id: Option<i64>,
    ) -> TableIterator<
        'static,
        (
            name!(budget_id, i64),
            name!(period_start, TimestampWithTimeZone),
            name!(spent, AnyNumeric),
            name!(reserved, AnyNumeric),
            name!(amount, AnyNumeric),
        ),
    > {
        require_shared();
        let amount = amount_units(&cost, false);
        // The row's reservations were settled by `_charge` (the one settlement rule, SQL's
        // `_settle_reservations`) before it called this, unless the database still runs 0.2.0's
        // SQL (the library was updated, ALTER EXTENSION UPDATE not yet run), whose `_charge` left
        // settling to this function: then settle as 0.2.0 did.
        if let Some(rid) = request_id
            && !reservations_have_orgs()
        {
            Spi::run_with_args(
                "UPDATE aicost.budget_reservations r SET settled_at = clock_timestamp(), usage_id = $3
                  WHERE r.budget_id = ANY ($1) AND r.request_id = $2 AND r.settled_at IS NULL",
                &[budget_ids.clone().into(), rid.into(), usage_id.into()],
            )
            .or_internal("settling reservations");
        }
        struct Row {
            id: i64,
            start: i64,
            end: i64,
            hard: Units,
            alert: Units,
            throttle: Units,
        }
        // One SPI connection: read the budgets, admit against each, record this backend's spend.
        let mut crossings: Vec<(i64, i64, Units, Units)> = Vec::new();
        let refused = plans(|p, client| {
            let args: [DatumWithOid<'_>; 2] = [budget_ids.into(), created_at.into()];
            let rows: Vec<Row> = client
                .select(&p.budgets, None, &args)
                .or_internal("reading budgets")
                .map(|r| Row {
                    id: r.get::<i64>(1).ok().flatten().unwrap_or_default(),
                    start: r
                        .get::<TimestampWithTimeZone>(2)
                        .ok()
                        .flatten()
                        .map_or(i64::MIN, |t| t.into_inner()),
                    end: r
                        .get::<TimestampWithTimeZone>(3)
                        .ok()
                        .flatten()
                        .map_or(i64::MAX, |t| t.into_inner()),
                    hard: units_floor(&r.get::<String>(4).ok().flatten().unwrap_or_default()),
                    alert: units_ceil(&r.get::<String>(5).ok().flatten().unwrap_or_default()),
                    throttle: units_ceil(&r.get::<String>(6).ok().flatten().unwrap_or_default()),
                })
                .collect();
            for r in &rows {
                let i = entry(r.id, r.start, r.end);
                match admit(i, r.id, r.start, r.hard, amount, Kind::Spend) {
                    Ok(a) => {
                        // Committed spend plus this transaction's own charges (see `precommit`).
                        let (own, recorded) = PENDING.with(|p| {
                            p.borrow()
                                .iter()
                                .filter(|x| x.index == i && x.kind == Kind::Spend)
                                .fold((0, 0), |(s, b), x| (s + x.amount, b | x.alerts))
                        });
                        let (old, new) = (a.committed + own, a.committed + own + amount);
                        let thresholds = [r.alert, r.throttle, r.hard];
                        let bits = crossed(thresholds, old, new, a.alerts_done | recorded);
                        remember(i, r.id, r.start, amount, Kind::Spend, thresholds, bits);
                        if bits != 0 {
                            crossings.push((r.id, r.start, old, new));
                        }
                        count_budget(r.id, BudgetEvent::Charge);
                    }
                    Err(d) => return Some((r.id, r.start, d)),
                }
            }
            if !rows.is_empty() {
                let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
                let starts: Vec<TimestampWithTimeZone> =
                    rows.iter().map(|r| timestamptz(r.start)).collect();
                let args: [DatumWithOid<'_>; 4] =
                    [ids.into(), starts.into(), my_slot().into(), cost.into()];
                client
                    .update(&p.upsert, None, &args)
                    .or_internal("recording spend");
            }
            None
        });
        // Built outside the SPI connection, whose memory is gone once it closes.
        if let Some((id, start, d)) = refused {
            return denial(id, start, &d, amount);
        }
        for (id, start, old, new) in crossings {
            record_alerts(id, start, old, new);
        }
        TableIterator::empty()
    }
}
