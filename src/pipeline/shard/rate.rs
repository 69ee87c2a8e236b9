//! Rating a job: each valid event is checked against the dedupe window, priced under the plan of
//! its subscription in its billing period, added to the totals and encoded as a record; every
//! event not accepted gets its outcome, and rejected ones their suspense entry.

use chrono::{DateTime, Utc};

use super::{ShardState, day_of};
use crate::domain::charge;
use crate::domain::record::RatedRecordRef;
use crate::domain::usage::attribute;
use crate::domain::usage::{EventOutcome, RejectReason, Rejected, units_and_nanos};
use crate::pipeline::dedupe::Seen;
use crate::pipeline::{RatingContext, ShardJob, ShardOutput, ValidEvent};
use crate::rating::{RatingInput, rate};
use crate::store::Write;

/// The slots of the totals one job changed, in first-touched order (a slot may repeat; the
/// output sends each once).
#[derive(Default)]
pub struct Touched {
    list: Vec<u32>,
}

impl Touched {
    pub(super) fn add(&mut self, slot: u32) {
        if self.list.last() != Some(&slot) {
            self.list.push(slot);
        }
    }
}

impl ShardState {
    /// Rates one job.
    pub fn process(&mut self, ctx: &RatingContext, job: ShardJob) -> ShardOutput {
        // `rated_at` is set when the job is done (below).
        let mut out = ShardOutput::empty(job.ticket, job.queued_at);
        self.received_at = job.received_at;
        let mut touched = Touched::default();
        // About 50 bytes a record in the compact layout: one allocation per job.
        self.segment.begin(Vec::with_capacity(job.events.len() * 64));
        for r in job.rejected {
            reject(&mut out, r.index, r.rejected);
        }
        for e in job.events {
            self.rate_one(ctx, e, &mut out, &mut touched);
            if self.cold_damage.is_some() {
                break;
            }
        }
        // The whole job, the copies of its changed totals included, is the rate stage.
        self.finish_output(touched, &mut out);
        out
    }

    /// Completes a job's output: its records' segment, the charge metric, copies of the totals
    /// it changed, its balance writes, and when it was done.
    pub(super) fn finish_output(&mut self, touched: Touched, out: &mut ShardOutput) {
        out.records = self.segment.finish();
        self.count_charges();
        self.push_changed_totals(touched, out);
        out.balance = self.wallets.take();
        out.rated_at = std::time::Instant::now();
    }

    /// What the job changed in the totals, by slot, into its output (the committer publishes it
    /// after the commit).
    pub(super) fn push_changed_totals(&mut self, touched: Touched, out: &mut ShardOutput) {
        self.totals.delta(&touched.list, &mut out.totals, &mut out.accounts);
    }

    // Inlined into the job loop (as it was when the loop was its only caller): a call per event
    // measured 0.7% more instructions a shard step (BENCHMARKS.md, issue 18).
    #[inline(always)]
    pub(super) fn rate_one(
        &mut self,
        ctx: &RatingContext,
        e: ValidEvent,
        out: &mut ShardOutput,
        touched: &mut Touched,
    ) {
        if e.part.is_some() {
            return self.take_part(ctx, e, out, touched);
        }
        let ev = &e.event;
        let nanos = ev.timestamp.timestamp_nanos_opt().unwrap_or(0);
        // What ratingd writes itself (meters starting with @: one-off charges from Admin.AddCharge,
        // recurring fees) is not rated: its amount is its charge, and a refusal is answered to its
        // writer rather than kept in suspense.
        let origin = ev.origin;
        let one_off = origin.is_own();
        let refuse = |out: &mut ShardOutput, reason: RejectReason, detail: String, now| {
            if one_off {
                out.results.push(EventOutcome {
                    index: e.index,
                    rejected: Some(reason),
                    dropped_by: None,
                    detail,
                });
            } else {
                reject(out, e.index, suspense_of(&e, reason, detail, now));
            }
        };
        let mut seen = match self.dedupe.check(e.fingerprint, e.content) {
            Ok(seen) => seen,
            Err(damage) => {
                self.cold_damage = Some(damage);
                return;
            }
        };
        // Rules changed the account: the event may have been rated under another account (in
        // another shard) before a change of rules. The committed claims answer for those.
        let moved = e.as_sent.as_ref().is_some_and(|s| s.account_id != ev.account_id);
        if moved && seen == Seen::New {
            match self.moved_claim(day_of(nanos), e.fingerprint, e.content) {
                Ok(claimed) => seen = claimed,
                Err(damage) => {
                    self.cold_damage = Some(damage);
                    return;
                }
            }
        }
        if seen != Seen::New {
            if seen == Seen::Duplicate {
                duplicate(out, e.index);
            } else {
                let detail = "event_id already rated with different content".to_string();
                refuse(out, RejectReason::Conflict, detail, self.received_at);
            }
            return;
        }
        let found = if origin.names_its_plan() {
            // A recurring fee or a true-up names its plan.
            attribute(&ev.attributes, "plan").map(|p| (p, None, false))
        } else if one_off {
            let currency = charge::currency_of(&ev.attributes);
            let plan = ctx
                .subscriptions
                .plan_in_currency(&ev.account_id, ev.timestamp, currency, &ctx.catalogue);
            plan.map(|p| (p, None, false))
        } else {
            ctx.subscriptions
                .plan_for(&ev.account_id, ev.timestamp, &ev.meter, &ctx.catalogue)
        };
        let Some((plan_id, discount, prepaid)) = found else {
            let detail = ctx.subscriptions.no_plan_detail(&ev.account_id, ev.timestamp);
            return refuse(out, RejectReason::NoTariff, detail, self.received_at);
        };
        let Some(plan) = ctx.catalogue.plan(plan_id) else {
            let detail = format!("plan {plan_id:?} is not in the tariff catalogue");
            return refuse(out, RejectReason::NoTariff, detail, self.received_at);
        };
        let (period, end, plan_id) = self.period(plan, ev.timestamp);
        // Fees in arrears are charged by the close itself, after the grace: only the closer writes
        // fees, and it does so before it marks the period closed.
        if end <= self.closed_before && !origin.names_its_plan() {
            let detail = format!("billing period {period} of plan {:?} is closed", plan.id);
            return refuse(out, RejectReason::PeriodClosed, detail, self.received_at);
        }
        let pays = prepaid || self.wallets.paying();
        let (slot, totals) = self.totals_mut(&ev.account_id, &period, &plan_id, plan);
        let usage = totals.usage(&ev.meter);
        let (rated_quantity, charge, version) = if one_off {
            let version = plan.version_at(ev.timestamp).map_or(0, |v| v.number);
            // Written with the 9 places of every record charge.
            let mut charge = ev.quantity;
            charge.rescale(crate::domain::money::RECORD_SCALE);
            (ev.quantity, charge, version)
        } else {
            let input = RatingInput {
                meter: &ev.meter,
                quantity: ev.quantity,
                at: ev.timestamp,
                attributes: &ev.attributes,
                period_usage: usage,
                subscription_discount: discount,
            };
            match rate(plan, &input) {
                Ok(r) => (r.rated_quantity, r.charge, r.explanation.version),
                Err(error) => return refuse(out, error.reason(), error.to_string(), self.received_at),
            }
        };
        // A prepaid subscription's record (or a charging session's end) is paid in this commit.
        let totals = if pays {
            if let Err(detail) = self
                .wallets
                .pay(&ev.account_id, &ev.event_id, plan, charge, self.job_now)
            {
                return refuse(out, RejectReason::InsufficientBalance, detail, self.received_at);
            }
            self.totals.get_mut(slot)
        } else {
            totals
        };
        totals.add(&ev.meter, ev.quantity, rated_quantity, charge);
        touched.add(slot);
        self.dedupe.insert(e.fingerprint, day_of(nanos), e.content);
        if moved {
            out.writes.push(Write::MovedClaim {
                day: day_of(nanos),
                fingerprint: e.fingerprint,
                content: e.content,
            });
        }
        match self.job_charges.iter_mut().find(|(c, _)| *c == plan.currency) {
            Some((_, sum)) => *sum += charge,
            None => self.job_charges.push((plan.currency, charge)),
        }
        self.segment.push(&RatedRecordRef {
            content: e.content,
            event_id: &ev.event_id,
            account_id: &ev.account_id,
            meter: &ev.meter,
            quantity: ev.quantity,
            timestamp_unix_nanos: nanos,
            attributes: &ev.attributes,
            plan: &plan.id,
            version,
            period: &period,
            period_usage_before: usage,
            subscription_discount: discount,
            rated_quantity,
            charge,
            correction: None,
            as_sent: e.as_sent.as_deref(),
        });
        out.record_count += 1;
    }

    /// What the committed claims of events whose account rules changed say of one (`New` without
    /// a store). A read error fails the job like a damaged cold-tier page: its answer is unknown.
    fn moved_claim(&self, day: u16, fingerprint: u128, content: u64) -> Result<Seen, crate::store::cold::ColdDamage> {
        let Some(claims) = &self.moved else {
            return Ok(Seen::New);
        };
        match claims.get(day, fingerprint) {
            Ok(None) => Ok(Seen::New),
            Ok(Some(claimed)) if claimed == content => Ok(Seen::Duplicate),
            Ok(Some(_)) => Ok(Seen::Conflict),
            Err(error) => Err(crate::store::cold::ColdDamage {
                path: "h/ (claims of events whose account rules changed)".into(),
                why: error.to_string(),
            }),
        }
    }

    /// Adds this job's charges to the approximate per-currency counter (one increment per currency
    /// and job, in integer micro-units; no float touches money).
    pub(super) fn count_charges(&mut self) {
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

/// Answers one event DUPLICATE (a success: nothing written).
pub(super) fn duplicate(out: &mut ShardOutput, index: u32) {
    out.duplicate += 1;
    out.results.push(EventOutcome {
        index,
        rejected: None,
        dropped_by: None,
        detail: String::new(),
    });
}

/// Answers one event REJECTED and writes its suspense entry into the job's output.
pub(super) fn reject(out: &mut ShardOutput, index: u32, rejected: Rejected) {
    out.results.push(EventOutcome {
        index,
        rejected: Some(rejected.reason),
        dropped_by: None,
        detail: rejected.detail.clone(),
    });
    out.writes.push(Write::Suspense(rejected));
}

/// The suspense entry of a valid event rejected while rating: the event as sent (a reprocess
/// applies the rules in force then).
pub(super) fn suspense_of(e: &ValidEvent, reason: RejectReason, detail: String, now: DateTime<Utc>) -> Rejected {
    let mut event = e.event.to_raw();
    if let Some(sent) = &e.as_sent {
        event.account_id.clone_from(&sent.account_id);
        event.meter.clone_from(&sent.meter);
        event.quantity = Some(units_and_nanos(sent.quantity));
        event.attributes.clone_from(&sent.attributes);
    }
    Rejected {
        event,
        reason,
        detail,
        received_unix_nanos: now.timestamp_nanos_opt().unwrap_or(0),
    }
}
