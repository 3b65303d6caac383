//! The shared pricing catalog (shared-memory mode): the whole resolved catalog, frozen
//! (`aicost_core::frozen`) into one region that every backend reads in place, so a new connection
//! prices its first call without reading the catalog tables.
//!
//! Correctness equals the per-backend cache (see `pricing`):
//! - `generation` counts committed catalog changes. The committing backend bumps it in its
//!   XACT_EVENT_COMMIT callback, which PostgreSQL runs after the commit is visible to new snapshots,
//!   and never on abort. A prepared transaction that changed the catalog is refused (its commit
//!   could come from another session, which would not know to bump).
//! - The frozen bytes are tagged with `built_gen`, the generation the builder read *before* it read
//!   the tables (under the latest snapshot): they hold every change whose bump is counted in
//!   `built_gen`, perhaps more, never less. A reader that read generation `g` uses them only when
//!   `built_gen >= g`, so it never prices with data older than the generation it recorded.
//! - A backend whose own transaction changed the catalog prices from its own tables (it must see its
//!   uncommitted change); so does a parallel worker of a transaction that wrote anything.
//!
//! Locking: readers take [`LOCK_CATALOG`](crate::shmem::LOCK_CATALOG) shared while they decode the
//! few models a name can match (microseconds) and never block each other; a builder takes it
//! exclusively only to copy the frozen bytes in. Nothing that can ERROR runs under the lock.

use crate::shmem::{self, LOCK_CATALOG, LwGuard};
use aicost_core::frozen::{FrozenCatalog, freeze};
use aicost_core::{Catalog, Model};
use std::sync::atomic::{AtomicU64, Ordering};

#[repr(C)]
struct Header {
    /// Committed catalog changes since server start (starts at 1: nothing is built yet).
    generation: AtomicU64,
    /// Generation the bytes were built for; 0 = none. Written under the exclusive lock.
    built_gen: AtomicU64,
    /// Generation whose catalog did not fit; builders of it skip publishing.
    too_big_gen: AtomicU64,
    /// Valid bytes after the header.
    len: AtomicU64,
    capacity: u64,
}

static mut HEADER: *mut Header = std::ptr::null_mut();

fn capacity() -> usize {
    usize::try_from(crate::guc::SHMEM_CATALOG_SIZE.get()).unwrap_or(0) * 1024
}

pub fn shmem_size() -> usize {
    size_of::<Header>() + capacity()
}

/// # Safety
/// Startup hook only (see `shmem`).
pub unsafe fn shmem_startup() {
    // SAFETY: called under AddinShmemInitLock with shared memory attached.
    unsafe {
        let (p, found) = shmem::init_struct(c"pg_aicost catalog", shmem_size());
        let h = p.cast::<Header>();
        if !found {
            h.write(Header {
                generation: AtomicU64::new(1),
                built_gen: AtomicU64::new(0),
                too_big_gen: AtomicU64::new(0),
                len: AtomicU64::new(0),
                capacity: capacity() as u64,
            });
        }
        HEADER = h;
    }
}

fn header() -> Option<&'static Header> {
    // SAFETY: set once in the postmaster before any backend forked; shared memory outlives us.
    unsafe { HEADER.as_ref() }
}

/// The current generation (0 when not preloaded).
#[inline]
pub fn generation() -> u64 {
    header().map_or(0, |h| h.generation.load(Ordering::Acquire))
}

/// Called at commit of a transaction that changed the catalog.
pub fn bump() {
    if let Some(h) = header() {
        h.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// Runs `f` over the frozen catalog if it is at least as new as generation `g`.
fn with_frozen<R>(g: u64, f: impl FnOnce(&FrozenCatalog<'_>) -> R) -> Option<R> {
    let h = header()?;
    if h.built_gen.load(Ordering::Acquire) < g {
        return None;
    }
    let _lock = LwGuard::shared(LOCK_CATALOG);
    if h.built_gen.load(Ordering::Acquire) < g {
        return None;
    }
    let len = h.len.load(Ordering::Acquire) as usize;
    // SAFETY: the bytes after the header are written only under the exclusive lock, which we
    // exclude by holding it shared; len never exceeds the capacity.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (h as *const Header).add(1).cast::<u8>(),
            len.min(h.capacity as usize),
        )
    };
    let frozen = FrozenCatalog::new(bytes).ok()?;
    Some(f(&frozen))
}

/// The models `name` could match, from a shared catalog at least as new as `g`; None when there
/// is none yet (the caller builds one).
pub fn candidates(g: u64, name: &str) -> Option<Vec<Model>> {
    with_frozen(g, |f| f.candidates(name))
}

/// Close names for an error hint, from the shared catalog.
pub fn suggest(g: u64, name: &str, n: usize) -> Option<Vec<String>> {
    with_frozen(g, |f| f.suggest(name, n))
}

/// Whether the catalog of generation `g` is known not to fit.
pub fn too_big(g: u64) -> bool {
    header().is_some_and(|h| h.too_big_gen.load(Ordering::Acquire) >= g)
}

/// What [`publish`] did.
pub enum Published {
    Stored,
    /// Someone else stored one at least as new.
    AlreadyNewer,
    TooBig { needed: usize, capacity: usize },
}

/// Stores `catalog`, read from the tables after generation `g` was read, unless a newer one is
/// there already.
pub fn publish(g: u64, catalog: &Catalog) -> Published {
    let Some(h) = header() else {
        return Published::AlreadyNewer;
    };
    if h.built_gen.load(Ordering::Acquire) >= g {
        return Published::AlreadyNewer;
    }
    let bytes = freeze(catalog);
    if bytes.len() > h.capacity as usize {
        h.too_big_gen.fetch_max(g, Ordering::AcqRel);
        return Published::TooBig {
            needed: bytes.len(),
            capacity: h.capacity as usize,
        };
    }
    let _lock = LwGuard::exclusive(LOCK_CATALOG);
    if h.built_gen.load(Ordering::Acquire) >= g {
        return Published::AlreadyNewer;
    }
    // SAFETY: we hold the exclusive lock, so no reader is looking at the bytes; they fit.
    unsafe {
        std::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            (h as *const Header).add(1).cast::<u8>().cast_mut(),
            bytes.len(),
        );
    }
    h.len.store(bytes.len() as u64, Ordering::Release);
    h.built_gen.store(g, Ordering::Release);
    Published::Stored
}
