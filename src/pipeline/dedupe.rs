//! The dedupe window of one shard: every event id accepted in the window, as its 128-bit keyed
//! fingerprint, in 16 bytes per slot.
//!
//! The map key is the fingerprint's low 64 bits. The value packs the event's day (16 bits, for
//! expiry), 24 more fingerprint bits and 24 bits of the content hash. Two ids are the same when
//! all 88 fingerprint bits agree; two ids whose low 64 bits agree but whose next 24 do not (about
//! once in 2^64 pairs) both stay exact: the second one goes to a small overflow map keyed by
//! the whole fingerprint. A resend with other content is a CONFLICT unless its 24 content bits
//! happen to agree (1 in 16.7 million), in which case it is a DUPLICATE; either way it is never
//! charged twice.
//!
//! The slots live in 64 tables chosen by key bits 32..38 (bits the tables' own bucket choice and
//! control bytes do not use), so a table that grows rehashes 1/64 of the window: a few
//! milliseconds of the shard's time instead of a stall of a hundred.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::store::codec::{CodecError, Reader, Writer};

/// Fingerprints are already keyed random hashes: their bits are the hash.
#[derive(Default)]
pub struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

type Build = BuildHasherDefault<FingerprintHasher>;

const LOW24: u64 = 0xFF_FFFF;

/// What the window knows of a claimed id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not in the window.
    New,
    /// In the window with the same content (24 bits compared).
    Duplicate,
    /// In the window with other content.
    Conflict,
}

const TABLES: usize = 64;

/// A copy of a window's slots being taken (see [`DedupeWindow::begin_copy`]).
pub struct DedupeCopy {
    entries: DedupeEntries,
    next_table: usize,
}

impl DedupeCopy {
    pub fn into_entries(self) -> DedupeEntries {
        self.entries
    }
}

/// A copy of a window's slots (see [`DedupeWindow::begin_copy`]).
pub struct DedupeEntries {
    main: Vec<(u64, u64)>,
    overflow: Vec<(u128, u64)>,
}

impl DedupeEntries {
    pub fn len(&self) -> usize {
        self.main.len() + self.overflow.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Read back by [`DedupeWindow::decode`].
    pub fn encode(&self, w: &mut Writer<'_>) {
        w.u64(self.main.len() as u64);
        for (k, v) in &self.main {
            w.u64(*k);
            w.u64(*v);
        }
        w.u64(self.overflow.len() as u64);
        for (k, v) in &self.overflow {
            w.u128(*k);
            w.u64(*v);
        }
    }
}

pub struct DedupeWindow {
    main: Vec<HashMap<u64, u64, Build>>,
    overflow: HashMap<u128, u64, Build>,
}

impl Default for DedupeWindow {
    fn default() -> Self {
        DedupeWindow {
            main: (0..TABLES).map(|_| HashMap::default()).collect(),
            overflow: HashMap::default(),
        }
    }
}

fn table(key: u64) -> usize {
    ((key >> 32) as usize) & (TABLES - 1)
}

fn value(fingerprint: u128, day: u16, content: u64) -> u64 {
    let extra = ((fingerprint >> 64) as u64) & LOW24;
    (u64::from(day) << 48) | (extra << 24) | (content & LOW24)
}

fn same_id(stored: u64, fingerprint: u128) -> bool {
    (stored >> 24) & LOW24 == ((fingerprint >> 64) as u64) & LOW24
}

fn seen(stored: u64, content: u64) -> Seen {
    if stored & LOW24 == content & LOW24 {
        Seen::Duplicate
    } else {
        Seen::Conflict
    }
}

impl DedupeWindow {
    pub fn len(&self) -> usize {
        self.main.iter().map(HashMap::len).sum::<usize>() + self.overflow.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn check(&self, fingerprint: u128, content: u64) -> Seen {
        let key = fingerprint as u64;
        match self.main[table(key)].get(&key) {
            Some(&v) if same_id(v, fingerprint) => seen(v, content),
            // The overflow outlives its main slot when that one expires first.
            _ if self.overflow.is_empty() => Seen::New,
            _ => self.overflow.get(&fingerprint).map_or(Seen::New, |&v| seen(v, content)),
        }
    }

    /// Claims an id (after [`DedupeWindow::check`] said `New`).
    pub fn insert(&mut self, fingerprint: u128, day: u16, content: u64) {
        let v = value(fingerprint, day, content);
        let key = fingerprint as u64;
        match self.main[table(key)].get_mut(&key) {
            Some(stored) if !same_id(*stored, fingerprint) => {
                self.overflow.insert(fingerprint, v);
            }
            Some(stored) => *stored = v,
            None => {
                self.main[table(key)].insert(key, v);
            }
        }
    }

    /// Forgets ids of events from before `oldest_kept` (a day number).
    pub fn retain_from(&mut self, oldest_kept: u16) {
        for t in &mut self.main {
            t.retain(|_, v| (*v >> 48) as u16 >= oldest_kept);
        }
        self.overflow.retain(|_, v| (*v >> 48) as u16 >= oldest_kept);
    }

    /// Heap bytes the window takes (table slots and control bytes), for the memory figure.
    pub fn heap_bytes(&self) -> usize {
        self.main.iter().map(HashMap::capacity).sum::<usize>() * 17 + self.overflow.capacity() * 33
    }

    /// Starts a copy of the slots as flat lists, for a checkpoint. The copy is taken a few tables
    /// at a time ([`DedupeWindow::copy_tables`]), between jobs.
    pub fn begin_copy(&self) -> DedupeCopy {
        DedupeCopy {
            entries: DedupeEntries {
                main: Vec::with_capacity(self.len() + self.len() / 8),
                overflow: Vec::new(),
            },
            next_table: 0,
        }
    }

    /// Copies up to `tables` more tables into `copy`; true once every table (and the overflow)
    /// is in it. Ids claimed after the copy began may be in it too; ids evicted meanwhile may
    /// be missing (they are too old to be resent). Both are harmless for a checkpoint: replay
    /// claims the newer ones again.
    pub fn copy_tables(&self, copy: &mut DedupeCopy, tables: usize) -> bool {
        // Saturating: `tables` is usize::MAX when the rest of a copy is finished at once.
        let end = copy.next_table.saturating_add(tables).min(TABLES);
        for t in &self.main[copy.next_table..end] {
            copy.entries.main.extend(t.iter().map(|(k, v)| (*k, *v)));
        }
        copy.next_table = end;
        if end == TABLES && copy.entries.overflow.is_empty() {
            copy.entries.overflow = self.overflow.iter().map(|(k, v)| (*k, *v)).collect();
        }
        end == TABLES
    }

    pub fn decode(r: &mut Reader<'_>) -> Result<DedupeWindow, CodecError> {
        let mut window = DedupeWindow::default();
        let n = r.u64()?;
        let each = (n.min(1 << 30) as usize) / TABLES;
        for t in &mut window.main {
            t.reserve(each + each / 16);
        }
        for _ in 0..n {
            let k = r.u64()?;
            window.main[table(k)].insert(k, r.u64()?);
        }
        for _ in 0..r.u64()? {
            let k = r.u128()?;
            window.overflow.insert(k, r.u64()?);
        }
        Ok(window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_share_their_low_bits_stay_apart() {
        let mut w = DedupeWindow::default();
        let a: u128 = (1 << 64) | 42;
        let b: u128 = (2 << 64) | 42;
        assert_eq!(w.check(a, 7), Seen::New);
        w.insert(a, 100, 7);
        assert_eq!(w.check(a, 7), Seen::Duplicate);
        assert_eq!(w.check(a, 8), Seen::Conflict);
        assert_eq!(w.check(b, 7), Seen::New);
        w.insert(b, 101, 9);
        assert_eq!(w.check(b, 9), Seen::Duplicate);
        assert_eq!(w.check(a, 7), Seen::Duplicate);
        assert_eq!(w.len(), 2);
        w.retain_from(101);
        assert_eq!(w.check(a, 7), Seen::New);
        assert_eq!(w.check(b, 9), Seen::Duplicate);
    }

    #[test]
    fn survives_a_checkpoint() {
        let mut w = DedupeWindow::default();
        for i in 0..1000u128 {
            w.insert(i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C834), 5, i as u64);
        }
        w.insert((9 << 64) | 0x9E37_79B9_7F4A_7C15, 6, 1);
        let mut bytes = Vec::new();
        let mut copy = w.begin_copy();
        while !w.copy_tables(&mut copy, 5) {}
        copy.into_entries().encode(&mut Writer(&mut bytes));
        let back = DedupeWindow::decode(&mut Reader::new(&bytes)).expect("decodes");
        assert_eq!(back.len(), w.len());
        for i in 0..1000u128 {
            let fp = i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C834);
            assert_eq!(back.check(fp, i as u64), Seen::Duplicate);
        }
    }

    #[test]
    fn a_copy_begun_step_by_step_can_be_finished_at_once() {
        // A shutdown (or a second checkpoint request) finishes a copy in progress with
        // usize::MAX tables; from a copy already under way that overflowed `next + tables`.
        let mut w = DedupeWindow::default();
        for i in 0..1000u128 {
            w.insert(i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C834), 5, i as u64);
        }
        let mut copy = w.begin_copy();
        assert!(!w.copy_tables(&mut copy, 4));
        assert!(w.copy_tables(&mut copy, usize::MAX));
        assert_eq!(copy.into_entries().len(), w.len());
    }

    #[test]
    fn at_most_40_bytes_per_id() {
        let mut w = DedupeWindow::default();
        for n in [1_000u128, 100_000, 1_000_000] {
            while (w.len() as u128) < n {
                let i = w.len() as u128 + 1;
                w.insert(i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835), 1, 0);
            }
            let per_id = w.heap_bytes() as f64 / w.len() as f64;
            eprintln!("dedupe window: {n} ids, {per_id:.1} bytes per id");
            assert!(per_id <= 40.0, "{per_id} bytes per id at {n} ids");
        }
    }
}
