//! `ratingd.v1.Query`: the read side for billing backends. Totals come from the pipeline's
//! committed view (only durable figures); quotes run the rating engine without recording
//! anything; records, explanations and statements are read from the blocks and rated again from
//! their stored inputs (`rating::rerate`).

pub mod statement;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tonic::{Request, Response, Status};

use crate::domain::aggregate::PeriodTotals;
use crate::domain::money::{exact_mul, round_quotient};
use crate::domain::record::RatedRecord;
use crate::domain::usage::{DEFAULT_MAX_ATTRIBUTE_BYTES, DEFAULT_MAX_ATTRIBUTES, MAX_ID_BYTES, RawEvent};
use crate::pipeline::Pipeline;
use crate::pipeline::intake::{EventLimits, accept, check};
use crate::rating::{RatingInput, Report, quote, rerate};
use crate::security::auth::{check_account, principal};
use crate::store::Records;
use crate::wire::ApiError;
use crate::wire::convert::{
    account_charge, meter_to_proto, optional_instant, quote_refused, raw_event, record_to_proto, totals_to_proto,
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

pub struct QueryService {
    pipeline: Arc<Pipeline>,
    records: Records,
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
    pub fn new(pipeline: Arc<Pipeline>, records: Records) -> Self {
        QueryService { pipeline, records }
    }

    fn totals(&self, account: &str, period: &str) -> Result<PeriodTotals, ApiError> {
        let committed = self.pipeline.committed();
        committed.check_damage(account)?;
        let key: (Arc<str>, Arc<str>) = (Arc::from(account), Arc::from(period));
        committed
            .totals
            .get(&key)
            .map(|t| t.clone())
            .ok_or_else(|| ApiError::NoTotals {
                account: account.to_string(),
                period: period.to_string(),
            })
    }

    /// Every committed totals of one period (damaged accounts left out).
    fn of_period(&self, period: &str) -> Vec<PeriodTotals> {
        let committed = self.pipeline.committed();
        committed
            .totals
            .iter()
            .filter(|e| &*e.key().1 == period)
            .filter(|e| !committed.damaged.contains_key(&e.key().0))
            .map(|e| e.value().clone())
            .collect()
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
        })
    }

    async fn statement(&self, request: Request<proto::StatementRequest>) -> Result<proto::Statement, ApiError> {
        scoped(&request, &request.get_ref().account_id)?;
        let req = request.into_inner();
        let totals = self.totals(&req.account_id, &req.period)?;
        let records = self.records.clone();
        let (account, period) = (req.account_id.clone(), req.period.clone());
        let records = blocking(move || {
            let mut found = Vec::new();
            records
                .account_records(&account, 0, |_, _, r| {
                    if r.period == period {
                        found.push(r);
                    }
                    true
                })
                .map(|()| found)
        })
        .await?;
        let context = self.pipeline.context().load();
        let plan = context
            .catalogue
            .plan(&totals.plan)
            .ok_or_else(|| ApiError::PlanGone(totals.plan.to_string()))?;
        let s = statement::build(plan, &records)?;
        if s.total != totals.total_charge {
            return Err(ApiError::RecordsDisagree {
                account: req.account_id,
                period: req.period,
                records: s.total,
                totals: totals.total_charge,
            });
        }
        let closed = self.pipeline.committed().is_closed(&totals.plan, &totals.period);
        Ok(statement::to_proto(req.account_id, req.period, &totals, closed, s))
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
                // With an account, ids are unique: stop at the first; without, look for others.
                found.is_empty() || (account.is_empty() && found.len() < 2)
            };
            let scanned = if account.is_empty() {
                records.all_records(&mut visit)
            } else {
                records.account_records(&account, 0, &mut visit)
            };
            scanned.map(|()| found)
        })
        .await?;
        if let [first, second, ..] = found.as_slice() {
            return Err(ApiError::AmbiguousEventId {
                event_id: req.event_id,
                first: first.account_id.clone(),
                second: second.account_id.clone(),
            });
        }
        let record = found.into_iter().next().ok_or_else(|| ApiError::NoRecord {
            event_id: req.event_id.clone(),
            account: req.account_id.clone(),
        })?;
        self.pipeline.committed().check_damage(&record.account_id)?;
        let context = self.pipeline.context().load();
        let plan = context
            .catalogue
            .plan(&record.plan)
            .ok_or_else(|| ApiError::PlanGone(record.plan.clone()))?;
        let rated = rerate(plan, &record)?;
        let report = Report::new(plan, &record.meter, &record.attributes, &rated.explanation);
        Ok(proto::ExplainRecordResponse {
            record: Some(record_to_proto(&record)),
            explanation_json: serde_json::to_string(&report).unwrap_or_default(),
            explanation_text: report.to_string(),
        })
    }

    fn get_totals(&self, request: Request<proto::GetTotalsRequest>) -> Result<proto::Totals, ApiError> {
        scoped(&request, &request.get_ref().account_id)?;
        let req = request.into_inner();
        if req.account_id.is_empty() || req.period.is_empty() {
            return Err(ApiError::Required("account_id and period"));
        }
        let t = self.totals(&req.account_id, &req.period)?;
        let context = self.pipeline.context().load();
        let bounds = context
            .catalogue
            .plan(&t.plan)
            .and_then(|p| p.period.period_labelled(p.time_zone, &t.period));
        let mut meters: Vec<proto::MeterTotals> = t
            .meters
            .iter()
            .filter(|m| req.meter.is_empty() || *m.meter == *req.meter)
            .map(|m| meter_to_proto(m, t.rounding))
            .collect();
        if meters.is_empty() && !req.meter.is_empty() {
            return Err(ApiError::NoMeterUsage {
                meter: req.meter,
                account: req.account_id,
                period: req.period,
            });
        }
        meters.sort_by(|a, b| a.meter.cmp(&b.meter));
        let closed = self.pipeline.committed().is_closed(&t.plan, &t.period);
        let projected_charge = match bounds.as_ref() {
            Some(p) if !closed => projected(t.total_charge, p.start, p.end, self.pipeline.clock().now()),
            _ => t.total_charge,
        };
        Ok(totals_to_proto(&t, meters, closed, projected_charge, bounds.as_ref()))
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
            .of_period(&req.period)
            .into_iter()
            .map(|t| t.account.to_string())
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
        let mut rows: Vec<PeriodTotals> = self
            .of_period(&req.period)
            .into_iter()
            .filter(|t| req.currency.is_empty() || t.currency.as_str() == req.currency)
            .filter(|t| caller.as_ref().is_none_or(|c| c.may_touch(&t.account)))
            .collect();
        rows.sort_by(|a, b| {
            b.total_charge
                .cmp(&a.total_charge)
                .then_with(|| a.account.cmp(&b.account))
        });
        rows.truncate(req.n as usize);
        Ok(proto::TopAccountsResponse {
            accounts: rows.iter().map(account_charge).collect(),
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
                match context.subscriptions.plan_for(&req.account_id, event.timestamp) {
                    Some((p, d)) => (p.to_string(), d),
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
                    .totals
                    .get(&(Arc::from(req.account_id.as_str()), Arc::from(period.label.as_str())))
                    .map_or(Decimal::ZERO, |t| t.usage(&event.meter)),
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
