//! `Quote`: events priced without recording anything, under a plan from zero usage or under an
//! account's subscription from its period usage so far.

use rust_decimal::Decimal;
use tonic::Request;

use super::{QueryService, scoped};
use crate::domain::usage::RawEvent;
use crate::edge::ApiError;
use crate::limits::{DEFAULT_MAX_ATTRIBUTE_BYTES, DEFAULT_MAX_ATTRIBUTES, MAX_ID_BYTES, MAX_QUOTE_EVENTS};
use crate::pipeline::intake::{EventLimits, accept, check};
use crate::rating::{RatingInput, Report, quote};
use crate::wire::convert::{quote_refused, raw_event};
use crate::wire::proto;

/// The checks a quoted event passes (the default limits: a quote writes nothing).
const QUOTE_LIMITS: EventLimits = EventLimits {
    max_id_bytes: MAX_ID_BYTES,
    max_attributes: DEFAULT_MAX_ATTRIBUTES,
    max_attribute_bytes: DEFAULT_MAX_ATTRIBUTE_BYTES,
};

/// A quoted event no plan prices.
fn no_plan(index: u32) -> proto::QuotedEvent {
    let detail = "no plan for this account or plan id".to_string();
    quote_refused(index, crate::domain::usage::RejectReason::NoTariff, detail)
}

impl QueryService {
    pub(super) fn quote(&self, request: Request<proto::QuoteRequest>) -> Result<proto::QuoteResponse, ApiError> {
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
                        events.push(no_plan(index));
                        continue;
                    }
                }
            } else {
                (req.plan_id.clone(), None)
            };
            let period_of = |plan: &crate::domain::tariff::Plan| plan.period.period_of(plan.time_zone, event.timestamp);
            let Some(period) = context.catalogue.plan(&plan_id).map(period_of) else {
                events.push(no_plan(index));
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
