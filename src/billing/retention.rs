//! Retention: the records of closed periods that ended more than `retention_days` ago leave the
//! data dir, oldest commit first, with their account index, their periods' final totals, close
//! and alerts, and the suspense entries received as long ago. When `retention_export_dir` is set,
//! the records are first written there (JSONL, the fields of `ratectl export`) and fsynced; the
//! removal is then one sled batch, so a crash or a full disk leaves either all of a step or none
//! of it. Runs on the closer's interval; a step that finds nothing due remembers when the oldest
//! commit can next become due, so idle intervals read nothing.

use std::io::Write;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use crate::pipeline::Pipeline;
use crate::store::{Removal, Retention, StoredCommit};

use crate::limits::{RETENTION_COMMITS_PER_STEP as COMMITS_PER_STEP, RETENTION_RECORDS_PER_STEP as RECORDS_PER_STEP};

pub struct Sweeper {
    table: Retention,
    days: u32,
    export_dir: Option<PathBuf>,
    /// The first seq not yet removed (all before it are gone).
    from_seq: u64,
    /// Nothing can be due before this instant (the oldest commit's records are not old enough).
    idle_until: Option<DateTime<Utc>>,
}

/// Why the oldest commit stays: not every period of it is closed, or one ends too recently
/// (then it may go at `.1`).
enum Verdict {
    Due(Vec<(String, String, DateTime<Utc>)>),
    Kept(Option<DateTime<Utc>>),
}

impl Sweeper {
    pub fn new(table: Retention, days: u32, export_dir: Option<PathBuf>) -> Sweeper {
        Sweeper {
            table,
            days,
            export_dir,
            from_seq: 0,
            idle_until: None,
        }
    }

    /// Removes every commit now due, a step at a time. Returns how many records went.
    pub async fn sweep(&mut self, pipeline: &Pipeline) -> Result<usize, String> {
        if self.days == 0 {
            return Ok(0);
        }
        let now = pipeline.clock().now();
        if self.idle_until.is_some_and(|t| now < t) {
            return Ok(0);
        }
        let mut removed = 0;
        loop {
            let (table, from) = (self.table.clone(), self.from_seq);
            let commits = tokio::task::spawn_blocking(move || table.front(from, COMMITS_PER_STEP, RECORDS_PER_STEP))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            let mut due: Vec<StoredCommit> = Vec::new();
            let mut periods: Vec<(String, String, DateTime<Utc>)> = Vec::new();
            let mut idle_until = None;
            let records: usize = commits.iter().map(|c| c.records.len()).sum();
            let full = commits.len() == COMMITS_PER_STEP || records >= RECORDS_PER_STEP;
            for commit in commits {
                match self.verdict(pipeline, &commit, now) {
                    Verdict::Due(of_commit) => {
                        for p in of_commit {
                            if !periods.contains(&p) {
                                periods.push(p);
                            }
                        }
                        due.push(commit);
                    }
                    Verdict::Kept(until) => {
                        idle_until = until;
                        break;
                    }
                }
            }
            if due.is_empty() {
                self.idle_until = idle_until;
                return Ok(removed);
            }
            removed += self.remove(pipeline, due, periods, now).await?;
            if !full || idle_until.is_some() {
                // Everything stored was due and is gone, or the rest is not due yet.
                self.idle_until = idle_until;
                return Ok(removed);
            }
        }
    }

    fn verdict(&self, pipeline: &Pipeline, commit: &StoredCommit, now: DateTime<Utc>) -> Verdict {
        let context = pipeline.context().load();
        let committed = pipeline.committed();
        let keep = chrono::Duration::days(i64::from(self.days));
        let mut periods: Vec<(String, String, DateTime<Utc>)> = Vec::new();
        for r in &commit.records {
            // Where the record counts: a closed period's correction counts in the open period
            // it was booked into, and stays until that one is closed and old enough.
            let (plan, period) = r.booked();
            if periods.iter().any(|(p, l, _)| p == plan && l == period) {
                continue;
            }
            if !committed.is_closed(plan, period) {
                // Looked at again a little later (the close is due at the period's end plus
                // the grace, which the closer reaches on its own interval).
                return Verdict::Kept(Some(now + chrono::Duration::minutes(10)));
            }
            let Some(end) = context
                .catalogue
                .plan(plan)
                .and_then(|p| p.period.period_labelled(p.time_zone, period))
                .map(|p| p.end)
            else {
                // A plan no longer in the catalogue: its periods' ends are unknown; kept.
                warn!(plan = %plan, period = %period, seq = commit.seq, "retention: the plan is not in the catalogue; records kept");
                return Verdict::Kept(Some(now + chrono::Duration::hours(1)));
            };
            if end + keep > now {
                return Verdict::Kept(Some(end + keep));
            }
            periods.push((plan.to_string(), period.to_string(), end));
        }
        Verdict::Due(periods)
    }

    async fn remove(
        &mut self,
        pipeline: &Pipeline,
        due: Vec<StoredCommit>,
        periods: Vec<(String, String, DateTime<Utc>)>,
        now: DateTime<Utc>,
    ) -> Result<usize, String> {
        let (first, last) = (due[0].seq, due[due.len() - 1].seq);
        let records: usize = due.iter().map(|c| c.records.len()).sum();
        let bytes: usize = due.iter().map(|c| c.bytes).sum();
        let removal = Removal {
            seqs: due.iter().map(|c| c.seq).collect(),
            periods: periods.clone(),
            suspense_before: now - chrono::Duration::days(i64::from(self.days)),
            now,
        };
        let (table, export_dir) = (self.table.clone(), self.export_dir.clone());
        let done = tokio::task::spawn_blocking(move || {
            // The export is durable before anything is removed.
            let exported = match &export_dir {
                Some(dir) => Some(export(dir, first, last, &due).map_err(|e| format!("{}: {e}", dir.display()))?),
                None => None,
            };
            let removed = table.remove(&removal).map_err(|e| e.to_string())?;
            Ok::<_, String>((exported, removed))
        })
        .await
        .map_err(|e| e.to_string())??;
        self.from_seq = last + 1;
        let committed = pipeline.committed();
        {
            let mut retired = committed.retired.write().unwrap_or_else(|e| e.into_inner());
            for (plan, period, end) in &periods {
                if !retired.iter().any(|r| r.plan == *plan && r.period == *period) {
                    retired.push(crate::store::RetiredPeriod {
                        plan: plan.clone(),
                        period: period.clone(),
                        removed_at: now,
                        end: *end,
                    });
                }
            }
        }
        let (exported, removed) = done;
        metrics::counter!(crate::telemetry::RETENTION_REMOVED).increment(records as u64);
        if removed.suspense > 0 {
            metrics::gauge!(crate::telemetry::SUSPENSE_EVENTS).decrement(removed.suspense as f64);
        }
        info!(
            first_seq = first,
            last_seq = last,
            records,
            bytes,
            finals = removed.finals,
            suspense = removed.suspense,
            alerts = removed.alerts,
            periods = ?periods.iter().map(|(plan, period, _)| format!("{plan}/{period}")).collect::<Vec<_>>(),
            export = ?exported.as_ref().map(|p: &PathBuf| p.display().to_string()),
            "retention removed records"
        );
        Ok(records)
    }
}

/// Writes the records of `commits` to `<dir>/retention-<first>-<last>.jsonl` (a temporary file,
/// fsync, rename, fsync of the directory). Written again whole after a crash before the removal.
fn export(dir: &std::path::Path, first: u64, last: u64, commits: &[StoredCommit]) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("retention-{first:020}-{last:020}.jsonl"));
    let tmp = path.with_extension("jsonl.tmp");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    for r in commits.iter().flat_map(|c| &c.records) {
        serde_json::to_writer(&mut out, &r.export_json())?;
        out.write_all(b"\n")?;
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(path)
}
