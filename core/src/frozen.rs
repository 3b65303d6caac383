//! A [`Catalog`] frozen into one contiguous byte buffer that can be copied into shared memory and
//! read in place by other processes: no pointers, only `u32` offsets from the buffer's start, and
//! little-endian integers read from byte slices, so the buffer may sit at any address and alignment.
//!
//! A backend pricing one name does not decode the whole catalog: [`FrozenCatalog::candidates`]
//! looks the name up in a hash table and decodes only the models that could match it, and
//! `Catalog::new(candidates).resolve(name)` then gives the same answer as the full catalog.
//!
//! Layout (version 1; all integers little-endian, all offsets from the buffer's start):
//!
//! ```text
//! header, 40 bytes: magic "AICOSTFZ", version u32, total_len u32, model_count u32,
//!                   slot_count u32 (0 or a power of two), key_count u32,
//!                   models_off u32, slots_off u32, keys_off u32
//! models: model_count × u32            offset of each model record
//! slots:  slot_count × 24 bytes        hash u64, key_off u32, key_len u32, list_off u32, list_len u32
//!                                      (list_len 0 = empty slot; linear probing from hash & (slot_count-1))
//! keys:   key_count × (off u32, len u32)   every distinct canonical name and alias, for `suggest`
//! data:   model records, extra key strings, model index lists (u32 each, ascending)
//! model record: str name, str provider, u32 n, n × str alias, u32 n, n × price (50 bytes:
//!               price_id i64, usage u8, tier u8, threshold i64, Decimal::serialize() 16 bytes,
//!               valid_from i64, valid_to i64);  str = u32 byte length + UTF-8 bytes
//! ```
//!
//! The hash table's keys are every lower-cased canonical name, lower-cased alias and lower-cased
//! part after the first `/` of a canonical name; each maps to *all* models having that key in any
//! of those roles, in catalog order. A resolution only ever consults the models holding the keys
//! it looks up, so a subset that contains all of them (in catalog order) resolves identically,
//! including which of several colliding names or aliases wins and every member of an ambiguous set.

use crate::catalog::{Catalog, Model, PriceVersion, suggest_from};
use crate::{ServiceTier, UsageType};
use rust_decimal::Decimal;
use rustc_hash::{FxHashMap, FxHashSet};
use std::fmt;

const MAGIC: &[u8; 8] = b"AICOSTFZ";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 40;
const SLOT_LEN: usize = 24;
const KEY_LEN: usize = 8;

/// FNV-1a 64: stable across processes and builds, unlike std's randomly seeded hasher.
fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

// Explicit codes rather than positions in `ALL`, so reordering the enums cannot change the format.
fn usage_code(u: UsageType) -> u8 {
    match u {
        UsageType::Input => 0,
        UsageType::Output => 1,
        UsageType::CacheRead => 2,
        UsageType::CacheWrite5m => 3,
        UsageType::CacheWrite1h => 4,
    }
}

fn usage_from(c: u8) -> Option<UsageType> {
    UsageType::ALL.into_iter().find(|&u| usage_code(u) == c)
}

fn tier_code(t: ServiceTier) -> u8 {
    match t {
        ServiceTier::Standard => 0,
        ServiceTier::Batch => 1,
        ServiceTier::Flex => 2,
        ServiceTier::Priority => 3,
    }
}

fn tier_from(c: u8) -> Option<ServiceTier> {
    ServiceTier::ALL.into_iter().find(|&t| tier_code(t) == c)
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).expect("a frozen catalog is smaller than 4 GiB")
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends a length-prefixed string; returns the offset of its bytes within `out`.
fn put_str(out: &mut Vec<u8>, s: &str) -> usize {
    put_u32(out, to_u32(s.len()));
    out.extend_from_slice(s.as_bytes());
    out.len() - s.len()
}

/// A hash-table key while freezing: where identical bytes already are in the data (if anywhere)
/// and the models having it.
struct Key {
    text: String,
    at: Option<usize>,
    models: Vec<u32>,
}

fn add_key(
    keys: &mut Vec<Key>,
    index: &mut FxHashMap<String, usize>,
    src: &str,
    src_at: usize,
    model: u32,
) {
    let text = src.to_ascii_lowercase();
    let k = match index.get(&text) {
        Some(&k) => k,
        None => {
            index.insert(text.clone(), keys.len());
            // Point at the source's own bytes when lower-casing changed nothing (the usual case).
            let at = (text == src).then_some(src_at);
            keys.push(Key {
                text,
                at,
                models: Vec::new(),
            });
            keys.len() - 1
        }
    };
    if keys[k].models.last() != Some(&model) {
        keys[k].models.push(model);
    }
}

/// Serializes a catalog. Deterministic: the same models in the same order give the same bytes.
///
/// # Panics
/// If the frozen form would not fit in 4 GiB (offsets are `u32`).
pub fn freeze(c: &Catalog) -> Vec<u8> {
    let models = c.models();
    // Data offsets are relative to the data section until its position is known.
    let mut data = Vec::new();
    let mut records = Vec::with_capacity(models.len());
    let mut names = Vec::with_capacity(models.len());
    let mut aliases: Vec<Vec<usize>> = Vec::with_capacity(models.len());
    for m in models {
        records.push(data.len());
        names.push(put_str(&mut data, &m.name));
        put_str(&mut data, &m.provider);
        put_u32(&mut data, to_u32(m.aliases.len()));
        aliases.push(m.aliases.iter().map(|a| put_str(&mut data, a)).collect());
        put_u32(&mut data, to_u32(m.prices.len()));
        for p in &m.prices {
            put_i64(&mut data, p.price_id);
            data.push(usage_code(p.usage));
            data.push(tier_code(p.tier));
            put_i64(&mut data, p.threshold_tokens);
            data.extend_from_slice(&p.usd_per_mtok.serialize());
            put_i64(&mut data, p.valid_from);
            put_i64(&mut data, p.valid_to);
        }
    }

    let mut keys = Vec::new();
    let mut index = FxHashMap::default();
    // Distinct canonical names and aliases, for `suggest` (whose result ignores their order).
    let mut exact: Vec<(usize, usize)> = Vec::new();
    let mut seen = FxHashSet::default();
    for (i, m) in models.iter().enumerate() {
        let i = to_u32(i);
        let at = names[i as usize];
        add_key(&mut keys, &mut index, &m.name, at, i);
        if let Some((p, rest)) = m.name.split_once('/') {
            add_key(&mut keys, &mut index, rest, at + p.len() + 1, i);
        }
        for (a, &a_at) in m.aliases.iter().zip(&aliases[i as usize]) {
            add_key(&mut keys, &mut index, a, a_at, i);
        }
        if seen.insert(m.name.as_str()) {
            exact.push((at, m.name.len()));
        }
    }
    for (m, at) in models.iter().zip(&aliases) {
        for (a, &a_at) in m.aliases.iter().zip(at) {
            if seen.insert(a.as_str()) {
                exact.push((a_at, a.len()));
            }
        }
    }
    let mut lists = Vec::with_capacity(keys.len());
    for k in &mut keys {
        if k.at.is_none() {
            k.at = Some(put_str(&mut data, &k.text));
        }
        lists.push(data.len());
        for &m in &k.models {
            put_u32(&mut data, m);
        }
    }

    // At most 3/4 full: short probes (the stored hash skips most key comparisons), smaller table.
    let slot_count = if keys.is_empty() {
        0
    } else {
        (keys.len() * 4 / 3 + 1).next_power_of_two()
    };
    let models_off = HEADER_LEN;
    let slots_off = models_off + 4 * models.len();
    let keys_off = slots_off + SLOT_LEN * slot_count;
    let base = keys_off + KEY_LEN * exact.len();
    let total = base + data.len();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    for v in [
        VERSION,
        to_u32(total),
        to_u32(models.len()),
        to_u32(slot_count),
        to_u32(exact.len()),
        to_u32(models_off),
        to_u32(slots_off),
        to_u32(keys_off),
    ] {
        put_u32(&mut out, v);
    }
    for r in records {
        put_u32(&mut out, to_u32(base + r));
    }
    let mut slots: Vec<Option<usize>> = vec![None; slot_count];
    let mask = slot_count.wrapping_sub(1);
    let hashes: Vec<u64> = keys.iter().map(|k| hash(k.text.as_bytes())).collect();
    for (k, &h) in hashes.iter().enumerate() {
        let mut s = h as usize & mask;
        while slots[s].is_some() {
            s = (s + 1) & mask;
        }
        slots[s] = Some(k);
    }
    for slot in slots {
        match slot {
            Some(k) => {
                out.extend_from_slice(&hashes[k].to_le_bytes());
                let key = &keys[k];
                for v in [
                    base + key.at.unwrap_or_default(),
                    key.text.len(),
                    base + lists[k],
                    key.models.len(),
                ] {
                    put_u32(&mut out, to_u32(v));
                }
            }
            None => out.extend_from_slice(&[0; SLOT_LEN]),
        }
    }
    for (at, len) in exact {
        put_u32(&mut out, to_u32(base + at));
        put_u32(&mut out, to_u32(len));
    }
    out.extend_from_slice(&data);
    debug_assert_eq!(out.len(), total);
    out
}

fn u32_at(b: &[u8], at: usize) -> Option<usize> {
    let bytes = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?) as usize)
}

/// Sequential, bounds-checked reads: any read past the end yields `None`.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.b.get(self.at..end)?;
        self.at = end;
        Some(s)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u32(&mut self) -> Option<usize> {
        Some(u32::from_le_bytes(self.array()?) as usize)
    }

    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.array()?))
    }

    fn str(&mut self) -> Option<String> {
        let n = self.u32()?;
        std::str::from_utf8(self.take(n)?).ok().map(str::to_string)
    }

    fn decimal(&mut self) -> Option<Decimal> {
        let b: [u8; 16] = self.array()?;
        let flags = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        // Only what `serialize` writes: scale ≤ 28 in bits 16-23, the sign in bit 31.
        (flags & !0x801F_0000 == 0 && (flags >> 16) & 0xFF <= 28).then(|| Decimal::deserialize(b))
    }

    fn price(&mut self) -> Option<PriceVersion> {
        Some(PriceVersion {
            price_id: self.i64()?,
            usage: usage_from(self.array::<1>()?[0])?,
            tier: tier_from(self.array::<1>()?[0])?,
            threshold_tokens: self.i64()?,
            usd_per_mtok: self.decimal()?,
            valid_from: self.i64()?,
            valid_to: self.i64()?,
        })
    }

    fn model(&mut self) -> Option<Model> {
        let name = self.str()?;
        let provider = self.str()?;
        // Counts come from the buffer: no `with_capacity` from them, reads fail at its end.
        let mut aliases = Vec::new();
        for _ in 0..self.u32()? {
            aliases.push(self.str()?);
        }
        let mut prices = Vec::new();
        for _ in 0..self.u32()? {
            prices.push(self.price()?);
        }
        Some(Model {
            name,
            provider,
            aliases,
            prices,
        })
    }
}

/// A read-only view over frozen bytes (e.g. in shared memory); see the module documentation.
///
/// [`new`](Self::new) validates the header and section bounds. Everything else is read lazily and
/// bounds-checked, so no method panics on any bytes: a model record, key or list that turns out to
/// be corrupt is skipped (a corrupt model is left out of `candidates` and `to_catalog`).
#[derive(Clone, Copy)]
pub struct FrozenCatalog<'a> {
    bytes: &'a [u8],
    model_count: usize,
    slot_count: usize,
    key_count: usize,
    models_off: usize,
    slots_off: usize,
    keys_off: usize,
}

impl fmt::Debug for FrozenCatalog<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrozenCatalog")
            .field("bytes", &self.bytes.len())
            .field("models", &self.model_count)
            .field("slots", &self.slot_count)
            .field("keys", &self.key_count)
            .finish()
    }
}

impl<'a> FrozenCatalog<'a> {
    /// Validates the header (magic, version, total length, section bounds). `bytes` may be longer
    /// than the frozen catalog (a rounded-up shared memory segment); the rest is ignored.
    pub fn new(bytes: &'a [u8]) -> Result<Self, String> {
        let header = bytes.get(..HEADER_LEN).ok_or_else(|| {
            format!(
                "frozen catalog: {} bytes, shorter than its {HEADER_LEN}-byte header",
                bytes.len()
            )
        })?;
        if !header.starts_with(MAGIC) {
            return Err("frozen catalog: bad magic".into());
        }
        let field = |i: usize| u32_at(header, MAGIC.len() + 4 * i).unwrap_or_default();
        let [
            version,
            total,
            model_count,
            slot_count,
            key_count,
            models_off,
            slots_off,
            keys_off,
        ] = std::array::from_fn(field);
        if version != VERSION as usize {
            return Err(format!(
                "frozen catalog: format version {version}, expected {VERSION}"
            ));
        }
        if total < HEADER_LEN || total > bytes.len() {
            return Err(format!(
                "frozen catalog: header says {total} bytes, have {}",
                bytes.len()
            ));
        }
        if slot_count != 0 && !slot_count.is_power_of_two() {
            return Err(format!(
                "frozen catalog: {slot_count} hash slots, not a power of two"
            ));
        }
        for (what, off, count, size) in [
            ("model offsets", models_off, model_count, 4),
            ("hash slots", slots_off, slot_count, SLOT_LEN),
            ("names", keys_off, key_count, KEY_LEN),
        ] {
            let end = count.checked_mul(size).and_then(|n| n.checked_add(off));
            if off < HEADER_LEN || end.is_none_or(|e| e > total) {
                return Err(format!(
                    "frozen catalog: {what} section ({count} × {size} bytes at {off}) outside its {total} bytes"
                ));
            }
        }
        Ok(FrozenCatalog {
            bytes: &bytes[..total],
            model_count,
            slot_count,
            key_count,
            models_off,
            slots_off,
            keys_off,
        })
    }

    /// The number of models.
    pub fn len(&self) -> usize {
        self.model_count
    }

    pub fn is_empty(&self) -> bool {
        self.model_count == 0
    }

    /// The bytes at `(off, len)` read from `at`.
    fn slice_at(&self, at: usize) -> Option<&'a [u8]> {
        let off = u32_at(self.bytes, at)?;
        let len = u32_at(self.bytes, at + 4)?;
        self.bytes.get(off..off.checked_add(len)?)
    }

    /// The model indices stored for a hash-table key.
    fn lookup(&self, key: &[u8]) -> impl Iterator<Item = usize> + 'a {
        let list = self.find(key).unwrap_or_default();
        list.chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize)
    }

    fn find(&self, key: &[u8]) -> Option<&'a [u8]> {
        let mask = self.slot_count.checked_sub(1)?;
        let h = hash(key);
        let mut s = h as usize & mask;
        // At most one pass: a corrupt table without empty slots cannot loop forever.
        for _ in 0..self.slot_count {
            let at = self.slots_off + s * SLOT_LEN;
            let slot = self.bytes.get(at..at + SLOT_LEN)?;
            let list_len = u32_at(slot, 20)?;
            if list_len == 0 {
                return None;
            }
            if slot[..8] == h.to_le_bytes() && self.slice_at(at + 8)? == key {
                let off = u32_at(slot, 16)?;
                return self
                    .bytes
                    .get(off..off.checked_add(list_len.checked_mul(4)?)?);
            }
            s = (s + 1) & mask;
        }
        None
    }

    /// Decodes model `i`, or `None` if it is out of range or corrupt.
    fn model(&self, i: usize) -> Option<Model> {
        if i >= self.model_count {
            return None;
        }
        let at = u32_at(self.bytes, self.models_off + 4 * i)?;
        Cursor { b: self.bytes, at }.model()
    }

    /// Every model that could match `name` by any of the catalog's matching rules, decoded, without
    /// duplicates, in catalog order: `Catalog::new(f.candidates(name)).resolve(name)` resolves
    /// exactly as the frozen catalog's source did.
    pub fn candidates(&self, name: &str) -> Vec<Model> {
        // Rule 1 looks up `name` itself, whose holders all hold its lower-cased form too; rules
        // 2 and 4 look up the trimmed lower-cased name, rule 3 the part after its first `/`.
        let lower = name.to_ascii_lowercase();
        let trimmed = lower.trim();
        let rest = trimmed.split_once('/').map(|(_, r)| r);
        let mut found: Vec<usize> = self.lookup(lower.as_bytes()).collect();
        if trimmed.len() != lower.len() {
            found.extend(self.lookup(trimmed.as_bytes()));
        }
        if let Some(rest) = rest {
            found.extend(self.lookup(rest.as_bytes()));
        }
        found.sort_unstable();
        found.dedup();
        found.into_iter().filter_map(|i| self.model(i)).collect()
    }

    /// Up to `n` known names closest to `name`: the same as [`Catalog::suggest`] on the source.
    pub fn suggest(&self, name: &str, n: usize) -> Vec<String> {
        suggest_from(self.keys(), name, n)
    }

    /// Every distinct known name, copied out (so that suggestions can be computed after a lock on
    /// the bytes is released).
    pub fn key_names(&self) -> Vec<String> {
        self.keys().map(str::to_string).collect()
    }

    fn keys(&self) -> impl Iterator<Item = &str> {
        (0..self.key_count)
            .filter_map(|k| std::str::from_utf8(self.slice_at(self.keys_off + k * KEY_LEN)?).ok())
    }

    /// Decodes every model back into a [`Catalog`] (for tests and fallbacks).
    pub fn to_catalog(&self) -> Catalog {
        Catalog::new(
            (0..self.model_count)
                .filter_map(|i| self.model(i))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::tests::{model, price};
    use crate::catalog::{MatchKind, Resolved};
    use std::path::PathBuf;

    #[derive(Debug, PartialEq)]
    enum Outcome {
        Found(String, MatchKind),
        Ambiguous(Vec<String>),
        NotFound,
    }

    fn outcome(r: Resolved<'_>) -> Outcome {
        match r {
            Resolved::Found(m, k) => Outcome::Found(m.name.clone(), k),
            Resolved::Ambiguous(v) => Outcome::Ambiguous(v.iter().map(|s| s.to_string()).collect()),
            Resolved::NotFound => Outcome::NotFound,
        }
    }

    fn check(c: &Catalog, f: &FrozenCatalog, name: &str) -> Outcome {
        let want = outcome(c.resolve(name));
        assert_eq!(
            outcome(Catalog::new(f.candidates(name)).resolve(name)),
            want,
            "{name:?}"
        );
        want
    }

    /// Names that exercise every rule: each known name and alias as is, re-cased, padded,
    /// provider-prefixed, unprefixed, slightly off; plus garbage.
    fn variants(c: &Catalog) -> Vec<String> {
        let mut out: Vec<String> = [
            "",
            " ",
            "/",
            "//",
            "a/b/c",
            "gpt-5",
            "nope/",
            "/gpt-4o",
            "ÄÖÜ",
            "\u{3000}gpt-4o",
        ]
        .map(String::from)
        .into();
        for m in c.models() {
            for s in std::iter::once(&m.name).chain(&m.aliases) {
                let suffix = s.split_once('/').map_or("", |(_, r)| r);
                out.extend([
                    s.clone(),
                    s.to_ascii_lowercase(),
                    s.to_ascii_uppercase(),
                    format!(" {s} "),
                    format!("\t{}\n", s.to_ascii_uppercase()),
                    format!("{}/{s}", m.provider),
                    format!(
                        "{}/{}",
                        m.provider.to_ascii_uppercase(),
                        s.to_ascii_lowercase()
                    ),
                    format!("other/{s}"),
                    suffix.to_string(),
                    suffix.to_ascii_uppercase(),
                    format!("  {suffix}"),
                    format!("{s}x"),
                    s.chars().skip(1).collect(),
                ]);
            }
        }
        out
    }

    fn small() -> Catalog {
        let p = || vec![price(UsageType::Input, ServiceTier::Standard, 0, "1")];
        Catalog::new(vec![
            model("gpt-4o", "openai", &["GPT4o-latest"], p()),
            model("azure/gpt-4o", "azure", &[], p()),
            model("xai/grok-4", "xai", &[], p()),
            model("gemini/gemini-2.5-pro", "gemini", &[], p()),
            model("vertex_ai/gemini-2.5-pro", "vertex_ai", &[], p()),
        ])
    }

    /// Every kind of collision the catalog's precedence rules decide.
    fn collisions() -> Catalog {
        let mut odd = price(
            UsageType::CacheWrite1h,
            ServiceTier::Priority,
            200_000,
            "-0.0001",
        );
        (odd.price_id, odd.valid_from, odd.valid_to) = (42, -5, 1_000_000);
        let prices = vec![
            price(
                UsageType::Output,
                ServiceTier::Batch,
                0,
                "79228162514264337593543950335",
            ),
            odd,
        ];
        let p = || vec![price(UsageType::Input, ServiceTier::Flex, 0, "0.5")];
        Catalog::new(vec![
            // An alias equal to another model's canonical name never shadows it.
            model("a/x", "a", &["Shared", "b/x"], prices),
            // "shared" is its own exact alias but loses the lower-cased key to "Shared" above.
            model("b/x", "b", &["shared", "SHARED "], p()),
            // Canonical names differing in case, an alias equal to another's lower-cased name,
            // and a duplicate canonical name (the last one wins).
            model("Dup", "p", &["dup", "DUP"], p()),
            model("dup", "q", &[], p()),
            model("Dup", "r", &["x", "c/X/Y"], p()),
            model("c/x/y", "c", &[" padded "], p()),
            model("ünï/Cödé", "ünï", &["ALIAS/Cödé"], p()),
            // A bare canonical name equal to the suffix of a/x and b/x.
            model("x", "x", &[], p()),
            model("C/X/Y", "C", &[], vec![]),
        ])
    }

    /// Checks every variant of every name; returns which outcomes (as text) occurred.
    fn check_all(c: &Catalog, suggest_every: usize) -> std::collections::BTreeSet<String> {
        let bytes = freeze(c);
        let f = FrozenCatalog::new(&bytes).unwrap();
        assert_eq!(f.len(), c.len());
        let mut seen = std::collections::BTreeSet::new();
        for (i, n) in variants(c).iter().enumerate() {
            seen.insert(match check(c, &f, n) {
                Outcome::Found(_, k) => k.as_str(),
                Outcome::Ambiguous(_) => "ambiguous",
                Outcome::NotFound => "not found",
            });
            if i % suggest_every == 0 {
                assert_eq!(f.suggest(n, 5), c.suggest(n, 5), "{n:?}");
            }
        }
        for n in [
            "gpt4o",
            "claude-sonet-4",
            " Gemini 2.5 pro",
            "grok",
            "zzzzzzzzzzzzzzzz",
        ] {
            assert_eq!(f.suggest(n, 5), c.suggest(n, 5), "{n:?}");
        }
        assert_eq!(f.to_catalog().models(), c.models());
        seen.into_iter().map(String::from).collect()
    }

    /// Names of all outcomes: every rule, ambiguity and no match.
    fn all_outcomes() -> std::collections::BTreeSet<String> {
        let kinds = [
            MatchKind::Canonical,
            MatchKind::Alias,
            MatchKind::CaseInsensitive,
            MatchKind::ProviderPrefix,
            MatchKind::Unprefixed,
        ];
        kinds
            .map(MatchKind::as_str)
            .into_iter()
            .chain(["ambiguous", "not found"])
            .map(String::from)
            .collect()
    }

    #[test]
    fn small_catalogs_resolve_like_the_source() {
        assert_eq!(check_all(&small(), 1), all_outcomes());
        assert_eq!(check_all(&collisions(), 1), all_outcomes());
        let c = small();
        let bytes = freeze(&c);
        let f = FrozenCatalog::new(&bytes).unwrap();
        let names = |ms: Vec<Model>| ms.into_iter().map(|m| m.name).collect::<Vec<_>>();
        assert_eq!(names(f.candidates("gpt-4o")), ["gpt-4o", "azure/gpt-4o"]);
        assert_eq!(
            names(f.candidates(" Gemini-2.5-PRO")),
            ["gemini/gemini-2.5-pro", "vertex_ai/gemini-2.5-pro"]
        );
        assert!(f.candidates("gpt-5").is_empty());
        assert_eq!(f.suggest("grok", 3), c.suggest("grok", 3));
    }

    #[test]
    fn deterministic_unaligned_and_padded() {
        let c = collisions();
        let bytes = freeze(&c);
        assert_eq!(bytes, freeze(&c));
        assert_eq!(
            freeze(&FrozenCatalog::new(&bytes).unwrap().to_catalog()),
            bytes
        );
        // At an odd address, followed by unused bytes (a rounded-up shared memory segment).
        let mut shm = vec![0xAA];
        shm.extend_from_slice(&bytes);
        shm.extend_from_slice(&[0xAA; 13]);
        let f = FrozenCatalog::new(&shm[1..]).unwrap();
        assert_eq!(f.to_catalog().models(), c.models());
        check(&c, &f, "X");
    }

    #[test]
    fn empty_catalog() {
        let bytes = freeze(&Catalog::new(vec![]));
        let f = FrozenCatalog::new(&bytes).unwrap();
        assert!(f.is_empty());
        assert_eq!(f.len(), 0);
        assert!(f.candidates("gpt-4o").is_empty());
        assert!(f.suggest("gpt-4o", 3).is_empty());
        assert!(f.to_catalog().is_empty());
    }

    #[test]
    fn codes_round_trip() {
        for u in UsageType::ALL {
            assert_eq!(usage_from(usage_code(u)), Some(u));
        }
        for t in ServiceTier::ALL {
            assert_eq!(tier_from(tier_code(t)), Some(t));
        }
    }

    /// Every method on `bytes`, which may be anything; only checks nothing panics.
    /// `full` adds the methods that read everything (slow on a big catalog in a debug build).
    fn exercise(bytes: &[u8], names: &[&str], full: bool) {
        if let Ok(f) = FrozenCatalog::new(bytes) {
            let _ = (f.len(), f.is_empty(), format!("{f:?}"));
            for n in names {
                let _ = Catalog::new(f.candidates(n)).resolve(n);
            }
            if full {
                f.suggest(names[0], 3);
                f.to_catalog();
            }
        }
    }

    /// A small xorshift generator: reproducible garbage without a dependency.
    fn garbage(seed: &mut u64, out: &mut [u8]) {
        for b in out {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *b = *seed as u8;
        }
    }

    #[test]
    fn corrupt_bytes_never_panic() {
        let names = [
            "gpt-4o",
            "x",
            "Dup",
            "a/x",
            "b/X",
            " shared ",
            "c/x/y",
            "ünï/cödé",
        ];
        let bytes = freeze(&collisions());
        for len in 0..bytes.len() {
            assert!(FrozenCatalog::new(&bytes[..len]).is_err(), "{len}");
        }
        for at in 0..bytes.len() {
            for flip in [0x01, 0x80, 0xFF] {
                let mut b = bytes.clone();
                b[at] ^= flip;
                exercise(&b, &names, true);
            }
        }
        // Plausible headers (small counts, offsets inside the buffer) in front of garbage.
        let mut seed = 0x9E37_79B9_7F4A_7C15;
        for i in 0..5000 {
            let mut b = vec![0; 48 + i % 400];
            garbage(&mut seed, &mut b);
            let len = b.len() as u32;
            let r: [u32; 6] = std::array::from_fn(|j| u32::from(b[40 + j]));
            let header = [
                VERSION,
                len,
                r[0] % 8,
                if r[1].is_multiple_of(5) {
                    0
                } else {
                    1 << (r[1] % 4)
                },
                r[2] % 8,
                40 + r[3] % (len - 40),
                40 + r[4] % (len - 40),
                40 + r[5] % (len - 40),
            ];
            b[..8].copy_from_slice(MAGIC);
            for (j, v) in header.into_iter().enumerate() {
                b[8 + 4 * j..12 + 4 * j].copy_from_slice(&v.to_le_bytes());
            }
            exercise(&b, &names, true);
        }
        for bad in [&b""[..], b"AICOSTFZ", &bytes[..39]] {
            assert!(FrozenCatalog::new(bad).is_err());
        }
    }

    /// LiteLLM's price file (`AICOST_SHARED_DATA`, default `../shared/data` next to the repository).
    fn litellm() -> Option<Catalog> {
        let dir = std::env::var_os("AICOST_SHARED_DATA").map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"),
            PathBuf::from,
        );
        let path = dir.join("litellm_model_prices.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            eprintln!("skipped: {} not found", path.display());
            return None;
        };
        let doc = crate::litellm::parse_doc(&serde_json::from_str(&text).unwrap()).unwrap();
        let mut id = 0;
        let models = doc
            .models
            .into_iter()
            .map(|m| Model {
                name: m.name,
                provider: m.provider,
                aliases: m.aliases,
                prices: m
                    .prices
                    .into_iter()
                    .map(|p| {
                        id += 1;
                        PriceVersion {
                            price_id: id,
                            usage: p.usage,
                            tier: p.tier,
                            threshold_tokens: p.threshold_tokens,
                            usd_per_mtok: p.usd_per_mtok,
                            valid_from: i64::MIN,
                            valid_to: i64::MAX,
                        }
                    })
                    .collect(),
            })
            .collect();
        Some(Catalog::new(models))
    }

    #[test]
    fn litellm_resolves_like_the_source() {
        let Some(c) = litellm() else { return };
        assert!(c.len() > 1000);
        let mut seen = check_all(&c, 15013);
        // LiteLLM has no aliases: add colliding ones (another model's name re-cased or verbatim,
        // one alias shared by two models, another model's unprefixed suffix).
        let names: Vec<String> = c.models().iter().map(|m| m.name.clone()).collect();
        let mut models = c.models().to_vec();
        for (i, m) in models.iter_mut().enumerate() {
            let other = |d: usize| &names[(i + d) % names.len()];
            if i % 5 == 0 {
                m.aliases.push(other(1).to_ascii_uppercase());
            }
            if i % 7 == 0 {
                m.aliases.push(other(3).clone());
            }
            if i % 11 == 0 {
                m.aliases.push(format!("Shared-{}", i / 22));
            }
            if i % 13 == 0
                && let Some((_, rest)) = other(2).split_once('/')
            {
                m.aliases.push(rest.to_string());
            }
        }
        assert_eq!(check_all(&Catalog::new(models), 15013), all_outcomes());
        seen.remove(MatchKind::Alias.as_str());
        let mut want = all_outcomes();
        want.remove(MatchKind::Alias.as_str());
        assert_eq!(seen, want);
    }

    #[test]
    fn litellm_corrupt_bytes_never_panic() {
        let Some(c) = litellm() else { return };
        let bytes = freeze(&c);
        for len in (0..bytes.len()).step_by(97) {
            assert!(FrozenCatalog::new(&bytes[..len]).is_err(), "{len}");
        }
        let names = [
            "gpt-4o",
            "GPT-4O",
            "openai/gpt-4o",
            "claude-sonnet-4-5",
            "gemini-2.5-pro",
        ];
        for (i, at) in (0..bytes.len()).step_by(1009).enumerate() {
            let mut b = bytes.clone();
            b[at] ^= 0xFF;
            exercise(&b, &names, i % 16 == 0);
        }
    }
}
