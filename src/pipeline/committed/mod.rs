//! The committed view: what readers see. The committer publishes each commit's changed totals
//! and wallets here after its fsync, so nothing in it is ahead of the disk; closed periods'
//! totals are read from their final totals on disk (`f/`), not kept in memory. The totals sit in
//! slots the shards number (`table`).

mod table;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;

use super::{PipelineError, lock};
use crate::domain::aggregate::{AccountPeriod, PeriodTotals};
use crate::store::{Finals, RetiredPeriod, StoreError};
pub use table::{MeterValues, TotalsChange, TotalsDelta, TotalsTable};

/// An (account, period) key.
pub type TotalsKey = (Arc<str>, Arc<str>);

/// The accounts with totals in each open (plan, period).
pub type OpenPeriods = ahash::AHashMap<(Arc<str>, Arc<str>), Vec<Arc<str>>>;

/// What readers see: durable totals only, published by the committer after each fsync.
#[derive(Default)]
pub struct Committed {
    /// Totals by (account, period), one part per plan that rated usage in the period, in the
    /// shards' slots.
    pub totals: TotalsTable,
    /// Keys marked changed besides the slots (a close, a failed flush), until the Redis projection
    /// takes them (bounded by the number of totals).
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
        let in_memory = self.totals.get(&key);
        let Some(finals) = self.finals.as_ref().filter(|_| self.any_closed(period)) else {
            return Ok(in_memory);
        };
        let on_disk = finals.of(account, period)?;
        if on_disk.is_empty() {
            return Ok(in_memory);
        }
        Ok(Some(merge(on_disk, in_memory)))
    }

    /// Runs `f` on an account's totals of a period without a copy, when they are one plan's,
    /// in memory, and no plan's period of that label is closed (nearly always); `None` otherwise
    /// (read them with [`Committed::get`]).
    pub fn with_single<R>(&self, key: &TotalsKey, f: impl FnOnce(&PeriodTotals) -> R) -> Option<R> {
        if self.any_closed(&key.1) {
            return None;
        }
        self.totals.with_single(key, f)
    }

    /// Every account's totals of a period (memory and disk, as [`Committed::get`]), damaged
    /// accounts left out.
    pub fn of_period(&self, period: &str) -> Result<Vec<(Arc<str>, AccountPeriod)>, StoreError> {
        let mut out: ahash::AHashMap<Arc<str>, AccountPeriod> = self
            .totals
            .of_period(period)
            .into_iter()
            .map(|((account, _), totals)| (account, totals))
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
    pub(super) fn note_open(&self, new: impl IntoIterator<Item = (Arc<str>, Arc<str>, Arc<str>)>) {
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
        self.totals.forget(plan, period, accounts);
        self.closed_generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Takes the changed keys (the Redis projection calls this once per flush).
    pub fn take_dirty(&self) -> ahash::AHashSet<TotalsKey> {
        let mut keys = std::mem::take(&mut *lock(&self.dirty));
        self.totals.take_dirty(&mut keys);
        keys
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
