//! Shared memory, allocated only when pg_aicost is in `shared_preload_libraries`.
//!
//! Four regions, each a `ShmemInitStruct` of its own module, sized by GUCs read at server start:
//! - `pg_aicost catalog` ([`crate::catalog_shm`]): the frozen pricing catalog and its generation;
//! - `pg_aicost stats` ([`crate::stats`]): the counters behind `aicost.stat_*`;
//! - `pg_aicost budgets` ([`crate::budget`]): committed and in-flight spend per budget period;
//! - `pg_aicost breakers` ([`crate::breaker`]): circuit-breaker states per model and provider.
//!
//! Locking rules (each module restates its own):
//! - one named LWLock tranche `pg_aicost` with [`N_LOCKS`] locks: [`LOCK_CATALOG`] guards the frozen
//!   catalog bytes, [`LOCK_BUDGETS`] guards the budget table's slot allocation;
//! - counters are atomics or sit under a per-entry [`SpinLock`] held for a few instructions;
//! - no code that can raise an ERROR runs while an LWLock or spinlock is held, and no lock is
//!   held across SPI, so a backend never waits on another one's query;
//! - lock order: LWLock before spinlock, never two spinlocks at once.
//!
//! After a crash the postmaster reinitializes shared memory and these startup hooks run again: every
//! region starts empty and is rebuilt from the tables (see each module).

use pgrx::pg_sys;
use std::ffi::CStr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

pub const LOCK_CATALOG: usize = 0;
pub const LOCK_BUDGETS: usize = 1;
pub const N_LOCKS: usize = 2;
const TRANCHE: &CStr = c"pg_aicost";

static PRELOADED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Set on the thread that ran `_PG_init` (the backend's; inherited by forked backends).
    static PG_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}
// Set by the postmaster's startup hook; backends inherit them through fork().
static mut LOCKS: *mut pg_sys::LWLockPadded = std::ptr::null_mut();
#[cfg(not(any(feature = "pg13", feature = "pg14")))]
static mut PREV_REQUEST_HOOK: pg_sys::shmem_request_hook_type = None;
static mut PREV_STARTUP_HOOK: pg_sys::shmem_startup_hook_type = None;

/// This backend's database: shared state is kept per database (catalogs, budget ids).
pub fn database() -> u32 {
    // SAFETY: reads this backend's database, fixed for its lifetime.
    unsafe { pg_sys::MyDatabaseId }.to_u32()
}

/// Whether this server loaded pg_aicost through `shared_preload_libraries` (shared-memory mode).
#[inline]
pub fn preloaded() -> bool {
    PRELOADED.load(Ordering::Relaxed)
}

/// Called from `_PG_init` after the GUCs are defined.
pub fn init() {
    PG_THREAD.set(true);
    // SAFETY: reads a postmaster global; installs hooks once, in the postmaster, before forking.
    unsafe {
        if !pg_sys::process_shared_preload_libraries_in_progress {
            return;
        }
        PRELOADED.store(true, Ordering::Relaxed);
        crate::guc::register_shmem();
        // PostgreSQL 15 added shmem_request_hook; before it, _PG_init requests directly.
        #[cfg(any(feature = "pg13", feature = "pg14"))]
        request();
        #[cfg(not(any(feature = "pg13", feature = "pg14")))]
        {
            PREV_REQUEST_HOOK = pg_sys::shmem_request_hook;
            pg_sys::shmem_request_hook = Some(shmem_request);
        }
        PREV_STARTUP_HOOK = pg_sys::shmem_startup_hook;
        pg_sys::shmem_startup_hook = Some(shmem_startup);
    }
}

/// A shared-memory size set without preloading would silently do nothing: say so instead. The
/// settings are not defined then, so a value in postgresql.conf shows as a placeholder. Called
/// first thing in `_PG_init`: a failed `_PG_init` runs again at the next call, so it must fail
/// before defining anything.
pub fn refuse_shmem_gucs() {
    // SAFETY: reads a postmaster global.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    for name in crate::guc::SHMEM_GUCS {
        // SAFETY: reads a configuration value by name (NULL when it does not exist).
        let set = unsafe { !pg_sys::GetConfigOption(name.as_ptr(), true, false).is_null() };
        if set {
            crate::error::raise_full(
                pgrx::PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "{} is set but pg_aicost is not in shared_preload_libraries",
                    name.to_string_lossy()
                ),
                Some(
                    "Shared-memory settings only take effect when the library is preloaded.".into(),
                ),
                Some(
                    "Add pg_aicost to shared_preload_libraries and restart, or remove the setting."
                        .into(),
                ),
            );
        }
    }
}

fn total_size() -> usize {
    crate::catalog_shm::shmem_size()
        + crate::stats::shmem_size()
        + crate::budget::shmem_size()
        + crate::breaker::shmem_size()
}

/// Requests the shared memory and the LWLock tranche (postmaster, while preloading only).
unsafe fn request() {
    // SAFETY: called by the postmaster in its shmem_request phase (or _PG_init before 15).
    unsafe {
        pg_sys::RequestAddinShmemSpace(total_size());
        pg_sys::RequestNamedLWLockTranche(TRANCHE.as_ptr(), N_LOCKS as i32);
    }
}

#[cfg(not(any(feature = "pg13", feature = "pg14")))]
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn shmem_request() {
    // SAFETY: called by the postmaster in its shmem_request phase.
    unsafe {
        if let Some(prev) = PREV_REQUEST_HOOK {
            prev();
        }
        request();
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn shmem_startup() {
    // SAFETY: called by the postmaster (and again after a crash) with shared memory attached;
    // AddinShmemInitLock serializes it with other libraries' initialization, as contrib does.
    unsafe {
        if let Some(prev) = PREV_STARTUP_HOOK {
            prev();
        }
        let init_lock = &raw mut (*pg_sys::MainLWLockArray.add(21)).lock; // AddinShmemInitLock
        pg_sys::LWLockAcquire(init_lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        LOCKS = pg_sys::GetNamedLWLockTranche(TRANCHE.as_ptr());
        crate::catalog_shm::shmem_startup();
        crate::stats::shmem_startup();
        crate::budget::shmem_startup();
        crate::breaker::shmem_startup();
        pg_sys::LWLockRelease(init_lock);
    }
}

/// `ShmemInitStruct`: the region's address and whether it existed already. Startup hooks only.
pub unsafe fn init_struct(name: &CStr, size: usize) -> (*mut u8, bool) {
    let mut found = false;
    // SAFETY: the caller runs in a startup hook, under AddinShmemInitLock.
    let p = unsafe { pg_sys::ShmemInitStruct(name.as_ptr(), size, &mut found) };
    (p.cast(), found)
}

/// Holds one of the tranche's LWLocks; released on drop.
pub struct LwGuard(*mut pg_sys::LWLock);

impl LwGuard {
    pub fn shared(i: usize) -> LwGuard {
        Self::acquire(i, pg_sys::LWLockMode::LW_SHARED)
    }

    pub fn exclusive(i: usize) -> LwGuard {
        Self::acquire(i, pg_sys::LWLockMode::LW_EXCLUSIVE)
    }

    fn acquire(i: usize, mode: pg_sys::LWLockMode::Type) -> LwGuard {
        assert!(i < N_LOCKS && preloaded());
        // SAFETY: LOCKS points at N_LOCKS locks of our tranche, set up before any backend forked.
        unsafe {
            let lock = &raw mut (*LOCKS.add(i)).lock;
            pg_sys::LWLockAcquire(lock, mode);
            LwGuard(lock)
        }
    }
}

impl Drop for LwGuard {
    fn drop(&mut self) {
        // While an ERROR unwinds, transaction abort releases every LWLock (LWLockReleaseAll);
        // releasing here too would release a lock twice.
        if !std::thread::panicking() {
            // SAFETY: acquired by this guard.
            unsafe { pg_sys::LWLockRelease(self.0) }
        }
    }
}

/// A test-and-set spinlock living in shared memory. Held only for a few loads and stores (never
/// across anything that can ERROR); a backend killed while holding it takes the postmaster's
/// crash-and-reinitialize path, which recreates the lock.
#[repr(C)]
pub struct SpinLock(AtomicU32);

impl SpinLock {
    #[inline]
    pub fn lock(&self) -> SpinGuard<'_> {
        if self
            .0
            .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
        SpinGuard(self)
    }

    /// PostgreSQL's own wait for a busy spinlock (s_lock.c): spins, then sleeps of growing length,
    /// and PANIC "stuck spinlock" if it stays taken for about a minute (its holder can only have
    /// died holding it, which resets shared memory anyway).
    #[cold]
    fn lock_contended(&self) {
        let mut delay = pg_sys::SpinDelayStatus {
            spins: 0,
            delays: 0,
            cur_delay: 0,
            file: c"src/shmem.rs".as_ptr(),
            line: line!() as i32,
            func: c"SpinLock::lock".as_ptr(),
        };
        // PostgreSQL may only be called from the backend's own thread (tests also take these
        // locks from threads of their own: those just yield).
        let pg_thread = PG_THREAD.get();
        loop {
            if self.0.load(Ordering::Relaxed) == 0
                && self
                    .0
                    .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                break;
            }
            if pg_thread {
                // SAFETY: plain C functions on a local status struct.
                unsafe { pg_sys::perform_spin_delay(&raw mut delay) };
            } else {
                std::thread::yield_now();
            }
        }
        if pg_thread {
            // SAFETY: as above; adapts spins_per_delay like s_lock does.
            unsafe { pg_sys::finish_spin_delay(&raw mut delay) };
        }
    }
}

pub struct SpinGuard<'a>(&'a SpinLock);

impl Drop for SpinGuard<'_> {
    fn drop(&mut self) {
        self.0.0.store(0, Ordering::Release);
    }
}
