//! Period close: once a billing period's end plus the grace has passed, its totals are final.
//! The closer waits until every event the shards accepted before the deadline is committed (a
//! barrier through the pipeline; later events for the period are PERIOD_CLOSED), writes the close
//! and its announcement to sled, and marks the period closed; the Redis projection then writes
//! `status=closed` and appends the announcement to `<prefix>:periods:closed` (`export`).
//!
//! [`run`] is the billing cycle's loop: every interval it bills the fees in advance (when the
//! tariffs, the subscriptions or a period changed), closes what is due, then lets retention
//! remove what is old enough.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;
use tracing::{info, warn};

use super::fees::{Accounts, Biller};
use crate::domain::aggregate::PeriodTotals;
use crate::pipeline::Pipeline;
use crate::shutdown::Shutdown;
use crate::store::{Closes, StoreError, StoredClose};

/// The announcement of one account's final totals under one plan: one `periods:closed` stream
/// entry. `close_id` is `<account>|<period>` when the plan is the only one of the account's
/// period, and `<account>|<period>|<plan>` when the account changed plan or holds several (a
/// plan that closes first while alone keeps the short id: a later plan then sees two).
pub fn announcement(t: &PeriodTotals, alone: bool) -> String {
    let meters: serde_json::Map<String, serde_json::Value> = t
        .meters
        .iter()
        .map(|m| {
            let v = json!({ "quantity": m.quantity.normalize().to_string(), "charge": m.charge.to_string(), "events": m.events });
            (m.meter.to_string(), v)
        })
        .collect();
    json!({
        "close_id": if alone {
            format!("{}|{}", t.account, t.period)
        } else {
            format!("{}|{}|{}", t.account, t.period, t.plan)
        },
        "account": t.account.as_ref(),
        "period": t.period.as_ref(),
        "plan": t.plan.as_ref(),
        "currency": t.currency.to_string(),
        "total_charge": t.total_charge.to_string(),
        "total_amount": t.amount().to_string(),
        "meters": meters,
    })
    .to_string()
}

/// Puts the closes recorded before in force again (their totals stay final after a restart), and
/// flags the projection when one was not yet announced.
pub fn restore(pipeline: &Pipeline, closes: &Closes) -> Result<(), StoreError> {
    let committed = pipeline.committed();
    for close in closes.all()? {
        let key = (Arc::from(close.plan.as_str()), Arc::from(close.period.as_str()));
        committed.closed.write().unwrap_or_else(|e| e.into_inner()).insert(key);
        if !close.announced {
            committed.announcements_pending.store(true, Ordering::Release);
        }
    }
    Ok(())
}

/// What the fees in advance depend on: the rating context in force (replaced whole by a reload or
/// a subscription change) and the current period of each plan.
fn fee_state(pipeline: &Pipeline) -> (Arc<crate::pipeline::RatingContext>, Vec<String>) {
    let context = pipeline.context().load_full();
    let now = pipeline.clock().now();
    let labels = context
        .catalogue
        .plans()
        .iter()
        .map(|p| p.period.period_of(p.time_zone, now).label)
        .collect();
    (context, labels)
}

/// Checks for periods due every `interval` until shutdown.
pub async fn run(
    biller: Arc<Biller>,
    closes: Closes,
    grace: chrono::Duration,
    interval: Duration,
    mut retention: super::retention::Sweeper,
    mut shutdown: Shutdown,
) {
    let pipeline = biller.pipeline().clone();
    // Holding the context keeps its address from being reused by a later one.
    let mut billed_at: Option<(Arc<crate::pipeline::RatingContext>, Vec<String>)> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            () = shutdown.started() => return,
        }
        // Recurring fees in advance for the current periods (the closes below add the ones in
        // arrears of the periods they close): billed again only when the tariffs or
        // subscriptions changed or a plan's period turned, not every interval.
        let state = fee_state(&pipeline);
        let unchanged = billed_at
            .as_ref()
            .is_some_and(|(context, labels)| Arc::ptr_eq(context, &state.0) && *labels == state.1);
        if !unchanged {
            match biller.bill_fees(Accounts::All, &[]).await {
                Ok(billed) if billed.refused == 0 => billed_at = Some(state),
                Ok(_) => {}
                Err(error) => warn!(%error, "recurring fees not charged; will retry"),
            }
        }
        if let Err(error) = close_due(&biller, &closes, grace).await {
            warn!(%error, "period close failed; will retry");
        }
        // After the closes: a period is removed only once closed, retention_days after its end.
        if let Err(error) = retention.sweep(&pipeline).await {
            metrics::counter!(crate::telemetry::RETENTION_ERRORS).increment(1);
            warn!(%error, "retention step failed; nothing of it was removed; will retry");
        }
    }
}

/// Closes every (plan, period) whose end plus `grace` has passed. Returns how many.
pub async fn close_due(biller: &Biller, closes: &Closes, grace: chrono::Duration) -> Result<usize, String> {
    let pipeline = biller.pipeline();
    let cutoff = pipeline.clock().now() - grace;
    let context = pipeline.context().load();
    // The open periods with totals (an index the committer keeps): work per interval in
    // proportion to the open periods, not to every totals.
    let mut seen: BTreeSet<(Arc<str>, Arc<str>)> = pipeline.committed().open_periods().into_iter().collect();
    // A plan with fees or a minimum closes its last ended period when some subscription to it
    // covered part of it, even without usage: fees in arrears and true-ups are charged by that
    // close.
    let second = chrono::Duration::seconds(1);
    for plan in context.catalogue.plans().iter().filter(|p| p.bills_without_usage()) {
        let mut period = plan.period.period_of(plan.time_zone, cutoff - second);
        if period.end > cutoff {
            period = plan.period.period_of(plan.time_zone, period.start - second);
        }
        let subscribed = context
            .subscriptions
            .all()
            .any(|s| s.plan_id == plan.id && s.from < period.end && s.to.is_none_or(|to| to > period.start));
        if subscribed {
            seen.insert((Arc::from(plan.id.as_str()), Arc::from(period.label.as_str())));
        }
    }
    let due: Vec<(Arc<str>, Arc<str>)> = seen
        .into_iter()
        .filter(|(plan, period)| !pipeline.committed().is_closed(plan, period))
        .filter(|(plan, period)| {
            let bounds = context
                .catalogue
                .plan(plan)
                .and_then(|p| p.period.period_labelled(p.time_zone, period));
            bounds.is_some_and(|b| b.end <= cutoff)
        })
        .collect();
    if due.is_empty() {
        return Ok(0);
    }
    // Fees in arrears (and any in advance not yet charged) go into the periods before they close.
    let fees = biller.bill_fees(Accounts::All, &due).await.map_err(|e| e.to_string())?;
    // True-ups after the fees: the subtotal they bring up to the minimum includes them.
    let minimums = biller.bill_minimums(&due).await.map_err(|e| e.to_string())?;
    let refused = fees.refused + minimums.refused;
    if refused > 0 {
        return Err(format!(
            "{refused} recurring fees were not charged; the close waits for them"
        ));
    }
    // Everything a shard accepted for these periods before the deadline is committed after this;
    // anything after it was checked against the deadline and rejected.
    pipeline.barrier().await.map_err(|e| e.to_string())?;
    let committed = pipeline.committed();
    for (plan, period) in &due {
        let mut finals: Vec<(PeriodTotals, bool)> = Vec::new();
        for account in committed.open_accounts(plan, period) {
            // A damaged account's totals are unknown: not announced as final (docs/security.md).
            if committed.damaged.contains_key(&account) {
                continue;
            }
            // With the plans of the period closed before (on disk): the close id counts them all.
            let totals = committed.get(&account, period).map_err(|e| e.to_string())?;
            if let Some(t) = totals
                .as_ref()
                .and_then(|t| t.part(plan).map(|p| (p.clone(), t.parts.len() == 1)))
            {
                finals.push(t);
            }
        }
        finals.sort_by(|a, b| a.0.account.cmp(&b.0.account));
        let close = StoredClose {
            plan: plan.to_string(),
            period: period.to_string(),
            announced: false,
            entries: finals.iter().map(|(t, alone)| announcement(t, *alone)).collect(),
        };
        let table = closes.clone();
        let totals: Vec<PeriodTotals> = finals.iter().map(|(t, _)| t.clone()).collect();
        tokio::task::spawn_blocking(move || table.put_with_finals(&close, &totals))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        committed
            .closed
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert((plan.clone(), period.clone()));
        committed.mark_dirty(finals.iter().map(|(t, _)| (t.account.clone(), t.period.clone())));
        // Durable on disk: the totals leave memory (readers find them in `f/` from here on).
        committed.forget_closed(plan, period);
        committed.announcements_pending.store(true, Ordering::Release);
        metrics::counter!(crate::telemetry::PERIODS_CLOSED).increment(1);
        info!(%plan, %period, accounts = finals.len(), "billing period closed");
    }
    Ok(due.len())
}
