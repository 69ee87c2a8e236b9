//! Recurring fees (docs/tariffs.md, "Recurring fees"): the closer calls [`Pipeline::bill_fees`]
//! every interval. For every account's subscriptions to plans with fees it works out what each
//! fee is due for the plan's current period (in advance) and for periods about to close (in
//! arrears too), compares it with what the period's totals already hold under the fee's meter
//! (`@fee:<name>`), and writes the difference as one record through the pipeline, like an event:
//! durable before it counts, and never twice, because each record's id carries the number of fee
//! records before it (`fee:<plan>:<period>:<name>:<n>`), which the recovered totals give again
//! after a crash. A subscription ended or changed later writes a correcting record into the open
//! period; a closed period is never billed again.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::{Pipeline, PipelineError};
use crate::domain::charge::CHARGE_METER;
use crate::domain::correction::ADJUSTMENT_METER;
use crate::domain::fee::{FEE_ID_PREFIX, FEE_METER_PREFIX, FeeDue, MINIMUM_METER, fees_due, minimum_due};
use crate::domain::period::Period;
use crate::domain::subscription::windows_of;
use crate::domain::tariff::{Billing, Plan};
use crate::domain::usage::{RawEvent, UsageEvent};

/// Most fee records in one batch.
const FEES_PER_BATCH: usize = 1_000;

impl Pipeline {
    /// Charges every fee due and not yet charged (see the module documentation): in advance for
    /// each plan's current period, and in arrears as well for the `(plan, period label)` pairs
    /// about to close. Returns how many fee records were written and how many were refused (a
    /// refusal is logged; the next call tries again).
    pub async fn bill_fees(&self, closing: &[(Arc<str>, Arc<str>)]) -> Result<(usize, usize), PipelineError> {
        let now = self.clock.now();
        let context = self.context.load_full();
        let fee_plans: Vec<&Plan> = context
            .catalogue
            .plans()
            .iter()
            .filter(|p| p.versions.iter().any(|v| !v.fees.is_empty()))
            .collect();
        if fee_plans.is_empty() {
            return Ok((0, 0));
        }
        let mut items = Vec::new();
        for (account, subscriptions) in context.subscriptions.accounts() {
            for plan in &fee_plans {
                let windows = windows_of(subscriptions, &plan.id);
                let mut periods = vec![(plan.period.period_of(plan.time_zone, now), false)];
                for (_, label) in closing.iter().filter(|(p, _)| **p == *plan.id) {
                    match plan.period.period_labelled(plan.time_zone, label) {
                        Some(_) if periods[0].0.label == **label => periods[0].1 = true,
                        Some(period) => periods.push((period, true)),
                        None => {}
                    }
                }
                for (period, closing) in periods {
                    if self.committed.is_closed(&plan.id, &period.label) {
                        continue;
                    }
                    // Every fee of the plan's versions: one the windows no longer owe (a
                    // subscription ended or replaced) is due 0 and its charge is taken back.
                    let due = fees_due(plan, &windows, &period);
                    let names = plan.versions.iter().flat_map(|v| &v.fees).map(|f| (&f.name, f.billing));
                    for (name, billing) in names {
                        if billing == Billing::InArrears && !closing {
                            continue;
                        }
                        let fee = due.iter().find(|f| f.name == *name);
                        let meter = format!("{FEE_METER_PREFIX}{name}");
                        let (charged, records) = self.charged(account, &period.label, &plan.id, &meter);
                        let owed = fee.map_or(Decimal::ZERO, |f| f.due);
                        if owed == charged {
                            continue;
                        }
                        let at = if closing {
                            period.end - chrono::Duration::seconds(1)
                        } else {
                            now.clamp(period.start, period.end - chrono::Duration::seconds(1))
                        };
                        let proration = fee.map_or_else(|| "not owed any more".to_string(), FeeDue::proration);
                        let record = OwnRecord {
                            meter,
                            billing,
                            description: proration,
                            delta: owed - charged,
                            records,
                            at,
                        };
                        items.push(record.event(account, plan, &period));
                    }
                }
            }
        }
        self.write_own(items).await
    }

    /// Writes the minimum-commitment true-ups of the `(plan, period label)` pairs about to close
    /// (after their fees): for each account subscribed to a plan whose version has a minimum, the
    /// amount that brings the plan's subtotal in the period (usage and fees; one-off charges
    /// apart, and corrections of closed periods booked here) up to the minimum prorated like a
    /// fee, as a record of `@minimum`.
    pub async fn bill_minimums(&self, closing: &[(Arc<str>, Arc<str>)]) -> Result<(usize, usize), PipelineError> {
        let context = self.context.load_full();
        let mut items = Vec::new();
        for (plan_id, label) in closing {
            let Some(plan) = context.catalogue.plan(plan_id) else {
                continue;
            };
            if plan.versions.iter().all(|v| v.minimum.is_none()) || self.committed.is_closed(plan_id, label) {
                continue;
            }
            let Some(period) = plan.period.period_labelled(plan.time_zone, label) else {
                continue;
            };
            for (account, subscriptions) in context.subscriptions.accounts() {
                let windows = windows_of(subscriptions, &plan.id);
                let Some(minimum) = minimum_due(plan, &windows, &period) else {
                    continue;
                };
                let total = self.charged_total(account, label, plan_id);
                let (one_off, _) = self.charged(account, label, plan_id, CHARGE_METER);
                // Corrections of earlier (closed) periods booked here are not this period's
                // usage: a credit note for last month is not swallowed by this month's minimum.
                let (adjusted, _) = self.charged(account, label, plan_id, ADJUSTMENT_METER);
                let (trued_up, records) = self.charged(account, label, plan_id, MINIMUM_METER);
                let subtotal = total - one_off - adjusted - trued_up;
                let owed = (minimum.due - subtotal).max(Decimal::ZERO);
                if owed == trued_up {
                    continue;
                }
                let record = OwnRecord {
                    meter: MINIMUM_METER.to_string(),
                    billing: Billing::InArrears,
                    description: format!("{} = {}; subtotal {subtotal}", minimum.proration(), minimum.due),
                    delta: owed - trued_up,
                    records,
                    at: period.end - chrono::Duration::seconds(1),
                };
                items.push(record.event(account, plan, &period));
            }
        }
        self.write_own(items).await
    }

    /// Writes records ratingd makes itself, in batches; how many were written and refused (each
    /// refusal logged).
    async fn write_own(&self, items: Vec<(RawEvent, UsageEvent)>) -> Result<(usize, usize), PipelineError> {
        let (mut written, mut refused) = (0, 0);
        let mut rest = items;
        while !rest.is_empty() {
            let batch: Vec<_> = rest.drain(..rest.len().min(FEES_PER_BATCH)).collect();
            let ack = self.intake_own(0, batch).await?.ack().await?;
            written += ack.accepted as usize;
            for r in ack.results.iter().filter(|r| r.rejected.is_some()) {
                refused += 1;
                tracing::warn!(detail = %r.detail, "a recurring fee was not charged; will retry");
            }
        }
        Ok((written, refused))
    }

    /// The exact total of (account, period, plan) in the committed totals (0 without any).
    fn charged_total(&self, account: &str, period: &str, plan: &str) -> Decimal {
        let key = (Arc::from(account), Arc::from(period));
        self.committed
            .totals
            .get(&key)
            .and_then(|t| t.part(plan).map(|p| p.total_charge))
            .unwrap_or(Decimal::ZERO)
    }

    /// What the committed totals of (account, period, plan) hold under `meter`: the exact sum
    /// and the number of records.
    fn charged(&self, account: &str, period: &str, plan: &str, meter: &str) -> (Decimal, u64) {
        let key = (Arc::from(account), Arc::from(period));
        self.committed
            .totals
            .get(&key)
            .and_then(|t| {
                t.part(plan).and_then(|p| {
                    p.meters
                        .iter()
                        .find(|m| &*m.meter == meter)
                        .map(|m| (m.charge, m.events))
                })
            })
            .unwrap_or((Decimal::ZERO, 0))
    }
}

/// A record ratingd writes itself for a plan's period: a fee or a true-up, the difference
/// between what the period holds under its meter and what it owes.
struct OwnRecord {
    meter: String,
    billing: Billing,
    description: String,
    delta: Decimal,
    /// Records of this meter the period holds already: the number in the new record's id.
    records: u64,
    at: DateTime<Utc>,
}

impl OwnRecord {
    fn event(self, account: &str, plan: &Plan, period: &Period) -> (RawEvent, UsageEvent) {
        // `platform` for the fee @fee:platform, `@minimum` for a true-up (fee names cannot start
        // with @).
        let name = self.meter.strip_prefix(FEE_METER_PREFIX).unwrap_or(&self.meter);
        let attributes = vec![
            ("plan".to_string(), plan.id.clone()),
            ("period".to_string(), period.label.clone()),
            ("billing".to_string(), self.billing.name().to_string()),
            ("description".to_string(), self.description),
        ];
        let event = UsageEvent {
            event_id: format!("{FEE_ID_PREFIX}{}:{}:{name}:{}", plan.id, period.label, self.records),
            account_id: account.to_string(),
            meter: self.meter,
            quantity: self.delta,
            timestamp: self.at,
            attributes,
        };
        let raw = event.to_raw();
        (raw, event)
    }
}
