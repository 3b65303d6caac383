//! A fixed-capacity, insert-only hash table that works lock-free in memory shared by processes
//! (pg_aicost's statistics in shared memory): the caller lays out a [`TableHeader`], a slice of
//! [`Slot`]s (zeroed: empty) and a slice of entries, and builds a [`Table`] over them.
//!
//! Rules:
//! - the index has twice the capacity, rounded up to a power of two ([`n_slots`]), so it is at most
//!   half full and a probe for an absent key ends quickly at an empty slot;
//! - a slot is claimed without locks: its state word goes EMPTY→CLAIMED by compare-and-swap (one
//!   winner), the winner takes an entry, writes the key, then stores READY with Release ordering;
//!   readers Acquire-load the state and spin while it is CLAIMED (a few stores long). Keys are
//!   written once, before READY, and never again: entries are never removed;
//! - the capacity is reserved (a counter) before an empty slot is claimed, so a full table never
//!   claims slots for keys it cannot hold and probes for them stay short.

use std::cell::UnsafeCell;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

/// Index slots for `cap` entries: twice as many, rounded up to a power of two.
pub fn n_slots(cap: u32) -> u32 {
    (cap.max(1) * 2).next_power_of_two()
}

impl Slot {
    /// An empty slot (all zero, like shared memory fresh from the allocator).
    pub const fn new() -> Slot {
        Slot {
            state: AtomicU32::new(EMPTY),
            entry: UnsafeCell::new(0),
            hash: UnsafeCell::new(0),
        }
    }
}

impl Default for Slot {
    fn default() -> Slot {
        Slot::new()
    }
}

impl TableHeader {
    /// A header for `cap` entries.
    pub fn new(cap: u32) -> TableHeader {
        TableHeader {
            cap,
            n_slots: n_slots(cap),
            reserved: AtomicU32::new(0),
            next: AtomicU32::new(0),
        }
    }
}

impl<'a, E> Table<'a, E> {
    /// A table over its parts: `slots.len() == hdr.n_slots` and `entries.len() == hdr.cap`, all
    /// zeroed when the table is new, and the same parts in every process that uses it.
    pub fn new(hdr: &'a TableHeader, slots: &'a [Slot], entries: &'a [E]) -> Table<'a, E> {
        assert!(slots.len() == hdr.n_slots as usize && slots.len().is_power_of_two());
        assert!(entries.len() == hdr.cap as usize);
        Table {
            hdr,
            slots,
            entries,
        }
    }
}

const EMPTY: u32 = 0;
const CLAIMED: u32 = 1;
const READY: u32 = 2;

/// One index slot: `entry` and `hash` are written by the claiming process while the state is
/// CLAIMED and only read after an Acquire load sees READY.
#[repr(C)]
pub struct Slot {
    state: AtomicU32,
    entry: UnsafeCell<u32>,
    hash: UnsafeCell<u64>,
}

// SAFETY: the cells are written by one claimer and published with Release (see the rules above).
unsafe impl Sync for Slot {}

/// A table's size and allocation counters (in the region header).
#[repr(C)]
pub struct TableHeader {
    /// Entries; set once before the region is published.
    pub cap: u32,
    /// Index slots (a power of two, at least 2 × cap); set once before the region is published.
    pub n_slots: u32,
    /// Entries reserved: claimed slots plus claims in progress. Never above `cap`.
    reserved: AtomicU32,
    /// Next entry to hand out (only slot claimers take one, each holding a reservation).
    next: AtomicU32,
}

pub trait Entry {
    type Key: ?Sized;
    /// Whether this published entry holds `key` (whose hash matched).
    fn matches(&self, key: &Self::Key) -> bool;
    /// Writes the key.
    ///
    /// # Safety
    /// Only by the process that claimed the entry's slot, before it stores READY.
    unsafe fn set_key(&self, key: &Self::Key);
}

/// A name kept as a table key in at most `N` bytes: the name, or its longest prefix of at most `N`
/// bytes that ends on a character boundary, with the whole name's length. Two long names with the
/// same length and prefix match only on a 64-bit hash collision too (the table compares hashes
/// first). All zero is the empty name.
#[repr(C)]
pub struct NameKey<const N: usize> {
    len: u64,
    key_len: u32,
    bytes: [u8; N],
}

impl<const N: usize> NameKey<N> {
    /// Bytes of `name` kept: all of it, or its longest prefix of at most `N` bytes that ends on a
    /// character boundary.
    fn kept(name: &str) -> usize {
        (0..=name.len().min(N))
            .rev()
            .find(|&i| name.is_char_boundary(i))
            .unwrap_or(0)
    }

    pub fn set(&mut self, name: &str) {
        let n = Self::kept(name);
        self.bytes[..n].copy_from_slice(&name.as_bytes()[..n]);
        self.key_len = n as u32;
        self.len = name.len() as u64;
    }

    pub fn matches(&self, name: &str) -> bool {
        let n = self.key_len as usize;
        self.len == name.len() as u64 && name.as_bytes().get(..n) == self.bytes.get(..n)
    }

    /// The name; one cut to fit ends with `…`.
    pub fn name(&self) -> String {
        let n = (self.key_len as usize).min(N);
        let mut s = String::from_utf8_lossy(&self.bytes[..n]).into_owned();
        if self.len > n as u64 {
            s.push('…');
        }
        s
    }
}

pub struct Table<'a, E> {
    hdr: &'a TableHeader,
    slots: &'a [Slot],
    entries: &'a [E],
}

impl<E> Clone for Table<'_, E> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<E> Copy for Table<'_, E> {}

fn wait_ready(slot: &Slot, mut state: u32) -> u32 {
    let mut spins = 0u32;
    while state == CLAIMED {
        spins += 1;
        if spins.is_multiple_of(1000) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
        state = slot.state.load(Acquire);
    }
    state
}

/// Where a probe for a key ended.
enum Probe<'a, E> {
    Found(&'a E),
    /// At this empty slot: the key is not in the table (probes never skip an empty slot).
    Empty(&'a Slot),
    /// Every slot holds another key.
    Full,
}

impl<'a, E: Entry> Table<'a, E> {
    #[inline]
    fn probe(&self, key: &E::Key, hash: u64) -> Probe<'a, E> {
        let mask = self.slots.len() - 1;
        let mut i = hash as usize & mask;
        for _ in 0..self.slots.len() {
            let slot = &self.slots[i];
            let state = slot.state.load(Acquire);
            if state == EMPTY {
                return Probe::Empty(slot);
            }
            wait_ready(slot, state);
            // SAFETY: READY was loaded with Acquire: entry and hash are written and frozen.
            let (h, t) = unsafe { (*slot.hash.get(), *slot.entry.get()) };
            if h == hash
                && let Some(e) = self.entries.get(t as usize)
                && e.matches(key)
            {
                return Probe::Found(e);
            }
            i = (i + 1) & mask;
        }
        Probe::Full
    }

    /// The entry of `key` if it is in the table (never claims a slot).
    #[inline]
    pub fn get(&self, key: &E::Key, hash: u64) -> Option<&'a E> {
        match self.probe(key, hash) {
            Probe::Found(e) => Some(e),
            Probe::Empty(_) | Probe::Full => None,
        }
    }

    /// The entry of `key`, claimed if new; None when the table is full.
    #[inline]
    pub fn get_or_insert(&self, key: &E::Key, hash: u64) -> Option<&'a E> {
        // Each lost race for an empty slot leaves that slot claimed: at most n_slots rounds.
        loop {
            let slot = match self.probe(key, hash) {
                Probe::Found(e) => return Some(e),
                Probe::Full => return None,
                Probe::Empty(slot) => slot,
            };
            if !self.reserve() {
                return None;
            }
            if slot
                .state
                .compare_exchange(EMPTY, CLAIMED, Acquire, Acquire)
                .is_ok()
            {
                return self.publish(slot, key, hash);
            }
            // Another process claimed it first (maybe for the same key): probe again.
            self.hdr.reserved.fetch_sub(1, Relaxed);
        }
    }

    fn reserve(&self) -> bool {
        let cap = self.hdr.cap;
        self.hdr
            .reserved
            .fetch_update(Relaxed, Relaxed, |n| (n < cap).then_some(n + 1))
            .is_ok()
    }

    /// Gives the slot this process claimed an entry holding `key`, and publishes it.
    fn publish(&self, slot: &Slot, key: &E::Key, hash: u64) -> Option<&'a E> {
        let t = self.hdr.next.fetch_add(1, Relaxed);
        // Cannot fail: each claimer holds one of at most `cap` reservations.
        let Some(e) = self.entries.get(t as usize) else {
            slot.state.store(EMPTY, Release);
            return None;
        };
        // SAFETY: this process claimed the slot (EMPTY→CLAIMED) and entry t was never handed out.
        unsafe {
            e.set_key(key);
            *slot.entry.get() = t;
            *slot.hash.get() = hash;
        }
        slot.state.store(READY, Release);
        Some(e)
    }

    /// The published entries, in index order.
    pub fn entries(&self) -> impl Iterator<Item = &'a E> + 'a {
        let (slots, entries) = (self.slots, self.entries);
        slots.iter().filter_map(move |s| {
            (s.state.load(Acquire) == READY)
                // SAFETY: READY was loaded with Acquire: entry is written and frozen.
                .then(|| entries.get(unsafe { *s.entry.get() } as usize))
                .flatten()
        })
    }
}

/// The multiplier of the hashes (2^64 / φ).
pub const MUL: u64 = 0x9E37_79B9_7F4A_7C15;

/// MurmurHash3's 64-bit finalizer.
#[inline]
pub fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// A deterministic hash of bytes, the same in every process: 8 bytes per step, then MurmurHash3's
/// finalizer (byte-at-a-time FNV-1a is several times slower on model names).
#[inline]
pub fn hash_bytes(b: &[u8]) -> u64 {
    let mut h = (b.len() as u64).wrapping_mul(MUL);
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(w))
            .wrapping_mul(MUL)
            .rotate_left(29);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(w))
            .wrapping_mul(MUL)
            .rotate_left(29);
    }
    fmix64(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[derive(Default)]
    struct E {
        key: UnsafeCell<u64>,
        hits: AtomicU64,
    }
    // SAFETY: the key is written by one claimer before publication, then only read.
    unsafe impl Sync for E {}
    impl Entry for E {
        type Key = u64;
        fn matches(&self, k: &u64) -> bool {
            // SAFETY: published entries only.
            unsafe { *self.key.get() == *k }
        }
        unsafe fn set_key(&self, k: &u64) {
            // SAFETY: the caller claimed this entry.
            unsafe { *self.key.get() = *k }
        }
    }

    fn parts(cap: u32) -> (TableHeader, Vec<Slot>, Vec<E>) {
        let hdr = TableHeader::new(cap);
        let slots = (0..hdr.n_slots).map(|_| Slot::new()).collect();
        let entries = (0..cap).map(|_| E::default()).collect();
        (hdr, slots, entries)
    }

    #[test]
    fn one_entry_per_key_under_concurrent_inserts() {
        let (hdr, slots, entries) = parts(500);
        let t = Table::new(&hdr, &slots, &entries);
        // 8 threads insert the same 400 keys (some with colliding hashes) and count a hit each.
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for k in 0..400u64 {
                        let h = if k % 10 == 0 { 7 } else { fmix64(k) };
                        t.get_or_insert(&k, h).unwrap().hits.fetch_add(1, Relaxed);
                    }
                });
            }
        });
        let mut keys: Vec<u64> = t.entries().map(|e| unsafe { *e.key.get() }).collect();
        keys.sort_unstable();
        assert_eq!(keys, (0..400).collect::<Vec<_>>());
        assert!(t.entries().all(|e| e.hits.load(Relaxed) == 8));
    }

    #[test]
    fn a_full_table_refuses_new_keys_and_keeps_old_ones() {
        let (hdr, slots, entries) = parts(3);
        let t = Table::new(&hdr, &slots, &entries);
        for k in 0..3u64 {
            assert!(t.get_or_insert(&k, fmix64(k)).is_some());
        }
        assert!(t.get_or_insert(&99, fmix64(99)).is_none());
        assert!(t.get_or_insert(&1, fmix64(1)).is_some());
        assert_eq!(t.entries().count(), 3);
    }

    #[test]
    fn get_finds_only_inserted_keys() {
        let (hdr, slots, entries) = parts(8);
        let t = Table::new(&hdr, &slots, &entries);
        assert!(t.get(&7, 7).is_none());
        let e = t.get_or_insert(&7, 7).expect("room");
        assert!(std::ptr::eq(t.get(&7, 7).expect("inserted"), e));
        // Same hash, other key: probing goes on past it and stops at an empty slot.
        assert!(t.get(&15, 7).is_none());
        assert_eq!(t.entries().count(), 1);
    }

    #[test]
    fn name_keys_keep_a_prefix_on_a_character_boundary() {
        let mut k = NameKey::<4> {
            len: 0,
            key_len: 0,
            bytes: [0; 4],
        };
        assert_eq!(k.name(), "");
        k.set("abc");
        assert!(k.matches("abc") && !k.matches("abcd") && !k.matches("ab"));
        assert_eq!(k.name(), "abc");
        // "aéé" is 5 bytes: 4 would cut the second é, so 3 are kept.
        k.set("aéé");
        assert_eq!((k.key_len, k.len), (3, 5));
        // Same length and kept prefix: only the hash the table compares first tells them apart.
        assert!(k.matches("aéé") && k.matches("aéxx") && !k.matches("aé"));
        assert_eq!(k.name(), "aé…");
    }

    #[test]
    fn hashes_are_stable() {
        // Shared memory outlives no process, but every process must hash alike: fixed values.
        assert_eq!(hash_bytes(b""), fmix64(0));
        assert_ne!(hash_bytes(b"gpt-4o"), hash_bytes(b"gpt-4o-mini"));
        assert_eq!(hash_bytes(b"gpt-4o"), hash_bytes("gpt-4o".as_bytes()));
        assert_eq!(n_slots(5), 16);
        assert_eq!(n_slots(0), 2);
    }
}
