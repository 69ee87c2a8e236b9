//! `ratingd.v1.Query`: the read side for billing backends. Totals come from the committed view
//! (only durable figures); quotes run the rating engine without recording anything; records,
//! explanations and statements are read from the blocks.

pub mod statement;

use std::sync::Arc;

use crate::security::auth::{check_account, principal};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tonic::{Request, Response, Status};

use crate::config::Limits;
use crate::domain::aggregate::PeriodTotals;
use crate::domain::money::{exact_mul, round_quotient};
use crate::domain::tariff::Plan;
use crate::ingest::convert::{Converted, Window, convert, reason_to_proto};
use crate::pipeline::{CommittedView, SharedClock, SharedContext};
use crate::rating::{RatingInput, Report, rate};
use crate::store::SettingsStore;
use crate::store::codec::Record;
use crate::wire::proto::{self, query_server::Query};

/// Most rows one page of any listing carries (bounds the memory and time of one answer).
pub const MAX_PAGE: usize = 1000;
/// Rows of a page when the request leaves it to ratingd.
const DEFAULT_PAGE: usize = 100;

/// The page size of a listing request: 0 means the default, anything larger is capped.
pub fn page_size(requested: u32) -> usize {
    match requested as usize {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    }
}
/// Most events one Quote prices.
const MAX_QUOTE_EVENTS: usize = 10_000;

pub struct QueryService {
    committed: CommittedView,
    context: SharedContext,
    store: SettingsStore,
    /// The pipeline's clock: projections use the same "now" as ingest and period close.
    clock: SharedClock,
}

fn record_to_proto(r: &Record) -> proto::RatedRecord {
    proto::RatedRecord {
        event_id: r.event_id.clone(),
        account_id: r.account_id.clone(),
        meter: r.meter.clone(),
        quantity: r.quantity.normalize().to_string(),
        timestamp: DateTime::<Utc>::from_timestamp_nanos(r.timestamp_unix_nanos).to_rfc3339(),
        attributes: r
            .attributes
            .iter()
            .map(|(k, v)| proto::Attribute {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        plan_id: r.plan.clone(),
        version: r.version,
        period: r.period.clone(),
        rated_quantity: r.rated_quantity.normalize().to_string(),
        charge: r.charge.to_string(),
        period_usage_before: r.period_usage_before.normalize().to_string(),
    }
}

fn optional_instant(field: &str, text: &str) -> Result<Option<i64>, Status> {
    if text.is_empty() {
        return Ok(None);
    }
    DateTime::parse_from_rfc3339(text)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .map(Some)
        .ok_or_else(|| Status::invalid_argument(format!("{field}: {text:?} is not an RFC 3339 date-time")))
}

fn store_status(e: crate::store::StoreError) -> Status {
    // A corrupted value names its file and key; totals built on it are not served.
    Status::data_loss(e.to_string())
}

impl QueryService {
    pub fn new(committed: CommittedView, context: SharedContext, store: SettingsStore, clock: SharedClock) -> Self {
        QueryService {
            committed,
            context,
            store,
            clock,
        }
    }

    fn totals(&self, account: &str, period: &str) -> Result<PeriodTotals, Status> {
        self.committed.check_damage(account)?;
        let key: (Arc<str>, Arc<str>) = (Arc::from(account), Arc::from(period));
        self.committed
            .totals
            .get(&key)
            .map(|t| t.clone())
            .ok_or_else(|| Status::not_found(format!("no usage for account {account:?} in period {period:?}")))
    }

    /// Every committed totals of one period.
    fn of_period(&self, period: &str) -> Vec<PeriodTotals> {
        self.committed
            .totals
            .iter()
            .filter(|e| &*e.key().1 == period)
            .filter(|e| !self.committed.damaged.contains_key(&e.key().0))
            .map(|e| e.value().clone())
            .collect()
    }
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

fn parse_token(token: &str) -> Result<String, Status> {
    crate::domain::hex::unhex(token)
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| Status::invalid_argument("malformed page_token"))
}

/// `PERMISSION_DENIED` (counted and logged) when the caller's token does not cover `account`.
fn scoped<T>(request: &Request<T>, account: &str) -> Result<(), Status> {
    check_account(request, account).inspect_err(|status| crate::security::note("ratingd.v1.Query", status))
}

#[tonic::async_trait]
impl Query for QueryService {
    async fn list_rated_records(
        &self,
        request: Request<proto::ListRatedRecordsRequest>,
    ) -> Result<Response<proto::ListRatedRecordsResponse>, Status> {
        scoped(&request, &request.get_ref().account_id)?;
        self.committed.check_damage(&request.get_ref().account_id)?;
        let req = request.into_inner();
        if req.account_id.is_empty() {
            return Err(Status::invalid_argument("account_id is required"));
        }
        let from = optional_instant("from", &req.from)?.unwrap_or(i64::MIN);
        let to = optional_instant("to", &req.to)?.unwrap_or(i64::MAX);
        let size = crate::query::page_size(req.page_size);
        // The token is the position (block, index) of the last record returned.
        let after: Option<(u64, u32)> = if req.page_token.is_empty() {
            None
        } else {
            let bytes = crate::domain::hex::unhex(&req.page_token).filter(|b| b.len() == 12);
            let bytes = bytes.ok_or_else(|| Status::invalid_argument("malformed page_token"))?;
            let seq = u64::from_be_bytes(bytes[..8].try_into().unwrap_or_default());
            let index = u32::from_be_bytes(bytes[8..].try_into().unwrap_or_default());
            Some((seq, index))
        };
        let mut records = Vec::with_capacity(size);
        let mut last = None;
        let mut more = false;
        let store = self.store.clone();
        let account = req.account_id.clone();
        let start = after.map_or(0, |(seq, _)| seq);
        let found = tokio::task::spawn_blocking(move || {
            let mut found = Vec::new();
            let result = store.account_records(&account, start, |seq, index, record| {
                if after.is_some_and(|a| (seq, index) <= a) {
                    return true;
                }
                if record.timestamp_unix_nanos < from || record.timestamp_unix_nanos >= to {
                    return true;
                }
                found.push((seq, index, record));
                found.len() <= size
            });
            result.map(|()| found)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(store_status)?;
        for (seq, index, record) in found {
            if records.len() == size {
                more = true;
                break;
            }
            records.push(record_to_proto(&record));
            last = Some((seq, index));
        }
        let next_page_token = match (more, last) {
            (true, Some((seq, index))) => {
                let mut bytes = seq.to_be_bytes().to_vec();
                bytes.extend_from_slice(&index.to_be_bytes());
                crate::domain::hex::hex(&bytes)
            }
            _ => String::new(),
        };
        Ok(Response::new(proto::ListRatedRecordsResponse {
            records,
            next_page_token,
        }))
    }

    async fn statement(&self, request: Request<proto::StatementRequest>) -> Result<Response<proto::Statement>, Status> {
        scoped(&request, &request.get_ref().account_id)?;
        let req = request.into_inner();
        let totals = self.totals(&req.account_id, &req.period)?;
        let store = self.store.clone();
        let (account, period) = (req.account_id.clone(), req.period.clone());
        let records = tokio::task::spawn_blocking(move || {
            let mut found = Vec::new();
            store
                .account_records(&account, 0, |_, _, r| {
                    if r.period == period {
                        found.push(r);
                    }
                    true
                })
                .map(|()| found)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(store_status)?;
        let context = self.context.load();
        let plan = context.catalogue.plan(&totals.plan).ok_or_else(|| {
            Status::failed_precondition(format!("plan {:?} is no longer in the tariff catalogue", totals.plan))
        })?;
        let s = statement::build(plan, &records).map_err(Status::failed_precondition)?;
        if s.total != totals.total_charge {
            return Err(Status::data_loss(format!(
                "the records of {:?} {:?} sum to {} but the totals say {}",
                req.account_id, req.period, s.total, totals.total_charge
            )));
        }
        let status = if self.committed.is_closed(&totals.plan, &totals.period) {
            "closed"
        } else {
            "open"
        };
        Ok(Response::new(proto::Statement {
            account_id: req.account_id,
            period: req.period,
            plan: totals.plan.to_string(),
            currency: totals.currency.to_string(),
            status: status.to_string(),
            lines: s
                .lines
                .into_iter()
                .map(|l| proto::StatementLine {
                    meter: l.meter,
                    description: l.description,
                    amount: l.amount.map(|a| a.to_string()).unwrap_or_default(),
                })
                .collect(),
            subtotal: s.subtotal.to_string(),
            discount: s.discount.to_string(),
            total_charge: s.total.to_string(),
            total_amount: totals.rounding.apply(s.total).to_string(),
        }))
    }

    async fn explain_record(
        &self,
        request: Request<proto::ExplainRecordRequest>,
    ) -> Result<Response<proto::ExplainRecordResponse>, Status> {
        // A scoped token names the account: a search over every account is not within its scope.
        scoped(&request, &request.get_ref().account_id)?;
        let req = request.into_inner();
        let store = self.store.clone();
        let (account, event_id) = (req.account_id.clone(), req.event_id.clone());
        if req.event_id.is_empty() {
            return Err(Status::invalid_argument("event_id is required"));
        }
        let found = tokio::task::spawn_blocking(move || {
            let mut found: Vec<Record> = Vec::new();
            let mut visit = |_, _, record: Record| {
                if record.event_id == event_id {
                    found.push(record);
                }
                // With an account, ids are unique: stop at the first; without, look for others.
                found.is_empty() || (account.is_empty() && found.len() < 2)
            };
            let scanned = if account.is_empty() {
                store.all_records(&mut visit)
            } else {
                store.account_records(&account, 0, &mut visit)
            };
            scanned.map(|()| found)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(store_status)?;
        if found.len() > 1 {
            return Err(Status::invalid_argument(format!(
                "event id {:?} is used by several accounts ({}, {}, ...); give account_id",
                req.event_id, found[0].account_id, found[1].account_id
            )));
        }
        let found = found.into_iter().next();
        if let Some(record) = &found {
            self.committed.check_damage(&record.account_id)?;
        }
        let record = found.ok_or_else(|| {
            Status::not_found(format!(
                "no rated record {:?} for account {:?}",
                req.event_id, req.account_id
            ))
        })?;
        let context = self.context.load();
        let plan = context.catalogue.plan(&record.plan).ok_or_else(|| {
            Status::failed_precondition(format!("plan {:?} is no longer in the tariff catalogue", record.plan))
        })?;
        let at = DateTime::<Utc>::from_timestamp_nanos(record.timestamp_unix_nanos);
        let input = RatingInput {
            meter: &record.meter,
            quantity: record.quantity,
            at,
            attributes: &record.attributes,
            period_usage: record.period_usage_before,
            subscription_discount: record.subscription_discount,
        };
        let rated = rate(plan, &input).map_err(|e| Status::failed_precondition(format!("cannot re-rate: {e}")))?;
        if rated.charge != record.charge || rated.explanation.version != record.version {
            // Versions in force are never edited; if one was, say so rather than explain wrongly.
            return Err(Status::failed_precondition(format!(
                "plan {:?} version {} no longer gives the stored charge {} (now {}): was a version in force edited?",
                record.plan, record.version, record.charge, rated.charge
            )));
        }
        let report = Report::new(plan, &record.meter, &record.attributes, &rated.explanation);
        Ok(Response::new(proto::ExplainRecordResponse {
            record: Some(record_to_proto(&record)),
            explanation_json: serde_json::to_string(&report).unwrap_or_default(),
            explanation_text: report.to_string(),
        }))
    }

    async fn get_totals(&self, request: Request<proto::GetTotalsRequest>) -> Result<Response<proto::Totals>, Status> {
        scoped(&request, &request.get_ref().account_id)?;
        let req = request.into_inner();
        if req.account_id.is_empty() || req.period.is_empty() {
            return Err(Status::invalid_argument("account_id and period are required"));
        }
        let t = self.totals(&req.account_id, &req.period)?;
        let context = self.context.load();
        let bounds = context
            .catalogue
            .plan(&t.plan)
            .and_then(|p| p.period.period_labelled(p.time_zone, &t.period));
        let mut meters: Vec<proto::MeterTotals> = t
            .meters
            .iter()
            .filter(|m| req.meter.is_empty() || *m.meter == *req.meter)
            .map(|m| proto::MeterTotals {
                meter: m.meter.to_string(),
                quantity: m.quantity.normalize().to_string(),
                rated_quantity: m.rated_quantity.normalize().to_string(),
                charge: m.charge.to_string(),
                events: m.events,
                amount: t.rounding.apply(m.charge).to_string(),
            })
            .collect();
        if meters.is_empty() && !req.meter.is_empty() {
            return Err(Status::not_found(format!(
                "no usage of meter {:?} for {:?} in {:?}",
                req.meter, req.account_id, req.period
            )));
        }
        meters.sort_by(|a, b| a.meter.cmp(&b.meter));
        let closed = self.committed.is_closed(&t.plan, &t.period);
        let projected_charge = match bounds.as_ref() {
            Some(p) if !closed => projected(t.total_charge, p.start, p.end, self.clock.now()),
            _ => t.total_charge,
        };
        Ok(Response::new(proto::Totals {
            account_id: t.account.to_string(),
            period: t.period.to_string(),
            currency: t.currency.to_string(),
            plan: t.plan.to_string(),
            total_charge: t.total_charge.to_string(),
            total_amount: t.amount().to_string(),
            meters,
            status: if closed { "closed" } else { "open" }.to_string(),
            projected_charge: projected_charge.to_string(),
            period_start: bounds.as_ref().map(|p| p.start.to_rfc3339()).unwrap_or_default(),
            period_end: bounds.as_ref().map(|p| p.end.to_rfc3339()).unwrap_or_default(),
        }))
    }

    async fn list_accounts(
        &self,
        request: Request<proto::ListAccountsRequest>,
    ) -> Result<Response<proto::ListAccountsResponse>, Status> {
        let caller = principal(&request).cloned();
        let req = request.into_inner();
        let after = if req.page_token.is_empty() {
            None
        } else {
            Some(parse_token(&req.page_token)?)
        };
        let size = crate::query::page_size(req.page_size);
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
        let next_page_token = if more {
            accounts
                .last()
                .map(|a| crate::domain::hex::hex(a.as_bytes()))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(proto::ListAccountsResponse {
            accounts,
            next_page_token,
        }))
    }

    async fn top_accounts(
        &self,
        request: Request<proto::TopAccountsRequest>,
    ) -> Result<Response<proto::TopAccountsResponse>, Status> {
        let caller = principal(&request).cloned();
        let req = request.into_inner();
        if req.n == 0 || req.n as usize > MAX_PAGE {
            return Err(Status::invalid_argument(format!("n must be between 1 and {MAX_PAGE}")));
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
        let accounts = rows
            .iter()
            .map(|t| proto::AccountCharge {
                account_id: t.account.to_string(),
                currency: t.currency.to_string(),
                total_charge: t.total_charge.to_string(),
                total_amount: t.amount().to_string(),
            })
            .collect();
        Ok(Response::new(proto::TopAccountsResponse { accounts }))
    }

    async fn quote(&self, request: Request<proto::QuoteRequest>) -> Result<Response<proto::QuoteResponse>, Status> {
        // A plan quote reads no account's data; an account quote reads its period usage.
        if !request.get_ref().account_id.is_empty() {
            scoped(&request, &request.get_ref().account_id)?;
        }
        let req = request.into_inner();
        if req.events.len() > MAX_QUOTE_EVENTS {
            return Err(Status::resource_exhausted(format!(
                "at most {MAX_QUOTE_EVENTS} events per quote"
            )));
        }
        if req.plan_id.is_empty() == req.account_id.is_empty() {
            return Err(Status::invalid_argument("give exactly one of plan_id and account_id"));
        }
        let context = self.context.load();
        // Any time is quotable: the window and skew of ingest do not apply.
        let window = Window {
            oldest_nanos: i64::MIN,
            newest_nanos: i64::MAX,
            now_nanos: 0,
        };
        let limits = Limits::default();
        let mut usage: ahash::AHashMap<(String, String), Decimal> = ahash::AHashMap::new();
        let mut events = Vec::with_capacity(req.events.len());
        for (i, mut e) in req.events.into_iter().enumerate() {
            let index = i as u32;
            // The account of a quoted event is the request's (or none, for a plan quote).
            e.account_id = if req.account_id.is_empty() {
                "quote".to_string()
            } else {
                req.account_id.clone()
            };
            let rejected = |reason, detail: String| proto::QuotedEvent {
                index,
                reason: reason_to_proto(reason) as i32,
                detail,
                ..Default::default()
            };
            let event = match convert(
                index,
                e,
                &crate::domain::keyed::HashKey::new(0, 0),
                &window,
                &limits,
                &context.catalogue,
            ) {
                Converted::Valid(v) => v.event,
                Converted::Rejected(r) => {
                    let reason = crate::domain::usage::RejectReason::from_code(r.entry.reason)
                        .unwrap_or(crate::domain::usage::RejectReason::InvalidField);
                    events.push(rejected(reason, r.entry.detail));
                    continue;
                }
            };
            let (plan, discount): (Option<&Plan>, Option<Decimal>) = if req.plan_id.is_empty() {
                match context.subscriptions.plan_for(&req.account_id, event.timestamp) {
                    Some((p, d)) => (context.catalogue.plan(p), d),
                    None => (None, None),
                }
            } else {
                (context.catalogue.plan(&req.plan_id), None)
            };
            let Some(plan) = plan else {
                events.push(rejected(
                    crate::domain::usage::RejectReason::NoTariff,
                    "no plan for this account or plan id".into(),
                ));
                continue;
            };
            let period = plan.period.period_of(plan.time_zone, event.timestamp).label;
            let key = (period.clone(), event.meter.clone());
            let before = match usage.get(&key) {
                Some(u) => *u,
                None if !req.account_id.is_empty() => self
                    .committed
                    .totals
                    .get(&(Arc::from(req.account_id.as_str()), Arc::from(period.as_str())))
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
            match rate(plan, &input) {
                Ok(rated) => {
                    usage.insert(key, before + rated.rated_quantity);
                    let report = Report::new(plan, &event.meter, &event.attributes, &rated.explanation);
                    events.push(proto::QuotedEvent {
                        index,
                        charge: rated.charge.to_string(),
                        currency: plan.currency.to_string(),
                        plan_id: plan.id.clone(),
                        version: rated.explanation.version,
                        period,
                        explanation_json: serde_json::to_string(&report).unwrap_or_default(),
                        reason: proto::RejectReason::Unspecified as i32,
                        detail: String::new(),
                    });
                }
                Err(error) => events.push(rejected(error.reason(), error.to_string())),
            }
        }
        Ok(Response::new(proto::QuoteResponse { events }))
    }
}
