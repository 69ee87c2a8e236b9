//! A shard: the single owner of its accounts' dedupe window, period-to-date usage and totals.
//! It rates each event of a job in order, without locks (`rate`), and hands the encoded
//! records, the suspense entries and the changed totals to the committer; between jobs it takes
//! checkpoint copies a little at a time (`copy`); at start its state is rebuilt from the last
//! checkpoint and the blocks after it (`recover`).

mod balance;
mod copy;
mod correct;
mod partial;
mod rate;
mod recover;
mod sessions;
mod totals;
mod wallets;

use std::sync::Arc;

use ahash::AHashMap;
use chrono::{DateTime, Utc};
use crossbeam_channel::{Receiver, Sender};
use tracing::warn;

use super::dedupe::DedupeWindow;
use super::{CommitterMsg, ShardMsg};
use crate::domain::aggregate::PeriodTotals;
use crate::domain::period::Period;
use crate::domain::record::RatedRecord;
use crate::domain::tariff::Plan;

use copy::{COPY_ACCOUNTS_PER_STEP, StateCopy};
pub use copy::{ShardSnapshot, encode_state};
pub use partial::PartIn;
pub use recover::recover;
pub use wallets::BalanceWrites;

const DAY_NANOS: i64 = 86_400 * 1_000_000_000;

fn day_of(timestamp_unix_nanos: i64) -> u16 {
    timestamp_unix_nanos.div_euclid(DAY_NANOS).clamp(0, i64::from(u16::MAX)) as u16
}

/// The state one shard owns.
pub struct ShardState {
    dedupe: DedupeWindow,
    /// Each account's totals: their slots in `totals`.
    accounts: AHashMap<Arc<str>, Vec<u32>>,
    /// The totals, numbered as the committed view knows them.
    totals: totals::Slots,
    /// The most recent period per plan (by plan id, the key shared by every totals of the plan):
    /// most events fall in it.
    periods: AHashMap<Arc<str>, (Period, Arc<str>)>,
    evicted_through_day: u16,
    /// Periods that ended at or before this instant are closed (now minus the close grace, read
    /// once per job).
    closed_before: DateTime<Utc>,
    /// The pipeline clock's now, read once per job.
    job_now: DateTime<Utc>,
    /// When the current job's batch was received: the receipt time of its suspense entries (the
    /// door's refusals of the same batch carry the same).
    received_at: DateTime<Utc>,
    /// The job's charges per currency, for the approximate metric (a handful of entries).
    job_charges: Vec<(crate::domain::money::Currency, rust_decimal::Decimal)>,
    /// A checkpoint copy being taken between jobs.
    copying: Option<StateCopy>,
    /// A cold-tier page that failed its check during the job: the job is not rated further and
    /// its batch fails (the answer for its event is unknown).
    cold_damage: Option<crate::store::cold::ColdDamage>,
    /// Encodes each job's records as one segment (its dictionary and id buffers reused from job to
    /// job; each job's output buffer is allocated once, sized for its events).
    segment: crate::store::compact::SegmentWriter,
    /// The wallets of the shard's accounts.
    wallets: wallets::Wallets,
    /// The charging sessions of the shard's accounts that hold reservations.
    sessions: sessions::Sessions,
    /// The number of the output being built among the shard's outputs (set per balance job):
    /// what a session or top-up written now is remembered under until it is committed.
    output: u64,
    /// The claims of events whose account normalization rules changed, as committed (`None` in
    /// benches and tests without a store).
    moved: Option<crate::store::MovedClaims>,
    /// The open partial sessions of the shard's accounts.
    partials: partial::Partials,
}

impl Default for ShardState {
    fn default() -> Self {
        ShardState {
            dedupe: DedupeWindow::default(),
            accounts: AHashMap::new(),
            totals: Default::default(),
            periods: AHashMap::new(),
            evicted_through_day: 0,
            closed_before: DateTime::<Utc>::MIN_UTC,
            job_now: DateTime::<Utc>::MIN_UTC,
            received_at: DateTime::<Utc>::MIN_UTC,
            job_charges: Vec::new(),
            copying: None,
            cold_damage: None,
            segment: Default::default(),
            wallets: Default::default(),
            sessions: Default::default(),
            output: 0,
            moved: None,
            partials: Default::default(),
        }
    }
}

impl ShardState {
    /// Installs the balances read at start: the shard's wallets and reserved sessions.
    pub fn load_balances(
        &mut self,
        wallets: Vec<crate::domain::balance::Wallet>,
        sessions: Vec<crate::domain::balance::Session>,
    ) {
        for wallet in wallets {
            self.wallets.load(wallet);
        }
        for session in sessions {
            self.sessions.load(session);
        }
    }

    pub fn all_totals(&self) -> impl Iterator<Item = PeriodTotals> + '_ {
        self.totals.iter().map(|(_, t)| t.clone())
    }

    /// Hands every totals to the committed view at start, and each one's (account, period, plan)
    /// to `keys` (see [`totals::Slots::install`]).
    pub fn install_totals(
        &mut self,
        shard: usize,
        table: &crate::pipeline::committed::TotalsTable,
        keys: &mut Vec<(Arc<str>, Arc<str>, Arc<str>)>,
    ) {
        self.totals.install(shard, table, keys);
    }

    /// Puts a totals read back from a checkpoint in a slot of its account.
    fn insert_totals(&mut self, totals: PeriodTotals) {
        let account = totals.account.clone();
        let slot = self.totals.insert(totals);
        self.accounts.entry(account).or_default().push(slot);
    }

    /// The totals of (account, period, plan), created when absent, and their slot. One map
    /// lookup when the account is known (its key is kept in every totals).
    /// Each plan of a period has its own totals: a plan change starts the new plan's cumulative
    /// tiers and allowances from zero, and no sum mixes currencies.
    fn totals_mut(
        &mut self,
        account: &str,
        period: &Arc<str>,
        plan_id: &Arc<str>,
        plan: &Plan,
    ) -> (u32, &mut PeriodTotals) {
        if self.copying.is_some() {
            self.copy_before_change(account);
        }
        if !self.accounts.contains_key(account) {
            self.accounts.insert(Arc::from(account), Vec::new());
        }
        // Invariant: the account was present or inserted just above.
        let (key, list) = self.accounts.get_key_value(account).expect("account present");
        let found = list.iter().copied().find(|&slot| {
            self.totals
                .get(slot)
                .is_some_and(|t| (Arc::ptr_eq(&t.period, period) || t.period == *period) && t.plan == *plan_id)
        });
        let slot = match found {
            Some(slot) => slot,
            None => {
                let totals = PeriodTotals::new(
                    key.clone(),
                    period.clone(),
                    plan_id.clone(),
                    plan.currency,
                    plan.rounding,
                );
                let slot = self.totals.insert(totals);
                // Invariant: as above.
                self.accounts.get_mut(account).expect("account present").push(slot);
                slot
            }
        };
        (slot, self.totals.get_mut(slot))
    }

    /// The billing period of `at` under `plan`, from the per-plan cache when it holds: its label,
    /// its end, and the plan's id as the key every totals of the plan shares (compared by address).
    fn period(&mut self, plan: &Plan, at: DateTime<Utc>) -> (Arc<str>, DateTime<Utc>, Arc<str>) {
        if let Some((id, (p, label))) = self.periods.get_key_value(plan.id.as_str())
            && p.start <= at
            && at < p.end
        {
            return (label.clone(), p.end, id.clone());
        }
        let period = plan.period.period_of(plan.time_zone, at);
        let label: Arc<str> = Arc::from(period.label.as_str());
        let end = period.end;
        let id = match self.periods.remove_entry(plan.id.as_str()) {
            Some((id, _)) => id,
            None => Arc::from(plan.id.as_str()),
        };
        self.periods.insert(id.clone(), (period, label.clone()));
        (label, end, id)
    }

    /// Applies a stored record (recovery): claims its id (`fingerprint`, the data dir's keyed
    /// hash of its account and event id) and adds it to its totals.
    /// `plan` is the plan it counts in ([`RatedRecord::booked`]). A correction record claims
    /// nothing: the original's claim stands (a resend of the original stays a DUPLICATE).
    fn apply(&mut self, record: &RatedRecord, fingerprint: u128, plan: &Plan) {
        if record.correction.is_none() {
            self.dedupe
                .insert(fingerprint, day_of(record.timestamp_unix_nanos), record.content);
        }
        let period: Arc<str> = Arc::from(record.booked().1);
        let at = record.correction.as_ref().map_or(record.at(), |c| c.at());
        let (_, _, plan_id) = self.period(plan, at);
        let (meter, quantity, rated_quantity, charge, events) = record.counts();
        self.totals_mut(&record.account_id, &period, &plan_id, plan)
            .1
            .add_counted(meter, quantity, rated_quantity, charge, events);
    }

    /// Drops the totals of closed periods: their final totals are on disk (`f/`), and no event may
    /// change them any more.
    pub(crate) fn forget(&mut self, closed: &ahash::AHashSet<(Arc<str>, Arc<str>)>) {
        if closed.is_empty() {
            return;
        }
        let totals = &mut self.totals;
        self.accounts.retain(|_, list| {
            list.retain(|&slot| {
                let open = totals
                    .get(slot)
                    .is_some_and(|t| !closed.contains(&(t.plan.clone(), t.period.clone())));
                if !open {
                    totals.remove(slot);
                }
                open
            });
            !list.is_empty()
        });
        self.accounts.shrink_to_fit();
    }

    /// Forgets ids whose events are older than the window: a resend of them is TOO_OLD anyway.
    fn evict(&mut self, now: DateTime<Utc>, window_days: u32) {
        let oldest_kept = oldest_kept(now, window_days);
        if oldest_kept <= self.evicted_through_day {
            return;
        }
        self.dedupe.retain_from(oldest_kept);
        self.evicted_through_day = oldest_kept;
    }
}

/// The first day whose ids the window keeps at `now`: one day of margin beyond the window, so an
/// id is never forgotten while still resendable.
fn oldest_kept(now: DateTime<Utc>, window_days: u32) -> u16 {
    let today = day_of(now.timestamp_nanos_opt().unwrap_or(i64::MAX));
    today.saturating_sub(window_days as u16).saturating_sub(1)
}

/// The first day whose ids stay in memory at `now`: days before it go to the cold tier.
fn hot_cutoff(now: DateTime<Utc>, hot_hours: u32) -> u16 {
    day_of(
        (now - chrono::Duration::hours(i64::from(hot_hours)))
            .timestamp_nanos_opt()
            .unwrap_or(0),
    )
}

/// Moves old days of the window to its cold tier and drops expired runs (see
/// [`super::dedupe::DedupeWindow::maintain`]), logging and counting what happened.
fn maintain(state: &mut ShardState, env: &ShardEnv, now: DateTime<Utc>, sent: u64) {
    let done = state.dedupe.maintain(
        hot_cutoff(now, env.hot_hours),
        oldest_kept(now, env.window_days),
        sent,
        outputs_committed(env),
    );
    if let Some((path, ids)) = done.installed {
        tracing::info!(shard = env.index, path, ids, "dedupe ids moved to the cold tier");
    }
    if let Some((path, runs)) = done.merged {
        tracing::info!(shard = env.index, path, runs, "dedupe cold runs merged");
    }
    if done.expired > 0 {
        tracing::info!(
            shard = env.index,
            runs = done.expired,
            "dedupe cold runs past the window removed"
        );
    }
    if let Some(error) = done.failed {
        tracing::error!(shard = env.index, %error, "dedupe cold tier not written; retried in a minute");
        metrics::counter!(crate::telemetry::DEDUPE_SPILL_ERRORS).increment(1);
    }
}

/// How many of this shard's outputs the committer has committed.
fn outputs_committed(env: &ShardEnv) -> u64 {
    env.committed
        .outputs_committed
        .get(env.index)
        .map_or(0, |n| n.load(std::sync::atomic::Ordering::Acquire))
}

/// What a shard thread reads besides its queue.
pub struct ShardEnv {
    pub index: usize,
    pub context: super::SharedContext,
    pub clock: super::SharedClock,
    /// A period closes this long after its end.
    pub close_grace: chrono::Duration,
    pub window_days: u32,
    /// Ids of events older than this leave memory for the cold tier.
    pub hot_hours: u32,
    /// The committed view: its closed periods (and their generation) tell which totals to drop,
    /// its committed outputs when a spill may be named.
    pub committed: super::CommittedView,
    /// Set when a cold-tier page fails its check: ratingd takes no more work until restarted
    /// (the restart rebuilds the cold tier from the blocks).
    pub failed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The blocks, read by corrections.
    pub records: crate::store::Records,
    /// Sessions and top-up ids as committed (balance operations read them).
    pub balances: crate::store::Balances,
    /// How long a charging session's reservation holds without an update.
    pub reservation_ttl: chrono::Duration,
    /// The claims of events whose account normalization rules changed.
    pub moved: crate::store::MovedClaims,
    /// Bounds and timeout of partial sessions.
    pub partial: crate::domain::partial::PartialLimits,
}

/// The shard thread: handles its queue in order until told to stop.
pub fn run(env: ShardEnv, mut state: ShardState, rx: Receiver<ShardMsg>, out: Sender<CommitterMsg>) {
    let index = env.index;
    state.moved = Some(env.moved.clone());
    state.partials.limits = env.partial;
    let committed = env.committed.clone();
    let mut closed_generation = committed.closed_generation.load(std::sync::atomic::Ordering::Acquire);
    // Handles resolved once: the loop only sets them.
    let queue_depth = metrics::gauge!(crate::telemetry::SHARD_QUEUE_DEPTH, "shard" => index.to_string());
    let window_ids = metrics::gauge!(crate::telemetry::DEDUPE_WINDOW_IDS, "shard" => index.to_string());
    let cold_ids = metrics::gauge!(crate::telemetry::DEDUPE_COLD_IDS, "shard" => index.to_string());
    let cold_reads = metrics::counter!(crate::telemetry::DEDUPE_COLD_PAGE_READS);
    let partial_open = metrics::gauge!(crate::telemetry::PARTIAL_SESSIONS_OPEN, "shard" => index.to_string());
    let partial_merged = metrics::counter!(crate::telemetry::PARTIAL_SESSIONS_MERGED);
    let partial_timed_out = metrics::counter!(crate::telemetry::PARTIAL_SESSIONS_TIMED_OUT);
    let count_partials = |state: &mut ShardState| {
        let (open, merged, timed_out) = state.partials.take_counts();
        partial_open.set(open as f64);
        if merged > 0 {
            partial_merged.increment(merged);
        }
        if timed_out > 0 {
            partial_timed_out.increment(timed_out);
        }
    };
    count_partials(&mut state);
    let (queued, rated) = (crate::telemetry::stage("shard_queue"), crate::telemetry::stage("rate"));
    let send_copy = |snapshot: Option<ShardSnapshot>| match snapshot {
        Some(state) => out.send(CommitterMsg::Snapshot { shard: index, state }).is_ok(),
        None => true,
    };
    // Outputs sent to the committer: a spill is named once that many are committed.
    let mut sent: u64 = 0;
    loop {
        // While a checkpoint copy is being taken, an idle shard takes it further every 2 ms; while
        // a spill is under way, it looks every 50 ms whether the run can be named.
        let wait = if state.copying.is_some() {
            Some(std::time::Duration::from_millis(2))
        } else if state.dedupe.spilling() {
            Some(std::time::Duration::from_millis(50))
        } else {
            None
        };
        let msg = match wait {
            Some(wait) => match rx.recv_timeout(wait) {
                Ok(msg) => msg,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    if !send_copy(state.copy_step(COPY_ACCOUNTS_PER_STEP)) {
                        return;
                    }
                    maintain(&mut state, &env, env.clock.now(), sent);
                    window_ids.set(state.dedupe.len() as f64);
                    cold_ids.set(state.dedupe.cold_len() as f64);
                    continue;
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
            },
            None => match rx.recv() {
                Ok(msg) => msg,
                Err(_) => return,
            },
        };
        // A job's or a correction's output, sent to the committer below.
        let mut output = match msg {
            ShardMsg::Job(job) => {
                begin_job(&mut state, &env, &mut closed_generation, sent);
                let started = std::time::Instant::now();
                queued.record(started.duration_since(job.queued_at).as_secs_f64());
                let output = state.process(&env.context.load(), job);
                rated.record(output.rated_at.duration_since(started).as_secs_f64());
                queue_depth.set(rx.len() as f64);
                window_ids.set(state.dedupe.len() as f64);
                cold_ids.set(state.dedupe.cold_len() as f64);
                let reads = state.dedupe.take_cold_reads();
                if reads > 0 {
                    cold_reads.increment(reads);
                }
                count_partials(&mut state);
                if let Some(damage) = state.cold_damage.take() {
                    fail_on_damage(&env, output, damage);
                    continue;
                }
                output
            }
            ShardMsg::Correct(job) => {
                begin_job(&mut state, &env, &mut closed_generation, sent);
                // Every record of the shard's accounts must be on disk before they are read.
                if let Err(error) = wait_committed(&env, sent) {
                    job.ticket.fail(error);
                    continue;
                }
                state.correct(&env.context.load(), &env.records, &env.balances, job)
            }
            ShardMsg::Balance(job) => {
                begin_job(&mut state, &env, &mut closed_generation, sent);
                let output = state.balance_job(&env.context.load(), &env, job, sent + 1);
                count_partials(&mut state);
                // A session's end checks the dedupe window like any event.
                if let Some(damage) = state.cold_damage.take() {
                    fail_on_damage(&env, output, damage);
                    continue;
                }
                output
            }
            ShardMsg::Snapshot => {
                if !send_copy(state.finish_copy()) {
                    return;
                }
                // The cut: the copy reflects every output sent before this message.
                if out.send(CommitterMsg::SnapshotCut { shard: index }).is_err() {
                    return;
                }
                state.begin_copy();
                continue;
            }
            ShardMsg::Stop => {
                send_copy(state.finish_copy());
                if let Some((path, ids)) = state.dedupe.stop(outputs_committed(&env)).installed {
                    tracing::info!(shard = index, path, ids, "dedupe ids moved to the cold tier");
                }
                return;
            }
        };
        output.shard = index;
        if out.send(CommitterMsg::Output(output)).is_err() {
            warn!(shard = index, "committer is gone; shard stops");
            return;
        }
        sent += 1;
        // After the output: a copy that now holds its claims reaches the committer behind it.
        if state.copying.is_some() && !send_copy(state.copy_step(COPY_ACCOUNTS_PER_STEP)) {
            return;
        }
    }
}

/// What every job does first: drop the totals of periods closed since the last one, read the
/// clock, evict ids past the window and move old days to the cold tier.
fn begin_job(state: &mut ShardState, env: &ShardEnv, closed_generation: &mut u64, sent: u64) {
    let committed = &env.committed;
    // A close since the last job: its totals leave this shard too (one atomic load a job).
    let generation = committed.closed_generation.load(std::sync::atomic::Ordering::Acquire);
    if generation != *closed_generation {
        *closed_generation = generation;
        let closed = committed.closed.read().unwrap_or_else(|e| e.into_inner()).clone();
        state.forget(&closed);
    }
    state.job_now = env.clock.now();
    // Once a day (a comparison per job otherwise): ids older than the window go.
    state.evict(state.job_now, env.window_days);
    // Old days to the cold tier (a few comparisons per job unless one is due).
    let now = state.job_now;
    maintain(state, env, now, sent);
    state.closed_before = state.job_now - env.close_grace;
}

/// Waits until the committer has committed the `sent` outputs this shard sent (a correction
/// reads its accounts' records from the blocks). The committer commits what is queued without
/// waiting for more, so this is one group commit at most; a failed commit ends the wait.
fn wait_committed(env: &ShardEnv, sent: u64) -> Result<(), super::PipelineError> {
    while outputs_committed(env) < sent {
        if env.failed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(super::PipelineError::StorageFailed("an earlier commit failed".into()));
        }
        std::thread::sleep(std::time::Duration::from_micros(100));
    }
    Ok(())
}

/// A job met a cold-tier page that failed its check: its events' answers are unknown, so its
/// batch fails and ratingd takes no more work; a restart finds the damage and rebuilds the cold
/// tier from the blocks.
fn fail_on_damage(env: &ShardEnv, output: super::ShardOutput, damage: crate::store::cold::ColdDamage) {
    tracing::error!(
        shard = env.index,
        path = %damage.path,
        why = %damage.why,
        "dedupe cold tier failed its check; ratingd takes no more work until restarted, which rebuilds it from the blocks"
    );
    env.failed.store(true, std::sync::atomic::Ordering::Release);
    output.ticket.fail(super::PipelineError::StorageFailed(format!(
        "dedupe cold tier damaged: {damage}"
    )));
}
