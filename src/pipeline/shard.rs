//! A shard: the single owner of its accounts' dedupe window, period-to-date usage and totals.
//! It rates each event of a job in order, without locks, and hands the encoded records, the
//! suspense entries and the changed totals to the committer.

use std::sync::Arc;

use ahash::AHashMap;
use chrono::{DateTime, Utc};
use crossbeam_channel::{Receiver, Sender};
use tracing::{error, warn};

use super::dedupe::{DedupeCopy, DedupeEntries, DedupeWindow, Seen};
use super::{CommitterMsg, RatingContext, ShardJob, ShardMsg, ShardOutput, ValidEvent};
use crate::domain::aggregate::PeriodTotals;
use crate::domain::period::Period;
use crate::domain::tariff::Plan;
use crate::domain::usage::{EventOutcome, RejectReason};
use crate::rating::{RatingInput, rate};
use crate::store::checkpoint::CheckpointFiles;
use crate::store::codec::{self, CodecError, Reader, RecordRef, SuspenseEntry, Writer};
use crate::store::{Store, StoreError};

const DAY_NANOS: i64 = 86_400 * 1_000_000_000;

fn day_of(timestamp_unix_nanos: i64) -> u16 {
    timestamp_unix_nanos.div_euclid(DAY_NANOS).clamp(0, i64::from(u16::MAX)) as u16
}

/// The (account, period) totals one job changed, each once, in first-touched order: the account's
/// key and the totals' index in its list (an account's list only grows while a job runs).
#[derive(Default)]
struct Touched {
    seen: ahash::AHashSet<(usize, usize)>,
    list: Vec<(Arc<str>, usize)>,
}

impl Touched {
    fn add(&mut self, account: &Arc<str>, index: usize) {
        // A totals' own account key (its address) and its index identify it for the job.
        if self.seen.insert((Arc::as_ptr(account) as *const u8 as usize, index)) {
            self.list.push((account.clone(), index));
        }
    }
}

/// The state one shard owns.
pub struct ShardState {
    dedupe: DedupeWindow,
    accounts: AHashMap<Arc<str>, Vec<PeriodTotals>>,
    /// The most recent period per plan (by plan id): most events fall in it.
    periods: AHashMap<Arc<str>, (Period, Arc<str>)>,
    evicted_through_day: u16,
    /// Periods that ended at or before this instant are closed (now minus the close grace, read
    /// once per job).
    closed_before: DateTime<Utc>,
    /// The pipeline clock's now, read once per job (the receipt time of suspense entries).
    job_now: DateTime<Utc>,
    /// The job's charges per currency, for the approximate metric (a handful of entries).
    job_charges: Vec<(crate::domain::money::Currency, rust_decimal::Decimal)>,
    /// A checkpoint copy being taken between jobs.
    copying: Option<StateCopy>,
}

/// A checkpoint copy of a shard's state, taken a little at a time between jobs so no job waits
/// for all of it: the totals exactly as they were when the copy began (an account's totals are
/// copied before a job first changes them, or by the sweep), the dedupe slots a few tables at a
/// time (see [`DedupeWindow::copy_tables`]).
struct StateCopy {
    dedupe: DedupeCopy,
    totals: Vec<PeriodTotals>,
    /// Accounts whose totals are not copied yet.
    uncopied: ahash::AHashSet<Arc<str>>,
    /// The accounts the sweep still has to visit.
    sweep: Vec<Arc<str>>,
}

/// Accounts and dedupe tables copied per step: a step costs well under a millisecond, and a copy
/// completes in about 16 steps.
const COPY_ACCOUNTS_PER_STEP: usize = 4096;
const COPY_TABLES_PER_STEP: usize = 4;

impl Default for ShardState {
    fn default() -> Self {
        ShardState {
            dedupe: DedupeWindow::default(),
            accounts: AHashMap::new(),
            periods: AHashMap::new(),
            evicted_through_day: 0,
            closed_before: DateTime::<Utc>::MIN_UTC,
            job_now: DateTime::<Utc>::MIN_UTC,
            job_charges: Vec::new(),
            copying: None,
        }
    }
}

impl ShardState {
    pub fn all_totals(&self) -> impl Iterator<Item = PeriodTotals> + '_ {
        self.accounts.values().flatten().cloned()
    }

    /// The totals of (account, period), created when absent, and their index in the account's
    /// list. One map lookup when the account is known (its key is kept in every totals).
    fn totals_mut(&mut self, account: &str, period: &Arc<str>, plan: &Plan) -> (usize, &mut PeriodTotals) {
        if self.copying.is_some() {
            self.copy_before_change(account);
        }
        if !self.accounts.contains_key(account) {
            self.accounts.insert(Arc::from(account), Vec::new());
        }
        // Invariant: the account was present or inserted just above.
        let list = self.accounts.get_mut(account).expect("account present");
        match list
            .iter()
            .position(|t| Arc::ptr_eq(&t.period, period) || t.period == *period)
        {
            Some(i) => (i, &mut list[i]),
            None => {
                let key = match list.first() {
                    Some(t) => t.account.clone(),
                    None => Arc::from(account),
                };
                list.push(PeriodTotals::new(
                    key,
                    period.clone(),
                    Arc::from(plan.id.as_str()),
                    plan.currency,
                    plan.rounding,
                ));
                (list.len() - 1, list.last_mut().expect("pushed above"))
            }
        }
    }

    /// The billing period of `at` under `plan`, from the per-plan cache when it holds.
    fn period(&mut self, plan: &Plan, at: DateTime<Utc>) -> (Arc<str>, DateTime<Utc>) {
        if let Some((p, label)) = self.periods.get(plan.id.as_str())
            && p.start <= at
            && at < p.end
        {
            return (label.clone(), p.end);
        }
        let period = plan.period.period_of(plan.time_zone, at);
        let label: Arc<str> = Arc::from(period.label.as_str());
        let end = period.end;
        self.periods
            .insert(Arc::from(plan.id.as_str()), (period, label.clone()));
        (label, end)
    }

    /// Applies a stored record (recovery): claims its id and adds it to its totals.
    fn apply(&mut self, record: &codec::Record, plan: &Plan) {
        self.dedupe
            .insert(record.fingerprint, day_of(record.timestamp_unix_nanos), record.content);
        let period: Arc<str> = Arc::from(record.period.as_str());
        self.totals_mut(&record.account_id, &period, plan).1.add(
            &record.meter,
            record.quantity,
            record.rated_quantity,
            record.charge,
        );
    }

    /// Forgets ids whose events are older than the window: a resend of them is TOO_OLD anyway.
    fn evict(&mut self, now: DateTime<Utc>, window_days: u32) {
        let today = day_of(now.timestamp_nanos_opt().unwrap_or(i64::MAX));
        // One day of margin beyond the window, so an id is never forgotten while still resendable.
        let oldest_kept = today.saturating_sub(window_days as u16).saturating_sub(1);
        if oldest_kept <= self.evicted_through_day {
            return;
        }
        self.dedupe.retain_from(oldest_kept);
        self.evicted_through_day = oldest_kept;
    }

    /// Rates one job.
    pub fn process(&mut self, ctx: &RatingContext, job: ShardJob) -> ShardOutput {
        let mut out = ShardOutput {
            ticket: job.ticket,
            records: Vec::with_capacity(job.events.len() * 160),
            record_count: 0,
            suspense: Vec::new(),
            duplicate: 0,
            results: Vec::new(),
            totals: Vec::new(),
        };
        let mut touched = Touched::default();
        for r in job.rejected {
            reject(&mut out, r.index, r.entry);
        }
        for e in job.events {
            self.rate_one(ctx, e, &mut out, &mut touched);
        }
        self.count_charges();
        for (account, index) in touched.list {
            if let Some(t) = self.accounts.get(&*account).and_then(|l| l.get(index)) {
                out.totals.push(t.clone());
            }
        }
        out
    }

    fn rate_one(&mut self, ctx: &RatingContext, e: ValidEvent, out: &mut ShardOutput, touched: &mut Touched) {
        let ev = &e.event;
        let nanos = ev.timestamp.timestamp_nanos_opt().unwrap_or(0);
        let seen = self.dedupe.check(e.fingerprint, e.content);
        if seen != Seen::New {
            if seen == Seen::Duplicate {
                out.duplicate += 1;
                out.results.push(EventOutcome {
                    index: e.index,
                    rejected: None,
                    detail: String::new(),
                });
            } else {
                let detail = "event_id already rated with different content".to_string();
                reject(
                    out,
                    e.index,
                    suspense_of(&e, RejectReason::Conflict, detail, self.job_now),
                );
            }
            return;
        }
        let Some((plan_id, discount)) = ctx.subscriptions.plan_for(&ev.account_id, ev.timestamp) else {
            let detail = format!(
                "account {:?} has no subscription and there is no default plan",
                ev.account_id
            );
            return reject(
                out,
                e.index,
                suspense_of(&e, RejectReason::NoTariff, detail, self.job_now),
            );
        };
        let Some(plan) = ctx.catalogue.plan(plan_id) else {
            let detail = format!("plan {plan_id:?} is not in the tariff catalogue");
            return reject(
                out,
                e.index,
                suspense_of(&e, RejectReason::NoTariff, detail, self.job_now),
            );
        };
        let (period, end) = self.period(plan, ev.timestamp);
        if end <= self.closed_before {
            let detail = format!("billing period {period} of plan {:?} is closed", plan.id);
            return reject(
                out,
                e.index,
                suspense_of(&e, RejectReason::PeriodClosed, detail, self.job_now),
            );
        }
        let (index, totals) = self.totals_mut(&ev.account_id, &period, plan);
        let usage = totals.usage(&ev.meter);
        let input = RatingInput {
            meter: &ev.meter,
            quantity: ev.quantity,
            at: ev.timestamp,
            attributes: &ev.attributes,
            period_usage: usage,
            subscription_discount: discount,
        };
        let rated = match rate(plan, &input) {
            Ok(r) => r,
            Err(error) => {
                return reject(
                    out,
                    e.index,
                    suspense_of(&e, error.reason(), error.to_string(), self.job_now),
                );
            }
        };
        totals.add(&ev.meter, ev.quantity, rated.rated_quantity, rated.charge);
        touched.add(&totals.account, index);
        self.dedupe.insert(e.fingerprint, day_of(nanos), e.content);
        match self.job_charges.iter_mut().find(|(c, _)| *c == plan.currency) {
            Some((_, sum)) => *sum += rated.charge,
            None => self.job_charges.push((plan.currency, rated.charge)),
        }
        codec::append_framed(
            &mut out.records,
            &RecordRef {
                fingerprint: e.fingerprint,
                content: e.content,
                event_id: &ev.event_id,
                account_id: &ev.account_id,
                meter: &ev.meter,
                quantity: ev.quantity,
                timestamp_unix_nanos: nanos,
                attributes: &ev.attributes,
                plan: &plan.id,
                version: rated.explanation.version,
                period: &period,
                period_usage_before: usage,
                subscription_discount: discount,
                rated_quantity: rated.rated_quantity,
                charge: rated.charge,
            },
        );
        out.record_count += 1;
    }

    /// Adds this job's charges to the approximate per-currency counter (one increment per currency
    /// and job, in integer micro-units; no float touches money).
    fn count_charges(&mut self) {
        use rust_decimal::prelude::ToPrimitive;
        for (currency, sum) in self.job_charges.drain(..) {
            // Counters only go up: a job whose volume-tier marginals net negative adds nothing.
            let micros = (sum * rust_decimal::Decimal::from(1_000_000))
                .round()
                .to_u64()
                .unwrap_or(0);
            metrics::counter!(crate::telemetry::RATED_CHARGE, "currency" => currency.to_string()).increment(micros);
        }
    }

    /// Starts a checkpoint copy of the state as it is now (see [`StateCopy`]).
    fn begin_copy(&mut self) {
        let sweep: Vec<Arc<str>> = self.accounts.keys().cloned().collect();
        self.copying = Some(StateCopy {
            dedupe: self.dedupe.begin_copy(),
            totals: Vec::with_capacity(sweep.len() + sweep.len() / 4),
            uncopied: sweep.iter().cloned().collect(),
            sweep,
        });
    }

    /// Before a job changes `account`'s totals: copies them if a copy is being taken and they
    /// are not in it yet.
    fn copy_before_change(&mut self, account: &str) {
        if let Some(copy) = &mut self.copying
            && copy.uncopied.remove(account)
            && let Some(list) = self.accounts.get(account)
        {
            copy.totals.extend(list.iter().cloned());
        }
    }

    /// Takes the copy further; returns it once complete.
    fn copy_step(&mut self, accounts: usize, tables: usize) -> Option<ShardSnapshot> {
        let copy = self.copying.as_mut()?;
        for _ in 0..accounts {
            let Some(account) = copy.sweep.pop() else { break };
            if copy.uncopied.remove(&account)
                && let Some(list) = self.accounts.get(&account)
            {
                copy.totals.extend(list.iter().cloned());
            }
        }
        let tables_done = self.dedupe.copy_tables(&mut copy.dedupe, tables);
        if !tables_done || !copy.sweep.is_empty() {
            return None;
        }
        let copy = self.copying.take()?;
        Some(ShardSnapshot {
            dedupe: copy.dedupe.into_entries(),
            totals: copy.totals,
        })
    }

    /// Completes the copy being taken, if any, at once.
    fn finish_copy(&mut self) -> Option<ShardSnapshot> {
        self.copy_step(usize::MAX, usize::MAX)
    }

    /// Reads a state written by [`ShardSnapshot::encode`].
    pub fn decode(bytes: &[u8], ctx: &RatingContext) -> Result<ShardState, CodecError> {
        let mut r = Reader::new(bytes);
        let mut state = ShardState {
            dedupe: DedupeWindow::decode(&mut r)?,
            ..ShardState::default()
        };
        for _ in 0..r.u64()? {
            let account: Arc<str> = Arc::from(r.str()?);
            let period: Arc<str> = Arc::from(r.str()?);
            let plan_id = r.str()?;
            let plan = ctx
                .catalogue
                .plan(&plan_id)
                .ok_or(CodecError::Invalid("plan missing from the catalogue"))?;
            let mut totals = PeriodTotals::new(
                account.clone(),
                period,
                Arc::from(plan_id.as_str()),
                plan.currency,
                plan.rounding,
            );
            for _ in 0..r.u32()? {
                let meter = r.str()?;
                let (quantity, rated, charge, events) = (r.decimal()?, r.decimal()?, r.decimal()?, r.u64()?);
                totals.total_charge += charge;
                totals.meters.push(crate::domain::aggregate::MeterTotals {
                    meter: Arc::from(meter),
                    quantity,
                    rated_quantity: rated,
                    charge,
                    events,
                });
            }
            state.accounts.entry(account).or_default().push(totals);
        }
        if !r.is_empty() {
            return Err(CodecError::Invalid("trailing bytes"));
        }
        Ok(state)
    }
}

/// A shard's state as of one point in its queue, on its way to a checkpoint.
pub struct ShardSnapshot {
    dedupe: DedupeEntries,
    totals: Vec<PeriodTotals>,
}

impl ShardSnapshot {
    /// Serializes the state for a checkpoint.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.dedupe.len() * 16 + self.totals.len() * 128 + 32);
        let mut w = Writer(&mut out);
        self.dedupe.encode(&mut w);
        w.u64(self.totals.len() as u64);
        for t in &self.totals {
            w.str(&t.account);
            w.str(&t.period);
            w.str(&t.plan);
            w.u32(t.meters.len() as u32);
            for m in &t.meters {
                w.str(&m.meter);
                w.decimal(m.quantity);
                w.decimal(m.rated_quantity);
                w.decimal(m.charge);
                w.u64(m.events);
            }
        }
        out
    }
}

fn reject(out: &mut ShardOutput, index: u32, entry: SuspenseEntry) {
    let reason = RejectReason::from_code(entry.reason).unwrap_or(RejectReason::InvalidField);
    out.results.push(EventOutcome {
        index,
        rejected: Some(reason),
        detail: entry.detail.clone(),
    });
    out.suspense.push(codec::encode_suspense(&entry));
}

/// The suspense entry of a valid event rejected while rating.
fn suspense_of(e: &ValidEvent, reason: RejectReason, detail: String, now: DateTime<Utc>) -> SuspenseEntry {
    let ev = &e.event;
    let nanos_total = ev.quantity.mantissa() * 10i128.pow(9u32.saturating_sub(ev.quantity.scale()));
    SuspenseEntry {
        event_id: ev.event_id.clone(),
        account_id: ev.account_id.clone(),
        meter: ev.meter.clone(),
        quantity_units: i64::try_from(nanos_total / 1_000_000_000).unwrap_or(i64::MAX),
        quantity_nanos: (nanos_total % 1_000_000_000) as i32,
        timestamp_unix_nanos: ev.timestamp.timestamp_nanos_opt().unwrap_or(0),
        attributes: ev.attributes.clone(),
        reason: reason.code(),
        detail,
        received_unix_nanos: now.timestamp_nanos_opt().unwrap_or(0),
    }
}

/// What a shard thread reads besides its queue.
pub struct ShardEnv {
    pub index: usize,
    pub context: super::SharedContext,
    pub clock: super::SharedClock,
    /// A period closes this long after its end.
    pub close_grace: chrono::Duration,
    pub window_days: u32,
}

/// The shard thread: handles its queue in order until told to stop.
pub fn run(env: ShardEnv, mut state: ShardState, rx: Receiver<ShardMsg>, out: Sender<CommitterMsg>) {
    let ShardEnv {
        index,
        context: ctx,
        clock,
        close_grace,
        window_days,
    } = env;
    // Handles resolved once: the loop only sets them.
    let queue_depth = metrics::gauge!(crate::telemetry::SHARD_QUEUE_DEPTH, "shard" => index.to_string());
    let window_ids = metrics::gauge!(crate::telemetry::DEDUPE_WINDOW_IDS, "shard" => index.to_string());
    let mut jobs_since_evict = 0u32;
    let send_copy = |snapshot: Option<ShardSnapshot>| match snapshot {
        Some(state) => out.send(CommitterMsg::Snapshot { shard: index, state }).is_ok(),
        None => true,
    };
    loop {
        // While a checkpoint copy is being taken, an idle shard takes it further every 2 ms.
        let msg = if state.copying.is_some() {
            match rx.recv_timeout(std::time::Duration::from_millis(2)) {
                Ok(msg) => msg,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    if !send_copy(state.copy_step(COPY_ACCOUNTS_PER_STEP, COPY_TABLES_PER_STEP)) {
                        return;
                    }
                    continue;
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
            }
        } else {
            match rx.recv() {
                Ok(msg) => msg,
                Err(_) => return,
            }
        };
        match msg {
            ShardMsg::Job(job) => {
                // Bound: check the clock for expiry every 1,024 jobs, not per event.
                jobs_since_evict += 1;
                if jobs_since_evict >= 1024 {
                    jobs_since_evict = 0;
                    state.evict(clock.now(), window_days);
                }
                state.job_now = clock.now();
                state.closed_before = state.job_now - close_grace;
                let output = state.process(&ctx.load(), job);
                queue_depth.set(rx.len() as f64);
                window_ids.set(state.dedupe.len() as f64);
                if out.send(CommitterMsg::Output(output)).is_err() {
                    warn!(shard = index, "committer is gone; shard stops");
                    return;
                }
                // After the output: a copy that now holds this job's claims reaches the committer
                // behind it.
                if state.copying.is_some() && !send_copy(state.copy_step(COPY_ACCOUNTS_PER_STEP, COPY_TABLES_PER_STEP))
                {
                    return;
                }
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
            }
            ShardMsg::Stop => {
                send_copy(state.finish_copy());
                return;
            }
        }
    }
}

/// Rebuilds every shard's state: the latest checkpoint of each shard (when they were taken with
/// the current shard count), then every block after it, checksums verified. Ids older than the
/// window at `now` (the pipeline's clock, the same one ingest checks TOO_OLD against) are dropped.
pub fn recover(
    store: &Store,
    ctx: &RatingContext,
    shards: usize,
    window_days: u32,
    now: DateTime<Utc>,
) -> Result<Vec<ShardState>, StoreError> {
    let mut states: Vec<ShardState> = (0..shards).map(|_| ShardState::default()).collect();
    // Per shard: the first commit seq its checkpoint does not reflect (0 without one).
    let mut next: Vec<u64> = vec![0; shards];
    let files = CheckpointFiles::new(std::path::Path::new(store.dir()));
    for k in 0..shards {
        let checkpoint = match files.read(k) {
            Ok(Some(c)) => c,
            Ok(None) => continue,
            Err(error) => {
                warn!(%error, "checkpoint not usable; its shard is rebuilt from the blocks");
                continue;
            }
        };
        if checkpoint.shards as usize != shards {
            warn!(
                shard = k,
                taken_with = checkpoint.shards,
                shards,
                "checkpoint was taken with another shard count; replaying all blocks"
            );
            next = vec![0; shards];
            states = (0..shards).map(|_| ShardState::default()).collect();
            break;
        }
        match ShardState::decode(&checkpoint.state, ctx) {
            Ok(state) => {
                states[k] = state;
                next[k] = checkpoint.next_seq;
            }
            Err(error) => warn!(shard = k, %error, "checkpoint not usable; its shard is rebuilt from the blocks"),
        }
    }
    let from = next.iter().copied().min().unwrap_or(0);
    let key = store.key();
    let mut damage: Vec<(String, String)> = Vec::new();
    for item in store.blocks_from(from) {
        let (seq, name, bytes) = item?;
        let opened = codec::open_block(&bytes)
            .and_then(|(_, payload)| codec::records(payload).collect::<Result<Vec<_>, CodecError>>());
        let records = match opened {
            Ok(records) => records,
            Err(error) => {
                // The accounts of the commit come from its index entry; without it, which totals
                // are wrong is unknown and nothing can be served: refuse to start.
                let accounts = store
                    .block_accounts(seq)
                    .map_err(|_| store.corrupt(name.clone(), error.clone()))?;
                let why = format!("{name} in {} failed its check ({error})", store.sled_file());
                error!(
                    file = %store.sled_file(),
                    key = %name,
                    %error,
                    accounts = accounts.len(),
                    "stored records are corrupted: the totals of the accounts in this commit are not served \
                     and their batches are refused until the data dir is restored from a backup"
                );
                damage.extend(accounts.into_iter().map(|a| (a, why.clone())));
                continue;
            }
        };
        for record in records {
            let k = key.shard_of(&record.account_id, shards);
            if seq < next[k] {
                continue;
            }
            let plan = ctx.catalogue.plan(&record.plan).ok_or_else(|| {
                store.corrupt(
                    name.clone(),
                    CodecError::Invalid("record names a plan missing from the catalogue"),
                )
            })?;
            states[k].apply(&record, plan);
        }
    }
    store.record_damage(&damage)?;
    for s in &mut states {
        s.evict(now, window_days);
    }
    Ok(states)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::subscription::SubscriptionBook;
    use crate::domain::usage::UsageEvent;
    use crate::pipeline::BatchTicket;

    fn context() -> RatingContext {
        let catalogue = crate::domain::tariff_file::parse_catalogue(include_str!("../../config/tariffs.toml")).unwrap();
        RatingContext {
            catalogue,
            subscriptions: SubscriptionBook::new(&[], Some("saas-pro".into())),
        }
    }

    fn job(from: u64, count: u64, accounts: u64) -> ShardJob {
        let permits = Arc::new(tokio::sync::Semaphore::new(1));
        let (ticket, _rx) = BatchTicket::new(from, 1, permits.try_acquire_owned().unwrap());
        let at = Utc::now() - chrono::Duration::hours(1);
        let events = (from..from + count)
            .map(|n| {
                let account = format!("a-{}", n % accounts);
                let id = format!("e-{n}");
                ValidEvent {
                    index: (n - from) as u32,
                    fingerprint: crate::domain::keyed::HashKey::new(7, 7).fingerprint(&account, &id),
                    content: n,
                    event: UsageEvent {
                        event_id: id,
                        account_id: account,
                        meter: "api.requests".into(),
                        quantity: rust_decimal::Decimal::from(1 + n % 7),
                        timestamp: at,
                        attributes: Vec::new(),
                    },
                }
            })
            .collect();
        ShardJob {
            ticket,
            events,
            rejected: Vec::new(),
        }
    }

    fn sorted(mut totals: Vec<PeriodTotals>) -> Vec<(String, String, String, u64)> {
        totals.sort_by(|a, b| a.account.cmp(&b.account));
        totals
            .iter()
            .map(|t| {
                let events = t.meters.iter().map(|m| m.events).sum();
                (
                    t.account.to_string(),
                    t.period.to_string(),
                    t.total_charge.to_string(),
                    events,
                )
            })
            .collect()
    }

    /// A copy taken a step at a time while jobs keep changing totals holds the totals exactly as
    /// they were when it began, and every id claimed before it began.
    #[test]
    fn a_copy_taken_between_jobs_is_the_state_at_its_start() {
        let ctx = context();
        let mut state = ShardState::default();
        state.process(&ctx, job(0, 30_000, 9_000));
        let at_start = sorted(state.all_totals().collect());
        state.begin_copy();
        let mut copy = None;
        let mut next = 30_000;
        while copy.is_none() {
            // Jobs touch old accounts (copied before they change) and new ones (not in the copy).
            state.process(&ctx, job(next, 1_000, 12_000));
            next += 1_000;
            copy = state.copy_step(500, 2);
        }
        assert!(next > 31_000, "the copy took several steps");
        let copy = copy.unwrap();
        assert_eq!(sorted(copy.totals), at_start);
        assert!(copy.dedupe.len() >= 30_000);
        let mut bytes = Vec::new();
        copy.dedupe.encode(&mut Writer(&mut bytes));
        let window = DedupeWindow::decode(&mut Reader::new(&bytes)).unwrap();
        for n in 0..30_000u64 {
            let fp =
                crate::domain::keyed::HashKey::new(7, 7).fingerprint(&format!("a-{}", n % 9_000), &format!("e-{n}"));
            assert_eq!(
                window.check(fp, n),
                Seen::Duplicate,
                "id {n} claimed before the copy began"
            );
        }
    }
}
