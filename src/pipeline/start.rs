//! Starting the pipeline: recovery of every shard's state from the store (checkpoint and the
//! blocks after it), the wallets checked against their ledgers, partial sessions held, damage,
//! closes and retention read back; then the shard and committer threads.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

use super::{
    Committed, CommittedView, CommitterMsg, Pipeline, PipelineConfig, PlanAlerts, ShardMsg, SharedClock, SharedContext,
    StartError, alerts, balance, committer, shard,
};
use crate::domain::aggregate::PeriodTotals;
use crate::domain::keyed::HashKey;
use crate::store::{Store, StoreError};

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
pub(super) fn first_kept_day(now: chrono::DateTime<chrono::Utc>, window_days: u32) -> u16 {
    let oldest = now - chrono::Duration::days(i64::from(window_days));
    oldest.timestamp().div_euclid(86_400).clamp(0, i64::from(u16::MAX)) as u16
}

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
        let (mut states, segments) = shard::recover(
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
            totals: super::committed::TotalsTable::new(config.shards),
            ..Committed::default()
        });
        committed.epoch.store(store.next_seq(), Ordering::Release);
        for wallet in wallets {
            committed
                .balances
                .insert(Arc::from(wallet.account.as_str()), wallet.view());
        }
        let mut new = Vec::new();
        for (index, state) in states.iter_mut().enumerate() {
            state.install_totals(index, &committed.totals, &mut new);
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
            segments,
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
