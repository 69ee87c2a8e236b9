//! Rating a job: each valid event is checked against the dedupe window, priced under the plan of
//! its subscription in its billing period, added to the totals and encoded as a record; every
//! event not accepted gets its outcome, and rejected ones their suspense entry.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{ShardState, day_of};
use crate::domain::record::RatedRecordRef;
use crate::domain::usage::{EventOutcome, RejectReason, Rejected};
use crate::pipeline::dedupe::Seen;
use crate::pipeline::{RatingContext, ShardJob, ShardOutput, ValidEvent};
use crate::rating::{RatingInput, rate};
use crate::store::codec;

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

impl ShardState {
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
            reject(&mut out, r.index, r.rejected);
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
        let Some((plan_id, discount)) =
            ctx.subscriptions
                .plan_for(&ev.account_id, ev.timestamp, &ev.meter, &ctx.catalogue)
        else {
            let detail = ctx.subscriptions.no_plan_detail(&ev.account_id, ev.timestamp);
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
        let (period, end, plan_id) = self.period(plan, ev.timestamp);
        if end <= self.closed_before {
            let detail = format!("billing period {period} of plan {:?} is closed", plan.id);
            return reject(
                out,
                e.index,
                suspense_of(&e, RejectReason::PeriodClosed, detail, self.job_now),
            );
        }
        let (index, totals) = self.totals_mut(&ev.account_id, &period, &plan_id, plan);
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
            &RatedRecordRef {
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
}

/// Answers one event REJECTED and writes its suspense entry into the job's output.
fn reject(out: &mut ShardOutput, index: u32, rejected: Rejected) {
    out.results.push(EventOutcome {
        index,
        rejected: Some(rejected.reason),
        detail: rejected.detail.clone(),
    });
    out.suspense.push(codec::encode_suspense(&rejected));
}

/// The suspense entry of a valid event rejected while rating.
fn suspense_of(e: &ValidEvent, reason: RejectReason, detail: String, now: DateTime<Utc>) -> Rejected {
    Rejected {
        event: e.event.to_raw(),
        reason,
        detail,
        received_unix_nanos: now.timestamp_nanos_opt().unwrap_or(0),
    }
}
