//! The rated record: one accepted event, how it was priced, and its charge. Kept for every
//! accepted event (audit, drill-down, re-rating); with the immutable plan version its stored
//! inputs reproduce the rating and its explanation exactly ([`RatedRecord::rating_input`]).
//! Also [`RatingInput`], what the rating engine needs to price one event.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

/// What the engine needs to price one event.
#[derive(Debug, Clone, Copy)]
pub struct RatingInput<'a> {
    pub meter: &'a str,
    pub quantity: Decimal,
    pub at: DateTime<Utc>,
    pub attributes: &'a [(String, String)],
    /// The account's period-to-date rated quantity of this meter before this event.
    pub period_usage: Decimal,
    /// A subscription's own percentage discount, applied after the version's.
    pub subscription_discount: Option<Decimal>,
}

/// A rated record: the event, how it was priced, and its charge.
#[derive(Debug, Clone, PartialEq)]
pub struct RatedRecord {
    /// Hash of the event's content (meter, quantity, time, attributes): DUPLICATE vs CONFLICT.
    pub content: u64,
    pub event_id: String,
    pub account_id: String,
    pub meter: String,
    pub quantity: Decimal,
    pub timestamp_unix_nanos: i64,
    pub attributes: Vec<(String, String)>,
    pub plan: String,
    pub version: u32,
    pub period: String,
    /// The period-to-date rated quantity of the meter before this event: with the (immutable) plan
    /// version it reproduces the rating and its explanation exactly.
    pub period_usage_before: Decimal,
    pub subscription_discount: Option<Decimal>,
    pub rated_quantity: Decimal,
    pub charge: Decimal,
}

/// The same fields borrowed: a shard encodes records from its events without copying strings.
#[derive(Debug, Clone, Copy)]
pub struct RatedRecordRef<'a> {
    pub content: u64,
    pub event_id: &'a str,
    pub account_id: &'a str,
    pub meter: &'a str,
    pub quantity: Decimal,
    pub timestamp_unix_nanos: i64,
    pub attributes: &'a [(String, String)],
    pub plan: &'a str,
    pub version: u32,
    pub period: &'a str,
    pub period_usage_before: Decimal,
    pub subscription_discount: Option<Decimal>,
    pub rated_quantity: Decimal,
    pub charge: Decimal,
}

impl RatedRecord {
    /// The record as one line of `ratectl export --format jsonl` (and of the retention export):
    /// the same fields, formatted as the Query API formats them.
    pub fn export_json(&self) -> serde_json::Value {
        let attributes: serde_json::Map<String, serde_json::Value> = self
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect();
        serde_json::json!({
            "event_id": self.event_id, "account": self.account_id, "meter": self.meter,
            "quantity": self.quantity.normalize().to_string(), "timestamp": self.at().to_rfc3339(),
            "attributes": attributes, "plan": self.plan, "version": self.version, "period": self.period,
            "rated_quantity": self.rated_quantity.normalize().to_string(), "charge": self.charge.to_string(),
            "period_usage_before": self.period_usage_before.normalize().to_string(),
        })
    }

    /// The event time.
    pub fn at(&self) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp_nanos(self.timestamp_unix_nanos)
    }

    /// The inputs this record was rated from: rating them again under its plan version gives its
    /// charge and explanation (the one way a rating is rebuilt from a record).
    pub fn rating_input(&self) -> RatingInput<'_> {
        RatingInput {
            meter: &self.meter,
            quantity: self.quantity,
            at: self.at(),
            attributes: &self.attributes,
            period_usage: self.period_usage_before,
            subscription_discount: self.subscription_discount,
        }
    }

    pub fn as_ref(&self) -> RatedRecordRef<'_> {
        RatedRecordRef {
            content: self.content,
            event_id: &self.event_id,
            account_id: &self.account_id,
            meter: &self.meter,
            quantity: self.quantity,
            timestamp_unix_nanos: self.timestamp_unix_nanos,
            attributes: &self.attributes,
            plan: &self.plan,
            version: self.version,
            period: &self.period,
            period_usage_before: self.period_usage_before,
            subscription_discount: self.subscription_discount,
            rated_quantity: self.rated_quantity,
            charge: self.charge,
        }
    }
}
