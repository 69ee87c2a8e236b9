//! Recurring fees and minimum true-ups written (docs/tariffs.md, "Recurring fees"): the closer
//! calls [`Biller::bill_fees`] every interval, and the Admin API after each change that changes
//! what is owed (a subscription set, a reload), answering once the fee records are committed.
//! For every account's subscriptions to plans with fees it works out what each
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

use super::proration::{FeeDue, fees_due, minimum_due};
use crate::domain::aggregate::PeriodTotals;
use crate::domain::origin::{
    ADJUSTMENT_METER, CHARGE_METER, FEE_ID_PREFIX, MINIMUM_METER, Origin, fee_meter, fee_name,
};
use crate::domain::period::Period;
use crate::domain::subscription::windows_of;
use crate::domain::tariff::{Billing, Plan};
use crate::domain::usage::{RawEvent, UsageEvent};
use crate::limits::FEES_PER_BATCH;
use crate::pipeline::{Pipeline, PipelineError};

/// Whose fees a call bills.
#[derive(Debug, Clone, Copy)]
pub enum Accounts<'a> {
    /// Every account with a subscription (the closer, a reload).
    All,
    /// These accounts only (the subscriptions just set).
    Only(&'a [String]),
}

/// How many fee or true-up records a call wrote, and how many were refused (each refusal is
/// logged; the closer's next pass tries again).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Billed {
    pub written: usize,
    pub refused: usize,
}

/// The writer of the billing cycle's own records. One call at a time: the closer and the Admin
/// API share it, so two never compute the same fee from the same totals at once.
pub struct Biller {
    pipeline: Arc<Pipeline>,
    turn: tokio::sync::Mutex<()>,
}

impl Biller {
    pub fn new(pipeline: Arc<Pipeline>) -> Biller {
        Biller {
            pipeline,
            turn: tokio::sync::Mutex::new(()),
        }
    }

    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.pipeline
    }

    /// Charges every fee due and not yet charged (see the module documentation) to `accounts`:
    /// in advance for each plan's current period, and in arrears as well for the `(plan, period
    /// label)` pairs about to close. Answers once what it wrote is committed.
    pub async fn bill_fees(
        &self,
        accounts: Accounts<'_>,
        closing: &[(Arc<str>, Arc<str>)],
    ) -> Result<Billed, PipelineError> {
        let _turn = self.turn.lock().await;
        let now = self.pipeline.clock().now();
        let context = self.pipeline.context().load_full();
        let fee_plans: Vec<&Plan> = context
            .catalogue
            .plans()
            .iter()
            .filter(|p| p.versions.iter().any(|v| !v.fees.is_empty()))
            .collect();
        if fee_plans.is_empty() {
            return Ok(Billed::default());
        }
        let chosen: Vec<(&str, &[crate::domain::subscription::Subscription])> = match accounts {
            Accounts::All => context.subscriptions.accounts().collect(),
            Accounts::Only(list) => list.iter().map(|a| (a.as_str(), context.subscriptions.of(a))).collect(),
        };
        let mut items = Vec::new();
        for (account, subscriptions) in chosen {
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
                    if self.pipeline.committed().is_closed(&plan.id, &period.label) {
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
                        let meter = fee_meter(name);
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
    pub async fn bill_minimums(&self, closing: &[(Arc<str>, Arc<str>)]) -> Result<Billed, PipelineError> {
        let _turn = self.turn.lock().await;
        let context = self.pipeline.context().load_full();
        let mut items = Vec::new();
        for (plan_id, label) in closing {
            let Some(plan) = context.catalogue.plan(plan_id) else {
                continue;
            };
            if plan.versions.iter().all(|v| v.minimum.is_none()) || self.pipeline.committed().is_closed(plan_id, label)
            {
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
                let part = self.part(account, label, plan_id);
                let subtotal = part.as_ref().map_or(Decimal::ZERO, toward_minimum);
                let (trued_up, records) = part.as_ref().map_or((Decimal::ZERO, 0), |p| p.charged(MINIMUM_METER));
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
    async fn write_own(&self, items: Vec<(RawEvent, UsageEvent)>) -> Result<Billed, PipelineError> {
        let mut billed = Billed::default();
        let mut rest = items;
        while !rest.is_empty() {
            let batch: Vec<_> = rest.drain(..rest.len().min(FEES_PER_BATCH)).collect();
            let ack = self.pipeline.intake_own(0, batch).await?.ack().await?;
            billed.written += ack.accepted as usize;
            for r in ack.results.iter().filter(|r| r.rejected.is_some()) {
                billed.refused += 1;
                tracing::warn!(detail = %r.detail, "a recurring fee was not charged; will retry");
            }
        }
        Ok(billed)
    }

    /// The committed totals of (account, period, plan), when it has some.
    fn part(&self, account: &str, period: &str, plan: &str) -> Option<PeriodTotals> {
        let key = (Arc::from(account), Arc::from(period));
        let totals = self.pipeline.committed().totals.get(&key)?;
        totals.parts.into_iter().find(|t| &*t.plan == plan)
    }

    /// What the committed totals of (account, period, plan) hold under `meter`: the exact sum
    /// and the number of records.
    fn charged(&self, account: &str, period: &str, plan: &str, meter: &str) -> (Decimal, u64) {
        self.part(account, period, plan)
            .map_or((Decimal::ZERO, 0), |p| p.charged(meter))
    }
}

/// The subtotal a minimum commitment is measured against: usage and fees. One-off charges are
/// apart, and so are corrections of earlier (closed) periods booked here: a credit note for last
/// month is not swallowed by this month's minimum. Without the true-ups already written.
pub fn toward_minimum(part: &PeriodTotals) -> Decimal {
    let of = |meter: &str| part.charged(meter).0;
    part.total_charge - of(CHARGE_METER) - of(ADJUSTMENT_METER) - of(MINIMUM_METER)
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
        let name = fee_name(&self.meter).unwrap_or(&self.meter);
        let origin = if self.meter == MINIMUM_METER {
            Origin::Minimum
        } else {
            Origin::Fee
        };
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
            origin,
        };
        let raw = event.to_raw();
        (raw, event)
    }
}
