//! Every conversion between proto and domain types, in one place: events in, acknowledgements
//! and reasons out, records, totals, subscriptions, suspense entries, statements and quotes.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::proto;
use super::{InputError, SubscriptionInputError};
use crate::domain::aggregate::{CurrencyTotal, MeterTotals, PeriodTotals};
use crate::domain::charge::OneOffCharge;
use crate::domain::money::{InvoiceRounding, parse_exact};
use crate::domain::record::RatedRecord;
use crate::domain::subscription::Subscription;
use crate::domain::usage::{Ack, RawEvent, RejectReason, Rejected};

/// An event as received: the proto fields, moved (no check here: the pipeline's intake checks).
pub fn raw_event(e: proto::UsageEvent) -> RawEvent {
    RawEvent {
        event_id: e.event_id,
        account_id: e.account_id,
        meter: e.meter,
        quantity: e.quantity.map(|q| (q.units, q.nanos)),
        timestamp_unix_nanos: e.timestamp_unix_nanos,
        attributes: e.attributes.into_iter().map(|a| (a.key, a.value)).collect(),
    }
}

fn attributes_to_proto(pairs: &[(String, String)]) -> Vec<proto::Attribute> {
    pairs
        .iter()
        .map(|(k, v)| proto::Attribute {
            key: k.clone(),
            value: v.clone(),
        })
        .collect()
}

/// An event in its proto form (suspense listings).
pub fn event_to_proto(e: &RawEvent) -> proto::UsageEvent {
    let (units, nanos) = e.quantity.unwrap_or((0, 0));
    proto::UsageEvent {
        event_id: e.event_id.clone(),
        account_id: e.account_id.clone(),
        meter: e.meter.clone(),
        quantity: Some(proto::Quantity { units, nanos }),
        timestamp_unix_nanos: e.timestamp_unix_nanos,
        attributes: attributes_to_proto(&e.attributes),
    }
}

/// The domain reason as its proto enum.
pub fn reason_to_proto(reason: RejectReason) -> proto::RejectReason {
    match reason {
        RejectReason::InvalidField => proto::RejectReason::InvalidField,
        RejectReason::UnknownMeter => proto::RejectReason::UnknownMeter,
        RejectReason::NoTariff => proto::RejectReason::NoTariff,
        RejectReason::TooOld => proto::RejectReason::TooOld,
        RejectReason::TooFarInFuture => proto::RejectReason::TooFarInFuture,
        RejectReason::PeriodClosed => proto::RejectReason::PeriodClosed,
        RejectReason::Conflict => proto::RejectReason::Conflict,
        RejectReason::InsufficientBalance => proto::RejectReason::InsufficientBalance,
    }
}

/// The proto enum as the domain reason (`None` for UNSPECIFIED).
pub fn reason_from_proto(reason: proto::RejectReason) -> Option<RejectReason> {
    match reason {
        proto::RejectReason::Unspecified => None,
        proto::RejectReason::InvalidField => Some(RejectReason::InvalidField),
        proto::RejectReason::UnknownMeter => Some(RejectReason::UnknownMeter),
        proto::RejectReason::NoTariff => Some(RejectReason::NoTariff),
        proto::RejectReason::TooOld => Some(RejectReason::TooOld),
        proto::RejectReason::TooFarInFuture => Some(RejectReason::TooFarInFuture),
        proto::RejectReason::PeriodClosed => Some(RejectReason::PeriodClosed),
        proto::RejectReason::Conflict => Some(RejectReason::Conflict),
        proto::RejectReason::InsufficientBalance => Some(RejectReason::InsufficientBalance),
    }
}

/// A reason filter of a request (0 = any).
pub fn reason_filter(reason: i32) -> Result<Option<RejectReason>, InputError> {
    let reason = proto::RejectReason::try_from(reason).map_err(|_| InputError::UnknownReason)?;
    Ok(reason_from_proto(reason))
}

/// The proto form of an acknowledgement.
pub fn ack_to_proto(ack: Ack) -> proto::BatchAck {
    proto::BatchAck {
        batch_id: ack.batch_id,
        accepted: ack.accepted,
        duplicate: ack.duplicate,
        rejected: ack.rejected,
        dropped: ack.dropped,
        results: ack
            .results
            .into_iter()
            .map(|r| proto::EventResult {
                index: r.index,
                outcome: if r.rejected.is_some() {
                    proto::Outcome::Rejected
                } else if r.dropped_by.is_some() {
                    proto::Outcome::Dropped
                } else {
                    proto::Outcome::Duplicate
                } as i32,
                reason: r.rejected.map_or(proto::RejectReason::Unspecified, reason_to_proto) as i32,
                detail: r.detail,
            })
            .collect(),
    }
}

pub fn record_to_proto(r: &RatedRecord) -> proto::RatedRecord {
    proto::RatedRecord {
        event_id: r.event_id.clone(),
        account_id: r.account_id.clone(),
        meter: r.meter.clone(),
        quantity: r.quantity.normalize().to_string(),
        timestamp: r.at().to_rfc3339(),
        attributes: attributes_to_proto(&r.attributes),
        plan_id: r.plan.clone(),
        version: r.version,
        period: r.period.clone(),
        rated_quantity: r.rated_quantity.normalize().to_string(),
        charge: r.charge.to_string(),
        period_usage_before: r.period_usage_before.normalize().to_string(),
        correction: r.correction.as_ref().map(|c| proto::RecordCorrection {
            role: c.role.as_str().to_string(),
            action: c.action.as_str().to_string(),
            id: c.id.clone(),
            reason: c.reason.clone(),
            requested_by: c.requested_by.clone(),
            at: c.at().to_rfc3339(),
            booked_plan: c.booked.as_ref().map(|b| b.plan.clone()).unwrap_or_default(),
            booked_period: c.booked.as_ref().map(|b| b.period.clone()).unwrap_or_default(),
        }),
        as_sent: r.as_sent.as_ref().map(|s| proto::EventAsSent {
            account_id: s.account_id.clone(),
            meter: s.meter.clone(),
            quantity: s.quantity.normalize().to_string(),
            attributes: attributes_to_proto(&s.attributes),
            rules: s.rules.clone(),
        }),
    }
}

pub fn meter_to_proto(m: &MeterTotals, rounding: InvoiceRounding) -> proto::MeterTotals {
    proto::MeterTotals {
        meter: m.meter.to_string(),
        quantity: m.quantity.normalize().to_string(),
        rated_quantity: m.rated_quantity.normalize().to_string(),
        charge: m.charge.to_string(),
        events: m.events,
        amount: rounding.apply(m.charge).to_string(),
    }
}

/// One plan's part of an account-period: `meters` already chosen and sorted, its status and the
/// span of the period its subscriptions cover.
pub fn subscription_totals_to_proto(
    t: &PeriodTotals,
    meters: Vec<proto::MeterTotals>,
    closed: bool,
    covered: Option<(DateTime<Utc>, DateTime<Utc>)>,
) -> proto::SubscriptionTotals {
    proto::SubscriptionTotals {
        plan: t.plan.to_string(),
        currency: t.currency.to_string(),
        from: covered.map(|c| c.0.to_rfc3339()).unwrap_or_default(),
        to: covered.map(|c| c.1.to_rfc3339()).unwrap_or_default(),
        total_charge: t.total_charge.to_string(),
        total_amount: t.amount().to_string(),
        meters,
        status: status_label(closed).to_string(),
    }
}

pub fn currency_total_to_proto(c: &CurrencyTotal) -> proto::CurrencyTotal {
    proto::CurrencyTotal {
        currency: c.currency.to_string(),
        total_charge: c.charge.to_string(),
        total_amount: c.amount.to_string(),
    }
}

/// `closed` or `open`, as every reply and the Redis hash say it.
pub fn status_label(closed: bool) -> &'static str {
    if closed { "closed" } else { "open" }
}

pub fn account_charge(account: &str, c: &CurrencyTotal) -> proto::AccountCharge {
    proto::AccountCharge {
        account_id: account.to_string(),
        currency: c.currency.to_string(),
        total_charge: c.charge.to_string(),
        total_amount: c.amount.to_string(),
    }
}

/// An RFC 3339 field of a request.
pub fn instant(field: &'static str, text: &str) -> Result<DateTime<Utc>, InputError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| InputError::BadTime {
            field,
            text: text.to_string(),
        })
}

/// An optional RFC 3339 field (empty = absent), as unix nanos.
pub fn optional_instant(field: &'static str, text: &str) -> Result<Option<i64>, InputError> {
    if text.is_empty() {
        return Ok(None);
    }
    instant(field, text)?
        .timestamp_nanos_opt()
        .map(Some)
        .ok_or(InputError::BadTime {
            field,
            text: text.to_string(),
        })
}

fn subscription_input(p: proto::Subscription) -> Result<Subscription, SubscriptionInputError> {
    if p.account_id.is_empty() || p.account_id.len() > crate::limits::MAX_ACCOUNT_BYTES {
        return Err(SubscriptionInputError::AccountId);
    }
    let discount = if p.discount_percent.is_empty() {
        None
    } else {
        let d =
            parse_exact(&p.discount_percent).map_err(|m| SubscriptionInputError::DiscountNotExact(m.to_string()))?;
        if d <= Decimal::ZERO || d > Decimal::ONE_HUNDRED {
            return Err(SubscriptionInputError::DiscountRange);
        }
        Some(d)
    };
    let mut alert_thresholds = Vec::with_capacity(p.alert_thresholds.len());
    for text in &p.alert_thresholds {
        match parse_exact(text) {
            Ok(d) if d > Decimal::ZERO => alert_thresholds.push(d),
            _ => return Err(SubscriptionInputError::AlertThreshold(text.clone())),
        }
    }
    let time = |field: &'static str, text: &str| {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| SubscriptionInputError::Time {
                field,
                text: text.to_string(),
            })
    };
    Ok(Subscription {
        account_id: p.account_id,
        plan_id: p.plan_id,
        from: time("from", &p.from)?,
        to: if p.to.is_empty() {
            None
        } else {
            Some(time("to", &p.to)?)
        },
        discount_percent: discount,
        alert_thresholds,
        prepaid: p.prepaid,
    })
}

/// A subscription of a request; `index` is its position when a call carries several.
pub fn subscription_from_proto(p: proto::Subscription, index: Option<usize>) -> Result<Subscription, InputError> {
    subscription_input(p).map_err(|error| InputError::BadSubscription { index, error })
}

pub fn subscription_to_proto(s: &Subscription) -> proto::Subscription {
    proto::Subscription {
        account_id: s.account_id.clone(),
        plan_id: s.plan_id.clone(),
        from: s.from.to_rfc3339(),
        to: s.to.map(|t| t.to_rfc3339()).unwrap_or_default(),
        discount_percent: s.discount_percent.map(|d| d.to_string()).unwrap_or_default(),
        alert_thresholds: s.alert_thresholds.iter().map(ToString::to_string).collect(),
        prepaid: s.prepaid,
    }
}

/// A suspense entry in its proto form; `id` is its page-token form.
pub fn suspended_to_proto(id: String, r: &Rejected) -> proto::SuspendedEvent {
    proto::SuspendedEvent {
        id,
        event: Some(event_to_proto(&r.event)),
        reason: reason_to_proto(r.reason) as i32,
        detail: r.detail.clone(),
        received_at: DateTime::<Utc>::from_timestamp_nanos(r.received_unix_nanos).to_rfc3339(),
    }
}

/// A quoted event that could not be priced.
pub fn quote_refused(index: u32, reason: RejectReason, detail: String) -> proto::QuotedEvent {
    proto::QuotedEvent {
        index,
        reason: reason_to_proto(reason) as i32,
        detail,
        ..Default::default()
    }
}

/// A one-off charge as requested, checked: ids, amount (non-zero, at most the currency's minor
/// unit places), an ISO 4217 currency, a description (required for a credit), its time (`now`
/// when empty).
pub fn charge_from_proto(p: proto::AddChargeRequest, now: DateTime<Utc>) -> Result<OneOffCharge, InputError> {
    use crate::limits::{DEFAULT_MAX_ATTRIBUTE_BYTES, MAX_ACCOUNT_BYTES, MAX_ID_BYTES};
    let bad = |m: String| Err(InputError::BadCharge(m));
    if p.account_id.is_empty() || p.account_id.len() > MAX_ACCOUNT_BYTES {
        return bad(format!("account_id must be 1..={MAX_ACCOUNT_BYTES} bytes"));
    }
    let max_id = MAX_ID_BYTES - crate::domain::origin::CHARGE_ID_PREFIX.len();
    if p.charge_id.is_empty() || p.charge_id.len() > max_id {
        return bad(format!("charge_id must be 1..={max_id} bytes"));
    }
    let currency: crate::domain::money::Currency = match p.currency.parse() {
        Ok(c) => c,
        Err(m) => return bad(format!("currency: {m}")),
    };
    let amount = match parse_exact(&p.amount) {
        Ok(a) => a,
        Err(m) => return bad(format!("amount: {m}")),
    };
    if amount.is_zero() {
        return bad("amount must not be 0".into());
    }
    if let Some(unit) = currency.minor_unit()
        && amount.normalize().scale() > unit
    {
        return bad(format!("amount {amount} has more places than {currency} has ({unit})"));
    }
    if amount.is_sign_negative() && p.description.trim().is_empty() {
        return bad("a credit (negative amount) needs a description".into());
    }
    if p.description.len() > DEFAULT_MAX_ATTRIBUTE_BYTES {
        return bad(format!(
            "description must be at most {DEFAULT_MAX_ATTRIBUTE_BYTES} bytes"
        ));
    }
    let at = if p.time.is_empty() {
        now
    } else {
        instant("time", &p.time)?
    };
    Ok(OneOffCharge {
        account_id: p.account_id,
        charge_id: p.charge_id,
        amount: amount.normalize(),
        currency,
        description: p.description,
        at,
    })
}
