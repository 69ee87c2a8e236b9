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

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use crate::store::codec::{CodecError, Reader, Writer};
use crate::store::cold::{ColdDamage, ColdDir, ColdRun, Manifest, RunInfo};

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

use crate::limits::{DEDUPE_TABLES as TABLES, LATE_SPILL_IDS, MERGE_RUNS, SPILL_RETRY};

const LOW48: u64 = (1 << 48) - 1;

/// A copy of a window's slots being taken (see [`DedupeWindow::begin_copy`]).
pub struct DedupeCopy {
    entries: DedupeEntries,
    /// The days in memory when the copy began; the copy takes their tables 1/64 at a time.
    days: Vec<u16>,
    next: usize,
}

impl DedupeCopy {
    pub fn into_entries(self) -> DedupeEntries {
        self.entries
    }
}

/// A copy of a window's in-memory slots (see [`DedupeWindow::begin_copy`]).
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

/// The hot ids of one event day.
pub struct DayTable {
    day: u16,
    main: Vec<HashMap<u64, u64, Build>>,
    overflow: HashMap<u128, u64, Build>,
}

impl DayTable {
    fn new(day: u16) -> DayTable {
        DayTable {
            day,
            main: (0..TABLES).map(|_| HashMap::default()).collect(),
            overflow: HashMap::default(),
        }
    }

    fn len(&self) -> usize {
        self.main.iter().map(HashMap::len).sum::<usize>() + self.overflow.len()
    }

    fn get(&self, fingerprint: u128) -> Option<u64> {
        let key = fingerprint as u64;
        match self.main[table(key)].get(&key) {
            Some(&v) if same_id(v, fingerprint) => Some(v),
            // The overflow outlives its main slot when that one is replaced.
            _ if self.overflow.is_empty() => None,
            _ => self.overflow.get(&fingerprint).copied(),
        }
    }

    fn insert(&mut self, fingerprint: u128, v: u64) {
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

    fn heap_bytes(&self) -> usize {
        self.main.iter().map(HashMap::capacity).sum::<usize>() * 17 + self.overflow.capacity() * 33
    }

    /// Every slot as (low 64 bits of the fingerprint, value), for a cold run.
    fn entries(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let main = self.main.iter().flat_map(|t| t.iter().map(|(k, v)| (*k, *v)));
        main.chain(self.overflow.iter().map(|(k, v)| (*k as u64, *v)))
    }
}

/// The cold tier of a shard: its directory, the manifest and the runs it names.
pub struct ColdTier {
    dir: ColdDir,
    manifest: Manifest,
    runs: Vec<ColdRun>,
}

impl ColdTier {
    /// Opens the shard's cold tier (see [`ColdDir::open`]).
    pub fn open(dir: ColdDir) -> Result<ColdTier, ColdDamage> {
        let (manifest, runs) = dir.open()?;
        Ok(ColdTier { dir, manifest, runs })
    }

    /// An empty cold tier in `dir`, after [`ColdDir::wipe`].
    pub fn empty(dir: ColdDir) -> ColdTier {
        ColdTier {
            dir,
            manifest: Manifest::default(),
            runs: Vec::new(),
        }
    }

    /// Ids in its runs.
    pub fn len(&self) -> usize {
        self.runs.iter().map(|r| r.info.count as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }
}

/// What a background job of the cold tier is writing.
enum JobKind {
    /// The first `tables` frozen tables. `target`: the shard's outputs sent when they were frozen;
    /// the run is named only once the committer has committed that many (every id in it is then
    /// durable in a block).
    Spill { tables: usize, target: u64 },
    /// One run from these runs (all durable already).
    Merge { ids: Vec<u64> },
}

/// A run being written by a thread of its own.
struct Spill {
    kind: JobKind,
    writer: std::thread::JoinHandle<std::io::Result<ColdRun>>,
}

impl Spill {
    /// True when the run may be named once written: a spill's outputs are committed.
    fn may_name(&self, committed: u64) -> bool {
        match self.kind {
            JobKind::Spill { target, .. } => committed >= target,
            JobKind::Merge { .. } => true,
        }
    }

    /// True once the run is written and may be named.
    fn ready(&self, committed: u64) -> bool {
        self.may_name(committed) && self.writer.is_finished()
    }
}

/// What a maintenance step did, for the shard's log and metrics.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Maintenance {
    /// A run now answers in place of frozen tables (its path and ids).
    pub installed: Option<(String, u64)>,
    /// A run now answers in place of this many spill runs (its path).
    pub merged: Option<(String, usize)>,
    /// Runs past the window removed.
    pub expired: usize,
    /// A spill or expiry failed (why); it is retried.
    pub failed: Option<String>,
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

    /// Claims an id (after [`DedupeWindow::check`] said `New`).
    pub fn insert(&mut self, fingerprint: u128, day: u16, content: u64) {
        let v = value(fingerprint, day, content);
        self.day_table(day).insert(fingerprint, v);
    }

    /// Forgets the in-memory ids of events from before `oldest_kept` (a day number); frozen ones
    /// go when their run is written.
    pub fn retain_from(&mut self, oldest_kept: u16) {
        self.hot.retain(|t| t.day >= oldest_kept);
    }

    /// Moves old days to the cold tier and drops cold runs past the window. Called by the shard
    /// between jobs (cheap unless there is something to do): `cutoff` is the first day kept hot,
    /// `oldest_kept` the first day in the window, `sent` and `committed` the shard's outputs sent
    /// to and committed by the committer.
    pub fn maintain(&mut self, cutoff: u16, oldest_kept: u16, sent: u64, committed: u64) -> Maintenance {
        let mut done = Maintenance::default();
        if self.cold.is_none() {
            return done;
        }
        if self.spill.as_ref().is_some_and(|s| s.ready(committed)) {
            self.finish_spill(&mut done);
        }
        self.expire(oldest_kept, &mut done);
        if self.spill.is_none() && self.retry_at.is_none_or(|at| std::time::Instant::now() >= at) {
            self.start_spill(cutoff, sent);
        }
        if self.spill.is_none() && self.retry_at.is_none_or(|at| std::time::Instant::now() >= at) {
            self.start_merge();
        }
        done
    }

    /// True while a spill waits for its writer or its commits.
    pub fn spilling(&self) -> bool {
        self.spill.is_some()
    }

    fn start_spill(&mut self, cutoff: u16, sent: u64) {
        let old: usize = self.hot.iter().filter(|t| t.day < cutoff).map(DayTable::len).sum();
        let due = cutoff != self.spilled_cutoff || old >= LATE_SPILL_IDS || !self.frozen.is_empty();
        if !due || (old == 0 && self.frozen.is_empty()) {
            self.spilled_cutoff = cutoff;
            return;
        }
        self.spilled_cutoff = cutoff;
        let (old, keep): (Vec<DayTable>, Vec<DayTable>) =
            std::mem::take(&mut self.hot).into_iter().partition(|t| t.day < cutoff);
        self.hot = keep;
        self.frozen.extend(old.into_iter().map(Arc::new));
        let tables: Vec<Arc<DayTable>> = self.frozen.clone();
        let kind = JobKind::Spill {
            tables: tables.len(),
            target: sent,
        };
        self.launch("dedupe-spill", kind, move |dir, id| write_run(dir, id, &tables));
    }

    /// Starts a job writing run `id` in a thread of its own (on failure to spawn, retried later).
    fn launch(
        &mut self,
        name: &str,
        kind: JobKind,
        work: impl FnOnce(&ColdDir, u64) -> std::io::Result<ColdRun> + Send + 'static,
    ) {
        let Some(cold) = &mut self.cold else { return };
        let id = cold.manifest.next_id;
        cold.manifest.next_id += 1;
        let dir = cold.dir.clone();
        match std::thread::Builder::new()
            .name(name.into())
            .spawn(move || work(&dir, id))
        {
            Ok(writer) => self.spill = Some(Spill { kind, writer }),
            Err(_) => self.retry_at = Some(std::time::Instant::now() + SPILL_RETRY),
        }
    }

    /// Merges the oldest `MERGE_RUNS` spill runs into one, once there are that many.
    fn start_merge(&mut self) {
        let Some(cold) = &mut self.cold else { return };
        if cold.runs.iter().filter(|r| r.info.level == 0).count() < MERGE_RUNS {
            return;
        }
        let mut spills: Vec<RunInfo> = cold.runs.iter().map(|r| r.info).filter(|i| i.level == 0).collect();
        spills.sort_unstable_by_key(|i| (i.newest_day, i.id));
        spills.truncate(MERGE_RUNS);
        let kind = JobKind::Merge {
            ids: spills.iter().map(|i| i.id).collect(),
        };
        self.launch("dedupe-merge", kind, move |dir, id| merge_runs(dir, id, &spills));
    }

    fn finish_spill(&mut self, done: &mut Maintenance) {
        let (Some(spill), Some(cold)) = (self.spill.take(), &mut self.cold) else {
            return;
        };
        let run = match spill.writer.join() {
            Ok(Ok(run)) => run,
            Ok(Err(e)) => {
                self.retry_at = Some(std::time::Instant::now() + SPILL_RETRY);
                done.failed = Some(format!("{}: {e}", cold.dir.path().display()));
                return;
            }
            Err(_) => {
                self.retry_at = Some(std::time::Instant::now() + SPILL_RETRY);
                done.failed = Some("the cold tier's writer thread panicked".into());
                return;
            }
        };
        let before = cold.manifest.clone();
        if let JobKind::Merge { ids } = &spill.kind {
            cold.manifest.runs.retain(|r| !ids.contains(&r.id));
        }
        cold.manifest.runs.push(run.info);
        if let Err(e) = cold.dir.write_manifest(&cold.manifest) {
            cold.manifest = before;
            let _ = cold.dir.remove_run(run.info.id);
            self.retry_at = Some(std::time::Instant::now() + SPILL_RETRY);
            done.failed = Some(format!("{}: {e}", cold.dir.path().display()));
            return;
        }
        self.retry_at = None;
        match spill.kind {
            JobKind::Spill { tables, .. } => {
                done.installed = Some((run.path().display().to_string(), run.info.count));
                self.frozen.drain(..tables);
            }
            JobKind::Merge { ids } => {
                done.merged = Some((run.path().display().to_string(), ids.len()));
                cold.runs.retain(|r| !ids.contains(&r.info.id));
                for id in ids {
                    // A file left behind is deleted at the next start (the manifest no longer names it).
                    let _ = cold.dir.remove_run(id);
                }
            }
        }
        cold.runs.push(run);
    }

    fn expire(&mut self, oldest_kept: u16, done: &mut Maintenance) {
        let Some(cold) = &mut self.cold else { return };
        // Runs a merge is reading stay until it is done (the merged run then expires by its own
        // newest day).
        let merging: &[u64] = match &self.spill {
            Some(Spill {
                kind: JobKind::Merge { ids },
                ..
            }) => ids,
            _ => &[],
        };
        let expired = |info: &RunInfo| info.newest_day < oldest_kept && !merging.contains(&info.id);
        if !cold.runs.iter().any(|r| expired(&r.info)) {
            return;
        }
        let before = cold.manifest.clone();
        cold.manifest.runs.retain(|r| !expired(r));
        if let Err(e) = cold.dir.write_manifest(&cold.manifest) {
            cold.manifest = before;
            done.failed = Some(format!("{}: {e}", cold.dir.path().display()));
            return;
        }
        let (gone, kept): (Vec<ColdRun>, Vec<ColdRun>) = std::mem::take(&mut cold.runs)
            .into_iter()
            .partition(|r| expired(&r.info));
        cold.runs = kept;
        done.expired = gone.len();
        for run in gone {
            // A file left behind is deleted at the next start (the manifest no longer names it).
            let _ = cold.dir.remove_run(run.info.id);
        }
    }

    /// Finishes a spill under way (shutdown): waits for its writer; names the run if its commits
    /// are done, else leaves the ids to the checkpoint.
    pub fn finish(&mut self, committed: u64) -> Maintenance {
        let mut done = Maintenance::default();
        if self.spill.as_ref().is_some_and(|s| s.may_name(committed)) {
            self.finish_spill(&mut done);
        }
        done
    }

    /// At shutdown: waits for a job under way and names its run if it may be named, else deletes
    /// it (a spill's ids are in the checkpoint the shutdown writes; a merge is done again later).
    /// No thread of this window is left writing into the directory.
    pub fn stop(&mut self, committed: u64) -> Maintenance {
        let done = self.finish(committed);
        if let (Some(spill), Some(cold)) = (self.spill.take(), &self.cold)
            && let Ok(Ok(run)) = spill.writer.join()
        {
            let _ = cold.dir.remove_run(run.info.id);
        }
        done
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

    /// The tables in memory (hot, then frozen).
    fn tables(&self) -> impl Iterator<Item = &DayTable> {
        self.hot.iter().chain(self.frozen.iter().map(|t| &**t))
    }

    /// Starts a copy of the in-memory slots as flat lists, for a checkpoint (the cold tier is
    /// durable already). The copy is taken a few maps at a time ([`DedupeWindow::copy_tables`]),
    /// between jobs.
    pub fn begin_copy(&self) -> DedupeCopy {
        let mut days: Vec<u16> = self.tables().map(|t| t.day).collect();
        days.sort_unstable();
        days.dedup();
        let len = self.memory_len();
        DedupeCopy {
            entries: DedupeEntries {
                main: Vec::with_capacity(len + len / 8),
                overflow: Vec::new(),
            },
            days,
            next: 0,
        }
    }

    /// Copies up to `tables` more maps into `copy`; true once every map of every day is in it.
    /// Ids claimed after the copy began may be in it too; ids evicted or moved to the cold tier
    /// meanwhile may be missing (too old to be resent, or durable in a run). Both are harmless for
    /// a checkpoint: replay claims the newer ones again.
    pub fn copy_tables(&self, copy: &mut DedupeCopy, tables: usize) -> bool {
        let total = copy.days.len() * TABLES;
        let mut left = tables;
        while copy.next < total && left > 0 {
            let (day, t) = (copy.days[copy.next / TABLES], copy.next % TABLES);
            for table in self.tables().filter(|x| x.day == day) {
                copy.entries.main.extend(table.main[t].iter().map(|(k, v)| (*k, *v)));
                if t == TABLES - 1 {
                    copy.entries
                        .overflow
                        .extend(table.overflow.iter().map(|(k, v)| (*k, *v)));
                }
            }
            copy.next += 1;
            left -= 1;
        }
        copy.next >= total
    }

    pub fn decode(r: &mut Reader<'_>) -> Result<DedupeWindow, CodecError> {
        let mut window = DedupeWindow::default();
        for _ in 0..r.u64()? {
            let k = r.u64()?;
            let v = r.u64()?;
            window.day_table(day_of_value(v)).main[table(k)].insert(k, v);
        }
        for _ in 0..r.u64()? {
            let k = r.u128()?;
            let v = r.u64()?;
            window.day_table(day_of_value(v)).overflow.insert(k, v);
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

/// The merge thread: one level-1 run of the entries of `runs`, read page by page (each page
/// checked) and merged in order, written and fsynced.
fn merge_runs(dir: &ColdDir, id: u64, runs: &[RunInfo]) -> std::io::Result<ColdRun> {
    let damaged = |d: ColdDamage| std::io::Error::other(d.to_string());
    let capacity: u64 = runs.iter().map(|r| r.count).sum();
    let oldest = runs.iter().map(|r| r.oldest_day).min().unwrap_or(0);
    let newest = runs.iter().map(|r| r.newest_day).max().unwrap_or(0);
    let mut cursors = Vec::with_capacity(runs.len());
    let mut heads = Vec::with_capacity(runs.len());
    for r in runs {
        let mut c = dir.cursor(*r).map_err(damaged)?;
        heads.push(c.next_entry().map_err(damaged)?);
        cursors.push(c);
    }
    let mut out = dir.run_writer(id, oldest, newest, 1, capacity as usize)?;
    // A handful of runs: the smallest head by a scan.
    while let Some((i, entry)) = heads
        .iter()
        .enumerate()
        .filter_map(|(i, h)| h.map(|e| (i, e)))
        .min_by_key(|(_, e)| *e)
    {
        out.push(entry.0, entry.1)?;
        heads[i] = cursors[i].next_entry().map_err(damaged)?;
    }
    out.finish()
}

/// The spill thread: one sorted run of the frozen tables' ids, written and fsynced.
fn write_run(dir: &ColdDir, id: u64, tables: &[Arc<DayTable>]) -> std::io::Result<ColdRun> {
    let n: usize = tables.iter().map(|t| t.len()).sum();
    let mut entries: Vec<(u64, u64)> = Vec::with_capacity(n);
    for t in tables {
        entries.extend(t.entries().map(|(k, v)| (k, v & LOW48)));
    }
    entries.sort_unstable();
    entries.dedup();
    let oldest = tables.iter().map(|t| t.day).min().unwrap_or(0);
    let newest = tables.iter().map(|t| t.day).max().unwrap_or(0);
    dir.write_run(id, oldest, newest, &entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(w: &DedupeWindow, fingerprint: u128, content: u64) -> Seen {
        w.check(fingerprint, content).expect("no cold tier to fail")
    }

    #[test]
    fn ids_that_share_their_low_bits_stay_apart() {
        let mut w = DedupeWindow::default();
        let a: u128 = (1 << 64) | 42;
        let b: u128 = (2 << 64) | 42;
        assert_eq!(check(&w, a, 7), Seen::New);
        w.insert(a, 100, 7);
        assert_eq!(check(&w, a, 7), Seen::Duplicate);
        assert_eq!(check(&w, a, 8), Seen::Conflict);
        assert_eq!(check(&w, b, 7), Seen::New);
        w.insert(b, 100, 9);
        assert_eq!(check(&w, b, 9), Seen::Duplicate);
        assert_eq!(check(&w, a, 7), Seen::Duplicate);
        assert_eq!(w.len(), 2);
        w.insert((3 << 64) | 43, 101, 1);
        w.retain_from(101);
        assert_eq!(check(&w, a, 7), Seen::New);
        assert_eq!(check(&w, b, 9), Seen::New);
        assert_eq!(check(&w, (3 << 64) | 43, 1), Seen::Duplicate);
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
            assert_eq!(check(&back, fp, i as u64), Seen::Duplicate);
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

    fn tempdir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ratingd-tiers-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn fp(i: u128) -> u128 {
        i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C834) | 1
    }

    #[test]
    fn old_days_move_to_the_cold_tier_and_answer_the_same() {
        let root = tempdir("move");
        let dir = ColdDir::new(&root, 0, 1);
        let mut w = DedupeWindow::default();
        w.set_cold(ColdTier::open(dir.clone()).expect("empty tier"));
        for i in 0..3000u128 {
            w.insert(fp(i), 100 + (i % 3) as u16, i as u64);
        }
        // Days 100 and 101 are older than the hot tier; the outputs that claimed them (5) are
        // not all committed yet (4): the run is written but not named, the ids answer from memory.
        let first = w.maintain(102, 90, 5, 4);
        assert_eq!(first, Maintenance::default());
        assert!(w.spilling());
        assert_eq!(w.memory_len(), 3000);
        assert_eq!(check(&w, fp(0), 0), Seen::Duplicate);
        let waiting = w.finish(4);
        assert!(waiting.installed.is_none(), "not named before its commits");
        assert!(w.spilling());
        let done = w.finish(5);
        let (path, ids) = done.installed.expect("named once committed");
        assert_eq!(ids, 2000);
        assert!(path.ends_with(".cold"), "{path}");
        assert!(!w.spilling());
        assert_eq!((w.memory_len(), w.cold_len()), (1000, 2000));
        for i in 0..3000u128 {
            assert_eq!(check(&w, fp(i), i as u64), Seen::Duplicate, "{i}");
        }
        // A resend with other content (whatever its time) is a CONFLICT from the cold tier too.
        assert_eq!(check(&w, fp(3), 4), Seen::Conflict);
        assert_eq!(check(&w, fp(5000), 1), Seen::New);
        assert!(w.take_cold_reads() >= 2001, "cold hits read pages");
        // The cold tier survives a restart: a new window over the same directory answers alike.
        let mut again = DedupeWindow::default();
        again.set_cold(ColdTier::open(dir.clone()).expect("reopens"));
        assert_eq!(again.cold_len(), 2000);
        assert_eq!(check(&again, fp(3), 3), Seen::Duplicate);
        assert_eq!(
            check(&again, fp(2), 2),
            Seen::New,
            "day 102 was hot: in the checkpoint, not here"
        );
        // A late id of a spilled day waits in memory for the next day's spill, then gets a run of
        // its own; runs leave whole once their newest day is past the window.
        w.insert(fp(7000), 100, 1);
        assert_eq!(w.maintain(102, 90, 6, 6), Maintenance::default());
        assert!(!w.spilling(), "no spill for one late id before the next day");
        w.maintain(103, 90, 6, 6);
        assert_eq!(
            w.finish(6).installed.map(|(_, n)| n),
            Some(1001),
            "day 102 and the late id"
        );
        assert_eq!(w.cold_len(), 3001);
        let expired = w.maintain(103, 102, 6, 6);
        assert_eq!(
            expired.expired, 1,
            "the first run's newest day (101) is past the window"
        );
        assert_eq!(w.cold_len(), 1001);
        assert_eq!(check(&w, fp(3), 3), Seen::New);
        assert_eq!(check(&w, fp(2), 2), Seen::Duplicate);
        let files = std::fs::read_dir(dir.path()).expect("dir").count();
        assert_eq!(files, 2, "the manifest and one run");
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn a_checkpoint_copy_holds_frozen_days() {
        let root = tempdir("copy");
        let mut w = DedupeWindow::default();
        w.set_cold(ColdTier::open(ColdDir::new(&root, 0, 1)).expect("empty tier"));
        for i in 0..500u128 {
            w.insert(fp(i), 100 + (i % 2) as u16, i as u64);
        }
        w.maintain(101, 90, 1, 0);
        assert!(w.spilling(), "day 100 frozen, its run not named");
        let mut copy = w.begin_copy();
        while !w.copy_tables(&mut copy, 7) {}
        let mut bytes = Vec::new();
        copy.into_entries().encode(&mut Writer(&mut bytes));
        let back = DedupeWindow::decode(&mut Reader::new(&bytes)).expect("decodes");
        assert_eq!(back.memory_len(), 500);
        assert!((0..500u128).all(|i| check(&back, fp(i), i as u64) == Seen::Duplicate));
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn a_week_of_spills_merges_into_one_run() {
        let root = tempdir("merge");
        let dir = ColdDir::new(&root, 0, 1);
        let mut w = DedupeWindow::default();
        w.set_cold(ColdTier::open(dir.clone()).expect("empty tier"));
        let mut merged = None;
        for day in 100..108u16 {
            for i in 0..300u128 {
                let n = u128::from(day) * 1000 + i;
                w.insert(fp(n), day, n as u64);
            }
            // The day after: this day spills; from the 7th spill on, a merge follows.
            w.maintain(day + 1, 90, 1, 1);
            assert!(w.finish(1).installed.is_some(), "day {day} spilled");
            w.maintain(day + 1, 90, 1, 1);
            if let Some(m) = w.finish(1).merged {
                merged = Some((day, m));
            }
        }
        let (day, (path, runs)) = merged.expect("a merge");
        assert_eq!((day, runs), (106, MERGE_RUNS), "{path}");
        let cold = w.cold.as_ref().expect("cold tier");
        let levels: Vec<u8> = cold.runs.iter().map(|r| r.info.level).collect();
        assert_eq!(levels, vec![1, 0], "one merged run and the last spill");
        assert_eq!(w.cold_len(), 8 * 300);
        for day in 100..108u128 {
            for i in (0..300u128).step_by(7) {
                let n = day * 1000 + i;
                assert_eq!(check(&w, fp(n), n as u64), Seen::Duplicate, "{n}");
            }
        }
        assert_eq!(check(&w, fp(99_999), 0), Seen::New);
        // The merged runs' files are gone; a restart finds the same tier.
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("dir").count(),
            3,
            "manifest and two runs"
        );
        let again = ColdTier::open(dir.clone()).expect("reopens");
        assert_eq!(again.len(), 8 * 300);
        // The merged run leaves whole once its newest day (106) is past the window.
        assert_eq!(w.maintain(108, 106, 1, 1).expired, 0);
        assert_eq!(w.maintain(108, 107, 1, 1).expired, 1);
        assert_eq!(w.cold_len(), 300);
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn runs_being_merged_expire_after_the_merge() {
        let root = tempdir("merge-expire");
        let mut w = DedupeWindow::default();
        w.set_cold(ColdTier::open(ColdDir::new(&root, 0, 1)).expect("empty tier"));
        for day in 100..107u16 {
            w.insert(fp(u128::from(day)), day, 1);
            w.maintain(day + 1, 90, 1, 1);
            assert!(w.finish(1).installed.is_some());
        }
        // The 7th spill is named; the merge starts in the same step.
        w.maintain(107, 90, 1, 1);
        assert!(w.spilling(), "a merge under way");
        // Every day is now past the window, but the merge is reading the runs: they stay.
        let during = w.maintain(107, 200, 1, 1);
        assert_eq!(during.expired, 0);
        assert!(w.finish(1).merged.is_some(), "the merge completes");
        assert_eq!(w.maintain(107, 200, 1, 1).expired, 1, "then the merged run expires");
        assert_eq!(w.cold_len(), 0);
        let _ = std::fs::remove_dir_all(root);
    }
}
