//! The dedupe window of one shard: every event id accepted in the window, as its 128-bit keyed
//! fingerprint, in two tiers.
//!
//! The hot tier keeps the ids of recent days in memory, one [`DayTable`] per event day, 16 bytes
//! per slot. The map key is the fingerprint's low 64 bits. The value packs the event's day (16
//! bits, for expiry), 24 more fingerprint bits and 24 bits of the content hash. Two ids are the
//! same when all 88 fingerprint bits agree; two ids whose low 64 bits agree but whose next 24 do
//! not (about once in 2^64 pairs) both stay exact: the second one goes to a small overflow map
//! keyed by the whole fingerprint. A resend with other content is a CONFLICT unless its 24
//! content bits happen to agree (1 in 16.7 million), in which case it is a DUPLICATE; either way
//! it is never charged twice.
//!
//! The cold tier ([`crate::store::cold`]) keeps the ids of days older than `dedupe_hot_hours` in
//! run files on disk, with a Bloom filter per run in memory. Once a day (and when late ids of old
//! days pile up) the hot tier's old days are frozen (still answered from memory), written as one
//! run by a thread of their own, and dropped from memory once the manifest names the run. A run
//! is only named after every output that claimed its ids is committed (`committed_outputs`), so
//! the cold tier never holds an id whose record could be lost. A resend is looked up in every
//! tier whatever its timestamp, because a CONFLICT may carry another time than the original.
//!
//! Each day table spreads its slots over 64 maps chosen by key bits 32..38 (bits the maps' own
//! bucket choice and control bytes do not use), so a map that grows rehashes 1/64 of the day: a
//! few milliseconds of the shard's time instead of a stall of a hundred.
//!
//! Files: this one (the window: check, claim, the checkpoint cut), `day.rs` (one day's table),
//! `journal.rs` (the claims since the last checkpoint, sealed into id segments), `spill.rs` (the
//! cold tier and the maintenance that spills, names, merges and expires runs).

mod day;
mod journal;
mod spill;

use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use crate::limits::{DEDUPE_TABLES as TABLES, LATE_SPILL_IDS, MERGE_RUNS, SPILL_RETRY};
use crate::store::codec::{CodecError, Reader};
use crate::store::cold::{ColdDamage, ColdRun};

pub use day::DayTable;
pub use journal::{CLAIM_BYTES, Claim, IdSegment, Retire};
use spill::Spill;
pub use spill::{ColdTier, Maintenance};

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

const LOW48: u64 = (1 << 48) - 1;

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

fn day_of_value(v: u64) -> u16 {
    (v >> 48) as u16
}

pub struct DedupeWindow {
    /// By event day (a handful: the hot hours, plus late ids of older days until they spill).
    hot: Vec<DayTable>,
    /// Days being written to the cold tier: answered from memory until their run is named.
    frozen: Vec<Arc<DayTable>>,
    cold: Option<ColdTier>,
    spill: Option<Spill>,
    /// The hot cutoff day at the last spill.
    spilled_cutoff: u16,
    retry_at: Option<std::time::Instant>,
    /// Cold-tier pages read (filter said "maybe"), taken by the shard once per job.
    cold_reads: std::cell::Cell<u64>,
    /// The claims since the last checkpoint cut (see [`journal`]).
    journal: journal::Journal,
    /// Named spill runs since the last cut: the segments they make redundant.
    retired: Vec<Retire>,
}

impl Default for DedupeWindow {
    fn default() -> Self {
        DedupeWindow {
            hot: Vec::new(),
            frozen: Vec::new(),
            cold: None,
            spill: None,
            spilled_cutoff: 0,
            retry_at: None,
            cold_reads: std::cell::Cell::new(0),
            journal: journal::Journal::default(),
            retired: Vec::new(),
        }
    }
}

impl DedupeWindow {
    /// Ids in the window: hot, frozen and cold.
    pub fn len(&self) -> usize {
        self.memory_len() + self.cold_len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ids in memory (hot and frozen).
    pub fn memory_len(&self) -> usize {
        let hot: usize = self.hot.iter().map(DayTable::len).sum();
        hot + self.frozen.iter().map(|t| t.len()).sum::<usize>()
    }

    /// Ids in the cold tier.
    pub fn cold_len(&self) -> usize {
        self.cold.as_ref().map_or(0, ColdTier::len)
    }

    /// Runs in the cold tier.
    pub fn cold_runs(&self) -> usize {
        self.cold.as_ref().map_or(0, |c| c.runs.len())
    }

    /// Cold-tier pages read since the last call.
    pub fn take_cold_reads(&self) -> u64 {
        self.cold_reads.replace(0)
    }

    /// Gives the window its cold tier (recovery); without one, every id stays in memory.
    pub fn set_cold(&mut self, cold: ColdTier) {
        self.cold = Some(cold);
    }

    /// Looks `fingerprint` up in every tier. `Err` when a cold run fails its check: the answer is
    /// unknown (the caller must not rate the event).
    pub fn check(&self, fingerprint: u128, content: u64) -> Result<Seen, ColdDamage> {
        for t in &self.hot {
            if let Some(v) = t.get(fingerprint) {
                return Ok(seen(v, content));
            }
        }
        for t in &self.frozen {
            if let Some(v) = t.get(fingerprint) {
                return Ok(seen(v, content));
            }
        }
        let Some(cold) = &self.cold else {
            return Ok(Seen::New);
        };
        for run in &cold.runs {
            if !run.may_hold(fingerprint) {
                continue;
            }
            self.cold_reads.set(self.cold_reads.get() + 1);
            if let Some(v) = run.lookup(fingerprint)? {
                return Ok(seen(v, content));
            }
        }
        Ok(Seen::New)
    }

    /// Claims an id (after [`DedupeWindow::check`] said `New`); the claim goes into the next
    /// checkpoint's segment.
    pub fn insert(&mut self, fingerprint: u128, day: u16, content: u64) {
        let v = value(fingerprint, day, content);
        self.day_table(day).insert(fingerprint, v);
        self.journal.push(fingerprint, v);
    }

    /// Puts back the claims of a checkpoint's segment (recovery): they are in a segment already,
    /// so they are not journaled again.
    pub fn load_segment(&mut self, claims: &[Claim]) {
        // Claims come in runs of one day: the day's table is looked up when the day changes.
        let mut at: Option<(u16, usize)> = None;
        for c in claims {
            let day = c.day();
            let index = match at {
                Some((d, index)) if d == day => index,
                _ => {
                    self.day_table(day);
                    // Invariant: the table was created just above if it was absent.
                    let index = self.hot.iter().rposition(|t| t.day == day).expect("day table present");
                    at = Some((day, index));
                    index
                }
            };
            self.hot[index].insert(c.fingerprint(), c.value);
        }
    }

    /// Numbers the next segment from `next` on (recovery: above every segment file on disk).
    pub fn number_segments_from(&mut self, next: u64) {
        self.journal.number_from(next);
    }

    /// At a checkpoint cut: the claims since the last cut as a numbered segment, and the
    /// segments that spills named since then make redundant.
    pub fn seal(&mut self) -> (IdSegment, Vec<Retire>) {
        (self.journal.seal(), std::mem::take(&mut self.retired))
    }

    /// Claims waiting for the next cut.
    pub fn journal_len(&self) -> usize {
        self.journal.len()
    }

    /// Forgets the in-memory ids of events from before `oldest_kept` (a day number); frozen ones
    /// go when their run is written.
    pub fn retain_from(&mut self, oldest_kept: u16) {
        self.hot.retain(|t| t.day >= oldest_kept);
        // Segments whose ids are all older are no longer needed either (whether or not their
        // days ever spilled).
        self.retired.push(Retire {
            sealed_before: self.journal.next_number(),
            days_before: oldest_kept,
        });
    }

    /// Heap bytes the window takes (table slots and control bytes, cold filters and indexes).
    pub fn heap_bytes(&self) -> usize {
        let hot: usize = self.hot.iter().map(DayTable::heap_bytes).sum();
        let frozen: usize = self.frozen.iter().map(|t| t.heap_bytes()).sum();
        let cold: usize = self
            .cold
            .as_ref()
            .map_or(0, |c| c.runs.iter().map(ColdRun::heap_bytes).sum());
        hot + frozen + cold
    }

    /// Reads the whole-window part of an `RCK2`/`RCK3` checkpoint (releases before id segments).
    /// Its ids are journaled: the first checkpoint written after the upgrade holds them in its
    /// segment.
    pub fn decode(r: &mut Reader<'_>) -> Result<DedupeWindow, CodecError> {
        let mut window = DedupeWindow::default();
        for _ in 0..r.u64()? {
            let k = r.u64()?;
            let v = r.u64()?;
            window.day_table(day_of_value(v)).main[table(k)].insert(k, v);
            // The main map keys on the low 64 bits and compares the 24 bits kept in the value.
            window
                .journal
                .push(u128::from(k) | (u128::from((v >> 24) & LOW24) << 64), v);
        }
        for _ in 0..r.u64()? {
            let k = r.u128()?;
            let v = r.u64()?;
            window.day_table(day_of_value(v)).overflow.insert(k, v);
            window.journal.push(k, v);
        }
        Ok(window)
    }

    /// The hot table of `day`, created when absent.
    fn day_table(&mut self, day: u16) -> &mut DayTable {
        // Most ids belong to the newest day, kept last.
        let at = match self.hot.iter().rposition(|t| t.day == day) {
            Some(at) => at,
            None => {
                let at = self.hot.partition_point(|t| t.day < day);
                self.hot.insert(at, DayTable::new(day));
                at
            }
        };
        &mut self.hot[at]
    }
}

#[cfg(test)]
mod tests;
