//! Statistics behind `aicost.stat_cost`, `aicost.stat_cache` and `aicost.stat_budget`.
//!
//! Where the counters live (the `scope` column of every view):
//! - `cluster`: pg_aicost is in `shared_preload_libraries`; one region `pg_aicost stats` in shared
//!   memory, created by the postmaster's startup hook, counts every session (parallel workers
//!   included) since the last `aicost.stat_reset()` or server start;
//! - `backend`: not preloaded; the same region is allocated lazily in this backend's own memory at
//!   its first use and counts this session only (work done by its parallel workers is not seen).
//!   The code path is otherwise identical.
//!
//! Region layout: a [`Header`] (reset time, catalog counters, the two overflow rows, the tables'
//! allocation counters), then two fixed-capacity hash tables: per model (capacity
//! `aicost.stat_max_models`) and per budget (capacity `aicost.shmem_budgets`). Each table is an
//! open-addressing index of [`Slot`]s (twice the capacity, rounded up to a power of two, so that the
//! index is at most half full and a probe for an absent key ends quickly at an empty slot) and an
//! array of entries handed out in claim order. Keys are never removed (a reset zeroes counters;
//! rows whose counters are all zero are not shown), so the tables need no deletion protocol.
//! Names beyond the capacity, and calls and errors of names that did not resolve, are counted in
//! one overflow row shown with model (or budget_id) NULL. Size with the default capacities: about
//! 6.3 MB for 5000 models (1216 bytes each, most of it the latency histogram) and 1.2 MB for 10000
//! budgets; in per-backend mode the zeroed allocation is only paid for the pages touched.
//!
//! Locking rules:
//! - counters are `AtomicU64`s updated with Relaxed `fetch_add` (exact; no ordering needed between
//!   distinct counters); readers load them one by one, so a row read during updates may mix values
//!   from just before and just after a call (as in pg_stat_statements);
//! - money is an exact sum ([`Money`]: two `i128`, dollars and 10^-24 units) under the entry's
//!   [`SpinLock`], held only for a few integer additions: no allocation, no call that can ERROR,
//!   never two spinlocks at once;
//! - the tables are `aicost_core::shtable` tables: lock-free claims of slots and entries, keys
//!   written once before publication (the rules are in that module);
//! - `aicost.stat_reset()` stores zero into each counter; increments racing with it may be lost or
//!   survive it (as with pg_stat_statements_reset).
//!
//! Hot path: `record_cost` adds to a per-backend batch (see [`Batch`]) found by model name, so the
//! shared table is hashed and probed once per model and batch, not per call; 3 ns with
//! `aicost.track = off`; `count_catalog` 6 ns, `count_budget` 11 ns (release build).

use crate::shmem::{self, SpinLock, database};
use aicost_core::Decimal;
use aicost_core::shtable::{
    Entry, MUL, NameKey, Slot, Table, TableHeader, fmix64, hash_bytes, n_slots,
};
use pgrx::AnyNumeric;
use pgrx::prelude::*;
use std::cell::UnsafeCell;
use std::str::FromStr;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicI64, AtomicPtr, AtomicU32, AtomicU64};

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
const N_CATALOG: usize = 5;

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
const N_BUDGET: usize = 5;

// ---------------------------------------------------------------------------------------------
// The hot path

/// The latency of one pricing call in this many is measured (the first of each run): reading the
/// clock twice would cost more than half of a 60 ns call. The latency columns of `stat_cost` are
/// computed from the timed calls.
pub const LATENCY_SAMPLE_EVERY: u32 = 16;

/// Pricing calls of this process; a plain atomic rather than a thread-local (a backend has one
/// thread, and thread-locals of a shared library cost a call each).
static CALLS: AtomicU32 = AtomicU32::new(0);

/// Whether to time the pricing call that starts now (`aicost.track` on, and its turn).
#[inline]
pub fn time_this_call() -> bool {
    CALLS
        .fetch_add(1, Relaxed)
        .is_multiple_of(LATENCY_SAMPLE_EVERY)
}

/// One pricing call that returned: `model` is the canonical name (None when the name did not
/// resolve); `cost` is None when the call returned NULL (unknown model or no price with
/// `aicost.unknown_model = null`); `elapsed_ns` is None when the call was not timed. Never raises
/// an error.
#[inline]
pub fn record_cost(
    model: Option<&str>,
    in_tokens: i64,
    out_tokens: i64,
    cost: Option<&Decimal>,
    elapsed_ns: Option<u64>,
) {
    if !crate::guc::TRACK.get() {
        return;
    }
    let Some(p) = region_base() else { return };
    // SAFETY: REGION only ever holds initialized regions that are never unmapped.
    unsafe { record_in_batch(p, model, in_tokens, out_tokens, cost, elapsed_ns) };
}

/// A pricing call that raised an error (its latency is counted too). Call it before raising.
/// `model` is the canonical name, or None when the name did not resolve: such errors go to the
/// row with model NULL (unknown names are unbounded, so they never get rows of their own).
#[inline]
pub fn record_cost_error(model: Option<&str>, elapsed_ns: Option<u64>) {
    if !crate::guc::TRACK.get() {
        return;
    }
    if let Some(r) = region() {
        r.record_cost_error(model, elapsed_ns);
    }
}

/// Counts one catalog-cache event.
#[inline]
pub fn count_catalog(ev: CatalogEvent) {
    if !crate::guc::TRACK.get() {
        return;
    }
    let Some(p) = region_base() else { return };
    // In the batch, like the calls: one shared counter hit by every call of every backend would
    // bounce its cache line between CPUs.
    BATCH.with(|b| {
        let mut b = b.borrow_mut();
        b.switch_region(p);
        b.catalog[ev as usize] += 1;
    });
}

/// The region's base address, allocating it at this backend's first use in per-backend mode.
#[inline]
fn region_base() -> Option<*mut u8> {
    let p = REGION.load(Acquire);
    if !p.is_null() {
        return Some(p);
    }
    region()?;
    Some(REGION.load(Acquire))
}

/// Counts one event of budget `budget_id`.
#[inline]
pub fn count_budget(budget_id: i64, ev: BudgetEvent) {
    if !crate::guc::TRACK.get() {
        return;
    }
    if let Some(r) = region() {
        r.budget_counters(budget_id)[ev as usize].fetch_add(1, Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------
// Latency histogram: log-linear buckets of nanoseconds, 4 per power of two from 64 ns to 2^36 ns
// (68.7 s), plus one bucket below (0..64 ns) and one above (2^36 ns and more). A quantile is
// reported as the upper bound of the bucket holding it (at most 25% above the true value), the
// top bucket as its lower bound.

const HIST_MIN_SHIFT: u32 = 6;
const HIST_MAX_SHIFT: u32 = 36;
const SUB_BITS: u32 = 2;
const SUB: u32 = 1 << SUB_BITS;
const N_BUCKETS: usize = ((HIST_MAX_SHIFT - HIST_MIN_SHIFT) * SUB) as usize + 2;

#[inline]
fn bucket(ns: u64) -> usize {
    if ns < 1 << HIST_MIN_SHIFT {
        return 0;
    }
    let p = 63 - ns.leading_zeros();
    if p >= HIST_MAX_SHIFT {
        return N_BUCKETS - 1;
    }
    let sub = ((ns >> (p - SUB_BITS)) & u64::from(SUB - 1)) as u32;
    1 + ((p - HIST_MIN_SHIFT) * SUB + sub) as usize
}

/// The latency reported for bucket `i`, in nanoseconds: its (exclusive) upper bound, or the lower
/// bound of the top bucket.
fn bucket_bound_ns(i: usize) -> u64 {
    if i == 0 {
        return 1 << HIST_MIN_SHIFT;
    }
    if i >= N_BUCKETS - 1 {
        return 1 << HIST_MAX_SHIFT;
    }
    let k = (i - 1) as u32;
    let p = HIST_MIN_SHIFT + k / SUB;
    (1u64 << p) + u64::from(k % SUB + 1) * (1u64 << (p - SUB_BITS))
}

/// Quantile `q` of a histogram in microseconds; None when it is empty.
fn quantile_us(hist: &[u64; N_BUCKETS], q: f64) -> Option<f64> {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0u64;
    for (i, n) in hist.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(bucket_bound_ns(i) as f64 / 1000.0);
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Money: exact sums of `Decimal` costs without floats.

/// Digits kept after the point. `ai_cost` results have at most 24: prices have at most 18
/// decimals (CHECK on aicost.prices) per million tokens, and token counts are integers. A cost
/// with more (only possible through a direct call with such a Decimal) is rounded half-even to 24.
const MONEY_SCALE: u32 = 24;
const UNIT: i128 = 10i128.pow(MONEY_SCALE);

/// 10^n for n ≤ 38 (a table: `i128::pow` is a loop).
#[inline]
fn pow10(n: u32) -> i128 {
    const T: [i128; 39] = {
        let mut t = [1i128; 39];
        let mut i = 1;
        while i < 39 {
            t[i] = t[i - 1] * 10;
            i += 1;
        }
        t
    };
    T[n as usize]
}

/// `whole + units × 10^-24` US dollars. `units` is not bounded by 10^24 (adding is one i128
/// addition); it is carried into `whole` only when it would overflow, and when read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
struct Money {
    whole: i128,
    units: i128,
}

impl Money {
    fn from_decimal(d: &Decimal) -> Money {
        let (mut m, mut s) = (d.mantissa(), d.scale());
        if s > MONEY_SCALE {
            m = div_round_half_even(m, pow10(s - MONEY_SCALE));
            s = MONEY_SCALE;
        }
        if m.unsigned_abs() < 1 << 47 {
            // |m × 10^k| < 2^47 × 10^24 < 2^127: no overflow check needed.
            return Money {
                whole: 0,
                units: m * pow10(MONEY_SCALE - s),
            };
        }
        match m.checked_mul(pow10(MONEY_SCALE - s)) {
            Some(units) => Money { whole: 0, units },
            // Above ~1.7e14 USD: split into dollars and the fraction.
            None => Money {
                whole: m.div_euclid(pow10(s)),
                units: m.rem_euclid(pow10(s)) * pow10(MONEY_SCALE - s),
            },
        }
    }

    /// Exact unless the dollars pass ±1.7e38 (they saturate).
    fn add(&mut self, o: Money) {
        if let Some(u) = self.units.checked_add(o.units) {
            self.units = u;
            self.whole = self.whole.saturating_add(o.whole);
        } else {
            let (a, b) = (self.normalized(), o.normalized());
            let u = a.units + b.units; // both in [0, UNIT)
            self.whole = a.whole.saturating_add(b.whole).saturating_add(u / UNIT);
            self.units = u % UNIT;
        }
    }

    /// The same amount with `units` in [0, 10^24).
    fn normalized(self) -> Money {
        Money {
            whole: self.whole.saturating_add(self.units.div_euclid(UNIT)),
            units: self.units.rem_euclid(UNIT),
        }
    }

    /// Exact decimal text without trailing zeros, e.g. `7.5`, `0`, `-0.25`.
    fn to_decimal_string(self) -> String {
        let n = self.normalized();
        let (neg, int, frac) = if n.whole >= 0 {
            (false, n.whole.unsigned_abs(), n.units)
        } else if n.units == 0 {
            (true, n.whole.unsigned_abs(), 0)
        } else {
            // whole + units/UNIT = -((|whole| - 1) + (UNIT - units)/UNIT)
            (true, n.whole.unsigned_abs() - 1, UNIT - n.units)
        };
        let mut s = format!("{}{int}.{frac:024}", if neg { "-" } else { "" });
        s.truncate(s.trim_end_matches('0').trim_end_matches('.').len());
        s
    }
}

fn div_round_half_even(m: i128, d: i128) -> i128 {
    let (q, r) = (m / d, m % d);
    let twice = r.unsigned_abs() * 2;
    let d = d.unsigned_abs();
    if twice > d || (twice == d && q % 2 != 0) {
        q + m.signum()
    } else {
        q
    }
}

// ---------------------------------------------------------------------------------------------
// Counters

#[repr(C)]
struct CostCounters {
    calls: AtomicU64,
    unpriced: AtomicU64,
    errors: AtomicU64,
    in_tokens: AtomicU64,
    out_tokens: AtomicU64,
    latency_ns: AtomicU64,
    hist: [AtomicU64; N_BUCKETS],
    money_lock: SpinLock,
    /// Guarded by `money_lock`.
    money: UnsafeCell<Money>,
}

// SAFETY: the cells are only accessed under `money_lock`.
unsafe impl Sync for CostCounters {}

/// Calls counted by this backend and not yet added to the shared counters, per model. Adding each
/// call to the shared atomics made the parallel workers of a batch query fight over the same cache
/// lines, and looking the model up in the shared table cost a hash and a probe per call. The
/// batch holds up to [`BATCH_MODELS`] models, found by name; it is added to the shared counters
/// after [`BATCH_CALLS`] calls, when a further model comes, at the end of every transaction (so a
/// statement's calls show once it ends) and before this backend reads or resets the views.
#[derive(Default)]
struct Batch {
    /// The region the entries belong to.
    region: usize,
    entries: Vec<BatchEntry>,
    /// Catalog-cache events (`CatalogEvent`), added to the region's header at flush.
    catalog: [u64; N_CATALOG],
    calls: u64,
}

struct BatchEntry {
    /// None: calls whose name did not resolve.
    name: Option<String>,
    target: &'static CostCounters,
    calls: u64,
    unpriced: u64,
    in_tokens: u64,
    out_tokens: u64,
    latency_ns: u64,
    hist: [u32; N_BUCKETS],
    money: Money,
}

const BATCH_CALLS: u64 = 1024;
const BATCH_MODELS: usize = 16;

thread_local! {
    static BATCH: std::cell::RefCell<Batch> = std::cell::RefCell::new(Batch::default());
}

impl BatchEntry {
    fn flush(&mut self) {
        let c = self.target;
        c.calls.fetch_add(self.calls, Relaxed);
        c.unpriced.fetch_add(self.unpriced, Relaxed);
        c.in_tokens.fetch_add(self.in_tokens, Relaxed);
        c.out_tokens.fetch_add(self.out_tokens, Relaxed);
        c.latency_ns.fetch_add(self.latency_ns, Relaxed);
        for (i, n) in self.hist.iter().enumerate() {
            if *n != 0 {
                c.hist[i].fetch_add(u64::from(*n), Relaxed);
            }
        }
        if self.money != Money::default() {
            c.add_money(self.money);
        }
    }
}

impl Batch {
    fn flush(&mut self) {
        for e in &mut self.entries {
            e.flush();
        }
        if self.catalog.iter().any(|&n| n != 0) {
            // SAFETY: `region` is the base of the initialized, never unmapped region the counts
            // were taken for (set by `switch_region` whenever a count is added).
            let hdr = unsafe { region_at(self.region as *mut u8) }.hdr;
            for (c, n) in hdr.catalog.iter().zip(&mut self.catalog) {
                if *n != 0 {
                    c.fetch_add(std::mem::take(n), Relaxed);
                }
            }
        }
        self.entries.clear();
        self.calls = 0;
    }

    /// Flushes the batch if it holds counts of another region, and makes it `base`'s.
    #[inline]
    fn switch_region(&mut self, base: *mut u8) {
        if self.region != base as usize {
            self.flush();
            self.region = base as usize;
        }
    }
}

/// Adds this backend's pending calls to the shared counters. Never fails (called from transaction
/// callbacks).
pub fn flush() {
    let _ = BATCH.try_with(|b| {
        if let Ok(mut b) = b.try_borrow_mut() {
            b.flush();
        }
    });
}

/// A copy of [`CostCounters`] taken for a view.
struct CostSnapshot {
    calls: u64,
    unpriced: u64,
    errors: u64,
    in_tokens: u64,
    out_tokens: u64,
    latency_ns: u64,
    hist: [u64; N_BUCKETS],
    money: Money,
}

impl CostCounters {
    #[inline]
    fn add_latency(&self, ns: u64) {
        self.latency_ns.fetch_add(ns, Relaxed);
        self.hist[bucket(ns)].fetch_add(1, Relaxed);
    }

    #[inline]
    fn add_money(&self, m: Money) {
        let _g = self.money_lock.lock();
        // SAFETY: `money` is only accessed under `money_lock`, held here.
        unsafe { (*self.money.get()).add(m) }
    }

    fn snapshot(&self) -> CostSnapshot {
        let money = {
            let _g = self.money_lock.lock();
            // SAFETY: `money` is only accessed under `money_lock`, held here.
            unsafe { *self.money.get() }
        };
        CostSnapshot {
            calls: self.calls.load(Relaxed),
            unpriced: self.unpriced.load(Relaxed),
            errors: self.errors.load(Relaxed),
            in_tokens: self.in_tokens.load(Relaxed),
            out_tokens: self.out_tokens.load(Relaxed),
            latency_ns: self.latency_ns.load(Relaxed),
            hist: std::array::from_fn(|i| self.hist[i].load(Relaxed)),
            money,
        }
    }

    fn reset(&self) {
        for a in [
            &self.calls,
            &self.unpriced,
            &self.errors,
            &self.in_tokens,
            &self.out_tokens,
            &self.latency_ns,
        ]
        .into_iter()
        .chain(&self.hist)
        {
            a.store(0, Relaxed);
        }
        let _g = self.money_lock.lock();
        // SAFETY: `money` is only accessed under `money_lock`, held here.
        unsafe { *self.money.get() = Money::default() }
    }
}

impl CostSnapshot {
    fn is_zero(&self) -> bool {
        self.calls == 0 && self.errors == 0
    }
}

// ---------------------------------------------------------------------------------------------
// Entries of the two tables (the table itself: `aicost_core::shtable`)

/// Bytes of a model name kept in its entry (see [`NameKey`]).
const KEY_MAX: usize = 128;

#[repr(C, align(64))]
struct ModelEntry {
    c: CostCounters,
    key: UnsafeCell<NameKey<KEY_MAX>>,
}

// SAFETY: the key cells are written by one claimer before publication, then only read.
unsafe impl Sync for ModelEntry {}

impl ModelEntry {
    /// The model name (a truncated one ends with `…`).
    fn name(&self) -> String {
        // SAFETY: only called on published entries: the key is frozen.
        unsafe { &*self.key.get() }.name()
    }
}

impl Entry for ModelEntry {
    type Key = str;

    #[inline]
    fn matches(&self, name: &str) -> bool {
        // SAFETY: only called on published entries: the key is frozen.
        unsafe { &*self.key.get() }.matches(name)
    }

    unsafe fn set_key(&self, name: &str) {
        // SAFETY: the caller claimed this entry; nobody else reads or writes it yet.
        unsafe { &mut *self.key.get() }.set(name)
    }
}

#[repr(C, align(64))]
struct BudgetEntry {
    /// (database oid, budget_id): budget ids are per database.
    id: UnsafeCell<(u32, i64)>,
    c: [AtomicU64; N_BUDGET],
}

// SAFETY: the key cell is written by one claimer before publication, then only read.
unsafe impl Sync for BudgetEntry {}

impl BudgetEntry {
    fn id(&self) -> (u32, i64) {
        // SAFETY: only called on published entries: the key is frozen.
        unsafe { *self.id.get() }
    }
}

impl Entry for BudgetEntry {
    type Key = (u32, i64);

    #[inline]
    fn matches(&self, id: &(u32, i64)) -> bool {
        self.id() == *id
    }

    unsafe fn set_key(&self, id: &(u32, i64)) {
        // SAFETY: the caller claimed this entry; nobody else reads or writes it yet.
        unsafe { *self.id.get() = *id }
    }
}

#[inline]
fn hash_budget(id: (u32, i64)) -> u64 {
    fmix64(id.1.cast_unsigned().wrapping_mul(MUL) ^ u64::from(id.0))
}

#[inline]
fn hash_name(name: &str) -> u64 {
    hash_bytes(name.as_bytes())
}

// ---------------------------------------------------------------------------------------------
// The region

#[repr(C, align(64))]
struct Header {
    /// TimestampTz of the last reset (or of the region's creation).
    reset_at: AtomicI64,
    models: TableHeader,
    budgets: TableHeader,
    catalog: [AtomicU64; N_CATALOG],
    budget_overflow: [AtomicU64; N_BUDGET],
    /// Models beyond the capacity, and calls and errors of names that did not resolve.
    model_overflow: CostCounters,
}

/// Byte offsets of the region's parts; every part is 64-byte aligned.
struct RegionLayout {
    model_slots: usize,
    model_entries: usize,
    budget_slots: usize,
    budget_entries: usize,
    size: usize,
}

fn layout(model_cap: u32, budget_cap: u32) -> RegionLayout {
    let al = |n: usize| n.next_multiple_of(64);
    let model_slots = al(size_of::<Header>());
    let model_entries = al(model_slots + n_slots(model_cap) as usize * size_of::<Slot>());
    let budget_slots = al(model_entries + model_cap as usize * size_of::<ModelEntry>());
    let budget_entries = al(budget_slots + n_slots(budget_cap) as usize * size_of::<Slot>());
    let size = budget_entries + budget_cap as usize * size_of::<BudgetEntry>();
    RegionLayout {
        model_slots,
        model_entries,
        budget_slots,
        budget_entries,
        size,
    }
}

#[derive(Clone, Copy)]
struct Region {
    hdr: &'static Header,
    models: Table<'static, ModelEntry>,
    budgets: Table<'static, BudgetEntry>,
}

/// Adds one call to this backend's batch for region `base`, flushing the batch first if it
/// belongs to another region. The region is only built (`region_at`) for a model new to the batch.
///
/// # Safety
/// `base` is an initialized region that stays mapped (see [`region_at`]).
#[inline]
unsafe fn record_in_batch(
    base: *mut u8,
    model: Option<&str>,
    in_tokens: i64,
    out_tokens: i64,
    cost: Option<&Decimal>,
    elapsed_ns: Option<u64>,
) {
    BATCH.with(|b| {
        let mut b = b.borrow_mut();
        b.switch_region(base);
        let i = match b.entries.iter().position(|e| e.name.as_deref() == model) {
            Some(i) => i,
            None => {
                if b.entries.len() == BATCH_MODELS {
                    b.flush();
                }
                b.entries.push(BatchEntry {
                    name: model.map(str::to_owned),
                    // SAFETY: see the function's contract.
                    target: unsafe { region_at(base) }.cost_counters(model),
                    calls: 0,
                    unpriced: 0,
                    in_tokens: 0,
                    out_tokens: 0,
                    latency_ns: 0,
                    hist: [0; N_BUCKETS],
                    money: Money::default(),
                });
                b.entries.len() - 1
            }
        };
        let e = &mut b.entries[i];
        e.calls += 1;
        e.in_tokens += in_tokens.max(0).cast_unsigned();
        e.out_tokens += out_tokens.max(0).cast_unsigned();
        if let Some(ns) = elapsed_ns {
            e.latency_ns += ns;
            e.hist[bucket(ns)] += 1;
        }
        match cost {
            None => e.unpriced += 1,
            Some(d) if !d.is_zero() => e.money.add(Money::from_decimal(d)),
            Some(_) => {}
        }
        b.calls += 1;
        if b.calls >= BATCH_CALLS {
            b.flush();
        }
    });
}

/// The region: set by the postmaster's startup hook (inherited through fork) when preloaded, else
/// at this backend's first use.
static REGION: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());

/// Capacities: the GUCs (fixed at server start; in per-backend mode they keep their defaults).
fn capacities() -> (u32, u32) {
    let cap = |v: i32| u32::try_from(v).unwrap_or(1).max(1);
    (
        cap(crate::guc::STAT_MAX_MODELS.get()),
        cap(crate::guc::SHMEM_BUDGETS.get()),
    )
}

/// Writes an empty region's header.
///
/// # Safety
/// `base` is 64-byte aligned and points to `layout(model_cap, budget_cap).size` zeroed writable
/// bytes that no other process uses yet.
unsafe fn init_region(base: *mut u8, model_cap: u32, budget_cap: u32) {
    let hdr = base.cast::<Header>();
    // SAFETY: see the function's contract; zeroed bytes are a valid Header.
    unsafe {
        (*hdr).models.cap = model_cap;
        (*hdr).models.n_slots = n_slots(model_cap);
        (*hdr).budgets.cap = budget_cap;
        (*hdr).budgets.n_slots = n_slots(budget_cap);
        (*hdr)
            .reset_at
            .store(pg_sys::GetCurrentTimestamp(), Relaxed);
    }
}

/// # Safety
/// `base` was initialized by [`init_region`] and stays mapped for the life of the process.
unsafe fn region_at(base: *mut u8) -> Region {
    // SAFETY: see the function's contract; all parts are in bounds and aligned (see `layout`), and
    // zeroed or written bytes are valid values of every type (atomics, cells, integers).
    unsafe {
        let hdr = &*base.cast::<Header>();
        let (mc, bc) = (hdr.models.cap, hdr.budgets.cap);
        let l = layout(mc, bc);
        let part = |off: usize| base.add(off);
        Region {
            hdr,
            models: Table::new(
                &hdr.models,
                std::slice::from_raw_parts(part(l.model_slots).cast(), hdr.models.n_slots as usize),
                std::slice::from_raw_parts(part(l.model_entries).cast(), mc as usize),
            ),
            budgets: Table::new(
                &hdr.budgets,
                std::slice::from_raw_parts(
                    part(l.budget_slots).cast(),
                    hdr.budgets.n_slots as usize,
                ),
                std::slice::from_raw_parts(part(l.budget_entries).cast(), bc as usize),
            ),
        }
    }
}

/// A zeroed, initialized region in this process's heap, never freed.
fn alloc_region(model_cap: u32, budget_cap: u32) -> Option<*mut u8> {
    let l = layout(model_cap, budget_cap);
    let lay = std::alloc::Layout::from_size_align(l.size, 64).ok()?;
    // SAFETY: the size is non-zero (it includes the header).
    let p = unsafe { std::alloc::alloc_zeroed(lay) };
    if p.is_null() {
        return None;
    }
    // SAFETY: fresh zeroed allocation of the layout's size, 64-byte aligned.
    unsafe { init_region(p, model_cap, budget_cap) };
    Some(p)
}

#[inline]
fn region() -> Option<Region> {
    let p = REGION.load(Acquire);
    if !p.is_null() {
        // SAFETY: REGION only ever holds initialized regions that are never unmapped.
        return Some(unsafe { region_at(p) });
    }
    if shmem::preloaded() {
        return None; // not attached (cannot happen in a backend)
    }
    let (mc, bc) = capacities();
    let p = alloc_region(mc, bc)?;
    REGION.store(p, Release);
    // SAFETY: just initialized; leaked.
    Some(unsafe { region_at(p) })
}

fn scope() -> &'static str {
    if shmem::preloaded() {
        "cluster"
    } else {
        "backend"
    }
}

impl Region {
    /// As [`record_cost`], into this region (tests use regions of their own).
    #[cfg(any(test, feature = "pg_test"))]
    fn record_cost(
        &self,
        model: Option<&str>,
        in_tokens: i64,
        out_tokens: i64,
        cost: Option<&Decimal>,
        elapsed_ns: Option<u64>,
    ) {
        let base = std::ptr::from_ref(self.hdr).cast_mut().cast::<u8>();
        // SAFETY: the region of a live Region (its header is at its base).
        unsafe { record_in_batch(base, model, in_tokens, out_tokens, cost, elapsed_ns) };
    }

    #[inline]
    fn record_cost_error(&self, model: Option<&str>, elapsed_ns: Option<u64>) {
        let c = self.cost_counters(model);
        c.errors.fetch_add(1, Relaxed);
        if let Some(ns) = elapsed_ns {
            c.add_latency(ns);
        }
    }

    #[inline]
    fn cost_counters(&self, model: Option<&str>) -> &'static CostCounters {
        let Some(m) = model else {
            return &self.hdr.model_overflow;
        };
        self.models
            .get_or_insert(m, hash_name(m))
            .map_or(&self.hdr.model_overflow, |e| &e.c)
    }

    #[inline]
    fn budget_counters(&self, id: i64) -> &'static [AtomicU64; N_BUDGET] {
        let id = (database(), id);
        self.budgets
            .get_or_insert(&id, hash_budget(id))
            .map_or(&self.hdr.budget_overflow, |e| &e.c)
    }

    fn reset(&self) {
        for e in self.models.entries() {
            e.c.reset();
        }
        self.hdr.model_overflow.reset();
        for e in self.budgets.entries() {
            e.c.iter().for_each(|a| a.store(0, Relaxed));
        }
        for a in self.hdr.budget_overflow.iter().chain(&self.hdr.catalog) {
            a.store(0, Relaxed);
        }
        // SAFETY: plain C function reading the clock; cannot fail.
        let now = unsafe { pg_sys::GetCurrentTimestamp() };
        self.hdr.reset_at.store(now, Relaxed);
    }

    fn reset_at(&self) -> Option<TimestampWithTimeZone> {
        TimestampWithTimeZone::try_from(self.hdr.reset_at.load(Relaxed)).ok()
    }
}

/// Bytes of shared memory the statistics need (requested by the shmem_request hook).
pub fn shmem_size() -> usize {
    let (mc, bc) = capacities();
    layout(mc, bc).size + 64 // room to align the region to 64 bytes
}

/// Creates (or attaches to) region `pg_aicost stats`.
///
/// # Safety
/// Startup hook only.
pub unsafe fn shmem_startup() {
    let (mc, bc) = capacities();
    let size = layout(mc, bc).size;
    // SAFETY: we run in the startup hook, under AddinShmemInitLock.
    let (p, found) = unsafe { shmem::init_struct(c"pg_aicost stats", size + 64) };
    let base = p.wrapping_add(p.align_offset(64));
    if !found {
        // SAFETY: `size` bytes from `base` lie in the region (64 bytes of slack); nobody uses it yet.
        unsafe {
            base.write_bytes(0, size);
            init_region(base, mc, bc);
        }
    }
    REGION.store(base, Release);
}

// ---------------------------------------------------------------------------------------------
// SQL

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

type CostRow = (
    String,
    Option<String>,
    i64,
    i64,
    i64,
    i64,
    i64,
    AnyNumeric,
    f64,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<TimestampWithTimeZone>,
);

fn cost_row(
    model: Option<String>,
    s: &CostSnapshot,
    reset: Option<TimestampWithTimeZone>,
) -> CostRow {
    // Latency is measured on a sample of the calls (LATENCY_SAMPLE_EVERY): one histogram count
    // per timed call. The total is estimated for all calls from the timed ones' mean.
    let timed: u64 = s.hist.iter().sum();
    let mean_us = (timed > 0).then(|| s.latency_ns as f64 / 1000.0 / timed as f64);
    let money = s.money.to_decimal_string();
    (
        scope().to_string(),
        model,
        to_i64(s.calls),
        to_i64(s.unpriced),
        to_i64(s.errors),
        to_i64(s.in_tokens),
        to_i64(s.out_tokens),
        AnyNumeric::from_str(&money).expect("exact decimal text is a numeric"),
        mean_us.map_or(0.0, |m| m * (s.calls + s.errors) as f64),
        mean_us,
        quantile_us(&s.hist, 0.50),
        quantile_us(&s.hist, 0.95),
        quantile_us(&s.hist, 0.99),
        reset,
    )
}

type CacheRow = (
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    Option<TimestampWithTimeZone>,
);

type BudgetRow = (
    String,
    Option<i64>,
    i64,
    i64,
    i64,
    i64,
    i64,
    Option<TimestampWithTimeZone>,
);

fn cost_rows(r: &Region) -> Vec<CostRow> {
    let reset = r.reset_at();
    let mut rows: Vec<CostRow> = r
        .models
        .entries()
        .filter_map(|e| {
            let s = e.c.snapshot();
            (!s.is_zero()).then(|| cost_row(Some(e.name()), &s, reset))
        })
        .collect();
    let s = r.hdr.model_overflow.snapshot();
    if !s.is_zero() {
        rows.push(cost_row(None, &s, reset));
    }
    rows
}

fn cache_row(r: &Region) -> CacheRow {
    let c = |ev: CatalogEvent| to_i64(r.hdr.catalog[ev as usize].load(Relaxed));
    (
        scope().to_string(),
        c(CatalogEvent::Hit),
        c(CatalogEvent::LocalLoad),
        c(CatalogEvent::SharedRead),
        c(CatalogEvent::SharedBuild),
        c(CatalogEvent::SharedTooBig),
        r.reset_at(),
    )
}

fn budget_rows(r: &Region) -> Vec<BudgetRow> {
    let reset = r.reset_at();
    let row = |id: Option<i64>, c: &[AtomicU64; N_BUDGET]| {
        let v: [u64; N_BUDGET] = std::array::from_fn(|i| c[i].load(Relaxed));
        let b = |ev: BudgetEvent| to_i64(v[ev as usize]);
        v.iter().any(|&n| n != 0).then(|| {
            (
                scope().to_string(),
                id,
                b(BudgetEvent::Check),
                b(BudgetEvent::Reservation),
                b(BudgetEvent::Charge),
                b(BudgetEvent::Denial),
                b(BudgetEvent::Alert),
                reset,
            )
        })
    };
    r.budgets
        .entries()
        .filter(|e| e.id().0 == database())
        .filter_map(|e| row(Some(e.id().1), &e.c))
        .chain(row(None, &r.hdr.budget_overflow))
        .collect()
}

// pgrx needs the column list spelled out in the signature.
#[allow(clippy::type_complexity)]
#[pg_schema]
mod aicost {
    use super::*;

    /// Rows of `aicost.stat_cost`. PARALLEL RESTRICTED: in per-backend mode only the leader has
    /// the counters.
    #[pg_extern(volatile, parallel_restricted)]
    fn _stat_cost_rows() -> TableIterator<
        'static,
        (
            name!(scope, String),
            name!(model, Option<String>),
            name!(calls, i64),
            name!(unpriced, i64),
            name!(errors, i64),
            name!(in_tokens, i64),
            name!(out_tokens, i64),
            name!(cost_usd, AnyNumeric),
            name!(total_latency_us, f64),
            name!(mean_latency_us, Option<f64>),
            name!(p50_latency_us, Option<f64>),
            name!(p95_latency_us, Option<f64>),
            name!(p99_latency_us, Option<f64>),
            name!(stats_reset, Option<TimestampWithTimeZone>),
        ),
    > {
        flush();
        TableIterator::new(region().map(|r| cost_rows(&r)).unwrap_or_default())
    }

    /// The catalog part of `aicost.stat_cache` (one row).
    #[pg_extern(volatile, parallel_restricted)]
    fn _stat_cache_rows() -> TableIterator<
        'static,
        (
            name!(scope, String),
            name!(catalog_hits, i64),
            name!(catalog_local_loads, i64),
            name!(catalog_shared_reads, i64),
            name!(catalog_shared_builds, i64),
            name!(catalog_shared_too_big, i64),
            name!(stats_reset, Option<TimestampWithTimeZone>),
        ),
    > {
        flush();
        TableIterator::new(region().map(|r| cache_row(&r)))
    }

    /// Rows of `aicost.stat_budget` (before the join with aicost.budgets).
    #[pg_extern(volatile, parallel_restricted)]
    fn _stat_budget_rows() -> TableIterator<
        'static,
        (
            name!(scope, String),
            name!(budget_id, Option<i64>),
            name!(checks, i64),
            name!(reservations, i64),
            name!(charges, i64),
            name!(denials, i64),
            name!(alerts, i64),
            name!(stats_reset, Option<TimestampWithTimeZone>),
        ),
    > {
        TableIterator::new(region().map(|r| budget_rows(&r)).unwrap_or_default())
    }

    /// Zeroes the counters and sets the reset time (called by `aicost.stat_reset()`).
    #[pg_extern(volatile, parallel_unsafe)]
    fn _stat_reset() {
        flush();
        if let Some(r) = region() {
            r.reset();
        }
    }
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use super::*;
    use crate::tests::tests::{one, text};

    /// Tests that read exact numbers take this lock shared, the reset test exclusive: in
    /// cluster mode the tests run concurrently against the same counters.
    fn stats_lock(exclusive: bool) {
        let f = if exclusive {
            "pg_advisory_xact_lock"
        } else {
            "pg_advisory_xact_lock_shared"
        };
        Spi::run(&format!("SELECT {f}(hashtext('pg_aicost stats tests'))")).unwrap();
    }

    /// A model name no other test (or earlier run against the same cluster) uses.
    fn unique(prefix: &str) -> String {
        format!(
            "{prefix}-{}",
            text("md5(random()::text || clock_timestamp())")
        )
    }

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn cost_col(model: &str, col: &str) -> String {
        text(&format!(
            "(SELECT {col} FROM aicost.stat_cost WHERE model = '{model}')"
        ))
    }

    #[pg_test]
    fn stat_views_exist_with_scope() {
        let scope = if shmem::preloaded() {
            "cluster"
        } else {
            "backend"
        };
        assert_eq!(
            text("current_setting('shared_preload_libraries') LIKE '%pg_aicost%'"),
            if shmem::preloaded() { "true" } else { "false" }
        );
        stats_lock(false);
        super::record_cost(Some(&unique("stats-scope")), 1, 1, None, Some(10));
        super::count_budget(-1, BudgetEvent::Check);
        for v in ["stat_cost", "stat_cache", "stat_budget"] {
            assert_eq!(
                text(&format!(
                    "(SELECT string_agg(DISTINCT scope, ',') FROM aicost.{v})"
                )),
                scope,
                "{v}"
            );
            assert_eq!(
                text(&format!(
                    "(SELECT count(*) FROM aicost.{v} WHERE stats_reset IS NULL)"
                )),
                "0"
            );
        }
        assert_eq!(text("(SELECT count(*) FROM aicost.stat_cache)"), "1");
        // Every view, column and function of the statistics is documented.
        let undocumented = text(
            "(SELECT string_agg(c.relname || '.' || a.attname, ', ')
                FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
               WHERE c.relnamespace = 'aicost'::regnamespace AND c.relname LIKE 'stat\\_%'
                 AND (col_description(c.oid, a.attnum) IS NULL OR obj_description(c.oid, 'pg_class') IS NULL))",
        );
        assert_eq!(undocumented, "NULL");
        assert_eq!(
            text(
                "(SELECT string_agg(proname, ',') FROM pg_proc
                   WHERE pronamespace = 'aicost'::regnamespace AND (proname LIKE '\\_stat\\_%' OR proname = 'stat_reset')
                     AND obj_description(oid, 'pg_proc') IS NULL)"
            ),
            "NULL"
        );
        // Only superusers reset.
        assert_eq!(
            text("has_function_privilege('public', 'aicost.stat_reset()', 'EXECUTE')"),
            "false"
        );
    }

    #[pg_test]
    fn stat_cost_counts_exactly() {
        stats_lock(false);
        let m = unique("stats-exact");
        let price = dec("0.0075");
        for _ in 0..1000 {
            super::record_cost(Some(&m), 1000, 500, Some(&price), Some(1500));
        }
        super::record_cost(Some(&m), 7, 0, None, Some(1500));
        super::record_cost(Some(&m), 0, 0, Some(&Decimal::ZERO), Some(1500));
        assert_eq!(cost_col(&m, "calls"), "1002");
        assert_eq!(cost_col(&m, "unpriced"), "1");
        assert_eq!(cost_col(&m, "errors"), "0");
        assert_eq!(cost_col(&m, "in_tokens"), "1000007");
        assert_eq!(cost_col(&m, "out_tokens"), "500000");
        assert_eq!(cost_col(&m, "cost_usd"), "7.5");
        assert_eq!(cost_col(&m, "pg_typeof(cost_usd)"), "numeric");
        // 1500 ns lies in [1280, 1536): percentiles are the bucket's upper bound.
        assert_eq!(cost_col(&m, "mean_latency_us"), "1.5");
        assert_eq!(cost_col(&m, "total_latency_us"), "1503");
        assert_eq!(cost_col(&m, "p50_latency_us"), "1.536");
        assert_eq!(cost_col(&m, "p99_latency_us"), "1.536");

        // The smallest unit is kept, and sums never round.
        super::record_cost(
            Some(&m),
            0,
            0,
            Some(&dec("0.000000000000000000000001")),
            Some(1),
        );
        assert_eq!(cost_col(&m, "cost_usd"), "7.500000000000000000000001");
        let cents = dec("0.1");
        for _ in 0..10 {
            super::record_cost(Some(&m), 0, 0, Some(&cents), Some(1));
        }
        assert_eq!(cost_col(&m, "cost_usd"), "8.500000000000000000000001");

        // A spread of latencies: percentiles are monotone and bracket the true ones.
        let m2 = unique("stats-latency");
        for us in 1..=1000u64 {
            super::record_cost(Some(&m2), 1, 1, None, Some(us * 1000));
        }
        let p = |q: &str| {
            one::<f64>(&format!(
                "SELECT {q}_latency_us FROM aicost.stat_cost WHERE model = '{m2}'"
            ))
            .unwrap()
        };
        let (p50, p95, p99) = (p("p50"), p("p95"), p("p99"));
        assert!(p50 <= p95 && p95 <= p99, "{p50} {p95} {p99}");
        assert!((500.0..=625.0).contains(&p50), "{p50}");
        assert!((950.0..=1187.5).contains(&p95), "{p95}");
        assert!((990.0..=1237.5).contains(&p99), "{p99}");
        assert_eq!(p("mean"), 500.5);
    }

    #[pg_test]
    fn stat_cost_latency_is_sampled() {
        stats_lock(false);
        // One pricing call in LATENCY_SAMPLE_EVERY is timed.
        let n = super::LATENCY_SAMPLE_EVERY as usize;
        let timed = (0..4 * n).filter(|_| super::time_this_call()).count();
        assert_eq!(timed, 4);
        // Mean and percentiles come from the timed calls; the total is estimated for all.
        let m = unique("stats-sampled");
        for i in 0..2 * n {
            super::record_cost(Some(&m), 1, 1, None, (i % n == 0).then_some(2000));
        }
        assert_eq!(cost_col(&m, "calls"), (2 * n).to_string());
        assert_eq!(cost_col(&m, "mean_latency_us"), "2");
        assert_eq!(cost_col(&m, "total_latency_us"), (4 * n).to_string());
        assert_eq!(cost_col(&m, "p50_latency_us"), "2.048");
        // Calls none of which was timed have no latency yet.
        let m2 = unique("stats-untimed");
        super::record_cost(Some(&m2), 1, 1, None, None);
        assert_eq!(cost_col(&m2, "mean_latency_us"), "NULL");
        assert_eq!(cost_col(&m2, "total_latency_us"), "0");
    }

    #[pg_test]
    fn stat_cost_errors() {
        stats_lock(false);
        let m = unique("stats-errors");
        let null_errors = || {
            one::<i64>(
                "SELECT coalesce(sum(errors), 0)::bigint FROM aicost.stat_cost WHERE model IS NULL",
            )
            .unwrap()
        };
        let before = null_errors();
        super::record_cost_error(None, Some(100));
        super::record_cost_error(None, Some(100));
        super::record_cost_error(Some(&m), Some(3000));
        assert!(null_errors() >= before + 2);
        assert_eq!(cost_col(&m, "errors"), "1");
        assert_eq!(cost_col(&m, "calls"), "0");
        assert_eq!(cost_col(&m, "mean_latency_us"), "3");
        assert_eq!(cost_col(&m, "cost_usd"), "0");
        // A name that does not resolve never gets a row of its own.
        super::record_cost(None, 5, 5, None, Some(100));
        assert_eq!(
            text("(SELECT count(*) FROM aicost.stat_cost WHERE model IS NULL)"),
            "1"
        );
    }

    #[pg_test]
    fn stat_track_off_records_nothing() {
        stats_lock(false);
        let m = unique("stats-off");
        let id = i64::MAX - 7;
        let hits = || one::<i64>("SELECT catalog_shared_too_big FROM aicost.stat_cache").unwrap();
        Spi::run("SET LOCAL aicost.track = off").unwrap();
        let before = hits();
        super::record_cost(Some(&m), 1, 1, Some(&dec("1")), Some(10));
        super::record_cost_error(Some(&m), Some(10));
        super::count_budget(id, BudgetEvent::Check);
        for _ in 0..100 {
            super::count_catalog(CatalogEvent::SharedTooBig);
        }
        assert_eq!(cost_col(&m, "count(*)"), "0");
        assert_eq!(
            text(&format!(
                "(SELECT count(*) FROM aicost.stat_budget WHERE budget_id = {id})"
            )),
            "0"
        );
        assert!(hits() < before + 100);
        Spi::run("SET LOCAL aicost.track = on").unwrap();
        super::record_cost(Some(&m), 1, 1, Some(&dec("1")), Some(10));
        assert_eq!(cost_col(&m, "calls"), "1");
    }

    #[pg_test]
    fn stat_cache_and_budget_counts() {
        stats_lock(false);
        let col = |c: &str| one::<i64>(&format!("SELECT {c} FROM aicost.stat_cache")).unwrap();
        let before = col("catalog_shared_builds");
        for _ in 0..3 {
            super::count_catalog(CatalogEvent::SharedBuild);
        }
        assert!(col("catalog_shared_builds") >= before + 3);
        // The response cache's counters come from aicost.cache_stats.
        Spi::run(
            "SELECT ai_cache_put('gpt-4o', '{\"a\": 1}', '{\"b\": 2}', namespace => 'stats-test')",
        )
        .unwrap();
        Spi::run("SELECT ai_cache_get('gpt-4o', '{\"a\": 1}', namespace => 'stats-test')").unwrap();
        Spi::run("SELECT ai_cache_get('gpt-4o', '{\"a\": 2}', namespace => 'stats-test')").unwrap();
        assert_eq!(
            text(
                "(SELECT (s.cache_gets - c.gets, s.cache_hits - c.hits, s.cache_misses - c.misses, s.cache_puts - c.puts)
                   FROM aicost.stat_cache s,
                        (SELECT sum(hits + misses) AS gets, sum(hits) AS hits, sum(misses) AS misses, sum(puts) AS puts
                           FROM aicost.cache_stats) c)"
            ),
            "(0,0,0,0)"
        );
        assert!(col("cache_gets") >= 2 && col("cache_hits") >= 1 && col("cache_puts") >= 1);

        // Budgets: counted per id, joined with the budget's scope; unknown ids show NULL scope.
        Spi::run("SELECT ai_budget_set('org', 'stats-test-org', 10)").unwrap();
        let id = one::<i64>(
            "SELECT budget_id FROM aicost.budgets WHERE scope = 'org' AND scope_id = 'stats-test-org'",
        )
        .unwrap();
        super::count_budget(id, BudgetEvent::Check);
        super::count_budget(id, BudgetEvent::Check);
        super::count_budget(id, BudgetEvent::Reservation);
        super::count_budget(id, BudgetEvent::Charge);
        super::count_budget(id, BudgetEvent::Denial);
        super::count_budget(id, BudgetEvent::Alert);
        assert_eq!(
            text(&format!(
                "(SELECT (budget_scope, budget_scope_id, checks, reservations, charges, denials, alerts)
                    FROM aicost.stat_budget WHERE budget_id = {id})"
            )),
            "(org,stats-test-org,2,1,1,1,1)"
        );
        let gone = -id; // no budget has a negative id
        super::count_budget(gone, BudgetEvent::Charge);
        assert_eq!(
            text(&format!(
                "(SELECT (budget_scope IS NULL, charges) FROM aicost.stat_budget WHERE budget_id = {gone})"
            )),
            "(t,1)"
        );
    }

    #[pg_test]
    fn stat_reset_zeroes() {
        stats_lock(true);
        let m = unique("stats-reset");
        super::record_cost(Some(&m), 1, 1, Some(&dec("0.5")), Some(10));
        super::count_budget(i64::MAX - 3, BudgetEvent::Charge);
        for _ in 0..1000 {
            super::count_catalog(CatalogEvent::LocalLoad);
        }
        let before = text("(SELECT stats_reset FROM aicost.stat_cache)");
        Spi::run("SELECT pg_sleep(0.001)").unwrap();
        Spi::run("SELECT aicost.stat_reset()").unwrap();
        assert_eq!(cost_col(&m, "count(*)"), "0");
        assert_eq!(
            text("(SELECT count(*) FROM aicost.stat_budget WHERE budget_id = 9223372036854775804)"),
            "0"
        );
        assert!(one::<i64>("SELECT catalog_local_loads FROM aicost.stat_cache").unwrap() < 1000);
        assert_eq!(
            text(&format!(
                "(SELECT bool_and(stats_reset > '{before}') FROM aicost.stat_cache)"
            )),
            "true"
        );
        // The entry is kept and counts again from zero.
        super::record_cost(Some(&m), 1, 1, Some(&dec("0.25")), Some(10));
        assert_eq!(cost_col(&m, "(calls, cost_usd)"), "(1,0.25)");
    }

    /// A private region with tiny capacities (the GUCs cannot change at run time).
    fn small_region(models: u32, budgets: u32) -> Region {
        let p = alloc_region(models, budgets).unwrap();
        // SAFETY: just initialized; leaked for the test.
        unsafe { region_at(p) }
    }

    #[pg_test]
    fn stat_tables_overflow_into_the_null_row() {
        let r = small_region(16, 16);
        for i in 0..20 {
            let c = r.cost_counters(Some(&format!("model-{i}")));
            c.calls.fetch_add(1, Relaxed);
        }
        // Known names keep their entries once the table is full.
        r.cost_counters(Some("model-3")).calls.fetch_add(1, Relaxed);
        r.cost_counters(None).errors.fetch_add(1, Relaxed);
        let rows = cost_rows(&r);
        assert_eq!(rows.len(), 17);
        let named: Vec<_> = rows.iter().filter(|r| r.1.is_some()).collect();
        assert_eq!(named.len(), 16);
        assert_eq!(named.iter().map(|r| r.2).sum::<i64>(), 17);
        let null = rows.iter().find(|r| r.1.is_none()).unwrap();
        assert_eq!((null.2, null.4), (4, 1));
        assert_eq!(
            rows.iter()
                .find(|r| r.1.as_deref() == Some("model-3"))
                .unwrap()
                .2,
            2
        );

        // Regions do not share entries.
        let r2 = small_region(16, 16);
        r2.cost_counters(Some("model-3"))
            .calls
            .fetch_add(1, Relaxed);
        r.cost_counters(Some("model-3")).calls.fetch_add(1, Relaxed);
        assert_eq!(cost_rows(&r2).len(), 1);
        assert_eq!(
            cost_rows(&r)
                .iter()
                .find(|r| r.1.as_deref() == Some("model-3"))
                .unwrap()
                .2,
            3
        );

        // Long names: a prefix is kept; names sharing it stay distinct.
        let r = small_region(16, 16);
        let long_a = format!("{}a", "x".repeat(200));
        let long_b = format!("{}b", "x".repeat(200));
        r.cost_counters(Some(&long_a)).calls.fetch_add(1, Relaxed);
        r.cost_counters(Some(&long_b)).calls.fetch_add(2, Relaxed);
        r.cost_counters(Some(&long_a)).calls.fetch_add(4, Relaxed);
        let mut rows: Vec<_> = cost_rows(&r)
            .into_iter()
            .map(|r| (r.1.unwrap(), r.2))
            .collect();
        rows.sort_by_key(|r| r.1);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0], (format!("{}…", "x".repeat(KEY_MAX)), 2));
        assert_eq!(rows[1].1, 5);
        // Truncation never splits a character.
        let r = small_region(16, 16);
        let wide = "é".repeat(100); // 200 bytes
        r.cost_counters(Some(&wide)).calls.fetch_add(1, Relaxed);
        assert_eq!(
            cost_rows(&r)[0].1.as_deref(),
            Some(format!("{}…", "é".repeat(64)).as_str())
        );

        let r = small_region(16, 16);
        for id in 0..40 {
            r.budget_counters(id)[BudgetEvent::Check as usize].fetch_add(1, Relaxed);
        }
        let rows = budget_rows(&r);
        assert_eq!(rows.len(), 17);
        assert_eq!(rows.iter().find(|r| r.1.is_none()).unwrap().2, 24);
    }

    /// Many threads claiming the same new keys at once: no key gets two entries, no count is lost.
    #[pg_test]
    fn stat_claims_are_race_free() {
        let r = small_region(64, 64);
        let threads: i64 = 8;
        let rounds: i64 = 2000;
        std::thread::scope(|s| {
            for t in 0..threads {
                s.spawn(move || {
                    let price = Decimal::new(1, 3);
                    for i in 0..rounds {
                        let name = format!("m{}", (i + t) % 80);
                        r.record_cost(Some(&name), 2, 3, Some(&price), Some(100));
                        r.budget_counters(i % 50)[0].fetch_add(1, Relaxed);
                    }
                    // What transaction end does in a backend: add this thread's batch.
                    flush();
                });
            }
        });
        let rows = cost_rows(&r);
        let total: i64 = rows.iter().map(|r| r.2).sum();
        assert_eq!(total, threads * rounds);
        assert_eq!(rows.iter().map(|r| r.5).sum::<i64>(), 2 * threads * rounds);
        let money = rows
            .iter()
            .map(|r| Decimal::from_str(&r.7.to_string()).unwrap())
            .sum::<Decimal>();
        assert_eq!(money, Decimal::new(threads * rounds, 3));
        let mut names: Vec<_> = rows.iter().filter_map(|r| r.1.clone()).collect();
        assert_eq!(names.len(), 64);
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 64);
        let budgets = budget_rows(&r);
        assert_eq!(budgets.len(), 50);
        assert_eq!(budgets.iter().map(|r| r.2).sum::<i64>(), threads * rounds);
    }

    #[pg_test]
    fn stat_money_and_histogram_arithmetic() {
        let m = |s: &str| Money::from_decimal(&dec(s));
        let sum = |xs: &[&str]| {
            let mut t = Money::default();
            xs.iter().for_each(|x| t.add(m(x)));
            t.to_decimal_string()
        };
        assert_eq!(sum(&[]), "0");
        assert_eq!(sum(&["0.0075"; 3]), "0.0225");
        assert_eq!(sum(&["1", "-1.25"]), "-0.25");
        assert_eq!(sum(&["-3"]), "-3");
        // Scale above 24: half-even.
        assert_eq!(
            sum(&["0.0000000000000000000000015"]),
            "0.000000000000000000000002"
        );
        assert_eq!(
            sum(&["0.0000000000000000000000025"]),
            "0.000000000000000000000002"
        );
        assert_eq!(sum(&["0.0000000000000000000000005"]), "0");
        assert_eq!(
            sum(&["-0.0000000000000000000000015"]),
            "-0.000000000000000000000002"
        );
        // Amounts whose units overflow i128 are carried into whole dollars.
        let big = "79228162514264337593543950335"; // Decimal::MAX
        assert_eq!(sum(&[big, big, "0.5"]), "158456325028528675187087900670.5");
        let mut t = Money::default();
        for _ in 0..3 {
            t.add(m("100000000000000")); // 10^38 units: the second addition overflows i128
        }
        t.add(m("0.000000000000000000000001"));
        assert_eq!(
            t.to_decimal_string(),
            "300000000000000.000000000000000000000001"
        );

        // Buckets: contiguous, increasing, each value below its bucket's bound.
        assert_eq!(N_BUCKETS, 122);
        let mut prev = 0;
        for ns in (0..200_000u64).chain([1 << 35, (1 << 36) - 1, 1 << 36, u64::MAX]) {
            let b = bucket(ns);
            assert!(b >= prev);
            prev = b;
            if b < N_BUCKETS - 1 {
                assert!(ns < bucket_bound_ns(b), "{ns}");
                assert!(b == 0 || ns >= bucket_bound_ns(b - 1), "{ns}");
            } else {
                assert!(ns >= bucket_bound_ns(b));
            }
        }
        assert_eq!(bucket(1500), bucket(1280));
        assert_eq!(bucket_bound_ns(bucket(1500)), 1536);
        let mut h = [0u64; N_BUCKETS];
        assert_eq!(quantile_us(&h, 0.5), None);
        h[bucket(1000)] = 99;
        h[bucket(1_000_000)] = 1;
        assert_eq!(quantile_us(&h, 0.99), Some(1.024));
        assert_eq!(quantile_us(&h, 1.0), Some(1048.576));
    }
}
