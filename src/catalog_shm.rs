//! The shared pricing catalog (shared-memory mode): each database's resolved catalog, frozen
//! (`aicost_core::frozen`) into a slot of shared memory that its backends read in place, so a new
//! connection prices its first call without reading the catalog tables.
//!
//! Correctness equals the per-backend cache (see `pricing`):
//! - Generations are numbers drawn from one cluster-wide counter. A transaction that changed the
//!   catalog draws a new one at commit (XACT_EVENT_COMMIT, which PostgreSQL runs after the commit is
//!   visible to new snapshots; never on abort) and raises its database's slot generation to it. A
//!   prepared transaction that changed the catalog is refused (its commit could come from another
//!   session, which would not know to bump).
//! - A backend reads its database's generation `g` once per statement (the cluster counter when
//!   the database has no slot). The frozen bytes are tagged with `built_gen`, the `g` their builder
//!   read *before* it read the tables (under the latest snapshot): they hold every change counted
//!   in `g`, perhaps more, never less. A reader uses them only when `built_gen >= g`.
//! - A slot claimed for a database starts at the cluster counter's current value, so a change that
//!   committed while the claimer was reading the tables makes its copy stale at once.
//! - A backend whose own transaction changed the catalog prices from its own tables (it must see its
//!   uncommitted change); so does a parallel worker of a transaction that wrote anything.
//!
//! Locking: [`LOCK_CATALOG`](crate::shmem::LOCK_CATALOG) shared to read a slot's generation or
//! decode the few models a name can match (microseconds); readers never block each other.
//! Exclusive only to claim a slot or copy frozen bytes in. Nothing that can ERROR runs under it.

use crate::shmem::{self, LOCK_CATALOG, LwGuard, database};
use aicost_core::frozen::{FrozenCatalog, freeze};
use aicost_core::{Catalog, Model};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

#[repr(C)]
struct Header {
    /// The cluster-wide generation counter.
    counter: AtomicU64,
    slots: u64,
    capacity: u64,
}

/// One database's shared catalog; its frozen bytes follow the slot table.
#[repr(C)]
struct Slot {
    /// Database oid, 0 = free. Written under the exclusive lock.
    database: AtomicU32,
    generation: AtomicU64,
    /// Generation the bytes were built for; 0 = none. Written under the exclusive lock.
    built_gen: AtomicU64,
    len: AtomicU64,
    /// Counter value at the last use, to replace the least recently used slot.
    last_used: AtomicU64,
}

static mut HEADER: *mut Header = std::ptr::null_mut();

fn capacity() -> usize {
    usize::try_from(crate::guc::SHMEM_CATALOG_SIZE.get()).unwrap_or(0) * 1024
}

fn n_slots() -> usize {
    usize::try_from(crate::guc::SHMEM_CATALOG_DATABASES.get()).unwrap_or(1)
}

pub fn shmem_size() -> usize {
    size_of::<Header>() + n_slots() * (size_of::<Slot>() + capacity())
}

/// # Safety
/// Startup hook only (see `shmem`).
pub unsafe fn shmem_startup() {
    // SAFETY: called under AddinShmemInitLock with shared memory attached; a new region is zeroed
    // (every slot free).
    unsafe {
        let (p, found) = shmem::init_struct(c"pg_aicost catalog", shmem_size());
        if !found {
            std::ptr::write_bytes(p, 0, shmem_size());
            p.cast::<Header>().write(Header {
                counter: AtomicU64::new(1),
                slots: n_slots() as u64,
                capacity: capacity() as u64,
            });
        }
        HEADER = p.cast();
    }
}

fn header() -> Option<&'static Header> {
    // SAFETY: set once in the postmaster before any backend forked; shared memory outlives us.
    unsafe { HEADER.as_ref() }
}

fn slots(h: &Header) -> &[Slot] {
    // SAFETY: the slot table follows the header (both 8-byte aligned, sizes multiples of 8).
    unsafe {
        std::slice::from_raw_parts((h as *const Header).add(1).cast::<Slot>(), h.slots as usize)
    }
}

fn bytes_ptr(h: &Header, i: usize) -> *mut u8 {
    // SAFETY: slot i's bytes lie after the slot table, capacity bytes each.
    unsafe {
        (h as *const Header)
            .add(1)
            .cast::<Slot>()
            .add(h.slots as usize)
            .cast::<u8>()
            .add(i * h.capacity as usize)
            .cast_mut()
    }
}

/// This database's slot. Caller holds LOCK_CATALOG.
fn my_slot(h: &Header) -> Option<(usize, &Slot)> {
    let db = database();
    slots(h)
        .iter()
        .enumerate()
        .find(|(_, s)| s.database.load(Ordering::Acquire) == db)
}

/// The generation a statement prices with (0 when not preloaded).
pub fn generation() -> u64 {
    let Some(h) = header() else { return 0 };
    let _lock = LwGuard::shared(LOCK_CATALOG);
    match my_slot(h) {
        Some((_, s)) => {
            s.last_used
                .store(h.counter.load(Ordering::Relaxed), Ordering::Relaxed);
            s.generation.load(Ordering::Acquire)
        }
        None => h.counter.load(Ordering::Acquire),
    }
}

/// Called at commit of a transaction that changed the catalog.
pub fn bump() {
    let Some(h) = header() else { return };
    let g = h.counter.fetch_add(1, Ordering::AcqRel) + 1;
    let _lock = LwGuard::shared(LOCK_CATALOG);
    if let Some((_, s)) = my_slot(h) {
        s.generation.fetch_max(g, Ordering::AcqRel);
    }
}

/// Runs `f` over this database's frozen catalog if it is at least as new as generation `g`.
fn with_frozen<R>(g: u64, f: impl FnOnce(&FrozenCatalog<'_>) -> R) -> Option<R> {
    let h = header()?;
    let _lock = LwGuard::shared(LOCK_CATALOG);
    let (i, s) = my_slot(h)?;
    if s.built_gen.load(Ordering::Acquire) < g {
        return None;
    }
    let len = (s.len.load(Ordering::Acquire) as usize).min(h.capacity as usize);
    // SAFETY: the bytes are written only under the exclusive lock, which we exclude by holding
    // it shared; len never exceeds the capacity.
    let bytes = unsafe { std::slice::from_raw_parts(bytes_ptr(h, i), len) };
    let frozen = FrozenCatalog::new(bytes).ok()?;
    Some(f(&frozen))
}

/// The models `name` could match, from a shared catalog at least as new as `g`; None when there
/// is none yet (the caller builds one).
pub fn candidates(g: u64, name: &str) -> Option<Vec<Model>> {
    with_frozen(g, |f| f.candidates(name))
}

/// Close names for an error hint, from the shared catalog: the names are copied under the lock,
/// the (interruptible) edit distances computed after releasing it.
pub fn suggest(g: u64, name: &str, n: usize) -> Option<Vec<String>> {
    if name.trim().chars().count() > aicost_core::limits::MAX_SUGGEST_CHARS {
        return Some(Vec::new());
    }
    let names = with_frozen(g, |f| f.key_names())?;
    Some(aicost_core::catalog::suggest_from(
        names.iter().map(String::as_str),
        name,
        n,
    ))
}

/// What [`publish`] did.
pub enum Published {
    Stored,
    /// Someone else stored one at least as new.
    AlreadyNewer,
    TooBig {
        needed: usize,
        capacity: usize,
    },
}

/// Stores `catalog`, read from the tables after generation `g` was read, unless a newer one is
/// there already; claims a slot for this database (replacing the least recently used one) if needed.
pub fn publish(g: u64, catalog: &Catalog) -> Published {
    let Some(h) = header() else {
        return Published::AlreadyNewer;
    };
    let bytes = freeze(catalog);
    if bytes.len() > h.capacity as usize {
        // Not worth a slot (nor taking one from another database).
        return Published::TooBig {
            needed: bytes.len(),
            capacity: h.capacity as usize,
        };
    }
    let _lock = LwGuard::exclusive(LOCK_CATALOG);
    let (i, s) = match my_slot(h) {
        Some(x) => x,
        None => {
            let all = slots(h);
            let (i, s) = all
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| {
                    (
                        s.database.load(Ordering::Relaxed) != 0,
                        s.last_used.load(Ordering::Relaxed),
                    )
                })
                .expect("at least one slot");
            let now = h.counter.load(Ordering::Acquire);
            s.built_gen.store(0, Ordering::Release);
            s.len.store(0, Ordering::Release);
            s.generation.store(now, Ordering::Release);
            s.last_used.store(now, Ordering::Relaxed);
            s.database.store(database(), Ordering::Release);
            (i, s)
        }
    };
    if s.built_gen.load(Ordering::Acquire) >= g {
        return Published::AlreadyNewer;
    }
    // SAFETY: we hold the exclusive lock, so no reader is looking at the bytes; they fit.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), bytes_ptr(h, i), bytes.len()) };
    s.len.store(bytes.len() as u64, Ordering::Release);
    s.built_gen.store(g, Ordering::Release);
    Published::Stored
}
