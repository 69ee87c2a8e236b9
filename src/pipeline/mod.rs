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

pub mod alerts;
pub mod balance;
pub mod committer;
pub mod corrections;
pub mod dedupe;
pub mod fees;
pub mod intake;
pub mod shard;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use dashmap::DashMap;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::domain::keyed::HashKey;

use crate::domain::aggregate::{AccountPeriod, PeriodTotals};
use crate::domain::mediation::Rules;
use crate::domain::record::AsSent;
use crate::domain::subscription::SubscriptionBook;
use crate::domain::tariff::Catalogue;
use crate::domain::usage::{Ack, EventOutcome, Rejected, UsageEvent};
use crate::store::{Finals, RetiredPeriod, Store, StoreError};

pub use intake::{EventLimits, Pending};

/// The time source of the pipeline: the system clock, plus an offset that only tests move (to
/// reach a period's close without waiting for it).
#[derive(Debug, Default)]
pub struct Clock {
    offset_nanos: std::sync::atomic::AtomicI64,
}

impl Clock {
    /// A clock that reads `instant` now and runs on from it at the system clock's pace (tests pin
    /// the daemon to a fixed date, so no assertion depends on the day the suite runs).
    pub fn starting_at(instant: chrono::DateTime<chrono::Utc>) -> Clock {
        let clock = Clock::default();
        clock.advance(instant - chrono::Utc::now());
        clock
    }

    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now() + chrono::Duration::nanoseconds(self.offset_nanos.load(Ordering::Relaxed))
    }

    /// Moves this clock (tests; a negative duration moves it back).
    pub fn advance(&self, by: chrono::Duration) {
        self.offset_nanos
            .fetch_add(by.num_nanoseconds().unwrap_or(0), Ordering::Relaxed);
    }
}

pub type SharedClock = Arc<Clock>;

/// An (account, period) key.
pub type TotalsKey = (Arc<str>, Arc<str>);

/// The accounts with totals in each open (plan, period).
pub type OpenPeriods = ahash::AHashMap<(Arc<str>, Arc<str>), Vec<Arc<str>>>;

/// What readers see: durable totals only, published by the committer after each fsync.
#[derive(Default)]
pub struct Committed {
    /// Totals by (account, period), one part per plan that rated usage in the period.
    pub totals: DashMap<TotalsKey, AccountPeriod, ahash::RandomState>,
    /// Keys changed since the Redis projection last took them (bounded by the number of totals).
    pub dirty: Mutex<ahash::AHashSet<TotalsKey>>,
    /// The sequence number the next commit will get: grows with every commit, across restarts.
    pub epoch: std::sync::atomic::AtomicU64,
    /// Closed (plan, period) pairs: their totals are final.
    pub closed: std::sync::RwLock<ahash::AHashSet<(Arc<str>, Arc<str>)>>,
    /// Set when a close was written and its announcement may not be in Redis yet.
    pub announcements_pending: AtomicBool,
    /// Set when a spend alert was written and may not be in Redis yet.
    pub alerts_pending: AtomicBool,
    /// Set when a closed period's correction was written and may not be announced yet.
    pub adjustments_pending: AtomicBool,
    /// Accounts whose stored records failed their check at start, with why (fixed after start):
    /// their totals are not served or projected, and their batches are refused.
    pub damaged: ahash::AHashMap<Arc<str>, Arc<str>>,
    /// The final totals of closed periods, on disk: a closed period's totals leave `totals` (and
    /// the shards) once its close is durable, and are read from here.
    pub finals: Option<Finals>,
    /// The accounts with totals in each open (plan, period): what a close finalizes, without a
    /// scan of every totals.
    pub open: Mutex<OpenPeriods>,
    /// Grows with every close: shards drop the closed totals they still hold when it moves.
    pub closed_generation: std::sync::atomic::AtomicU64,
    /// Periods whose records retention removed (all or some): queries for them say so.
    pub retired: std::sync::RwLock<Vec<RetiredPeriod>>,
    /// Committed wallets, by account (the Redis projection's `balance` hashes).
    pub balances: DashMap<Arc<str>, crate::domain::balance::BalanceView, ahash::RandomState>,
    /// Accounts whose wallet changed since the Redis projection last took them.
    pub balances_dirty: Mutex<ahash::AHashSet<Arc<str>>>,
    /// Set when a balance alert was written and may not be in Redis yet.
    pub balance_alerts_pending: AtomicBool,
    /// Per shard: how many of its outputs are committed (a spill to the dedupe cold tier waits
    /// for the outputs that claimed its ids).
    pub outputs_committed: Vec<std::sync::atomic::AtomicU64>,
}

impl Committed {
    /// [`PipelineError::Damaged`] naming the damaged block, when `account` is damaged.
    pub fn check_damage(&self, account: &str) -> Result<(), PipelineError> {
        match self.damaged.get(account) {
            None => Ok(()),
            Some(why) => Err(PipelineError::Damaged {
                account: account.to_string(),
                why: why.clone(),
            }),
        }
    }

    pub fn is_closed(&self, plan: &str, period: &str) -> bool {
        let closed = self.closed.read().unwrap_or_else(|e| e.into_inner());
        closed.contains(&(Arc::from(plan), Arc::from(period)))
    }

    /// True when some plan's period labelled `period` is closed (its totals may be on disk only).
    fn any_closed(&self, period: &str) -> bool {
        let closed = self.closed.read().unwrap_or_else(|e| e.into_inner());
        closed.iter().any(|(_, p)| &**p == period)
    }

    /// The retention marker of a period label, when retention removed records of it.
    pub fn retired(&self, period: &str) -> Option<RetiredPeriod> {
        let retired = self.retired.read().unwrap_or_else(|e| e.into_inner());
        retired.iter().find(|r| r.period == period).cloned()
    }

    /// The latest end of a period retention touched (records with an earlier event time may
    /// have been removed) and the latest removal.
    pub fn removed_before(&self) -> Option<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> {
        let retired = self.retired.read().unwrap_or_else(|e| e.into_inner());
        let end = retired.iter().map(|r| r.end).max()?;
        let at = retired.iter().map(|r| r.removed_at).max()?;
        Some((end, at))
    }

    /// An account's totals of a period: the open plans' from memory, the closed plans' from disk.
    /// `None` when it has none.
    pub fn get(&self, account: &str, period: &str) -> Result<Option<AccountPeriod>, StoreError> {
        let key: TotalsKey = (Arc::from(account), Arc::from(period));
        let in_memory = self.totals.get(&key).map(|t| t.clone());
        let Some(finals) = self.finals.as_ref().filter(|_| self.any_closed(period)) else {
            return Ok(in_memory);
        };
        let on_disk = finals.of(account, period)?;
        if on_disk.is_empty() {
            return Ok(in_memory);
        }
        Ok(Some(merge(on_disk, in_memory)))
    }

    /// Every account's totals of a period (memory and disk, as [`Committed::get`]), damaged
    /// accounts left out.
    pub fn of_period(&self, period: &str) -> Result<Vec<(Arc<str>, AccountPeriod)>, StoreError> {
        let mut out: ahash::AHashMap<Arc<str>, AccountPeriod> = self
            .totals
            .iter()
            .filter(|e| &*e.key().1 == period)
            .map(|e| (e.key().0.clone(), e.value().clone()))
            .collect();
        if let Some(finals) = self.finals.as_ref().filter(|_| self.any_closed(period)) {
            let mut by_account: ahash::AHashMap<Arc<str>, Vec<PeriodTotals>> = ahash::AHashMap::new();
            for t in finals.of_period(period)? {
                by_account.entry(t.account.clone()).or_default().push(t);
            }
            for (account, on_disk) in by_account {
                let in_memory = out.remove(&account);
                out.insert(account, merge(on_disk, in_memory));
            }
        }
        Ok(out
            .into_iter()
            .filter(|(account, _)| !self.damaged.contains_key(account))
            .collect())
    }

    /// Notes new (account, period, plan) totals in the index of open periods.
    fn note_open(&self, new: impl IntoIterator<Item = (Arc<str>, Arc<str>, Arc<str>)>) {
        let mut open = lock(&self.open);
        for (account, period, plan) in new {
            open.entry((plan, period)).or_default().push(account);
        }
    }

    /// The open (plan, period) pairs that hold totals.
    pub fn open_periods(&self) -> Vec<(Arc<str>, Arc<str>)> {
        lock(&self.open).keys().cloned().collect()
    }

    /// The accounts with totals in an open (plan, period).
    pub fn open_accounts(&self, plan: &Arc<str>, period: &Arc<str>) -> Vec<Arc<str>> {
        lock(&self.open)
            .get(&(plan.clone(), period.clone()))
            .cloned()
            .unwrap_or_default()
    }

    /// After a close is durable (its final totals on disk): its totals leave memory, here and in
    /// the shards (which drop theirs when they see the generation move).
    pub fn forget_closed(&self, plan: &Arc<str>, period: &Arc<str>) {
        let accounts = lock(&self.open)
            .remove(&(plan.clone(), period.clone()))
            .unwrap_or_default();
        for account in accounts {
            let key = (account, period.clone());
            let empty = match self.totals.get_mut(&key) {
                Some(mut entry) => {
                    entry.parts.retain(|p| p.plan != *plan);
                    entry.parts.is_empty()
                }
                None => false,
            };
            if empty {
                self.totals.remove_if(&key, |_, v| v.parts.is_empty());
            }
        }
        self.closed_generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Takes the changed keys (the Redis projection calls this once per flush).
    pub fn take_dirty(&self) -> ahash::AHashSet<TotalsKey> {
        std::mem::take(&mut *lock(&self.dirty))
    }

    /// Puts keys back after a failed flush.
    pub fn mark_dirty(&self, keys: impl IntoIterator<Item = TotalsKey>) {
        lock(&self.dirty).extend(keys);
    }
}

/// The parts of an account-period: the closed plans' (from disk) first, then the open plans' not
/// among them.
fn merge(on_disk: Vec<PeriodTotals>, in_memory: Option<AccountPeriod>) -> AccountPeriod {
    let mut merged = AccountPeriod { parts: on_disk };
    for part in in_memory.map(|m| m.parts).unwrap_or_default() {
        if merged.part(&part.plan).is_none() {
            merged.parts.push(part);
        }
    }
    merged
}

pub type CommittedView = Arc<Committed>;

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

/// An event that passed validation, with its dedupe fingerprints.
#[derive(Debug)]
pub struct ValidEvent {
    pub index: u32,
    /// Keyed hash of (account, event id).
    pub fingerprint: u128,
    /// Hash of the content (meter, quantity, time, attributes).
    pub content: u64,
    pub event: UsageEvent,
    /// The event as sent, when normalization rules changed it (kept in its record, and what a
    /// rejection puts in suspense).
    pub as_sent: Option<Box<AsSent>>,
    /// Set on a part of a partial session (docs/mediation.md): held until its session merges.
    pub part: Option<Box<shard::PartIn>>,
}

/// An event refused before rating, on its way to suspense.
#[derive(Debug)]
pub struct RejectedEvent {
    pub index: u32,
    pub rejected: Rejected,
}

/// The part of one batch that belongs to one shard.
pub struct ShardJob {
    pub ticket: Arc<BatchTicket>,
    /// When it was routed (the shard-queue stage ends when the shard takes it).
    pub queued_at: std::time::Instant,
    pub events: Vec<ValidEvent>,
    pub rejected: Vec<RejectedEvent>,
}

/// What a shard hands to the committer for one job.
pub struct ShardOutput {
    pub ticket: Arc<BatchTicket>,
    /// The shard that rated it.
    pub shard: usize,
    /// When the shard finished it (the commit-wait stage ends when its group commit starts).
    pub rated_at: std::time::Instant,
    /// The job's records as one compact segment (`store::compact`), empty when none.
    pub records: Vec<u8>,
    pub record_count: u32,
    pub suspense: Vec<Vec<u8>>,
    pub duplicate: u32,
    /// Events not accepted (duplicates and rejections).
    pub results: Vec<EventOutcome>,
    /// Absolute totals of every (account, period, plan) this job changed.
    pub totals: Vec<PeriodTotals>,
    /// Balance changes (prepaid records, balance operations); `None` for most jobs.
    pub balance: Option<Box<shard::BalanceWrites>>,
    /// Keys and values written in its commit besides the records: dedupe claims of events whose
    /// account normalization rules changed (`store::MovedClaims`), parts of partial sessions held
    /// (`store::PartialParts`).
    pub writes: Vec<(Vec<u8>, Vec<u8>)>,
    /// Keys removed in its commit: the parts of the partial sessions it merged.
    pub removes: Vec<Vec<u8>>,
    /// Parts of partial sessions held (accepted events without a record of their own).
    pub held: u32,
    /// Records of merged partial sessions (records that are not received events).
    pub merged: u32,
}

impl ShardOutput {
    /// The received events it accepted: its records and held parts, less the merged sessions'
    /// records (their parts were accepted when they came).
    pub fn accepted(&self) -> u32 {
        (self.record_count + self.held).saturating_sub(self.merged)
    }

    /// An output with nothing in it yet (the shard sets `shard`, and `rated_at` when done).
    pub fn empty(ticket: Arc<BatchTicket>, rated_at: std::time::Instant) -> ShardOutput {
        ShardOutput {
            ticket,
            shard: 0,
            rated_at,
            records: Vec::new(),
            record_count: 0,
            suspense: Vec::new(),
            duplicate: 0,
            results: Vec::new(),
            totals: Vec::new(),
            balance: None,
            writes: Vec::new(),
            removes: Vec::new(),
            held: 0,
            merged: 0,
        }
    }
}

/// Messages to a shard thread, handled in queue order.
pub enum ShardMsg {
    Job(ShardJob),
    /// Serialize your state and send it to the committer behind your earlier outputs (checkpoint).
    Snapshot,
    /// A correction of some of the shard's accounts (`corrections`).
    Correct(corrections::CorrectionJob),
    /// A balance operation on one of the shard's accounts, or a sweep (`balance`).
    Balance(balance::BalanceJob),
    /// Finish: everything queued before this has been handled.
    Stop,
}

/// Messages to the committer, in each shard's order.
pub enum CommitterMsg {
    Output(ShardOutput),
    /// The point a shard's checkpoint copy reflects: every output the shard sent before this
    /// message, and nothing after it (the copy follows in a `Snapshot`).
    SnapshotCut {
        shard: usize,
    },
    /// A shard's state as of its last `SnapshotCut` (its dedupe part may hold later claims too,
    /// all of them in outputs sent before this message).
    Snapshot {
        shard: usize,
        state: shard::ShardSnapshot,
    },
}

/// Why a batch could not be taken in or acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipelineError {
    /// A commit failed (its error as text): nothing more is taken until a restart.
    #[error("storage failed, ratingd takes no more work until restarted: {0}")]
    StorageFailed(String),
    #[error("ratingd is shutting down")]
    ShuttingDown,
    /// The account's stored records failed their check at start (`why` names the file and key).
    #[error("the records of account {account:?} cannot be trusted: {why}; restore the data dir from a backup")]
    Damaged { account: String, why: Arc<str> },
}

/// Why the pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Recovery could not read the data dir.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A shard or the committer thread could not be started.
    #[error("cannot start a pipeline thread: {0}")]
    Thread(std::io::Error),
}

/// A batch's place in the pipeline (an admission permit). Given back when the batch is
/// acknowledged or fails, or when it is refused before being routed.
pub struct Admitted(#[allow(dead_code)] OwnedSemaphorePermit);

impl Admitted {
    /// A place from a permit of the admission semaphore (the pipeline's; benches make their own).
    pub fn new(permit: OwnedSemaphorePermit) -> Admitted {
        // Per batch, not per event.
        metrics::gauge!(crate::telemetry::BATCHES_IN_FLIGHT).increment(1.0);
        Admitted(permit)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        metrics::gauge!(crate::telemetry::BATCHES_IN_FLIGHT).decrement(1.0);
    }
}

/// One admitted batch: collects the shards' outcomes and sends the ack when the last part is durable.
pub struct BatchTicket {
    batch_id: u64,
    parts_left: AtomicUsize,
    ack: Mutex<Ack>,
    reply: Mutex<Option<oneshot::Sender<Result<Ack, PipelineError>>>>,
    admitted: Mutex<Option<Admitted>>,
    /// False for corrections: their records are not received events.
    counted: bool,
}

impl BatchTicket {
    pub fn new(
        batch_id: u64,
        parts: usize,
        admitted: Admitted,
    ) -> (Arc<BatchTicket>, oneshot::Receiver<Result<Ack, PipelineError>>) {
        BatchTicket::counting(batch_id, parts, admitted, true)
    }

    /// A ticket whose acknowledgement is not counted in the event metrics (a correction).
    pub fn uncounted(
        batch_id: u64,
        parts: usize,
        admitted: Admitted,
    ) -> (Arc<BatchTicket>, oneshot::Receiver<Result<Ack, PipelineError>>) {
        BatchTicket::counting(batch_id, parts, admitted, false)
    }

    pub(crate) fn counting(
        batch_id: u64,
        parts: usize,
        admitted: Admitted,
        counted: bool,
    ) -> (Arc<BatchTicket>, oneshot::Receiver<Result<Ack, PipelineError>>) {
        let (tx, rx) = oneshot::channel();
        let ticket = BatchTicket {
            batch_id,
            parts_left: AtomicUsize::new(parts),
            ack: Mutex::new(Ack {
                batch_id,
                ..Ack::default()
            }),
            reply: Mutex::new(Some(tx)),
            admitted: Mutex::new(Some(admitted)),
            counted,
        };
        (Arc::new(ticket), rx)
    }

    /// Records one durable part; the last one sends the ack.
    pub fn part_done(&self, accepted: u32, duplicate: u32, results: Vec<EventOutcome>) {
        {
            let mut ack = lock(&self.ack);
            ack.accepted += accepted;
            ack.duplicate += duplicate;
            ack.rejected += results.iter().filter(|r| r.rejected.is_some()).count() as u32;
            ack.results.extend(results);
        }
        if self.parts_left.fetch_sub(1, Ordering::AcqRel) == 1 {
            let mut ack = std::mem::take(&mut *lock(&self.ack));
            ack.batch_id = self.batch_id;
            ack.results.sort_by_key(|r| r.index);
            if self.counted {
                crate::telemetry::count_ack(&ack);
            }
            self.finish(Ok(ack));
        }
    }

    /// Notes the events normalization rules dropped (before any part is done): they are answered
    /// DROPPED with the rule's name.
    pub fn dropped(&self, dropped: Vec<(u32, Arc<str>)>) {
        if dropped.is_empty() {
            return;
        }
        let mut ack = lock(&self.ack);
        ack.dropped += dropped.len() as u32;
        ack.results
            .extend(dropped.into_iter().map(|(index, rule)| EventOutcome {
                index,
                rejected: None,
                detail: format!("dropped by rule {rule:?}"),
                dropped_by: Some(rule),
            }));
    }

    /// Fails the batch (once); later parts are ignored.
    pub fn fail(&self, error: PipelineError) {
        self.finish(Err(error));
    }

    fn finish(&self, result: Result<Ack, PipelineError>) {
        if let Some(reply) = lock(&self.reply).take() {
            // The agent may have gone away; the batch is durable (or failed) either way.
            let _ = reply.send(result);
        }
        lock(&self.admitted).take();
    }
}

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

/// Hands every partial session held on disk to the shard of its account.
fn load_partials(store: &Store, key: &HashKey, states: &mut [shard::ShardState]) -> Result<(), StoreError> {
    use crate::domain::partial::OpenSession;
    let mut sessions: std::collections::BTreeMap<(String, String), OpenSession> = std::collections::BTreeMap::new();
    for (account, session, part) in store.partial_parts().all()? {
        sessions
            .entry((account.clone(), session.clone()))
            .or_insert_with(|| OpenSession::new(&account, &session))
            .parts
            .insert(part.seq, part);
    }
    for ((account, session), open) in sessions {
        let fingerprint = key.fingerprint(&account, &crate::domain::partial::merged_id(&session));
        let parts: Vec<u128> = open
            .parts
            .values()
            .map(|p| key.fingerprint(&account, &p.event_id))
            .collect();
        states[key.shard_of(&account, states.len())].load_partial(open, fingerprint, &parts);
    }
    Ok(())
}

/// The first day (since the epoch) whose moved claims are kept at `now`: the day of the window's
/// oldest instant, since events of that day after it still pass the door.
fn first_kept_day(now: chrono::DateTime<chrono::Utc>, window_days: u32) -> u16 {
    let oldest = now - chrono::Duration::days(i64::from(window_days));
    oldest.timestamp().div_euclid(86_400).clamp(0, i64::from(u16::MAX)) as u16
}

/// Spend-alert thresholds per plan id (from the config); subscriptions add their own.
pub type PlanAlerts = Arc<ahash::AHashMap<String, Vec<rust_decimal::Decimal>>>;

impl Pipeline {
    /// Recovers the shards' state from the store, then starts the shard and committer threads.
    pub fn start(
        store: Store,
        context: SharedContext,
        clock: SharedClock,
        plan_alerts: PlanAlerts,
        config: PipelineConfig,
    ) -> Result<Pipeline, StartError> {
        let key = store.key();
        let moved = store.moved_claims();
        let mut states = shard::recover(
            &store,
            &context.load(),
            config.shards,
            config.dedupe_window_days,
            clock.now(),
        )?;
        // Before the damage is read: an account whose balance fails its ledger's check is damaged.
        let wallets = balance::load(&store, &mut states)?;
        load_partials(&store, &key, &mut states)?;
        let damaged = store
            .damaged()?
            .into_iter()
            .map(|(account, why)| (Arc::from(account), Arc::from(why)))
            .collect();
        let retired = store.retention().retired()?;
        let closes: ahash::AHashSet<(Arc<str>, Arc<str>)> = store
            .closes()
            .pairs()?
            .into_iter()
            .map(|(plan, period)| (Arc::from(plan), Arc::from(period)))
            .collect();
        let finals = store.finals();
        if !finals.complete()? {
            // Closes of an earlier release kept their totals in memory only: write them out once
            // (they are complete, that release never dropped them), then drop them like any other.
            let missing: Vec<PeriodTotals> = states
                .iter()
                .flat_map(|s| s.all_totals())
                .filter(|t| closes.contains(&(t.plan.clone(), t.period.clone())))
                .collect();
            finals.write_missing(&missing)?;
        }
        // Closed and retired periods are not kept in memory (their replayed totals may be partial).
        let mut closed = closes;
        closed.extend(
            retired
                .iter()
                .map(|r| (Arc::from(r.plan.as_str()), Arc::from(r.period.as_str()))),
        );
        for state in &mut states {
            state.forget(&closed);
        }
        let committed: CommittedView = Arc::new(Committed {
            damaged,
            finals: Some(finals),
            closed: std::sync::RwLock::new(closed),
            retired: std::sync::RwLock::new(retired),
            outputs_committed: (0..config.shards).map(|_| AtomicU64::new(0)).collect(),
            ..Committed::default()
        });
        committed.epoch.store(store.next_seq(), Ordering::Release);
        for wallet in wallets {
            committed
                .balances
                .insert(Arc::from(wallet.account.as_str()), wallet.view());
        }
        let mut new = Vec::new();
        for state in &states {
            for totals in state.all_totals() {
                new.push((totals.account.clone(), totals.period.clone(), totals.plan.clone()));
                committed
                    .totals
                    .entry((totals.account.clone(), totals.period.clone()))
                    .or_default()
                    .upsert(totals);
            }
        }
        committed.note_open(new);
        let failed = Arc::new(AtomicBool::new(false));
        // Bound: each admitted batch puts at most one job on each shard queue and one output on the
        // committer queue, and admission caps batches in flight, so these never fill.
        let capacity = config.max_inflight_batches + 1;
        let (out_tx, out_rx) = crossbeam_channel::bounded::<CommitterMsg>(capacity * config.shards + config.shards);
        let mut shard_tx = Vec::with_capacity(config.shards);
        let mut threads = Vec::new();
        for (index, state) in states.into_iter().enumerate() {
            // +2: room for a snapshot request and the stop message beside the admitted jobs.
            let (tx, rx) = crossbeam_channel::bounded::<ShardMsg>(capacity + 2);
            shard_tx.push(tx);
            let out = out_tx.clone();
            let ctx = context.clone();
            let env = shard::ShardEnv {
                index,
                context: ctx,
                clock: clock.clone(),
                close_grace: chrono::Duration::seconds(config.close_grace_seconds),
                window_days: config.dedupe_window_days,
                hot_hours: config.dedupe_hot_hours,
                committed: committed.clone(),
                failed: failed.clone(),
                records: store.records(),
                balances: store.balances(),
                moved: store.moved_claims(),
                reservation_ttl: chrono::Duration::seconds(i64::from(config.reservation_ttl_seconds)),
                partial: config.partial,
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("shard-{index}"))
                    .spawn(move || shard::run(env, state, rx, out))
                    .map_err(StartError::Thread)?,
            );
        }
        drop(out_tx);
        let alerts = alerts::Alerts::load(plan_alerts, context.clone(), store.alerts(), clock.clone(), &committed)?;
        let committer = committer::Committer::new(
            store,
            committed.clone(),
            failed.clone(),
            config,
            shard_tx.clone(),
            alerts,
        );
        threads.push(
            std::thread::Builder::new()
                .name("committer".into())
                .spawn(move || committer.run(out_rx))
                .map_err(StartError::Thread)?,
        );
        Ok(Pipeline {
            shard_tx,
            admission: Arc::new(Semaphore::new(config.max_inflight_batches)),
            failed,
            committed,
            context,
            key,
            clock,
            config,
            threads: Mutex::new(threads),
            moved,
            moved_kept_from_day: std::sync::atomic::AtomicU32::new(0),
        })
    }

    /// Removes the claims of events whose account rules changed once their day has left the
    /// dedupe window (the sweeper calls it every second; it works once a day).
    pub fn prune_moved_claims(&self) -> Result<usize, StoreError> {
        let day = first_kept_day(self.clock.now(), self.config.dedupe_window_days);
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

#[cfg(test)]
mod tests {
    use super::first_kept_day;

    #[test]
    fn moved_claims_are_kept_from_the_day_of_the_windows_oldest_instant() {
        let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        // 2026-11-18 is day 20,775; 35 days before 2026-12-23T00:30Z is 2026-11-18T00:30Z.
        assert_eq!(first_kept_day(at("2026-11-18T12:00:00Z"), 0), 20_775);
        assert_eq!(first_kept_day(at("2026-12-23T00:30:00Z"), 35), 20_775);
        assert_eq!(first_kept_day(at("2026-12-22T23:59:59Z"), 35), 20_774);
    }
}
