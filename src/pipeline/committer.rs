//! The committer: gathers shard outputs into group commits (one block, one fsync), then publishes
//! the changed totals to the committed view and acknowledges each batch part. Checkpoints are
//! requested from the shards every `checkpoint_every_records` records; each is handed, once the
//! commits it reflects are durable, to a writer thread (`checkpointer`: writing must not hold up
//! acknowledgements).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crossbeam_channel::{Receiver, Sender};
use tracing::{error, info};

use super::shard::ShardSnapshot;
use super::{CommittedView, CommitterMsg, PipelineConfig, PipelineError, ShardMsg, ShardOutput};
use crate::store::checkpoint::CheckpointFiles;
use crate::store::codec::seal_segments;
use crate::store::segments::SegmentMeta;
use crate::store::{Commit, Store};

pub struct Committer {
    store: Store,
    committed: CommittedView,
    failed: Arc<AtomicBool>,
    config: PipelineConfig,
    shard_tx: Vec<Sender<ShardMsg>>,
    records_since_checkpoint: u64,
    /// Checkpoints requested and not yet written.
    snapshots_pending: Arc<AtomicUsize>,
    /// Per shard: the id segments its checkpoint named at start (the writer's first live lists).
    segments: Vec<Vec<SegmentMeta>>,
    alerts: super::alerts::Alerts,
    commit_wait: metrics::Histogram,
    fsync: metrics::Histogram,
}

impl Committer {
    pub fn new(
        store: Store,
        committed: CommittedView,
        failed: Arc<AtomicBool>,
        config: PipelineConfig,
        shard_tx: Vec<Sender<ShardMsg>>,
        segments: Vec<Vec<SegmentMeta>>,
        alerts: super::alerts::Alerts,
    ) -> Committer {
        Committer {
            store,
            committed,
            failed,
            config,
            shard_tx,
            records_since_checkpoint: 0,
            snapshots_pending: Arc::new(AtomicUsize::new(0)),
            segments,
            alerts,
            commit_wait: crate::telemetry::stage("commit_wait"),
            fsync: crate::telemetry::stage("fsync"),
        }
    }

    /// Runs until every shard has stopped and everything they sent is committed, and the last
    /// checkpoints are written.
    pub fn run(mut self, rx: Receiver<CommitterMsg>) {
        let shards = self.shard_tx.len();
        // Bound: at most one checkpoint per shard is requested at a time.
        let (ckpt_tx, ckpt_rx) = crossbeam_channel::bounded::<(usize, u64, ShardSnapshot)>(shards + 1);
        let files = CheckpointFiles::new(std::path::Path::new(self.store.dir()));
        let pending = self.snapshots_pending.clone();
        let live = std::mem::take(&mut self.segments);
        let writer = std::thread::Builder::new()
            .name("checkpointer".into())
            .spawn(move || super::checkpointer::write_checkpoints(files, live, ckpt_rx, pending));
        let mut group: Vec<ShardOutput> = Vec::new();
        let mut snapshots: Vec<(usize, ShardSnapshot)> = Vec::new();
        let mut cut: Option<usize> = None;
        // Per shard: the seq from which commits are not reflected by its copy in progress.
        let mut cut_seq: Vec<Option<u64>> = vec![None; shards];
        while let Ok(first) = rx.recv() {
            let mut events = 0usize;
            let mut next = Some(first);
            // Group commit: take whatever is already queued (it arrived while the last fsync ran),
            // up to the size bound, cutting the group at a shard's checkpoint cut (its copy reflects
            // exactly the outputs before it) and at the finished copy (whose dedupe part may hold
            // claims from outputs up to it, all durable once this group is).
            while let Some(msg) = next.take() {
                match msg {
                    CommitterMsg::Output(out) => {
                        events += out.record_count as usize;
                        group.push(out);
                    }
                    CommitterMsg::SnapshotCut { shard } => {
                        cut = Some(shard);
                        break;
                    }
                    CommitterMsg::Snapshot { shard, state } => {
                        snapshots.push((shard, state));
                        break;
                    }
                }
                if events >= self.config.commit_max_events {
                    break;
                }
                next = rx.try_recv().ok();
            }
            self.commit(&mut group);
            if let Some(shard) = cut.take() {
                // Every output the shard sent before its cut is in a commit before this seq.
                cut_seq[shard] = Some(self.store.next_seq());
            }
            for (shard, state) in snapshots.drain(..) {
                // The claims the copy holds are all in commits made by now, so it is written only
                // after they are durable.
                let Some(next_seq) = cut_seq[shard].take() else {
                    // Not reachable (a shard sends its cut before its copy); not counted as pending.
                    let _ = self
                        .snapshots_pending
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| Some(n.saturating_sub(1)));
                    continue;
                };
                if self.failed.load(Ordering::Acquire) {
                    break;
                }
                let _ = ckpt_tx.send((shard, next_seq, state));
            }
        }
        drop(ckpt_tx);
        if let Ok(writer) = writer {
            let _ = writer.join();
        }
        info!(committed_through = self.store.next_seq(), "committer stopped");
    }

    fn commit(&mut self, group: &mut Vec<ShardOutput>) {
        if self.failed.load(Ordering::Acquire) {
            for out in group.drain(..) {
                out.ticket
                    .fail(PipelineError::StorageFailed("an earlier commit failed".into()));
            }
            return;
        }
        let records: u32 = group.iter().map(|o| o.record_count).sum();
        let now = std::time::Instant::now();
        for out in group.iter() {
            self.commit_wait.record(now.duration_since(out.rated_at).as_secs_f64());
        }
        let mut commit = Commit::default();
        if records > 0 {
            commit.parts = seal_parts(group);
        }
        for out in group.iter_mut() {
            commit.writes.append(&mut out.writes);
            if let Some(balance) = out.balance.as_mut() {
                commit.writes.append(&mut balance.writes);
            }
        }
        if records > 0 {
            let mut accounts: Vec<std::sync::Arc<str>> = group.iter_mut().flat_map(|o| o.accounts.drain(..)).collect();
            accounts.sort_unstable();
            accounts.dedup();
            commit.accounts = accounts;
        }
        if commit.parts.is_empty() && commit.writes.is_empty() {
            // Nothing to write (all duplicates): earlier commits already made what these depend on
            // durable, because outputs are committed in the order the shards sent them.
            self.publish(group);
            return;
        }
        let suspended = commit.writes.iter().filter(|w| w.is_suspense()).count();
        let started = std::time::Instant::now();
        match self.store.commit(commit) {
            Ok(_) => {
                metrics::histogram!(crate::telemetry::COMMIT_DURATION).record(started.elapsed().as_secs_f64());
                self.fsync.record(self.store.last_fsync().as_secs_f64());
                metrics::histogram!(crate::telemetry::COMMIT_EVENTS).record(f64::from(records));
                if suspended > 0 {
                    metrics::gauge!(crate::telemetry::SUSPENSE_EVENTS).increment(suspended as f64);
                }
                self.records_since_checkpoint += u64::from(records);
                self.publish(group);
                metrics::gauge!(crate::telemetry::AGGREGATES).set(self.committed.totals.len() as f64);
                self.maybe_request_checkpoint();
            }
            Err(e) => {
                error!(error = %e, dir = self.store.dir(), "commit failed; ratingd takes no more work");
                metrics::counter!(crate::telemetry::COMMIT_FAILURES).increment(1);
                self.failed.store(true, Ordering::Release);
                for out in group.drain(..) {
                    out.ticket.fail(PipelineError::StorageFailed(e.to_string()));
                }
            }
        }
    }

    /// After a durable commit: totals become visible (and marked for the Redis projection), then
    /// the batch parts are acknowledged.
    fn publish(&mut self, group: &mut Vec<ShardOutput>) {
        let mut new = Vec::new();
        let context = self.alerts.context();
        let committed = &self.committed;
        let alerts = &mut self.alerts;
        for out in group.iter_mut() {
            committed.totals.apply(out.shard, &mut out.totals, |applied| {
                let totals = applied.after;
                alerts.check(&context, applied.before, totals, committed);
                if applied.before.is_none() {
                    new.push((totals.account.clone(), totals.period.clone(), totals.plan.clone()));
                }
            });
        }
        if !new.is_empty() {
            self.committed.note_open(new);
        }
        for out in group.iter_mut() {
            if let Some(balance) = out.balance.take() {
                self.publish_balances(*balance);
            }
        }
        self.committed.epoch.store(self.store.next_seq(), Ordering::Release);
        for out in group.drain(..) {
            if let Some(n) = self.committed.outputs_committed.get(out.shard) {
                n.fetch_add(1, Ordering::AcqRel);
            }
            out.ticket.part_done(out.accepted(), out.duplicate, out.results);
        }
    }

    /// Committed wallets become visible (and marked for the Redis projection); written alerts
    /// are flagged for announcement.
    fn publish_balances(&mut self, balance: super::shard::BalanceWrites) {
        if balance.alerts {
            self.committed.balance_alerts_pending.store(true, Ordering::Release);
        }
        if balance.wallets.is_empty() {
            return;
        }
        let mut dirty = super::lock(&self.committed.balances_dirty);
        for (account, view) in balance.wallets {
            dirty.insert(account.clone());
            self.committed.balances.insert(account, view);
        }
    }

    fn maybe_request_checkpoint(&mut self) {
        if self.snapshots_pending.load(Ordering::Acquire) > 0
            || self.records_since_checkpoint < self.config.checkpoint_every_records
        {
            return;
        }
        self.records_since_checkpoint = 0;
        for tx in &self.shard_tx {
            // A full queue means the shard is busy; it will be asked again next round.
            if tx.try_send(ShardMsg::Snapshot).is_ok() {
                self.snapshots_pending.fetch_add(1, Ordering::AcqRel);
            }
        }
    }
}

/// The group's records, in order, as sealed blocks of about [`crate::store::BLOCK_PART_BYTES`] each.
fn seal_parts(group: &[ShardOutput]) -> Vec<Vec<u8>> {
    seal_segments(group.iter().map(|o| o.records.as_slice()))
}
