//! `ratingd.v1.Query`: the read side for billing backends. Totals come from the pipeline's
//! committed view (only durable figures); quotes run the rating engine without recording
//! anything; records, explanations and statements are read from the blocks and rated again from
//! their stored inputs (`rating::rerate`).

mod balance;
pub mod statement;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tonic::{Request, Response, Status};

use crate::domain::aggregate::{AccountPeriod, CurrencyTotal, MeterTotals, PeriodTotals};
use crate::domain::charge::{self, CHARGE_METER, description_of};
use crate::domain::fee::{MINIMUM_METER, fees_due, minimum_due};
use crate::domain::money::{exact_mul, round_quotient};
use crate::domain::period::Period;
use crate::domain::record::RatedRecord;
use crate::domain::subscription::windows_of;
use crate::domain::tariff::Billing;
use crate::domain::usage::{DEFAULT_MAX_ATTRIBUTE_BYTES, DEFAULT_MAX_ATTRIBUTES, MAX_ID_BYTES, RawEvent};
use crate::pipeline::intake::{EventLimits, accept, check};
use crate::pipeline::{Pipeline, RatingContext};
use crate::rating::{RatingInput, Report, quote, rerate};
use crate::security::auth::{check_account, principal};
use crate::store::Records;
use crate::wire::ApiError;
use crate::wire::convert::{
    account_charge, currency_total_to_proto, meter_to_proto, optional_instant, quote_refused, raw_event,
    record_to_proto, status_label, subscription_totals_to_proto,
};
use crate::wire::paging::{self, MAX_PAGE, page_size};
use crate::wire::proto::{self, query_server::Query};

/// Most events one Quote prices.
const MAX_QUOTE_EVENTS: usize = 10_000;

/// The checks a quoted event passes (the default limits: a quote writes nothing).
const QUOTE_LIMITS: EventLimits = EventLimits {
    max_id_bytes: MAX_ID_BYTES,
    max_attributes: DEFAULT_MAX_ATTRIBUTES,
    max_attribute_bytes: DEFAULT_MAX_ATTRIBUTE_BYTES,
};

/// The explanation of a record ratingd wrote itself (not rated: its amount is its charge): a
/// one-off charge or credit, a recurring fee with its proration, or a minimum-commitment true-up.
/// The chain of a corrected event, for people: each record, and what asked for each correction.
fn chain_text(chain: &[RatedRecord]) -> String {
    use std::fmt::Write;
    let Some(first) = chain.first() else {
        return String::new();
    };
    let mut text = format!(
        "event {:?} of account {:?}: {} records\n",
        first.event_id,
        first.account_id,
        chain.len()
    );
    for (n, r) in chain.iter().enumerate() {
        let what = match &r.correction {
            None => "original".to_string(),
            Some(c) => {
                let by = if c.requested_by.is_empty() {
                    String::new()
                } else {
                    format!(" by {}", c.requested_by)
                };
                let booked = c
                    .booked
                    .as_ref()
                    .map(|b| {
                        format!(
                            ", booked into {} of plan {:?} (period {} was closed)",
                            b.period, b.plan, r.period
                        )
                    })
                    .unwrap_or_default();
                format!(
                    "{} ({} {:?}, {}{by}: {:?}{booked})",
                    c.role.as_str(),
                    c.action.as_str(),
                    c.id,
                    c.at().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    c.reason
                )
            }
        };
        let _ = writeln!(
            text,
            "  {}. {what}: plan {:?} version {}, quantity {}, charge {}",
            n + 1,
            r.plan,
            r.version,
            r.quantity.normalize(),
            r.charge
        );
    }
    text
}

/// The line of an explanation that says what normalization rules made of the event as sent.
fn as_sent_text(sent: &crate::domain::record::AsSent) -> String {
    let attributes: Vec<String> = sent.attributes.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!(
        "normalized by rules {}; as sent: account {:?}, meter {:?}, quantity {}, attributes {{{}}}",
        sent.rules.join(", "),
        sent.account_id,
        sent.meter,
        sent.quantity.normalize(),
        attributes.join(", ")
    )
}

fn own_record_explained(record: &RatedRecord) -> proto::ExplainRecordResponse {
    let description = description_of(&record.attributes);
    let (kind, text) = if record.meter == CHARGE_METER {
        let kind = if record.charge.is_sign_negative() {
            "credit"
        } else {
            "charge"
        };
        let currency = charge::currency_of(&record.attributes);
        let text = format!(
            "one-off {kind} of {} {currency} added through Admin.AddCharge",
            record.charge
        );
        ("one_off", text)
    } else if record.meter == MINIMUM_METER {
        let text = format!("minimum-commitment true-up of {} written at the close", record.charge);
        ("minimum_true_up", text)
    } else {
        let name = record.meter.trim_start_matches(crate::domain::fee::FEE_METER_PREFIX);
        let billing = crate::domain::usage::attribute(&record.attributes, "billing").unwrap_or("");
        let text = format!("recurring fee {name} ({billing}): {} charged", record.charge);
        ("fee", text)
    };
    let explanation = serde_json::json!({
        kind: {
            "amount": record.charge.to_string(),
            "description": description,
            "plan": record.plan,
            "period": record.period,
        }
    });
    proto::ExplainRecordResponse {
        record: Some(record_to_proto(record)),
        explanation_json: explanation.to_string(),
        explanation_text: format!(
            "{text}, in period {} of plan {:?}: {description}",
            record.period, record.plan
        ),
        chain: Vec::new(),
    }
}

/// How one plan's part of an account-period is shown.
struct PartView {
    closed: bool,
    /// The plan's period with this label, while the plan is in the catalogue.
    bounds: Option<Period>,
    /// The span of the period the account's subscriptions to the plan cover.
    covered: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

pub struct QueryService {
    pipeline: Arc<Pipeline>,
    records: Records,
    /// Ledgers (ListLedger).
    balances: crate::store::Balances,
}

/// A failed call as its status; a token's scope refusal is counted and logged.
fn refuse(error: ApiError) -> Status {
    let scope = matches!(error, ApiError::AccountOutOfScope { .. });
    let status = Status::from(error);
    if scope {
        crate::security::note("ratingd.v1.Query", &status);
    }
    status
}

/// The caller's token must cover `account` (when tokens are in use).
fn scoped<T>(request: &Request<T>, account: &str) -> Result<(), ApiError> {
    check_account(request, account)
}

/// Runs a blocking read of the blocks off the async threads.
async fn blocking<T: Send + 'static>(
    read: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(read)
        .await
        .map_err(|e| ApiError::TaskFailed(e.to_string()))?
        .map_err(ApiError::Store)
}

/// The period-end charge at the current run-rate.
fn projected(total: Decimal, start: DateTime<Utc>, end: DateTime<Utc>, now: DateTime<Utc>) -> Decimal {
    if now <= start || now >= end {
        return total;
    }
    let length = (end - start).num_seconds();
    let elapsed = u32::try_from((now - start).num_seconds().max(1)).unwrap_or(u32::MAX);
    exact_mul(total, Decimal::from(length))
        .and_then(|n| round_quotient(n, elapsed))
        .unwrap_or(total)
}

impl QueryService {
    pub fn new(pipeline: Arc<Pipeline>, records: Records, balances: crate::store::Balances) -> Self {
        QueryService {
            pipeline,
            records,
            balances,
        }
    }

    fn totals(&self, account: &str, period: &str) -> Result<AccountPeriod, ApiError> {
        let committed = self.pipeline.committed();
        committed.check_damage(account)?;
        match committed.get(account, period)? {
            Some(t) => Ok(t),
            None => Err(self.retired(period).unwrap_or_else(|| ApiError::NoTotals {
                account: account.to_string(),
                period: period.to_string(),
            })),
        }
    }

    /// NOT_FOUND naming the retention, when retention removed records of the period `period`.
    fn retired(&self, period: &str) -> Option<ApiError> {
        let r = self.pipeline.committed().retired(period)?;
        Some(ApiError::Retired {
            what: format!(
                "period {period:?} (plan {:?}) is past retention: its totals and records were removed",
                r.plan
            ),
            days: self.pipeline.config().retention_days,
            removed_at: r.removed_at.to_rfc3339(),
        })
    }

    /// Every account-period of one period (damaged accounts left out), with its account; the
    /// closed plans' totals read from disk.
    fn of_period(&self, period: &str) -> Result<Vec<(Arc<str>, AccountPeriod)>, ApiError> {
        let found = self.pipeline.committed().of_period(period)?;
        match self.retired(period) {
            Some(error) if found.is_empty() => Err(error),
            _ => Ok(found),
        }
    }

    /// One plan's part of an account-period as it is shown: its period bounds (while the plan is
    /// in the catalogue), whether it is closed, and the span its subscriptions cover.
    fn part_view(&self, context: &RatingContext, part: &PeriodTotals) -> PartView {
        let bounds = context
            .catalogue
            .plan(&part.plan)
            .and_then(|p| p.period.period_labelled(p.time_zone, &part.period));
        let covered = bounds.as_ref().map(|b| {
            context
                .subscriptions
                .coverage(&part.account, &part.plan, b.start, b.end)
        });
        PartView {
            closed: self.pipeline.committed().is_closed(&part.plan, &part.period),
            bounds,
            covered,
        }
    }

    async fn list_rated_records(
        &self,
        request: Request<proto::ListRatedRecordsRequest>,
    ) -> Result<proto::ListRatedRecordsResponse, ApiError> {
        scoped(&request, &request.get_ref().account_id)?;
        self.pipeline.committed().check_damage(&request.get_ref().account_id)?;
        let req = request.into_inner();
        if req.account_id.is_empty() {
            return Err(ApiError::Required("account_id"));
        }
        let from = optional_instant("from", &req.from)?.unwrap_or(i64::MIN);
        let to = optional_instant("to", &req.to)?.unwrap_or(i64::MAX);
        // Retention may have removed records before this instant: a range wholly before it is
        // NOT_FOUND naming the retention; one that begins before it says so in the answer.
        let removed = self.pipeline.committed().removed_before();
        let removed_before = removed.map(|(before, at)| (before.timestamp_nanos_opt().unwrap_or(i64::MAX), before, at));
        if let Some((before, end, at)) = removed_before
            && to <= before
        {
            return Err(ApiError::Retired {
                what: format!(
                    "records of {:?} before {} may have been removed by retention",
                    req.account_id,
                    end.to_rfc3339()
                ),
                days: self.pipeline.config().retention_days,
                removed_at: at.to_rfc3339(),
            });
        }
        let size = page_size(req.page_size);
        // The token is the position (block, index) of the last record returned.
        let after = if req.page_token.is_empty() {
            None
        } else {
            Some(paging::parse_record_token(&req.page_token)?)
        };
        let records = self.records.clone();
        let account = req.account_id.clone();
        let start = after.map_or(0, |(seq, _)| seq);
        let found = blocking(move || {
            let mut found = Vec::new();
            records
                .account_records(&account, start, |seq, index, record| {
                    if after.is_some_and(|a| (seq, index) <= a) {
                        return true;
                    }
                    if record.timestamp_unix_nanos < from || record.timestamp_unix_nanos >= to {
                        return true;
                    }
                    found.push((seq, index, record));
                    // One more than a page: whether there is a next one.
                    found.len() <= size
                })
                .map(|()| found)
        })
        .await?;
        let more = found.len() > size;
        let page = &found[..found.len().min(size)];
        let next_page_token = match (more, page.last()) {
            (true, Some((seq, index, _))) => paging::record_token((*seq, *index)),
            _ => String::new(),
        };
        Ok(proto::ListRatedRecordsResponse {
            records: page.iter().map(|(_, _, r)| record_to_proto(r)).collect(),
            next_page_token,
            removed_before: match removed_before {
                Some((before, end, _)) if from < before => end.to_rfc3339(),
                _ => String::new(),
            },
        })
    }

    async fn statement(&self, request: Request<proto::StatementRequest>) -> Result<proto::Statement, ApiError> {
        scoped(&request, &request.get_ref().account_id)?;
        let req = request.into_inner();
        let totals = match self.totals(&req.account_id, &req.period) {
            Ok(t) => t,
            // Nothing charged yet, but a subscription with fees or a minimum covers the period:
            // the statement shows what accrues.
            Err(ApiError::NoTotals { .. }) if self.accrues(&req.account_id, &req.period) => AccountPeriod::default(),
            Err(e) => return Err(e),
        };
        let records = self.records.clone();
        let (account, period) = (req.account_id.clone(), req.period.clone());
        let records = blocking(move || {
            let mut found = Vec::new();
            records
                .account_records(&account, 0, |_, _, r| {
                    // What counts in the period: its records, and corrections of closed
                    // periods booked into it.
                    if r.booked().1 == period {
                        found.push(r);
                    }
                    true
                })
                .map(|()| found)
        })
        .await?;
        let context = self.pipeline.context().load();
        let mut sections = Vec::with_capacity(totals.parts.len());
        for part in &totals.parts {
            let plan = context
                .catalogue
                .plan(&part.plan)
                .ok_or_else(|| ApiError::PlanGone(part.plan.to_string()))?;
            let of_plan: Vec<RatedRecord> = records
                .iter()
                .filter(|r| *r.booked().0 == *part.plan)
                .cloned()
                .collect();
            let s = statement::build(plan, &of_plan)?;
            if s.total != part.total_charge {
                return Err(ApiError::RecordsDisagree {
                    account: req.account_id,
                    period: req.period,
                    records: s.total,
                    totals: part.total_charge,
                });
            }
            let view = self.part_view(&context, part);
            sections.push(statement::Section {
                totals: part.clone(),
                closed: view.closed,
                covered: view.covered,
                statement: s,
            });
        }
        self.add_accruing_fees(&context, &req.account_id, &req.period, &mut sections);
        Ok(statement::to_proto(req.account_id, req.period, &totals, sections))
    }

    /// True when a subscription of `account` to a plan with fees or a minimum covers part of its
    /// period labelled `label`.
    fn accrues(&self, account: &str, label: &str) -> bool {
        let context = self.pipeline.context().load();
        context.subscriptions.of(account).iter().any(|s| {
            context.catalogue.plan(&s.plan_id).is_some_and(|p| {
                p.bills_without_usage()
                    && p.period
                        .period_labelled(p.time_zone, label)
                        .is_some_and(|b| s.from < b.end && s.to.is_none_or(|to| to > b.start))
            })
        })
    }

    /// Fees in arrears of an open period are not charged yet: each is shown in its plan's section
    /// (a section of its own when the plan has no usage) as it accrues, without an amount.
    fn add_accruing_fees(
        &self,
        context: &RatingContext,
        account: &str,
        label: &str,
        sections: &mut Vec<statement::Section>,
    ) {
        for plan in context.catalogue.plans() {
            let windows = windows_of(context.subscriptions.of(account), &plan.id);
            let Some(period) = plan.period.period_labelled(plan.time_zone, label) else {
                continue;
            };
            if windows.is_empty() || self.pipeline.committed().is_closed(&plan.id, label) {
                continue;
            }
            let line = |description: String| statement::Line {
                meter: String::new(),
                description,
                amount: None,
            };
            let mut accruing: Vec<statement::Line> = fees_due(plan, &windows, &period)
                .into_iter()
                .filter(|f| f.billing == Billing::InArrears)
                .map(|f| {
                    line(format!(
                        "fee {} (in arrears, accruing; charged when the period closes): {} = {}",
                        f.name,
                        f.proration(),
                        f.due
                    ))
                })
                .collect();
            if let Some(minimum) = minimum_due(plan, &windows, &period) {
                // The subtotal so far: usage and fees, one-off charges apart.
                let part = sections.iter().find(|s| *s.totals.plan == *plan.id).map(|s| &s.totals);
                let of = |meter: &str| {
                    part.and_then(|p| p.meters.iter().find(|m| &*m.meter == meter))
                        .map_or(Decimal::ZERO, |m| m.charge)
                };
                let subtotal = part.map_or(Decimal::ZERO, |p| p.total_charge) - of(CHARGE_METER) - of(MINIMUM_METER);
                let true_up = (minimum.due - subtotal).max(Decimal::ZERO);
                accruing.push(line(format!(
                    "minimum commitment {} = {}; subtotal so far {subtotal}: true-up at the close {true_up} unless more is \
                     charged",
                    minimum.proration(),
                    minimum.due
                )));
            }
            if accruing.is_empty() {
                continue;
            }
            match sections.iter_mut().find(|s| *s.totals.plan == *plan.id) {
                Some(section) => section.statement.lines.extend(accruing),
                None => sections.push(statement::Section {
                    totals: PeriodTotals::new(
                        Arc::from(account),
                        Arc::from(label),
                        Arc::from(plan.id.as_str()),
                        plan.currency,
                        plan.rounding,
                    ),
                    closed: false,
                    covered: Some(
                        context
                            .subscriptions
                            .coverage(account, &plan.id, period.start, period.end),
                    ),
                    statement: statement::Statement {
                        lines: accruing,
                        subtotal: Decimal::ZERO,
                        discount: Decimal::ZERO,
                        total: Decimal::ZERO,
                    },
                }),
            }
        }
    }

    async fn explain_record(
        &self,
        request: Request<proto::ExplainRecordRequest>,
    ) -> Result<proto::ExplainRecordResponse, ApiError> {
        // A scoped token names the account: a search over every account is not within its scope.
        scoped(&request, &request.get_ref().account_id)?;
        let req = request.into_inner();
        if req.event_id.is_empty() {
            return Err(ApiError::Required("event_id"));
        }
        let records = self.records.clone();
        let (account, event_id) = (req.account_id.clone(), req.event_id.clone());
        let found = blocking(move || {
            let mut found: Vec<RatedRecord> = Vec::new();
            let mut visit = |_, _, record: RatedRecord| {
                if record.event_id == event_id {
                    found.push(record);
                }
                // With an account, every record of the event (its chain of corrections); without,
                // stop once a second account uses the id.
                !account.is_empty() || !found.iter().any(|r| r.account_id != found[0].account_id)
            };
            let scanned = if account.is_empty() {
                records.all_records(&mut visit)
            } else {
                records.account_records(&account, 0, &mut visit)
            };
            scanned.map(|()| found)
        })
        .await?;
        if let Some(second) = found.iter().find(|r| r.account_id != found[0].account_id) {
            return Err(ApiError::AmbiguousEventId {
                event_id: req.event_id,
                first: found[0].account_id.clone(),
                second: second.account_id.clone(),
            });
        }
        // The record in force is the chain's last: a correction writes its reversal before its
        // replacement, so the last is the replacement, the original, or (voided) the reversal.
        let chain = found;
        let record = chain.last().cloned().ok_or_else(|| {
            let missing = ApiError::NoRecord {
                event_id: req.event_id.clone(),
                account: req.account_id.clone(),
            };
            match self.pipeline.committed().removed_before() {
                Some((before, at)) => ApiError::Retired {
                    what: format!(
                        "{missing}; records of periods that ended before {} may have been removed by retention",
                        before.to_rfc3339()
                    ),
                    days: self.pipeline.config().retention_days,
                    removed_at: at.to_rfc3339(),
                },
                None => missing,
            }
        })?;
        self.pipeline.committed().check_damage(&record.account_id)?;
        let mut answer = if record.meter.starts_with('@') {
            own_record_explained(&record)
        } else {
            let context = self.pipeline.context().load();
            let plan = context
                .catalogue
                .plan(&record.plan)
                .ok_or_else(|| ApiError::PlanGone(record.plan.clone()))?;
            let rated = rerate(plan, &record)?;
            let report = Report::new(plan, &record.meter, &record.attributes, &rated.explanation);
            proto::ExplainRecordResponse {
                record: Some(record_to_proto(&record)),
                explanation_json: serde_json::to_string(&report).unwrap_or_default(),
                explanation_text: report.to_string(),
                chain: Vec::new(),
            }
        };
        if let Some(sent) = &record.as_sent {
            answer.explanation_text = format!("{}\n{}", as_sent_text(sent), answer.explanation_text);
        }
        if chain.len() > 1 {
            answer.explanation_text = format!("{}\n{}", chain_text(&chain), answer.explanation_text);
        }
        answer.chain = chain.iter().map(record_to_proto).collect();
        Ok(answer)
    }

    fn get_totals(&self, request: Request<proto::GetTotalsRequest>) -> Result<proto::Totals, ApiError> {
        scoped(&request, &request.get_ref().account_id)?;
        let req = request.into_inner();
        if req.account_id.is_empty() || req.period.is_empty() {
            return Err(ApiError::Required("account_id and period"));
        }
        let t = self.totals(&req.account_id, &req.period)?;
        let context = self.pipeline.context().load();
        let chosen = |meters: &[MeterTotals], rounding| {
            let mut chosen: Vec<proto::MeterTotals> = meters
                .iter()
                .filter(|m| req.meter.is_empty() || *m.meter == *req.meter)
                .map(|m| meter_to_proto(m, rounding))
                .collect();
            chosen.sort_by(|a, b| a.meter.cmp(&b.meter));
            chosen
        };
        let views: Vec<PartView> = t.parts.iter().map(|p| self.part_view(&context, p)).collect();
        let subscriptions: Vec<proto::SubscriptionTotals> = t
            .parts
            .iter()
            .zip(&views)
            .map(|(p, v)| subscription_totals_to_proto(p, chosen(&p.meters, p.rounding), v.closed, v.covered))
            .collect();
        if !req.meter.is_empty() && subscriptions.iter().all(|s| s.meters.is_empty()) {
            return Err(ApiError::NoMeterUsage {
                meter: req.meter,
                account: req.account_id,
                period: req.period,
            });
        }
        let closed = views.iter().all(|v| v.closed);
        let by_currency = t.by_currency();
        let mut reply = proto::Totals {
            account_id: req.account_id.clone(),
            period: req.period.clone(),
            status: status_label(closed).to_string(),
            by_currency: by_currency.iter().map(currency_total_to_proto).collect(),
            subscriptions,
            ..proto::Totals::default()
        };
        // The latest plan's period gives the bounds (plans in one period label may differ in
        // time zone); the single-currency figures stay where today's readers look for them.
        if let (Some(latest), Some(view)) = (t.parts.last(), views.last()) {
            reply.plan = latest.plan.to_string();
            if let Some(b) = &view.bounds {
                reply.period_start = b.start.to_rfc3339();
                reply.period_end = b.end.to_rfc3339();
            }
            if let [one] = by_currency.as_slice() {
                reply.currency = one.currency.to_string();
                reply.total_charge = one.charge.to_string();
                reply.total_amount = one.amount.to_string();
                reply.meters = chosen(&t.merged_meters(), latest.rounding);
                let projected_charge = match view.bounds.as_ref() {
                    Some(p) if !closed => projected(one.charge, p.start, p.end, self.pipeline.clock().now()),
                    _ => one.charge,
                };
                reply.projected_charge = projected_charge.to_string();
            }
        }
        Ok(reply)
    }

    fn list_accounts(
        &self,
        request: Request<proto::ListAccountsRequest>,
    ) -> Result<proto::ListAccountsResponse, ApiError> {
        let caller = principal(&request).cloned();
        let req = request.into_inner();
        let after = if req.page_token.is_empty() {
            None
        } else {
            Some(paging::parse_account_token(&req.page_token)?)
        };
        let size = page_size(req.page_size);
        let mut accounts: Vec<String> = self
            .of_period(&req.period)?
            .into_iter()
            .map(|(account, _)| account.to_string())
            .filter(|a| after.as_ref().is_none_or(|after| a > after))
            .filter(|a| caller.as_ref().is_none_or(|c| c.may_touch(a)))
            .collect();
        accounts.sort();
        let more = accounts.len() > size;
        accounts.truncate(size);
        let next_page_token = match accounts.last() {
            Some(last) if more => paging::account_token(last),
            _ => String::new(),
        };
        Ok(proto::ListAccountsResponse {
            accounts,
            next_page_token,
        })
    }

    fn top_accounts(
        &self,
        request: Request<proto::TopAccountsRequest>,
    ) -> Result<proto::TopAccountsResponse, ApiError> {
        let caller = principal(&request).cloned();
        let req = request.into_inner();
        if req.n == 0 || req.n as usize > MAX_PAGE {
            return Err(ApiError::BadTopN { max: MAX_PAGE });
        }
        // One row per account and currency: charges in different currencies do not compare.
        let mut rows: Vec<(Arc<str>, CurrencyTotal)> = self
            .of_period(&req.period)?
            .into_iter()
            .filter(|(account, _)| caller.as_ref().is_none_or(|c| c.may_touch(account)))
            .flat_map(|(account, t)| t.by_currency().into_iter().map(move |c| (account.clone(), c)))
            .filter(|(_, c)| req.currency.is_empty() || c.currency.as_str() == req.currency)
            .collect();
        rows.sort_by(|a, b| b.1.charge.cmp(&a.1.charge).then_with(|| a.0.cmp(&b.0)));
        rows.truncate(req.n as usize);
        Ok(proto::TopAccountsResponse {
            accounts: rows.iter().map(|(a, c)| account_charge(a, c)).collect(),
        })
    }

    fn quote(&self, request: Request<proto::QuoteRequest>) -> Result<proto::QuoteResponse, ApiError> {
        // A plan quote reads no account's data; an account quote reads its period usage.
        if !request.get_ref().account_id.is_empty() {
            scoped(&request, &request.get_ref().account_id)?;
        }
        let req = request.into_inner();
        if req.events.len() > MAX_QUOTE_EVENTS {
            return Err(ApiError::TooManyQuoteEvents { max: MAX_QUOTE_EVENTS });
        }
        if req.plan_id.is_empty() == req.account_id.is_empty() {
            return Err(ApiError::QuoteTarget);
        }
        let context = self.pipeline.context().load();
        let mut usage: ahash::AHashMap<(String, String), Decimal> = ahash::AHashMap::new();
        let mut events = Vec::with_capacity(req.events.len());
        for (i, e) in req.events.into_iter().enumerate() {
            let index = i as u32;
            let mut raw: RawEvent = raw_event(e);
            // The account of a quoted event is the request's (or none, for a plan quote).
            raw.account_id = if req.account_id.is_empty() {
                "quote".to_string()
            } else {
                req.account_id.clone()
            };
            // Any time is quotable: the window and skew of ingest do not apply.
            let event = match check(&raw, &QUOTE_LIMITS, None, &context.catalogue) {
                Ok(quantity) => accept(raw, quantity),
                Err((reason, detail)) => {
                    events.push(quote_refused(index, reason, detail));
                    continue;
                }
            };
            // A plan quote from zero usage; an account quote under the subscription in force.
            let (plan_id, discount) = if req.plan_id.is_empty() {
                match context
                    .subscriptions
                    .plan_for(&req.account_id, event.timestamp, &event.meter, &context.catalogue)
                {
                    Some((p, d, _)) => (p.to_string(), d),
                    None => {
                        let detail = "no plan for this account or plan id".to_string();
                        events.push(quote_refused(
                            index,
                            crate::domain::usage::RejectReason::NoTariff,
                            detail,
                        ));
                        continue;
                    }
                }
            } else {
                (req.plan_id.clone(), None)
            };
            let period_of = |plan: &crate::domain::tariff::Plan| plan.period.period_of(plan.time_zone, event.timestamp);
            let Some(period) = context.catalogue.plan(&plan_id).map(period_of) else {
                let detail = "no plan for this account or plan id".to_string();
                events.push(quote_refused(
                    index,
                    crate::domain::usage::RejectReason::NoTariff,
                    detail,
                ));
                continue;
            };
            let key = (period.label.clone(), event.meter.clone());
            let before = match usage.get(&key) {
                Some(u) => *u,
                None if !req.account_id.is_empty() => self
                    .pipeline
                    .committed()
                    .get(&req.account_id, &period.label)?
                    .and_then(|t| t.part(&plan_id).map(|p| p.usage(&event.meter)))
                    .unwrap_or(Decimal::ZERO),
                None => Decimal::ZERO,
            };
            let input = RatingInput {
                meter: &event.meter,
                quantity: event.quantity,
                at: event.timestamp,
                attributes: &event.attributes,
                period_usage: before,
                subscription_discount: discount,
            };
            match quote(&context.catalogue, &plan_id, &input) {
                Ok(q) => {
                    usage.insert(key, before + q.rated.rated_quantity);
                    let report = Report::new(q.plan, &event.meter, &event.attributes, &q.rated.explanation);
                    events.push(proto::QuotedEvent {
                        index,
                        charge: q.rated.charge.to_string(),
                        currency: q.plan.currency.to_string(),
                        plan_id: q.plan.id.clone(),
                        version: q.rated.explanation.version,
                        period: q.period.label,
                        explanation_json: serde_json::to_string(&report).unwrap_or_default(),
                        reason: proto::RejectReason::Unspecified as i32,
                        detail: String::new(),
                    });
                }
                Err(error) => events.push(quote_refused(index, error.reason(), error.to_string())),
            }
        }
        Ok(proto::QuoteResponse { events })
    }
}

/// A method's answer: its reply, or its error through `refuse`.
fn answer<T>(result: Result<T, ApiError>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(refuse)
}

/// Every method answers through `refuse`: one mapping to a status, scope refusals counted.
#[tonic::async_trait]
impl Query for QueryService {
    async fn get_balance(
        &self,
        request: Request<proto::GetBalanceRequest>,
    ) -> Result<Response<proto::BalanceResponse>, Status> {
        answer(QueryService::get_balance(self, request).await)
    }

    async fn list_ledger(
        &self,
        request: Request<proto::ListLedgerRequest>,
    ) -> Result<Response<proto::ListLedgerResponse>, Status> {
        answer(QueryService::list_ledger(self, request).await)
    }

    async fn list_rated_records(
        &self,
        request: Request<proto::ListRatedRecordsRequest>,
    ) -> Result<Response<proto::ListRatedRecordsResponse>, Status> {
        answer(QueryService::list_rated_records(self, request).await)
    }

    async fn statement(&self, request: Request<proto::StatementRequest>) -> Result<Response<proto::Statement>, Status> {
        answer(QueryService::statement(self, request).await)
    }

    async fn explain_record(
        &self,
        request: Request<proto::ExplainRecordRequest>,
    ) -> Result<Response<proto::ExplainRecordResponse>, Status> {
        answer(QueryService::explain_record(self, request).await)
    }

    async fn get_totals(&self, request: Request<proto::GetTotalsRequest>) -> Result<Response<proto::Totals>, Status> {
        answer(QueryService::get_totals(self, request))
    }

    async fn list_accounts(
        &self,
        request: Request<proto::ListAccountsRequest>,
    ) -> Result<Response<proto::ListAccountsResponse>, Status> {
        answer(QueryService::list_accounts(self, request))
    }

    async fn top_accounts(
        &self,
        request: Request<proto::TopAccountsRequest>,
    ) -> Result<Response<proto::TopAccountsResponse>, Status> {
        answer(QueryService::top_accounts(self, request))
    }

    async fn quote(&self, request: Request<proto::QuoteRequest>) -> Result<Response<proto::QuoteResponse>, Status> {
        answer(QueryService::quote(self, request))
    }
}
