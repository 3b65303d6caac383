//! Circuit breakers per model and per provider: `ai_call_allowed`, `ai_call_report`,
//! `ai_breaker_reset`, `aicost.stat_breaker` and the candidates of `ai_route` (`sql/breaker.sql`).
//! The state machine is `aicost_core::breaker`; this module keeps its state and settings.
//!
//! Where the state lives:
//! - **shared-memory mode** (preloaded): region `pg_aicost breakers`, an `aicost_core::shtable`
//!   table of `aicost.shmem_breakers` entries keyed by (database, kind, name). An entry's state is
//!   read and written only under its [`SpinLock`], held for the state machine's few integer
//!   operations (no allocation, nothing that can ERROR, never two at once). Changes take effect at
//!   once for every session and are not transactional; a restart starts every breaker closed. A
//!   breaker that does not fit admits every call untracked (one WARNING per backend).
//! - **otherwise**: table `aicost.breaker_state`, one row per breaker, read and written as the
//!   extension. A report locks its rows until its transaction ends (reports of one model
//!   serialize); `ai_call_allowed` writes only when the state changes or it admits a probe.
//!   Changes are transactional (a report in a transaction that rolls back is lost) and survive
//!   restarts; refused calls are not counted (`rejected` is NULL).
//!
//! Settings: `aicost.breaker_config` rows for a name, then for `*`, over the core's defaults; cached
//! per backend and invalidated transactionally (a relcache invalidation of the table, queued by its
//! statement trigger, as the pricing cache is).

use crate::error::{ErrorExt, raise_full};
use crate::pricing::{catalog_for, resolve};
use crate::shmem::{self, SpinLock, database};
use aicost_core::breaker::{Breaker, Config, Decision, ERROR_CLASSES, Outcome, State, outcome};
use aicost_core::shtable::{Entry, NameKey, Slot, Table, TableHeader, hash_bytes, n_slots};
use aicost_core::{ServiceTier, TokenCounts, compute};
use pgrx::PgSqlErrorCode::*;
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use pgrx::{AnyNumeric, PgOid, pg_sys};
use rustc_hash::FxHashMap;
use std::cell::{Cell, RefCell, UnsafeCell};
use std::rc::Rc;
use std::str::FromStr;
use std::sync::atomic::{AtomicPtr, Ordering};

/// What a breaker guards.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Kind {
    Model = 0,
    Provider = 1,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Model => "model",
            Kind::Provider => "provider",
        }
    }

    fn parse(s: &str) -> Kind {
        match s {
            "model" => Kind::Model,
            "provider" => Kind::Provider,
            _ => raise_full(
                ERRCODE_INVALID_PARAMETER_VALUE,
                format!("unknown breaker kind \"{}\"", aicost_core::limits::clip(s)),
                None,
                Some("Breakers are of kind model or provider.".into()),
            ),
        }
    }

    fn defaults(self) -> Config {
        match self {
            Kind::Model => Config::for_model(),
            Kind::Provider => Config::for_provider(),
        }
    }
}

fn now() -> i64 {
    // SAFETY: reads the clock.
    unsafe { pg_sys::GetCurrentTimestamp() }
}

// ---------------------------------------------------------------------------------------------
// Settings (aicost.breaker_config), cached per backend

/// One row's settings in `Config`'s field order; None inherits.
type Overrides = [Option<i64>; 8];

struct Settings {
    /// Per kind (`Kind as usize`), by name: looked up with a &str on every call.
    rows: [FxHashMap<String, Overrides>; 2],
}

thread_local! {
    static SETTINGS: RefCell<Option<Rc<Settings>>> = const { RefCell::new(None) };
}
// Touched by the relcache callback: plain Cells, never borrowed across a call.
struct Flags {
    valid: Cell<bool>,
    relid: Cell<pg_sys::Oid>,
}
// SAFETY: a PostgreSQL backend runs extension code on one thread only.
unsafe impl Sync for Flags {}
static FLAGS: Flags = Flags {
    valid: Cell::new(false),
    relid: Cell::new(pg_sys::InvalidOid),
};
// A WARNING about a full shared table was given by this backend.
thread_local! {
    static WARNED_FULL: Cell<bool> = const { Cell::new(false) };
}

#[pg_guard]
unsafe extern "C-unwind" fn relcache_callback(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    if relid == pg_sys::InvalidOid || relid == FLAGS.relid.get() {
        FLAGS.valid.set(false);
    }
}

/// Registers the settings cache's invalidation callback; called once per backend from `_PG_init`.
pub fn init() {
    // SAFETY: registers a C callback.
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(Some(relcache_callback), pg_sys::Datum::from(0))
    };
}

fn settings() -> Rc<Settings> {
    if FLAGS.valid.get()
        && let Some(s) = SETTINGS.with(|s| s.borrow().clone())
    {
        return s;
    }
    // Dropped first, so that a read that fails leaves nothing to reuse; valid before reading, so
    // that an invalidation arriving during the read marks it stale again.
    SETTINGS.with(|c| *c.borrow_mut() = None);
    FLAGS.valid.set(true);
    FLAGS.relid.set(crate::security::relid(c"breaker_config"));
    let mut rows: [FxHashMap<String, Overrides>; 2] = Default::default();
    crate::security::as_owner(|| {
        Spi::connect(|c| {
            let us = |col: &str| format!("(extract(epoch FROM {col}) * 1000000)::int8");
            let q = format!(
                "SELECT kind, name, failure_threshold::int8, failure_rate::int8, minimum_calls::int8, {}, {}, {},
                        probes::int8, close_after::int8
                   FROM aicost.breaker_config",
                us("window_length"),
                us("cooldown"),
                us("max_cooldown")
            );
            let table = c
                .select(&q, None, &[])
                .or_internal("reading aicost.breaker_config");
            for row in table {
                crate::check_interrupts();
                let kind: String = row.get(1).ok().flatten().unwrap_or_default();
                let name: String = row.get(2).ok().flatten().unwrap_or_default();
                let mut o: Overrides = [None; 8];
                for (i, v) in o.iter_mut().enumerate() {
                    *v = row.get::<i64>(i + 3).ok().flatten();
                }
                rows[Kind::parse(&kind) as usize].insert(name, o);
            }
        })
    });
    let s = Rc::new(Settings { rows });
    SETTINGS.with(|c| *c.borrow_mut() = Some(s.clone()));
    s
}

/// The settings of breaker (kind, name): its row over the `*` row over the defaults.
fn config(kind: Kind, name: &str) -> Config {
    let s = settings();
    let mut c = kind.defaults();
    for key in ["*", name] {
        let Some(o) = s.rows[kind as usize].get(key) else {
            continue;
        };
        let u32_of = |v: Option<i64>, d: u32| v.map_or(d, |v| u32::try_from(v).unwrap_or(u32::MAX));
        c.failure_threshold = u32_of(o[0], c.failure_threshold);
        c.failure_rate_pct = u32_of(o[1], c.failure_rate_pct);
        c.minimum_calls = u32_of(o[2], c.minimum_calls);
        c.window_us = o[3].unwrap_or(c.window_us);
        c.cooldown_us = o[4].unwrap_or(c.cooldown_us);
        c.max_cooldown_us = o[5].unwrap_or(c.max_cooldown_us);
        c.probes = u32_of(o[6], c.probes);
        c.close_after = u32_of(o[7], c.close_after);
    }
    // A name's own cooldown may exceed the maximum it inherits: the maximum follows.
    c.max_cooldown_us = c.max_cooldown_us.max(c.cooldown_us);
    c.validate().unwrap_or_else(|e| {
        raise_full(
            ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "aicost.breaker_config for {} \"{name}\": {e}",
                kind.as_str()
            ),
            None,
            None,
        )
    });
    c
}

// ---------------------------------------------------------------------------------------------
// Shared memory

/// Bytes of a name kept in its entry (see [`NameKey`]).
const KEY_MAX: usize = 192;

#[repr(C)]
struct Key {
    database: u32,
    kind: u32,
    name: NameKey<KEY_MAX>,
}

#[repr(C, align(64))]
struct BreakerEntry {
    /// Written once by the claimer before publication, then only read.
    key: UnsafeCell<Key>,
    lock: SpinLock,
    /// Read and written only under `lock`.
    state: UnsafeCell<Breaker>,
}

// SAFETY: the key is frozen at publication; the state is only touched under the spinlock.
unsafe impl Sync for BreakerEntry {}

/// The key of (database, kind, name) as a lookup compares it: the database (4 bytes, little
/// endian), the kind (1 byte), the name.
fn lookup_key(db: u32, kind: Kind, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(5 + name.len());
    k.extend_from_slice(&db.to_le_bytes());
    k.push(kind as u8);
    k.extend_from_slice(name.as_bytes());
    k
}

/// (database, kind, name) of a lookup key.
fn split_key(k: &[u8]) -> (u32, u32, &str) {
    let db = u32::from_le_bytes([k[0], k[1], k[2], k[3]]);
    // Built by `lookup_key` from a &str.
    (
        db,
        u32::from(k[4]),
        std::str::from_utf8(&k[5..]).unwrap_or_default(),
    )
}

impl BreakerEntry {
    /// (database, kind, name) of a published entry; a truncated name ends with `…`.
    fn key(&self) -> (u32, Kind, String) {
        // SAFETY: only called on published entries: the key is frozen.
        let key = unsafe { &*self.key.get() };
        let kind = if key.kind == Kind::Model as u32 {
            Kind::Model
        } else {
            Kind::Provider
        };
        (key.database, kind, key.name.name())
    }
}

impl Entry for BreakerEntry {
    type Key = [u8];

    fn matches(&self, k: &[u8]) -> bool {
        let (db, kind, name) = split_key(k);
        // SAFETY: only called on published entries: the key is frozen.
        let key = unsafe { &*self.key.get() };
        key.database == db && key.kind == kind && key.name.matches(name)
    }

    unsafe fn set_key(&self, k: &[u8]) {
        let (db, kind, name) = split_key(k);
        // SAFETY: the caller claimed this entry; nobody else reads or writes it yet.
        let key = unsafe { &mut *self.key.get() };
        key.database = db;
        key.kind = kind;
        key.name.set(name);
    }
}

#[repr(C, align(64))]
struct Header {
    table: TableHeader,
}

static REGION: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());

fn capacity() -> u32 {
    u32::try_from(crate::guc::SHMEM_BREAKERS.get()).unwrap_or(16)
}

/// (offset of the slots, offset of the entries, size) for `cap` entries.
fn layout(cap: u32) -> (usize, usize, usize) {
    let al = |n: usize| n.next_multiple_of(64);
    let slots = al(size_of::<Header>());
    let entries = al(slots + n_slots(cap) as usize * size_of::<Slot>());
    (
        slots,
        entries,
        entries + cap as usize * size_of::<BreakerEntry>(),
    )
}

/// Bytes of shared memory the breakers need.
pub fn shmem_size() -> usize {
    layout(capacity()).2 + 64 // room to align the region to 64 bytes
}

/// Creates (or attaches to) region `pg_aicost breakers`.
///
/// # Safety
/// Startup hook only (see `shmem`).
pub unsafe fn shmem_startup() {
    let cap = capacity();
    let size = layout(cap).2;
    // SAFETY: we run in the startup hook, under AddinShmemInitLock.
    let (p, found) = unsafe { shmem::init_struct(c"pg_aicost breakers", size + 64) };
    let base = p.wrapping_add(p.align_offset(64));
    if !found {
        // SAFETY: `size` bytes from `base` lie in the region; nobody uses it yet. Zeroed bytes are
        // empty slots, unlocked spinlocks and closed breakers.
        unsafe {
            base.write_bytes(0, size);
            base.cast::<Header>().write(Header {
                table: TableHeader::new(cap),
            });
        }
    }
    REGION.store(base, Ordering::Release);
}

fn table() -> Table<'static, BreakerEntry> {
    let base = REGION.load(Ordering::Acquire);
    assert!(!base.is_null(), "breaker region used without preloading");
    // SAFETY: the region was laid out by `shmem_startup` before any backend forked and stays mapped.
    unsafe {
        let hdr = &*base.cast::<Header>();
        let (slots, entries, _) = layout(hdr.table.cap);
        Table::new(
            &hdr.table,
            std::slice::from_raw_parts(base.add(slots).cast(), hdr.table.n_slots as usize),
            std::slice::from_raw_parts(base.add(entries).cast(), hdr.table.cap as usize),
        )
    }
}

/// The breakers of this database in shared memory.
fn shared_entries() -> impl Iterator<Item = (Kind, String, &'static BreakerEntry)> {
    let db = database();
    let t = table();
    let all: Vec<&'static BreakerEntry> = t.entries().collect();
    all.into_iter().filter_map(move |e| {
        crate::check_interrupts();
        let (d, kind, name) = e.key();
        (d == db).then_some((kind, name, e))
    })
}

impl BreakerEntry {
    fn with<R>(&self, f: impl FnOnce(&mut Breaker) -> R) -> R {
        let _g = self.lock.lock();
        // SAFETY: the entry's state is only touched under its spinlock, held here.
        f(unsafe { &mut *self.state.get() })
    }
}

/// Runs `f` on the shared state of (kind, name) under its spinlock. A breaker without an entry is
/// a fresh closed one: `create` makes its entry (reports do; a question never does, so asking
/// about every model fills nothing); without it, or when the table is full, `f` runs on a fresh
/// breaker that is not kept.
fn with_shared<R>(kind: Kind, name: &str, create: bool, f: impl FnOnce(&mut Breaker) -> R) -> R {
    let key = lookup_key(database(), kind, name);
    let h = hash_bytes(&key);
    let t = table();
    let e = if create {
        t.get_or_insert(&key, h)
    } else {
        t.get(&key, h)
    };
    match e {
        Some(e) => e.with(f),
        None if !create => f(&mut Breaker::default()),
        None => {
            if !WARNED_FULL.replace(true) {
                pgrx::warning!(
                    "pg_aicost: aicost.shmem_breakers ({}) is full: calls to {} \"{}\" are admitted untracked",
                    capacity(),
                    kind.as_str(),
                    aicost_core::limits::clip(name)
                );
            }
            f(&mut Breaker::default())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Table mode

/// The table mode's statements, prepared once per backend (run as the extension's owner).
struct Plans {
    /// (kind, data) of a model's row and its provider's.
    read: OwnedPreparedStatement,
    create: OwnedPreparedStatement,
    lock: OwnedPreparedStatement,
    write: OwnedPreparedStatement,
}

thread_local! {
    static PLANS: RefCell<Option<Rc<Plans>>> = const { RefCell::new(None) };
}

fn plans(c: &mut pgrx::spi::SpiClient<'_>) -> Rc<Plans> {
    if let Some(p) = PLANS.with(|p| p.borrow().clone()) {
        return p;
    }
    let text = pg_sys::TEXTOID;
    let prep = |sql: &str, args: &[pg_sys::Oid]| {
        let args: Vec<PgOid> = args.iter().map(|&o| o.into()).collect();
        c.prepare_mut(sql, &args)
            .or_internal("preparing a breaker statement")
            .keep()
    };
    let p = Rc::new(Plans {
        read: prep(
            "SELECT kind, data FROM aicost.breaker_state
              WHERE (kind = 'provider' AND name = $1) OR (kind = 'model' AND name = $2)",
            &[text, text],
        ),
        create: prep(
            "INSERT INTO aicost.breaker_state (kind, name, data) VALUES ($1, $2, $3)
             ON CONFLICT (kind, name) DO NOTHING",
            &[text, text, pg_sys::BYTEAOID],
        ),
        lock: prep(
            "SELECT data FROM aicost.breaker_state WHERE kind = $1 AND name = $2 FOR UPDATE",
            &[text, text],
        ),
        write: prep(
            "UPDATE aicost.breaker_state SET data = $3 WHERE kind = $1 AND name = $2",
            &[text, text, pg_sys::BYTEAOID],
        ),
    });
    PLANS.with(|c| *c.borrow_mut() = Some(p.clone()));
    p
}

fn decode(kind: Kind, name: &str, data: Option<Vec<u8>>) -> Breaker {
    data.map_or_else(Breaker::default, |b| {
        Breaker::decode(&b).unwrap_or_else(|| {
            raise_full(
                ERRCODE_DATA_CORRUPTED,
                format!(
                    "aicost.breaker_state of {} \"{name}\" is not a breaker state",
                    kind.as_str()
                ),
                None,
                Some("Reset it with ai_breaker_reset().".into()),
            )
        })
    })
}

/// Creates the row of (kind, name) if it is missing and locks it until the transaction ends;
/// returns its state.
fn lock_row(c: &mut pgrx::spi::SpiClient<'_>, p: &Plans, kind: Kind, name: &str) -> Breaker {
    let fresh = Breaker::default().encode();
    c.update(
        &p.create,
        None,
        &[kind.as_str().into(), name.into(), fresh.into()],
    )
    .or_internal("creating a row of aicost.breaker_state");
    let data = c
        .update(&p.lock, None, &[kind.as_str().into(), name.into()])
        .or_internal("locking a row of aicost.breaker_state")
        .first()
        .get_one::<Vec<u8>>()
        .or_internal("reading aicost.breaker_state");
    decode(kind, name, data)
}

/// Whether `after` differs from `before` in more than the count of refused calls (not kept in this
/// mode: a refusal should not have to write).
fn changed(before: &Breaker, after: &Breaker) -> bool {
    Breaker {
        rejected: before.rejected,
        ..*after
    } != *before
}

fn read_only() -> bool {
    // SAFETY: reads a backend global.
    unsafe { pg_sys::XactReadOnly }
}

/// Runs `f` on the states of a model's breaker and its provider's (None: the model has no
/// provider) in `aicost.breaker_state`, as the extension.
///
/// A question (`lazy`) first runs `f` on an unlocked read of both rows and is done if neither
/// changed, or if the transaction is read-only (a standby, or a read-only transaction: answered,
/// not recorded). Otherwise both rows are created if missing and locked, the provider's first
/// (in every call, so two sessions never wait on each other's rows in opposite orders), `f` runs
/// again on what they hold, and the rows it changed are written.
fn with_pair_table<R>(
    provider: &str,
    model: &str,
    lazy: bool,
    mut f: impl FnMut(Option<&mut Breaker>, &mut Breaker) -> R,
) -> R {
    let has_provider = !provider.is_empty();
    crate::security::as_owner(|| {
        Spi::connect_mut(|c| {
            let p = plans(c);
            if lazy {
                let (mut p0, mut m0) = (Breaker::default(), Breaker::default());
                let rows = c
                    .update(&p.read, None, &[provider.into(), model.into()])
                    .or_internal("reading aicost.breaker_state");
                for row in rows {
                    let kind: String = row.get(1).ok().flatten().unwrap_or_default();
                    let data: Option<Vec<u8>> = row.get(2).ok().flatten();
                    if kind == Kind::Provider.as_str() {
                        p0 = decode(Kind::Provider, provider, data);
                    } else {
                        m0 = decode(Kind::Model, model, data);
                    }
                }
                let (mut p1, mut m1) = (p0, m0);
                let r = f(has_provider.then_some(&mut p1), &mut m1);
                if !(changed(&p0, &p1) || changed(&m0, &m1)) || read_only() {
                    return r;
                }
            }
            let p0 = has_provider.then(|| lock_row(c, &p, Kind::Provider, provider));
            let m0 = lock_row(c, &p, Kind::Model, model);
            let (mut p1, mut m1) = (p0.unwrap_or_default(), m0);
            let r = f(p0.is_some().then_some(&mut p1), &mut m1);
            let writes = [
                (
                    Kind::Provider,
                    provider,
                    p0.filter(|p0| changed(p0, &p1)),
                    p1,
                ),
                (
                    Kind::Model,
                    model,
                    Some(m0).filter(|m0| changed(m0, &m1)),
                    m1,
                ),
            ];
            for (kind, name, before, after) in writes {
                let Some(before) = before else { continue };
                let after = Breaker {
                    rejected: before.rejected,
                    ..after
                };
                c.update(
                    &p.write,
                    None,
                    &[kind.as_str().into(), name.into(), after.encode().into()],
                )
                .or_internal("writing aicost.breaker_state");
            }
            r
        })
    })
}

// ---------------------------------------------------------------------------------------------
// The calls

/// The canonical name and provider of a model name (42704 if unknown, as `ai_cost`).
fn model_of(name: &str) -> (String, String) {
    let catalog = catalog_for(name);
    match resolve(&catalog, name, false) {
        Some((m, _)) => (m.name.clone(), m.provider.clone()),
        None => unreachable!("resolve raises for an unknown name"),
    }
}

fn not_null<T>(what: &str, v: Option<T>) -> T {
    v.unwrap_or_else(|| {
        raise_full(
            ERRCODE_NULL_VALUE_NOT_ALLOWED,
            format!("{what} must not be null"),
            None,
            None,
        )
    })
}

fn interval(us: i64) -> Interval {
    Interval::from_micros(us)
}

/// One step of a decision: ask the provider's breaker, ask the model's, or give back the probe
/// slot the provider's gave.
enum Step {
    Provider,
    Model,
    ReleaseProvider,
}

/// What a step that decides nothing (a release) returns; never used.
const NO_DECISION: Decision = Decision {
    allowed: false,
    state: State::Closed,
    retry_after_us: None,
    probe: false,
};

/// The rule that combines the two breakers, whatever keeps them: the provider's is asked first
/// and a refusal is final; a probe slot it gave is returned if the model's then refuses. The state
/// shown is the refusing breaker's, else the one that is not closed.
fn combine(has_provider: bool, mut step: impl FnMut(Step) -> Decision) -> Decision {
    let p = has_provider.then(|| step(Step::Provider));
    if let Some(d) = p
        && !d.allowed
    {
        return d;
    }
    let d = step(Step::Model);
    match p {
        Some(pd) if !d.allowed && pd.probe => {
            step(Step::ReleaseProvider);
            d
        }
        Some(pd) if d.allowed && d.state == State::Closed => Decision { probe: false, ..pd },
        _ => d,
    }
}

/// Whether a call to `model` (canonical) of `provider` may be made now.
fn allow(model: &str, provider: &str) -> Decision {
    let t = now();
    let has_provider = !provider.is_empty();
    // Without a provider there is no provider step (see `combine`).
    let pcfg = if has_provider {
        config(Kind::Provider, provider)
    } else {
        Config::for_provider()
    };
    let mcfg = config(Kind::Model, model);
    let ask = |b: &mut Breaker, step: &Step| match step {
        Step::Provider => b.allow(t, &pcfg),
        Step::Model => b.allow(t, &mcfg),
        Step::ReleaseProvider => {
            b.release_probe();
            NO_DECISION
        }
    };
    if shmem::preloaded() {
        // One spinlock at a time: each step under its breaker's own.
        combine(has_provider, |step| {
            let (kind, name) = match step {
                Step::Model => (Kind::Model, model),
                _ => (Kind::Provider, provider),
            };
            with_shared(kind, name, false, |b| ask(b, &step))
        })
    } else {
        with_pair_table(provider, model, true, |mut p, m| {
            combine(has_provider, |step| match (&step, p.as_deref_mut()) {
                (Step::Model, _) => ask(m, &step),
                (_, Some(pb)) => ask(pb, &step),
                // Not asked: without a provider there is no provider step.
                (_, None) => NO_DECISION,
            })
        })
    }
}

/// Records an outcome in the breakers of `model` (canonical) and its `provider`; returns the
/// model breaker's state.
fn report(model: &str, provider: &str, o: Outcome, latency_us: Option<i64>) -> State {
    let t = now();
    let pcfg = (!provider.is_empty()).then(|| config(Kind::Provider, provider));
    let mcfg = config(Kind::Model, model);
    if shmem::preloaded() {
        if let Some(c) = pcfg {
            with_shared(Kind::Provider, provider, true, |b| {
                b.report(t, &c, o, latency_us)
            });
        }
        with_shared(Kind::Model, model, true, |b| {
            b.report(t, &mcfg, o, latency_us)
        })
    } else {
        with_pair_table(provider, model, false, |p, m| {
            if let (Some(b), Some(c)) = (p, pcfg) {
                b.report(t, &c, o, latency_us);
            }
            m.report(t, &mcfg, o, latency_us)
        })
    }
}

/// Whether a call to `model` may be made now, by its breaker and its provider's.
#[pg_extern(volatile, parallel_unsafe)]
fn ai_call_allowed(
    model: Option<&str>,
) -> TableIterator<
    'static,
    (
        name!(allowed, bool),
        name!(state, String),
        name!(retry_after, Option<Interval>),
    ),
> {
    let (name, provider) = model_of(not_null("model", model));
    let d = allow(&name, &provider);
    TableIterator::once((
        d.allowed,
        d.state.as_str().to_string(),
        d.retry_after_us.map(interval),
    ))
}

/// Records the outcome of a call to `model` in its breaker and its provider's; returns the model
/// breaker's state.
#[pg_extern(volatile, parallel_unsafe)]
fn ai_call_report(
    model: Option<&str>,
    ok: Option<bool>,
    latency: default!(Option<Interval>, "NULL"),
    error_class: default!(Option<&str>, "NULL"),
) -> String {
    let (name, provider) = model_of(not_null("model", model));
    let ok = not_null("ok", ok);
    let o = outcome(ok, error_class).unwrap_or_else(|| {
        let classes: Vec<&str> = ERROR_CLASSES.iter().map(|(n, _)| *n).collect();
        if ok {
            raise_full(
                ERRCODE_INVALID_PARAMETER_VALUE,
                "error_class must be NULL when ok is true".into(),
                None,
                None,
            )
        }
        raise_full(
            ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "unknown error class \"{}\"",
                aicost_core::limits::clip(error_class.unwrap_or_default())
            ),
            None,
            Some(format!(
                "Error classes are {}; client errors do not trip the breaker.",
                classes.join(", ")
            )),
        )
    });
    let latency_us = latency.map(|l| {
        let us = l.as_micros();
        if !(0..=i128::from(i64::MAX)).contains(&us) {
            raise_full(
                ERRCODE_INVALID_PARAMETER_VALUE,
                "latency must not be negative".into(),
                None,
                None,
            )
        }
        us as i64
    });
    report(&name, &provider, o, latency_us).as_str().to_string()
}

// ---------------------------------------------------------------------------------------------
// Statistics and maintenance

/// One row of `aicost.stat_breaker`.
struct Row {
    kind: Kind,
    name: String,
    b: Breaker,
    cfg: Config,
    shared: bool,
}

type StatRow = (
    name!(kind, String),
    name!(name, String),
    name!(state, String),
    name!(successes, i64),
    name!(failures, i64),
    name!(client_errors, i64),
    name!(rejected, Option<i64>),
    name!(consecutive_failures, i64),
    name!(window_calls, i64),
    name!(window_failures, i64),
    name!(trips, i64),
    name!(probes_in_flight, i64),
    name!(mean_latency, Option<Interval>),
    name!(last_change, Option<TimestampWithTimeZone>),
    name!(opened_at, Option<TimestampWithTimeZone>),
    name!(retry_after, Option<Interval>),
);

fn ts(us: i64) -> Option<TimestampWithTimeZone> {
    (us != 0)
        .then(|| TimestampWithTimeZone::try_from(us).ok())
        .flatten()
}

fn big(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Row {
    fn into_tuple(self, now: i64) -> StatRow {
        let b = &self.b;
        let (calls, failed) = b.window_counts();
        (
            self.kind.as_str().to_string(),
            self.name,
            b.state.as_str().to_string(),
            big(b.successes),
            big(b.failures),
            big(b.client_errors),
            self.shared.then(|| big(b.rejected)),
            i64::from(b.consecutive_failures),
            big(calls),
            big(failed),
            i64::from(b.trips),
            i64::from(b.probes_in_flight),
            (b.latency_count > 0).then(|| interval(big(b.latency_sum_us / b.latency_count))),
            ts(b.changed_at),
            (b.state != State::Closed)
                .then(|| ts(b.opened_at))
                .flatten(),
            b.retry_after(now, &self.cfg).map(interval),
        )
    }
}

/// Every breaker of this database with its state (copied under its lock in shared memory).
fn rows() -> Vec<Row> {
    let mut found: Vec<(Kind, String, Breaker, bool)> = Vec::new();
    if shmem::preloaded() {
        for (kind, name, e) in shared_entries() {
            found.push((kind, name, e.with(|b| *b), true));
        }
    } else {
        crate::security::as_owner(|| {
            Spi::connect(|c| {
                let t = c
                    .select(
                        "SELECT kind, name, data FROM aicost.breaker_state ORDER BY kind, name",
                        None,
                        &[],
                    )
                    .or_internal("reading aicost.breaker_state");
                for row in t {
                    crate::check_interrupts();
                    let kind: String = row.get(1).ok().flatten().unwrap_or_default();
                    let name: String = row.get(2).ok().flatten().unwrap_or_default();
                    let data: Vec<u8> = row.get(3).ok().flatten().unwrap_or_default();
                    found.push((
                        Kind::parse(&kind),
                        name,
                        Breaker::decode(&data).unwrap_or_default(),
                        false,
                    ));
                }
            })
        });
    }
    found
        .into_iter()
        .map(|(kind, name, b, shared)| Row {
            cfg: config(kind, &name),
            kind,
            name,
            b,
            shared,
        })
        .collect()
}

/// Resets breakers to closed, forgetting their counts: those of `kind` (every kind when NULL) and
/// `name` (a model name is resolved to its canonical name; every name when NULL). Returns how many.
#[pg_extern(volatile, parallel_unsafe)]
fn ai_breaker_reset(
    kind: default!(Option<&str>, "NULL"),
    name: default!(Option<&str>, "NULL"),
) -> i64 {
    let kind = kind.map(Kind::parse);
    let name = match (kind, name) {
        (Some(Kind::Model), Some(n)) => Some(model_of(n).0),
        (_, n) => n.map(str::to_string),
    };
    if shmem::preloaded() {
        let mut n = 0;
        for (k, nm, e) in shared_entries() {
            if kind.is_none_or(|w| w == k) && name.as_deref().is_none_or(|w| w == nm) {
                e.with(|b| *b = Breaker::default());
                n += 1;
            }
        }
        return n;
    }
    crate::security::as_owner(|| {
        Spi::get_one_with_args::<i64>(
            "WITH d AS (DELETE FROM aicost.breaker_state
                         WHERE ($1::text IS NULL OR kind = $1) AND ($2::text IS NULL OR name = $2)
                        RETURNING 1)
             SELECT count(*) FROM d",
            &[kind.map(Kind::as_str).into(), name.clone().into()],
        )
        .or_internal("resetting aicost.breaker_state")
        .unwrap_or(0)
    })
}

/// Models `ai_route` chooses among at most.
const MAX_ROUTE_MODELS: usize = 32;

#[pg_schema]
mod aicost {
    use super::*;

    /// The rows of `aicost.stat_breaker`: every breaker of this database.
    // pgrx cannot read a type alias here: the columns are spelled out as in `StatRow`.
    #[allow(clippy::type_complexity)]
    #[pg_extern(volatile, parallel_restricted)]
    fn _breaker_rows() -> TableIterator<
        'static,
        (
            name!(kind, String),
            name!(name, String),
            name!(state, String),
            name!(successes, i64),
            name!(failures, i64),
            name!(client_errors, i64),
            name!(rejected, Option<i64>),
            name!(consecutive_failures, i64),
            name!(window_calls, i64),
            name!(window_failures, i64),
            name!(trips, i64),
            name!(probes_in_flight, i64),
            name!(mean_latency, Option<Interval>),
            name!(last_change, Option<TimestampWithTimeZone>),
            name!(opened_at, Option<TimestampWithTimeZone>),
            name!(retry_after, Option<Interval>),
        ),
    > {
        let t = now();
        TableIterator::new(rows().into_iter().map(move |r| r.into_tuple(t)))
    }

    /// Called by the statement trigger on aicost.breaker_config: every backend re-reads the
    /// settings once the change commits.
    #[pg_extern(volatile, parallel_unsafe)]
    fn _invalidate_breaker_config() {
        FLAGS.valid.set(false);
        // SAFETY: queues an invalidation message for a relation oid.
        unsafe {
            pg_sys::CacheInvalidateRelcacheByRelid(crate::security::relid(c"breaker_config"))
        };
    }

    /// The candidates of `ai_route`: canonical names in the caller's order (duplicates dropped)
    /// and an upper bound of the cost of `tokens` tokens however split between prompt and
    /// completion (at the larger of the input and output prices; a million tokens when NULL),
    /// NULL for a model without both prices now.
    #[pg_extern(stable, parallel_safe)]
    fn _route_candidates(
        models: Option<pgrx::Array<&str>>,
        tokens: Option<i64>,
    ) -> TableIterator<
        'static,
        (
            name!(ord, i32),
            name!(model, String),
            name!(estimate, Option<AnyNumeric>),
        ),
    > {
        let models = not_null("models", models);
        if models.is_empty() || models.len() > MAX_ROUTE_MODELS {
            raise_full(
                ERRCODE_INVALID_PARAMETER_VALUE,
                format!(
                    "models must list 1 to {MAX_ROUTE_MODELS} models, not {}",
                    models.len()
                ),
                None,
                None,
            )
        }
        let n = tokens.unwrap_or(1_000_000);
        if n < 0 {
            raise_full(
                ERRCODE_INVALID_PARAMETER_VALUE,
                format!("estimated_tokens must not be negative, not {n}"),
                None,
                None,
            )
        }
        // SAFETY: reads the transaction's start time (now()).
        let at = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
        let mut out: Vec<(i32, String, Option<AnyNumeric>)> = Vec::new();
        // Checked before anything is read out of the array.
        for (i, m) in models.iter().enumerate() {
            let name = not_null("a model in models", m);
            let catalog = catalog_for(name);
            let Some((m, _)) = resolve(&catalog, name, false) else {
                unreachable!("resolve raises for an unknown name")
            };
            if out.iter().any(|(_, n, _)| *n == m.name) {
                continue;
            }
            let bound = [
                TokenCounts::new(n, 0, 0, 0, 0),
                TokenCounts::new(0, n, 0, 0, 0),
            ]
            .iter()
            .map(|c| compute(m, c, ServiceTier::Standard, at).map(|c| c.total))
            .collect::<Result<Vec<_>, _>>()
            .ok()
            .and_then(|v| v.into_iter().max());
            let estimate = bound.map(|d| {
                AnyNumeric::from_str(&d.to_string()).unwrap_or_else(|e| {
                    raise_full(
                        ERRCODE_INTERNAL_ERROR,
                        format!("estimate {d}: {e}"),
                        None,
                        None,
                    )
                })
            });
            out.push((i as i32 + 1, m.name.clone(), estimate));
        }
        TableIterator::new(out)
    }
}
