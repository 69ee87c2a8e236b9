//! Spend alerts: when an account's committed period charge first reaches a threshold (the plan's,
//! from the config, or its subscription's), one alert is recorded in sled and later appended to
//! the Redis stream `<prefix>:alerts`. Never twice for the same account, period and threshold,
//! even when a volume tier lowers the charge and it rises again, and across restarts.

use std::sync::atomic::Ordering;

use ahash::AHashSet;
use rust_decimal::Decimal;
use serde_json::json;
use tracing::{info, warn};

use super::{Committed, PlanAlerts, SharedClock, SharedContext};
use crate::domain::aggregate::PeriodTotals;
use crate::store::{SettingsStore, StoreError, StoredAlert};

pub struct Alerts {
    plan: PlanAlerts,
    context: SharedContext,
    settings: SettingsStore,
    clock: SharedClock,
    /// Ids of every alert raised so far (bounded by accounts x periods x thresholds).
    raised: AHashSet<String>,
}

impl Alerts {
    /// Loads the alerts raised before; flags unannounced ones for the Redis projection.
    pub fn load(
        plan: PlanAlerts,
        context: SharedContext,
        settings: SettingsStore,
        clock: SharedClock,
        committed: &Committed,
    ) -> Result<Alerts, StoreError> {
        let stored = settings.alerts()?;
        if stored.iter().any(|a| !a.announced) {
            committed.alerts_pending.store(true, Ordering::Release);
        }
        let raised = stored.into_iter().map(|a| a.id).collect();
        Ok(Alerts {
            plan,
            context,
            settings,
            clock,
            raised,
        })
    }

    /// Called by the committer after a durable commit, for every changed totals, with the charge
    /// before the change. Allocates nothing unless a threshold is crossed.
    pub fn check(&mut self, before: Option<Decimal>, after: &PeriodTotals, committed: &Committed) {
        let crossed: Vec<Decimal> = {
            let context = self.context.load();
            let of_plan = self.plan.get(after.plan.as_ref()).map_or(&[][..], Vec::as_slice);
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
            let id = format!("{}|{}|{}", after.account, after.period, threshold.normalize());
            if self.raised.contains(&id) {
                continue;
            }
            let entry = json!({
                "alert_id": id,
                "account": after.account.as_ref(),
                "period": after.period.as_ref(),
                "plan": after.plan.as_ref(),
                "currency": after.currency.to_string(),
                "threshold": threshold.normalize().to_string(),
                "total_charge": after.total_charge.to_string(),
                "crossed_at": self.clock.now().to_rfc3339(),
            })
            .to_string();
            match self.settings.put_alert(&StoredAlert {
                id: id.clone(),
                announced: false,
                entry,
            }) {
                Ok(()) => {
                    metrics::counter!(crate::telemetry::ALERTS).increment(1);
                    info!(alert = %id, "spend threshold crossed");
                    self.raised.insert(id);
                    committed.alerts_pending.store(true, Ordering::Release);
                }
                // Not recorded: not raised; the next crossing of the same threshold tries again.
                Err(error) => warn!(%error, alert = %id, "cannot record a spend alert"),
            }
        }
    }
}
