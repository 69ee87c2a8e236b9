//! The rating pipeline: validated batches are split by account hash into per-shard jobs; each
//! shard thread owns its accounts outright (dedupe window, period-to-date usage, aggregates) and
//! rates without locks; the committer group-commits the shards' output to sled, fsyncs, and only
//! then acknowledges each batch.
//!
//! ```text
//! ingest --(bounded crossbeam, one per shard)--> shard 0..N --(bounded crossbeam)--> committer
//!    ^                                                                                   |
//!    +------------------------- oneshot ack after fsync --------------------------------+
//! ```
//!
//! Memory is bounded by the admission semaphore: at most `max_inflight_batches` batches are
//! between admission and acknowledgement, so every queue holds at most that many jobs.
//!
//! One concern a file: `intake` (the door), `messages` (what the queues carry), `ticket` (a
//! batch's admission and acknowledgement), `shard/` (the shard loop), `committer`, `checkpointer`
//! (the checkpoint files and their id segments), `committed`
//! (the view readers see), `clock`, `error`, `start` (recovery and the threads); `balance` and
//! `corrections` are the operations that join the path at the shards.

pub mod alerts;
pub mod balance;
mod checkpointer;
mod clock;
mod committed;
pub mod committer;
pub mod corrections;
pub mod dedupe;
mod error;
pub mod intake;
mod messages;
pub mod shard;
mod start;
mod ticket;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::domain::keyed::HashKey;
use crate::domain::mediation::Rules;
use crate::domain::subscription::SubscriptionBook;
use crate::domain::tariff::Catalogue;
use crate::domain::usage::Ack;
use crate::store::StoreError;

pub use clock::{Clock, SharedClock};
pub use committed::{Committed, CommittedView, OpenPeriods, TotalsKey};
pub use error::{PipelineError, StartError};
pub use intake::{EventLimits, Pending};
pub use messages::{CommitterMsg, RejectedEvent, ShardJob, ShardMsg, ShardOutput, ValidEvent};
pub use ticket::{Admitted, BatchTicket};

/// What rating needs to know besides the event: tariffs and subscriptions.
#[derive(Debug, Clone)]
pub struct RatingContext {
    pub catalogue: Catalogue,
    pub subscriptions: SubscriptionBook,
    /// Normalization rules applied at the door (docs/mediation.md); reloaded with the tariffs.
    pub mediation: Arc<Rules>,
}

/// The context in force, replaced whole by a tariff reload or a subscription change. Shards and
/// ingest load it once per job or batch, so a change applies from the next batch on.
pub type SharedContext = Arc<arc_swap::ArcSwap<RatingContext>>;

/// Locks a mutex, ignoring poisoning: every critical section here leaves the data consistent.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The running pipeline's handle, shared by the gRPC services. Batches come in through
/// [`Pipeline::intake`] only; readers see the committed view, the rating context and the clock.
pub struct Pipeline {
    shard_tx: Vec<crossbeam_channel::Sender<ShardMsg>>,
    admission: Arc<Semaphore>,
    failed: Arc<AtomicBool>,
    committed: CommittedView,
    context: SharedContext,
    /// The data dir's hash key: event fingerprints and the shard of each account.
    key: HashKey,
    clock: SharedClock,
    config: PipelineConfig,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// The claims of events whose account normalization rules changed, and the first day still
    /// kept of them (older days are removed: their events are TOO_OLD at the door).
    moved: crate::store::MovedClaims,
    moved_kept_from_day: std::sync::atomic::AtomicU32,
}

/// Settings of the pipeline, from the config.
#[derive(Debug, Clone, Copy)]
pub struct PipelineConfig {
    pub shards: usize,
    pub max_inflight_batches: usize,
    pub commit_max_events: usize,
    /// Events older than this are TOO_OLD; also the dedupe window.
    pub dedupe_window_days: u32,
    /// Events further than this in the future are TOO_FAR_IN_FUTURE.
    pub future_skew_seconds: u32,
    pub event_limits: EventLimits,
    pub checkpoint_every_records: u64,
    /// A period closes this long after its end.
    pub close_grace_seconds: i64,
    /// Records of closed periods that ended this many days ago are removed (0: kept forever).
    pub retention_days: u32,
    /// Ids of events older than this many hours leave memory for the dedupe window's cold tier.
    pub dedupe_hot_hours: u32,
    /// A charging session's reservation lapses this long after its last grant.
    pub reservation_ttl_seconds: u32,
    /// Bounds and timeout of partial sessions (`[mediation.partial]`).
    pub partial: crate::domain::partial::PartialLimits,
}

/// Spend-alert thresholds per plan id (from the config); subscriptions add their own.
pub type PlanAlerts = Arc<ahash::AHashMap<String, Vec<rust_decimal::Decimal>>>;

impl Pipeline {
    /// Removes the claims of events whose account rules changed once their day has left the
    /// dedupe window (the sweeper calls it every second; it works once a day).
    pub fn prune_moved_claims(&self) -> Result<usize, StoreError> {
        let day = start::first_kept_day(self.clock.now(), self.config.dedupe_window_days);
        if self.moved_kept_from_day.load(Ordering::Acquire) == u32::from(day) {
            return Ok(0);
        }
        let removed = self.moved.remove_before(day)?;
        self.moved_kept_from_day.store(u32::from(day), Ordering::Release);
        Ok(removed)
    }

    /// Waits until no batch is between admission and acknowledgement, and holds the pipeline so
    /// until the returned value is dropped: a change of normalization rules takes effect with
    /// every earlier batch committed (a resend normalized by the new rules finds the claims of
    /// the old ones on disk).
    pub async fn drained(&self) -> Result<OwnedSemaphorePermit, PipelineError> {
        let all = u32::try_from(self.config.max_inflight_batches).unwrap_or(u32::MAX);
        self.admission
            .clone()
            .acquire_many_owned(all)
            .await
            .map_err(|_| PipelineError::ShuttingDown)
    }

    /// Durable totals only, published after each fsync.
    pub fn committed(&self) -> &CommittedView {
        &self.committed
    }

    /// The tariffs and subscriptions in force (replaced whole by a reload or an upsert).
    pub fn context(&self) -> &SharedContext {
        &self.context
    }

    /// The clock of ingest's window, period close and projections.
    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// True once a commit failed: no more work is taken.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Waits for room in the pipeline (the backpressure point), then hands out a place.
    async fn admit(&self) -> Result<Admitted, PipelineError> {
        if self.failed() {
            return Err(PipelineError::StorageFailed("an earlier commit failed".into()));
        }
        let waited = std::time::Instant::now();
        let permit = self
            .admission
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| PipelineError::ShuttingDown)?;
        crate::telemetry::stage("admission_wait").record(waited.elapsed().as_secs_f64());
        Ok(Admitted::new(permit))
    }

    /// Routes a checked batch to its shards. Returns the receiver of its ack.
    fn submit(
        &self,
        batch_id: u64,
        received_at: chrono::DateTime<chrono::Utc>,
        admitted: Admitted,
        events: Vec<ValidEvent>,
        rejected: Vec<RejectedEvent>,
        dropped: Vec<(u32, Arc<str>)>,
    ) -> oneshot::Receiver<Result<Ack, PipelineError>> {
        let shards = self.shard_tx.len();
        let mut parts: Vec<(Vec<ValidEvent>, Vec<RejectedEvent>)> =
            (0..shards).map(|_| (Vec::new(), Vec::new())).collect();
        for e in events {
            parts[self.key.shard_of(&e.event.account_id, shards)].0.push(e);
        }
        for r in rejected {
            parts[self.key.shard_of(&r.rejected.event.account_id, shards)].1.push(r);
        }
        let used: Vec<usize> = (0..shards)
            .filter(|&i| !parts[i].0.is_empty() || !parts[i].1.is_empty())
            .collect();
        // An empty batch still goes through one shard and the committer, so its ack keeps order.
        let used = if used.is_empty() { vec![0] } else { used };
        let (ticket, rx) = BatchTicket::new(batch_id, used.len(), admitted);
        ticket.dropped(dropped);
        let queued_at = std::time::Instant::now();
        for i in used {
            let (events, rejected) = std::mem::take(&mut parts[i]);
            let job = ShardJob {
                ticket: ticket.clone(),
                queued_at,
                received_at,
                events,
                rejected,
            };
            if self.shard_tx[i].send(ShardMsg::Job(job)).is_err() {
                ticket.fail(PipelineError::ShuttingDown);
            }
        }
        rx
    }

    /// Waits until everything every shard handled before this call is committed (a no-op job
    /// through every shard and the committer, in order).
    pub async fn barrier(&self) -> Result<(), PipelineError> {
        let admitted = self.admit().await?;
        let shards = self.shard_tx.len();
        let (ticket, rx) = BatchTicket::new(u64::MAX, shards, admitted);
        for tx in &self.shard_tx {
            let job = ShardJob {
                ticket: ticket.clone(),
                queued_at: std::time::Instant::now(),
                received_at: self.clock.now(),
                events: Vec::new(),
                rejected: Vec::new(),
            };
            if tx.send(ShardMsg::Job(job)).is_err() {
                ticket.fail(PipelineError::ShuttingDown);
            }
        }
        match rx.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(PipelineError::ShuttingDown),
        }
    }

    /// Stops the pipeline after everything queued is committed and acknowledged.
    pub fn shutdown(&self) {
        self.admission.close();
        let threads = std::mem::take(&mut *lock(&self.threads));
        // Each shard snapshots (a checkpoint, so the next start is quick) and stops once its queue
        // is empty; the committer commits what they sent and ends when every shard has ended.
        for tx in &self.shard_tx {
            let _ = tx.send(ShardMsg::Snapshot);
            let _ = tx.send(ShardMsg::Stop);
        }
        for t in threads {
            let _ = t.join();
        }
    }
}
