//! The per-backend pricing cache and the catalog-maintenance functions.
//!
//! Invalidation follows PostgreSQL's own caches (as pg_cron and TimescaleDB do):
//! - statement-level triggers on the catalog tables call `aicost._invalidate_pricing_cache()`, which
//!   queues a relcache invalidation of `aicost.prices` (`CacheInvalidateRelcacheByRelid`);
//! - PostgreSQL delivers it to this backend at the next command of the same transaction (so a
//!   transaction sees its own uncommitted change), to every other backend only once the transaction
//!   commits, and to nobody if it rolls back (abort replays it locally so this backend drops any
//!   catalog it built from the rolled-back rows);
//! - the relcache callback registered in `_PG_init` only marks the cache stale; the next call reloads.
//!
//! A reload that received an invalidation while it was reading (SPI takes locks, and taking a lock
//! accepts pending invalidations) stays stale, so no invalidation is ever lost.
//! Reloads read under the latest snapshot (as PostgreSQL's catalog caches do), not the statement's.
//! Besides, the first call of each statement accepts pending invalidation messages, so a statement
//! sees price changes committed before it started, in any isolation level.
//!
//! In shared-memory mode (preloaded) a backend prices from the shared frozen catalog instead
//! (`catalog_shm`, which states the protocol); it reads the generation once per statement and keeps
//! a memo of the names it priced, for that generation only.

use crate::error::{ErrorExt, raise};
use aicost_core::catalog::{Model, PriceVersion};
use aicost_core::litellm::{self, ImportDoc};
use aicost_core::{Catalog, Decimal, Resolved, ServiceTier, UsageType};
use pgrx::PgSqlErrorCode::*;
use pgrx::prelude::*;
use pgrx::{JsonB, pg_sys};
use rustc_hash::FxHashMap;
use serde_json::{Value, json};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::str::FromStr;

thread_local! {
    static CATALOG: RefCell<Option<Rc<Catalog>>> = const { RefCell::new(None) };
}

// Flags touched by callbacks, which may run in the middle of a reload: plain Cells, never borrowed.
struct Flags {
    valid: Cell<bool>,
    prices_relid: Cell<pg_sys::Oid>,
    /// This transaction changed the catalog (a trigger fired): drop the cache if it aborts.
    dirty: Cell<bool>,
    last_statement: Cell<pg_sys::TimestampTz>,
    /// The cache was read with a parallel query's snapshot after an invalidation was consumed:
    /// that snapshot may predate the change, so the cache is good for this statement only.
    loaded_in_parallel_mode: Cell<bool>,
    /// Invalidations received, and the count when the cache was last read.
    invalidations: Cell<u64>,
    invalidations_at_load: Cell<u64>,
}

// SAFETY: a PostgreSQL backend runs extension code on one thread only.
unsafe impl Sync for Flags {}

static FLAGS: Flags = Flags {
    valid: Cell::new(false),
    prices_relid: Cell::new(pg_sys::InvalidOid),
    dirty: Cell::new(false),
    last_statement: Cell::new(0),
    loaded_in_parallel_mode: Cell::new(false),
    invalidations: Cell::new(0),
    invalidations_at_load: Cell::new(0),
};

/// Registers the relcache invalidation callback; called once per backend from `_PG_init` (the
/// transaction events come through [`crate::xact`]).
pub fn init() {
    // SAFETY: registering a C callback with PostgreSQL; pgrx has no safe wrapper for it.
    unsafe {
        pg_sys::CacheRegisterRelcacheCallback(Some(relcache_callback), pg_sys::Datum::from(0));
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn relcache_callback(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    // InvalidOid means "all relations" (e.g. after a sinval queue overflow).
    if relid == pg_sys::InvalidOid || relid == FLAGS.prices_relid.get() {
        FLAGS.valid.set(false);
        FLAGS.invalidations.set(FLAGS.invalidations.get() + 1);
    }
}

fn drop_cache() {
    FLAGS.valid.set(false);
    CATALOG.with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            *c = None;
        }
    });
}

/// The pricing cache's step of a transaction event (see [`crate::xact`] for the order).
pub(crate) fn on_xact(event: pg_sys::XactEvent::Type) {
    use pg_sys::XactEvent::*;
    match event {
        XACT_EVENT_ABORT | XACT_EVENT_PARALLEL_ABORT => {
            if FLAGS.dirty.get() {
                drop_cache();
            }
            FLAGS.dirty.set(false);
        }
        XACT_EVENT_PRE_PREPARE if FLAGS.dirty.get() && crate::shmem::preloaded() => {
            crate::error::raise_full(
                ERRCODE_FEATURE_NOT_SUPPORTED,
                "cannot PREPARE a transaction that changed the pg_aicost pricing catalog".into(),
                Some("In shared-memory mode the shared catalog is renewed by the committing session.".into()),
                Some("Change prices in an ordinary transaction.".into()),
            )
        }
        // After the commit is visible to new snapshots: see catalog_shm.
        XACT_EVENT_COMMIT if FLAGS.dirty.replace(false) => crate::catalog_shm::bump(),
        XACT_EVENT_COMMIT | XACT_EVENT_PARALLEL_COMMIT | XACT_EVENT_PREPARE => {
            FLAGS.dirty.set(false)
        }
        _ => {}
    }
}

/// The pricing cache's step of a subtransaction event.
pub(crate) fn on_subxact(event: pg_sys::SubXactEvent::Type) {
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB && FLAGS.dirty.get() {
        drop_cache();
    }
}

/// Accepts pending invalidations once per statement (cheap when there are none).
fn accept_invalidations_once_per_statement() {
    // SAFETY: reads a backend-local timestamp; AcceptInvalidationMessages is what every lock
    // acquisition does and is safe at any point of query execution.
    unsafe {
        let ts = pg_sys::GetCurrentStatementStartTimestamp();
        if ts != FLAGS.last_statement.get() {
            FLAGS.last_statement.set(ts);
            pg_sys::AcceptInvalidationMessages();
            if FLAGS.loaded_in_parallel_mode.replace(false) {
                FLAGS.valid.set(false);
            }
        }
    }
}

/// The catalog to price with: the cached one, or (with `aicost.pricing_cache = off`) the rows that
/// may match `name`, read from the tables now.
pub fn catalog_for(name: &str) -> Rc<Catalog> {
    use aicost_core::limits::{MAX_MODEL_NAME_BYTES, check_len};
    if let Err(e) = check_len("model name", name, MAX_MODEL_NAME_BYTES) {
        raise(ERRCODE_INVALID_PARAMETER_VALUE, e.to_string());
    }
    if !crate::guc::PRICING_CACHE.get() {
        return Rc::new(load(Some(name)));
    }
    if use_shared() {
        return shared_catalog_for(name);
    }
    catalog()
}

/// Whether this call prices from the shared catalog: preloaded, not a standby (replayed catalog
/// changes reach backends as relcache invalidations, but nobody bumps the shared generation), and
/// this transaction has not changed the catalog (a parallel worker cannot know the leader's flag,
/// so it declines whenever the leader's transaction has written anything).
fn use_shared() -> bool {
    if !crate::shmem::preloaded() || FLAGS.dirty.get() {
        return false;
    }
    // SAFETY: reads backend-local globals (RecoveryInProgress caches its answer once false).
    let (standby, worker_of_writer) = unsafe {
        (
            pg_sys::RecoveryInProgress(),
            pg_sys::ParallelWorkerNumber >= 0
                && pg_sys::GetTopTransactionIdIfAny() != pg_sys::InvalidTransactionId,
        )
    };
    !standby && !worker_of_writer
}

/// This backend's view of the shared catalog: the generation read at the start of the statement,
/// the per-name catalogs decoded from it, and (when this backend had to read the tables) the
/// whole catalog.
#[derive(Default)]
struct SharedMemo {
    statement: pg_sys::TimestampTz,
    generation: u64,
    names: FxHashMap<Box<str>, Rc<Catalog>>,
    full: Option<Rc<Catalog>>,
}

thread_local! {
    static SHARED_MEMO: RefCell<SharedMemo> = RefCell::new(SharedMemo::default());
}

/// The generation this statement prices with, read at its first call.
fn statement_generation(memo: &mut SharedMemo) -> u64 {
    // SAFETY: reads the backend's statement start time.
    let ts = unsafe { pg_sys::GetCurrentStatementStartTimestamp() };
    if ts != memo.statement || memo.generation == 0 {
        memo.statement = ts;
        let g = crate::catalog_shm::generation();
        if g != memo.generation {
            memo.generation = g;
            memo.names.clear();
            memo.full = None;
        }
    }
    memo.generation
}

fn shared_catalog_for(name: &str) -> Rc<Catalog> {
    use crate::stats::{CatalogEvent::*, count_catalog};
    let (g, hit) = SHARED_MEMO.with(|m| {
        let mut m = m.borrow_mut();
        let g = statement_generation(&mut m);
        (g, m.full.clone().or_else(|| m.names.get(name).cloned()))
    });
    if let Some(c) = hit {
        count_catalog(Hit);
        return c;
    }
    if let Some(models) = crate::catalog_shm::candidates(g, name) {
        count_catalog(SharedRead);
        let c = Rc::new(Catalog::new(models));
        SHARED_MEMO.with(|m| {
            let mut m = m.borrow_mut();
            if m.names.len() >= 10_000 {
                m.names.clear(); // bounded: a workload of endless distinct names
            }
            m.names.insert(name.into(), c.clone());
        });
        return c;
    }
    // No shared catalog of this generation yet: read the tables (after `g` was read, so the
    // result is at least that new) and publish it for everyone.
    let full = Rc::new(load(None));
    count_catalog(LocalLoad);
    match crate::catalog_shm::publish(g, &full) {
        crate::catalog_shm::Published::Stored => count_catalog(SharedBuild),
        crate::catalog_shm::Published::AlreadyNewer => {}
        crate::catalog_shm::Published::TooBig { needed, capacity } => {
            count_catalog(SharedTooBig);
            warn_too_big(needed, capacity);
        }
    }
    SHARED_MEMO.with(|m| {
        let mut m = m.borrow_mut();
        if m.generation == g {
            m.full = Some(full.clone());
        }
    });
    full
}

fn warn_too_big(needed: usize, capacity: usize) {
    thread_local!(static WARNED: Cell<bool> = const { Cell::new(false) });
    if !WARNED.with(|w| w.replace(true)) {
        pgrx::warning!(
            "pg_aicost: the pricing catalog needs {} kB of shared memory but aicost.shmem_catalog_size is {} kB; \
             each session prices from its own copy instead",
            needed.div_ceil(1024),
            capacity / 1024
        );
    }
}

/// The whole cached catalog, reloaded if stale.
pub fn catalog() -> Rc<Catalog> {
    accept_invalidations_once_per_statement();
    if FLAGS.valid.get()
        && let Some(c) = CATALOG.with(|c| c.borrow().clone())
    {
        crate::stats::count_catalog(crate::stats::CatalogEvent::Hit);
        return c;
    }
    crate::stats::count_catalog(crate::stats::CatalogEvent::LocalLoad);
    // Mark valid before reading: an invalidation arriving during the read (taking a lock accepts
    // pending ones) marks it stale again, so the next call reloads and none is lost.
    FLAGS.valid.set(true);
    let guard = StaleOnUnwind;
    let c = Rc::new(load(None));
    std::mem::forget(guard);
    CATALOG.with(|slot| *slot.borrow_mut() = Some(c.clone()));
    c
}

/// Keeps the cache stale when a reload fails with an ERROR (pgrx unwinds Rust frames).
struct StaleOnUnwind;

impl Drop for StaleOnUnwind {
    fn drop(&mut self) {
        FLAGS.valid.set(false);
    }
}

const MODELS_SQL: &str = "SELECT m.model, m.provider, coalesce(a.aliases, '{}')
   FROM aicost.models m
   LEFT JOIN (SELECT model, array_agg(alias ORDER BY alias) AS aliases
                FROM aicost.model_aliases GROUP BY model) a ON a.model = m.model";
const PRICES_SQL: &str =
    "SELECT p.model, p.price_id, p.usage_type, p.service_tier, p.threshold_tokens,
        p.usd_per_mtok::text, lower(p.valid), upper(p.valid)
   FROM aicost.prices p";
// Only models whose canonical name or an alias could match by the resolution rules (a superset);
// the expression indexes of sql/catalog.sql serve every branch.
const CANDIDATES: &str = "model IN (
    SELECT m.model FROM aicost.models m
     WHERE lower(m.model) IN (lower($1), lower(substr($1, strpos($1, '/') + 1)))
        OR lower(substr(m.model, strpos(m.model, '/') + 1)) = lower($1)
    UNION
    SELECT a.model FROM aicost.model_aliases a
     WHERE lower(a.alias) IN (lower($1), lower(substr($1, strpos($1, '/') + 1))))";

fn ts(t: Option<TimestampWithTimeZone>, unbounded: i64) -> i64 {
    t.map_or(unbounded, |t| t.into_inner())
}

/// One row of a [`scan_latest`] result.
pub(crate) struct LatestRow {
    tuple: pg_sys::HeapTuple,
    desc: pg_sys::TupleDesc,
}

impl LatestRow {
    /// Column `col` (1-based), copied out of SPI's memory.
    pub(crate) fn get<T: FromDatum>(&self, col: i32) -> Option<T> {
        // SAFETY: tuple and descriptor come from SPI_tuptable of the query just run, still
        // connected; FromDatum copies the value into Rust-owned memory.
        unsafe {
            let mut is_null = false;
            let d = pg_sys::SPI_getbinval(self.tuple, self.desc, col, &mut is_null);
            T::from_polymorphic_datum(d, is_null, pg_sys::SPI_gettypeid(self.desc, col))
        }
    }
}

/// Runs a read-only query under the latest snapshot, as PostgreSQL's own catalog caches read the
/// catalogs: a reload triggered by an invalidation then sees what was committed, whatever the
/// snapshot of the calling statement or REPEATABLE READ transaction (and the transaction's own
/// earlier changes). Must run inside `Spi::connect`.
pub(crate) fn scan_latest(
    sql: &str,
    args: &[(pg_sys::Oid, pg_sys::Datum)],
    mut each: impl FnMut(&LatestRow),
) {
    let csql = std::ffi::CString::new(sql).expect("queries have no NUL");
    // SAFETY: SPI is connected by the caller; the pushed snapshot is popped right after the
    // query (on ERROR, transaction abort resets the active-snapshot stack).
    unsafe {
        // Parallel mode (a parallel query's leader or worker) cannot take a new snapshot: read
        // with the query's own, and let the next statement reload (see `catalog`).
        let parallel = pg_sys::IsInParallelMode();
        if parallel {
            // A cold load needs no second look: a change committed after the query's snapshot
            // sends an invalidation this backend has not consumed yet, which will reload then.
            if FLAGS.invalidations.get() != FLAGS.invalidations_at_load.get() {
                FLAGS.loaded_in_parallel_mode.set(true);
            }
        } else {
            pg_sys::PushActiveSnapshot(pg_sys::GetLatestSnapshot());
        }
        let rc = if args.is_empty() {
            pg_sys::SPI_execute(csql.as_ptr(), true, 0)
        } else {
            let mut types: Vec<pg_sys::Oid> = args.iter().map(|a| a.0).collect();
            let mut values: Vec<pg_sys::Datum> = args.iter().map(|a| a.1).collect();
            let nulls = vec![b' ' as std::ffi::c_char; args.len()];
            pg_sys::SPI_execute_with_args(
                csql.as_ptr(),
                args.len() as i32,
                types.as_mut_ptr(),
                values.as_mut_ptr(),
                nulls.as_ptr(),
                true,
                0,
            )
        };
        if !parallel {
            pg_sys::PopActiveSnapshot();
        }
        if rc != pg_sys::SPI_OK_SELECT as i32 {
            raise(
                ERRCODE_INTERNAL_ERROR,
                format!("pg_aicost: reading the catalog failed (SPI code {rc})"),
            );
        }
        let table = pg_sys::SPI_tuptable;
        for i in 0..pg_sys::SPI_processed as usize {
            if i % 1024 == 1023 {
                pg_sys::check_for_interrupts!();
            }
            each(&LatestRow {
                tuple: *(*table).vals.add(i),
                desc: (*table).tupdesc,
            });
        }
    }
}

/// Reads the catalog tables (all models, or the candidates for one name).
fn load(name: Option<&str>) -> Catalog {
    let (models_sql, prices_sql) = match name {
        Some(_) => (
            format!("{MODELS_SQL} WHERE m.{CANDIDATES}"),
            format!("{PRICES_SQL} WHERE p.{CANDIDATES}"),
        ),
        None => (MODELS_SQL.to_string(), PRICES_SQL.to_string()),
    };
    // Counted at the start: an invalidation arriving during the read still counts as unseen.
    let invalidations = FLAGS.invalidations.get();
    let arg: Vec<(pg_sys::Oid, pg_sys::Datum)> = name
        .map(|n| (pg_sys::TEXTOID, n.into_datum().expect("text is not null")))
        .into_iter()
        .collect();
    // As the extension's owner: the caller's right to price is EXECUTE on the function it called.
    crate::security::as_owner(|| {
        Spi::connect(|_| {
            scan_latest("SELECT 'aicost.prices'::regclass::oid", &[], |r| {
                FLAGS
                    .prices_relid
                    .set(r.get::<pg_sys::Oid>(1).unwrap_or(pg_sys::InvalidOid));
            });
            let mut prices: FxHashMap<String, Vec<PriceVersion>> = FxHashMap::default();
            scan_latest(&prices_sql, &arg, |row| {
                let get_text = |i| row.get::<String>(i).unwrap_or_default();
                let model = get_text(1);
                let usage = UsageType::parse(&get_text(3));
                let tier = ServiceTier::parse(&get_text(4));
                let rate = Decimal::from_str(&get_text(6)).ok();
                let (Some(usage), Some(tier), Some(rate)) = (usage, tier, rate) else {
                    raise(
                        ERRCODE_DATA_CORRUPTED,
                        format!("unreadable price row for model \"{model}\" in aicost.prices"),
                    );
                };
                prices.entry(model).or_default().push(PriceVersion {
                    price_id: row.get::<i64>(2).unwrap_or_default(),
                    usage,
                    tier,
                    threshold_tokens: row.get::<i64>(5).unwrap_or_default(),
                    usd_per_mtok: rate,
                    valid_from: ts(row.get(7), i64::MIN),
                    valid_to: ts(row.get(8), i64::MAX),
                });
            });
            let mut models = Vec::new();
            scan_latest(&models_sql, &arg, |row| {
                let name: String = row.get(1).unwrap_or_default();
                models.push(Model {
                    provider: row.get(2).unwrap_or_default(),
                    aliases: row.get::<Vec<String>>(3).unwrap_or_default(),
                    prices: prices.remove(&name).unwrap_or_default(),
                    name,
                });
            });
            FLAGS.invalidations_at_load.set(invalidations);
            Catalog::new(models)
        })
    })
}

/// Resolves `name` to a model or raises the documented error (42704 unknown, 42P09 ambiguous);
/// with `null_if_unknown`, an unknown name gives None instead.
pub fn resolve<'a>(
    catalog: &'a Catalog,
    name: &str,
    null_if_unknown: bool,
) -> Option<(&'a Model, aicost_core::MatchKind)> {
    match catalog.resolve(name) {
        Resolved::Found(m, k) => Some((m, k)),
        Resolved::Ambiguous(names) => raise_with(
            ERRCODE_AMBIGUOUS_ALIAS,
            format!("model name \"{name}\" is ambiguous"),
            Some(format!("It matches {}.", names.join(", "))),
            Some("Use the provider-prefixed canonical name.".into()),
        ),
        Resolved::NotFound => {
            if null_if_unknown {
                return None;
            }
            // A candidate-only catalog (pricing_cache = off, or one decoded from the shared
            // catalog) cannot suggest; ask the whole one.
            let suggestions = if !crate::guc::PRICING_CACHE.get() {
                load(None).suggest(name, 5)
            } else if use_shared()
                && !SHARED_MEMO.with(|m| {
                    m.borrow()
                        .full
                        .as_ref()
                        .is_some_and(|f| std::ptr::eq(&**f, catalog))
                })
            {
                let g = SHARED_MEMO.with(|m| m.borrow().generation);
                crate::catalog_shm::suggest(g, name, 5).unwrap_or_else(|| catalog.suggest(name, 5))
            } else {
                catalog.suggest(name, 5)
            };
            let hint = if suggestions.is_empty() {
                "Add it with ai_pricing_import() or INSERT INTO aicost.models / ai_price_set()."
                    .to_string()
            } else {
                format!(
                    "Did you mean {}?",
                    suggestions
                        .iter()
                        .map(|s| format!("\"{s}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            raise_with(
                ERRCODE_UNDEFINED_OBJECT,
                format!("unknown model \"{name}\""),
                Some("The model is not in the pg_aicost pricing catalog (aicost.models, aicost.model_aliases).".into()),
                Some(hint),
            )
        }
    }
}

fn raise_with(
    code: PgSqlErrorCode,
    msg: String,
    detail: Option<String>,
    hint: Option<String>,
) -> ! {
    crate::error::raise_full(code, msg, detail, hint)
}

/// Canonical name of a model, by pg_aicost's matching rules (exact, alias, case-insensitive,
/// provider prefix, unprefixed).
#[pg_extern(stable, parallel_safe, strict)]
fn ai_model_resolve(name: &str) -> String {
    let c = catalog_for(name);
    resolve(&c, name, false)
        .map(|(m, _)| m.name.clone())
        .unwrap_or_default()
}

#[pg_schema]
mod aicost {
    use pgrx::prelude::*;

    /// Called by the catalog tables' statement triggers: queues a relcache invalidation that
    /// PostgreSQL delivers transactionally (see the module docs).
    #[pg_extern(volatile, parallel_unsafe)]
    fn _invalidate_pricing_cache(prices: pg_sys::Oid) {
        super::FLAGS.dirty.set(true);
        // SAFETY: queues an invalidation message for a relation oid; no memory is shared.
        unsafe { pg_sys::CacheInvalidateRelcacheByRelid(prices) };
    }
}

/// Normalized rows for `aicost._apply_prices`.
fn normalized(doc: &ImportDoc) -> Value {
    Value::Array(
        doc.models
            .iter()
            .map(|m| {
                let prices: Vec<Value> = m
                    .prices
                    .iter()
                    .map(|p| {
                        json!({
                            "usage_type": p.usage.as_str(),
                            "service_tier": p.tier.as_str(),
                            "threshold_tokens": p.threshold_tokens,
                            "usd_per_mtok": exact_number(p.usd_per_mtok),
                        })
                    })
                    .collect();
                json!({
                    "model": m.name, "provider": m.provider, "mode": m.mode, "source": m.source,
                    "as_of": m.as_of, "aliases": m.aliases, "prices": prices,
                    "max_input_tokens": m.max_input_tokens,
                })
            })
            .collect(),
    )
}

/// A JSON number carrying the decimal's exact text.
pub fn exact_number(d: Decimal) -> Value {
    Value::Number(
        serde_json::Number::from_str(&d.normalize().to_string())
            .expect("a decimal is a JSON number"),
    )
}

fn apply(doc: &ImportDoc, origin: &str) -> i32 {
    let rows = JsonB(normalized(doc));
    let (new, changed, unchanged) = Spi::connect_mut(|client| {
        let t = client
            .update(
                "SELECT new_prices, changed_prices, unchanged_prices FROM aicost._apply_prices($1, $2, now())",
                None,
                &[rows.into(), origin.into()],
            )
            .or_internal("applying prices")
            .first();
        (
            t.get::<i64>(1).ok().flatten().unwrap_or(0),
            t.get::<i64>(2).ok().flatten().unwrap_or(0),
            t.get::<i64>(3).ok().flatten().unwrap_or(0),
        )
    });
    pgrx::notice!(
        "pg_aicost: {} models: {new} new prices, {changed} changed (old versions closed), {unchanged} unchanged; \
         skipped {} entries without token prices and {} non-token price keys",
        doc.models.len(),
        doc.skipped_entries,
        doc.skipped_keys
    );
    i32::try_from(doc.models.len()).unwrap_or(i32::MAX)
}

fn parse_litellm(doc: &Value) -> ImportDoc {
    litellm::parse_doc(doc).unwrap_or_else(|e| {
        raise(
            ERRCODE_INVALID_PARAMETER_VALUE,
            format!("invalid price document: {e}"),
        )
    })
}

/// Loads a price document (LiteLLM's model_prices_and_context_window.json). Changed prices become
/// new versions (the old ones are closed now), unchanged ones are left alone. Returns the number of
/// models in the document that have token prices.
#[pg_extern(volatile, parallel_unsafe)]
fn ai_pricing_import(doc: crate::json::JsonArg, format: default!(&str, "'litellm'")) -> i32 {
    if !format.eq_ignore_ascii_case("litellm") {
        crate::error::raise_full(
            ERRCODE_INVALID_PARAMETER_VALUE,
            format!("unknown price document format \"{format}\""),
            None,
            Some("Supported formats: litellm.".into()),
        );
    }
    apply(&parse_litellm(&doc.0), "import")
}

/// The default catalog shipped with the extension (data/default_catalog.json).
const DEFAULT_CATALOG: &str = include_str!("../data/default_catalog.json");

/// (Re)loads the shipped default catalog: list prices of widely used OpenAI, Anthropic, Google,
/// Mistral, DeepSeek and xAI models. Run by CREATE EXTENSION; idempotent.
#[pg_extern(volatile, parallel_unsafe)]
fn ai_pricing_load_default() -> i32 {
    let doc: Value = serde_json::from_str(DEFAULT_CATALOG).expect("default catalog is valid JSON");
    apply(&parse_litellm(&doc), "default")
}
