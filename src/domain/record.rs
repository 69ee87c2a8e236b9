//! The rated record: one accepted event, how it was priced, and its charge. Kept for every
//! accepted event (audit, drill-down, re-rating); with the immutable plan version its stored
//! inputs reproduce the rating and its explanation exactly ([`RatedRecord::rating_input`]).
//! Also [`RatingInput`], what the rating engine needs to price one event.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::correction::Correction;
use super::origin::{ADJUSTMENT_METER, Origin};

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
    /// Set on the records a correction writes (a reversal or a replacement): why it exists.
    pub correction: Option<Correction>,
    /// Set when normalization rules changed the event: the event as sent, and the rules.
    pub as_sent: Option<Box<AsSent>>,
}

/// The event as an agent sent it, kept beside a record whose event normalization rules changed
/// (docs/mediation.md), with the names of those rules in the order they fired. Its id and time
/// are the record's (rules never change them). Dedupe keys on this account and event id, and the
/// record's content hash is of this event, so a change of rules never makes a resend new.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsSent {
    pub account_id: String,
    pub meter: String,
    pub quantity: Decimal,
    pub attributes: Vec<(String, String)>,
    pub rules: Vec<String>,
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
    pub correction: Option<&'a Correction>,
    pub as_sent: Option<&'a AsSent>,
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
        let mut line = serde_json::json!({
            "event_id": self.event_id, "account": self.account_id, "meter": self.meter,
            "quantity": self.quantity.normalize().to_string(), "timestamp": self.at().to_rfc3339(),
            "attributes": attributes, "plan": self.plan, "version": self.version, "period": self.period,
            "rated_quantity": self.rated_quantity.normalize().to_string(), "charge": self.charge.to_string(),
            "period_usage_before": self.period_usage_before.normalize().to_string(),
        });
        if let Some(sent) = &self.as_sent {
            let attributes: serde_json::Map<String, serde_json::Value> = sent
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().into()))
                .collect();
            line["as_sent"] = serde_json::json!({
                "account": sent.account_id, "meter": sent.meter,
                "quantity": sent.quantity.normalize().to_string(), "attributes": attributes,
                "rules": sent.rules,
            });
        }
        if let Some(c) = &self.correction {
            line["correction"] = serde_json::json!({
                "role": c.role.as_str(), "action": c.action.as_str(), "id": c.id, "reason": c.reason,
                "requested_by": c.requested_by, "at": c.at().to_rfc3339(),
                "booked_plan": c.booked.as_ref().map(|b| b.plan.clone()),
                "booked_period": c.booked.as_ref().map(|b| b.period.clone()),
            });
        }
        line
    }

    /// Where its event came from, told by its stored meter (the one place a stored record's kind
    /// is read from its meter).
    pub fn origin(&self) -> Origin {
        Origin::of_meter(&self.meter)
    }

    /// True for a reversal record (it takes an earlier record of the same event back).
    pub fn is_reversal(&self) -> bool {
        self.correction
            .as_ref()
            .is_some_and(|c| c.role == super::correction::Role::Reversal)
    }

    /// What the record adds to the totals it counts in ([`RatedRecord::booked`]): meter,
    /// quantity, rated quantity, charge and events. A reversal's amounts are negative and it
    /// counts one event less; an adjustment of a closed period adds its charge alone, under
    /// [`ADJUSTMENT_METER`], so the open period's usage does not move.
    pub fn counts(&self) -> (&str, Decimal, Decimal, Decimal, i64) {
        match &self.correction {
            Some(c) if c.booked.is_some() => (ADJUSTMENT_METER, Decimal::ZERO, Decimal::ZERO, self.charge, 1),
            Some(c) if c.role == super::correction::Role::Reversal => {
                (&self.meter, self.quantity, self.rated_quantity, self.charge, -1)
            }
            _ => (&self.meter, self.quantity, self.rated_quantity, self.charge, 1),
        }
    }

    /// Where the record counts in the totals: its own (plan, period), or for an adjustment of a
    /// closed period the open one it was booked into.
    pub fn booked(&self) -> (&str, &str) {
        match self.correction.as_ref().and_then(|c| c.booked.as_ref()) {
            Some(b) => (&b.plan, &b.period),
            None => (&self.plan, &self.period),
        }
    }

    /// The account the event was sent with: the dedupe key's (with the event id).
    pub fn sent_account(&self) -> &str {
        self.as_sent.as_ref().map_or(&self.account_id, |s| &s.account_id)
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
            correction: self.correction.as_ref(),
            as_sent: self.as_sent.as_deref(),
        }
    }
}
