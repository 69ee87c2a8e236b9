//! Spend alerts: when an account's committed period charge first reaches a threshold (the plan's,
//! from the config, or its subscription's), one alert is recorded in sled and later appended to
//! the Redis stream `<prefix>:alerts`. Never twice for the same account, period and threshold,
//! even when a volume tier lowers the charge and it rises again, and across restarts.

use std::sync::atomic::Ordering;

use rust_decimal::Decimal;
use tracing::{info, warn};

use super::{Committed, PlanAlerts, SharedClock, SharedContext};
use crate::domain::aggregate::PeriodTotals;
use crate::domain::alert::{SpendAlert, alert_id};
use crate::store::{StoreError, StoredAlert};

pub struct Alerts {
    plan: PlanAlerts,
    context: SharedContext,
    table: crate::store::Alerts,
    clock: SharedClock,
}

impl Alerts {
    /// The rating context in force (loaded once per commit for [`Alerts::check`]).
    pub fn context(&self) -> arc_swap::Guard<std::sync::Arc<super::RatingContext>> {
        self.context.load()
    }

    /// Flags alerts raised before and not yet announced for the Redis projection. Which alerts
    /// were raised is read from the store when a threshold is crossed, not kept in memory: that
    /// set would grow with accounts x periods x thresholds for as long as the daemon runs.
    pub fn load(
        plan: PlanAlerts,
        context: SharedContext,
        table: crate::store::Alerts,
        clock: SharedClock,
        committed: &Committed,
    ) -> Result<Alerts, StoreError> {
        let stored = table.all()?;
        if stored.iter().any(|a| !a.announced) {
            committed.alerts_pending.store(true, Ordering::Release);
        }
        Ok(Alerts {
            plan,
            context,
            table,
            clock,
        })
    }

    /// Called by the committer after a durable commit, for every changed totals, with the charge
    /// before the change and the context it loaded once for the commit. Allocates nothing and
    /// looks nothing up per account unless some plan or subscription has thresholds.
    pub fn check(
        &mut self,
        context: &super::RatingContext,
        before: Option<Decimal>,
        after: &PeriodTotals,
        committed: &Committed,
    ) {
        let of_plan = self.plan.get(after.plan.as_ref()).map_or(&[][..], Vec::as_slice);
        if of_plan.is_empty() && !context.subscriptions.any_alerts() {
            return;
        }
        let crossed: Vec<Decimal> = {
            let of_subscription = context
                .subscriptions
                .of(&after.account)
                .iter()
                .filter(|s| *s.plan_id == *after.plan)
                .flat_map(|s| s.alert_thresholds.iter());
            of_plan
                .iter()
                .chain(of_subscription)
                .copied()
                .filter(|&t| after.total_charge >= t && before.is_none_or(|b| b < t))
                .collect()
        };
        for threshold in crossed {
            let id = alert_id(&after.account, &after.period, threshold);
            match self.table.contains(&id) {
                Ok(false) => {}
                Ok(true) => continue,
                // Unknown: not raised now; the next crossing of the same threshold tries again.
                Err(error) => {
                    warn!(%error, alert = %id, "cannot read the spend alerts");
                    continue;
                }
            }
            let alert = SpendAlert {
                account: after.account.to_string(),
                period: after.period.to_string(),
                plan: after.plan.to_string(),
                currency: after.currency.to_string(),
                threshold: threshold.normalize(),
                total_charge: after.total_charge,
                crossed_at: self.clock.now(),
            };
            match self.table.put(&StoredAlert {
                alert,
                announced: false,
            }) {
                Ok(()) => {
                    metrics::counter!(crate::telemetry::ALERTS).increment(1);
                    info!(alert = %id, "spend threshold crossed");
                    committed.alerts_pending.store(true, Ordering::Release);
                }
                // Not recorded: not raised; the next crossing of the same threshold tries again.
                Err(error) => warn!(%error, alert = %id, "cannot record a spend alert"),
            }
        }
    }
}
