//! Shared-memory budget admission (stub: being written).

pub fn shmem_size() -> usize {
    0
}

/// # Safety
/// Startup hook only.
pub unsafe fn shmem_startup() {}
