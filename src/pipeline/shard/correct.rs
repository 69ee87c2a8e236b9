//! A correction in the shard that owns its accounts: their records read from the blocks (every
//! earlier output of the shard is committed by then), the change priced per (period, plan) by
//! `rating::correct`, and the reversals and replacements written as one output with the totals
//! they change. An account is planned whole before anything of it is written, so a refusal
//! writes nothing for it.

use std::sync::Arc;

use rust_decimal::Decimal;

use super::ShardState;
use super::rate::Touched;
use crate::domain::correction::{Booking, Correction, Role};
use crate::domain::record::RatedRecord;
use crate::pipeline::corrections::{CorrectionError, CorrectionJob, CorrectionRequest, Outcome};
use crate::pipeline::{RatingContext, ShardOutput, lock};
use crate::rating::correct::{CorrectError, correct, current, reversal_of};
use crate::store::Records;

impl ShardState {
    /// Handles one correction job (its accounts all belong to this shard).
    pub fn correct(
        &mut self,
        ctx: &RatingContext,
        records: &Records,
        balances: &crate::store::Balances,
        job: CorrectionJob,
    ) -> ShardOutput {
        let mut out = ShardOutput::empty(job.ticket.clone(), std::time::Instant::now());
        let mut by_account: ahash::AHashMap<String, Vec<RatedRecord>> =
            job.accounts.iter().map(|a| (a.clone(), Vec::new())).collect();
        let wanted: ahash::AHashSet<&str> = job.accounts.iter().map(String::as_str).collect();
        // A re-rate keeps only its period's records in memory; a void or amend (one account)
        // keeps all of the account's, as the event's period is not known yet.
        let period = job.request.period.as_deref();
        let read = records.records_of(
            |a| wanted.contains(a),
            0,
            |_, _, record| {
                if period.is_none_or(|p| p == record.period)
                    && let Some(list) = by_account.get_mut(&record.account_id)
                {
                    list.push(record);
                }
                true
            },
        );
        let mut planned = Vec::new();
        let mut refused = Vec::new();
        match read {
            Err(error) => {
                for account in &job.accounts {
                    refused.push((account.clone(), CorrectionError::Storage(error.to_string())));
                }
            }
            Ok(()) => {
                for account in &job.accounts {
                    let list = by_account.remove(account).unwrap_or_default();
                    match self.plan_account(ctx, &job, account, list) {
                        Ok(outcomes) => planned.extend(outcomes),
                        Err(error) => refused.push((account.clone(), error)),
                    }
                }
            }
        }
        let mut touched = Touched::default();
        self.segment.begin(Vec::new());
        if !job.request.dry_run {
            for outcome in planned.iter().filter(|o| !o.already_applied) {
                for record in &outcome.records {
                    self.write(ctx, record, &mut out, &mut touched);
                }
            }
        }
        if !job.request.dry_run {
            self.adjust_paid_corrections(balances, &job.request, job.at, &planned);
        }
        out.records = self.segment.finish();
        self.push_changed_totals(touched, &mut out);
        out.balance = self.wallets.take();
        out.rated_at = std::time::Instant::now();
        let mut report = lock(&job.report);
        report.outcomes.extend(planned);
        report.refused.extend(refused);
        out
    }

    /// What the correction does to one account, per (period, plan) it touches; nothing written.
    fn plan_account(
        &self,
        ctx: &RatingContext,
        job: &CorrectionJob,
        account: &str,
        records: Vec<RatedRecord>,
    ) -> Result<Vec<Outcome>, CorrectionError> {
        let request = &job.request;
        let mut groups: Vec<(String, String)> = Vec::new();
        match request.change.event_id() {
            None => {
                for r in &records {
                    let wanted = request.period.as_deref() == Some(r.period.as_str())
                        && request.plan.as_deref().is_none_or(|p| p == r.plan);
                    if wanted && !groups.iter().any(|(p, l)| *p == r.plan && *l == r.period) {
                        groups.push((r.plan.clone(), r.period.clone()));
                    }
                }
            }
            Some(event_id) => match records.iter().rev().find(|r| r.event_id == event_id) {
                Some(r) => groups.push((r.plan.clone(), r.period.clone())),
                None => {
                    return Err(CorrectionError::UnknownEvent(format!(
                        "account {account:?} has no rated record of event {event_id:?}"
                    )));
                }
            },
        }
        let mut outcomes = Vec::new();
        for (plan_id, period) in groups {
            let group: Vec<RatedRecord> = records
                .iter()
                .filter(|r| r.plan == plan_id && r.period == period)
                .cloned()
                .collect();
            if let Some(outcome) = self.plan_group(ctx, job, account, &plan_id, &period, group)? {
                outcomes.push(outcome);
            }
        }
        Ok(outcomes)
    }

    /// One account's (period, plan): its reversals and replacements, or `None` when nothing
    /// changes.
    fn plan_group(
        &self,
        ctx: &RatingContext,
        job: &CorrectionJob,
        account: &str,
        plan_id: &str,
        period: &str,
        group: Vec<RatedRecord>,
    ) -> Result<Option<Outcome>, CorrectionError> {
        let request: &CorrectionRequest = &job.request;
        let action = request.change.action();
        let plan = ctx.catalogue.plan(plan_id).ok_or_else(|| {
            CorrectionError::Invalid(format!(
                "plan {plan_id:?} of the records is not in the tariff catalogue"
            ))
        })?;
        let Some(at) = group.first().map(RatedRecord::at) else {
            return Ok(None);
        };
        let mut outcome = Outcome {
            account: account.to_string(),
            plan: plan_id.to_string(),
            period: period.to_string(),
            currency: plan.currency,
            booked: None,
            records: Vec::new(),
            difference: Decimal::ZERO,
            already_applied: false,
        };
        // Applied before (a resend of the same id): report what it wrote, write nothing.
        let earlier: Vec<RatedRecord> = group
            .iter()
            .filter(|r| {
                r.correction
                    .as_ref()
                    .is_some_and(|c| c.id == request.id && c.action == action)
            })
            .cloned()
            .collect();
        if !earlier.is_empty() {
            outcome.booked = earlier[0].correction.as_ref().and_then(|c| c.booked.clone());
            outcome.difference = earlier.iter().map(|r| r.charge).sum();
            outcome.records = earlier;
            outcome.already_applied = true;
            return Ok(Some(outcome));
        }
        let current = current(group);
        let revisions = correct(plan, &current, &request.change).map_err(|error| match error {
            CorrectError::UnknownEvent(_) => CorrectionError::UnknownEvent(format!(
                "event {:?} of account {account:?} has no rated record in force (it was voided)",
                request.change.event_id().unwrap_or_default()
            )),
            other => CorrectionError::Invalid(other.to_string()),
        })?;
        if revisions.is_empty() {
            return Ok(None);
        }
        // A period past its close (or its grace) is never rewritten: the correction is booked
        // into the account's open period of a plan in the same currency.
        if plan.period.period_of(plan.time_zone, at).end <= self.closed_before {
            outcome.booked = Some(open_booking(ctx, account, plan_id, period, plan.currency, job.at)?);
        }
        let correction = |role| Correction {
            role,
            action,
            id: request.id.clone(),
            reason: request.reason.clone(),
            requested_by: request.requested_by.clone(),
            at_unix_nanos: job.at.timestamp_nanos_opt().unwrap_or(0),
            booked: outcome.booked.clone(),
        };
        let mut written = Vec::with_capacity(revisions.len() * 2);
        for (index, replacement) in revisions {
            written.push(RatedRecord {
                correction: Some(correction(Role::Reversal)),
                ..reversal_of(&current[index])
            });
            if let Some(new) = replacement {
                written.push(RatedRecord {
                    correction: Some(correction(Role::Replacement)),
                    ..new
                });
            }
        }
        outcome.difference = written.iter().map(|r| r.charge).sum();
        outcome.records = written;
        Ok(Some(outcome))
    }

    /// Writes one correction record into the job's segment and adds it to the totals it counts in.
    fn write(&mut self, ctx: &RatingContext, record: &RatedRecord, out: &mut ShardOutput, touched: &mut Touched) {
        let (plan_id, period) = record.booked();
        // Planned against this catalogue just above.
        let Some(plan) = ctx.catalogue.plan(plan_id) else {
            return;
        };
        let at = record.correction.as_ref().map_or(record.at(), |c| c.at());
        let (_, _, plan_key) = self.period(plan, at);
        let period: Arc<str> = Arc::from(period);
        let (meter, quantity, rated_quantity, charge, events) = record.counts();
        let (slot, totals) = self.totals_mut(&record.account_id, &period, &plan_key, plan);
        totals.add_counted(meter, quantity, rated_quantity, charge, events);
        touched.add(slot);
        self.segment.push(&record.as_ref());
        out.record_count += 1;
    }
}

/// Where a closed period's correction lands: the account's period now of the plan that bills it
/// in `currency` now.
fn open_booking(
    ctx: &RatingContext,
    account: &str,
    plan_id: &str,
    period: &str,
    currency: crate::domain::money::Currency,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Booking, CorrectionError> {
    let open = ctx
        .subscriptions
        .plan_in_currency(account, now, currency.as_str(), &ctx.catalogue)
        .and_then(|id| ctx.catalogue.plan(id))
        .ok_or_else(|| {
            CorrectionError::NoOpenPeriod(format!(
                "period {period} of plan {plan_id:?} is closed, and account {account:?} has no plan billing in \
                 {currency} now for its correction to land in"
            ))
        })?;
    Ok(Booking {
        plan: open.id.clone(),
        period: open.period.period_of(open.time_zone, now).label,
    })
}
