//! The cold tier of a shard's dedupe window: its runs on disk, and the maintenance between jobs
//! that freezes old days, writes them as a run on a thread of their own, names the run once
//! every output that claimed its ids is committed, merges spill runs, and removes runs past the
//! window.

use std::sync::Arc;

use super::day::DayTable;
use super::{DedupeWindow, LATE_SPILL_IDS, LOW48, MERGE_RUNS, SPILL_RETRY};
use crate::store::cold::{ColdDamage, ColdDir, ColdRun, Manifest, RunInfo};

/// The cold tier of a shard: its directory, the manifest and the runs it names.
pub struct ColdTier {
    dir: ColdDir,
    manifest: Manifest,
    pub(super) runs: Vec<ColdRun>,
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
pub(super) enum JobKind {
    /// The first `tables` frozen tables. `target`: the shard's outputs sent when they were frozen;
    /// the run is named only once the committer has committed that many (every id in it is then
    /// durable in a block). `retire`: the checkpoint segments the run makes redundant once named.
    Spill {
        tables: usize,
        target: u64,
        retire: super::Retire,
    },
    /// One run from these runs (all durable already).
    Merge { ids: Vec<u64> },
}

/// A run being written by a thread of its own.
pub(super) struct Spill {
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

impl DedupeWindow {
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
        // Every id of a day before the cutoff claimed before now is in these tables (or in an
        // earlier run, or past the window): so are those of every segment sealed before now.
        let retire = super::Retire {
            sealed_before: self.journal.next_number(),
            days_before: cutoff,
        };
        let kind = JobKind::Spill {
            tables: tables.len(),
            target: sent,
            retire,
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
            JobKind::Spill { tables, retire, .. } => {
                done.installed = Some((run.path().display().to_string(), run.info.count));
                self.frozen.drain(..tables);
                self.retired.push(retire);
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
