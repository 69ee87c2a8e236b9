//! Usage events as the domain sees them: as received ([`RawEvent`]), validated ([`UsageEvent`]),
//! or rejected into suspense with one of the fixed reasons ([`Rejected`]); and the acknowledgement
//! of a batch.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::origin::Origin;

/// One usage event, already validated by the front end (SPEC section 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageEvent {
    pub event_id: String,
    pub account_id: String,
    pub meter: String,
    /// Exact, >= 0, at most 9 fractional digits.
    pub quantity: Decimal,
    /// Event time; for a duration meter, the start of the call.
    pub timestamp: DateTime<Utc>,
    /// Small bounded map, kept as pairs: a handful of entries is faster to scan than to hash.
    pub attributes: Vec<(String, String)>,
    /// Where it comes from: set where it enters (the door: usage; `Admin.AddCharge`: a charge;
    /// the billing cycle: a fee or a true-up) and read as an enum from there on.
    pub origin: Origin,
}

/// The id of a suspense entry: its storage key (`s/<seq><n>`), so ids order as entries were
/// written. Opaque to clients (hex on the wire).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SuspenseId(pub Vec<u8>);

/// An event as an agent sent it, before any check: fields may be empty, too long or out of range.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RawEvent {
    pub event_id: String,
    pub account_id: String,
    pub meter: String,
    /// Whole units and nanos (both as sent); `None` when the quantity is missing.
    pub quantity: Option<(i64, i32)>,
    pub timestamp_unix_nanos: i64,
    pub attributes: Vec<(String, String)>,
}

/// An event that was not rated, as it waits in suspense: the event as received, the reason and
/// a detail for people, and when ratingd received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub event: RawEvent,
    pub reason: RejectReason,
    pub detail: String,
    pub received_unix_nanos: i64,
}

impl UsageEvent {
    /// The event in its received form (for suspense, when a valid event is rejected by rating).
    pub fn to_raw(&self) -> RawEvent {
        RawEvent {
            event_id: self.event_id.clone(),
            account_id: self.account_id.clone(),
            meter: self.meter.clone(),
            quantity: Some(units_and_nanos(self.quantity)),
            timestamp_unix_nanos: self.timestamp.timestamp_nanos_opt().unwrap_or(0),
            attributes: self.attributes.clone(),
        }
    }
}

/// What [`quantity_of`] accepts, as said to a client.
pub const QUANTITY_RULE: &str = "quantity must be >= 0 with 0 <= nanos < 1e9";

/// The exact quantity of whole units and nanos as sent (events, amendments); `None` when it
/// breaks [`QUANTITY_RULE`].
pub fn quantity_of(units: i64, nanos: i32) -> Option<Decimal> {
    if units < 0 || !(0..1_000_000_000).contains(&nanos) {
        return None;
    }
    Some(if nanos == 0 {
        Decimal::from(units)
    } else {
        Decimal::from_i128_with_scale(i128::from(units) * 1_000_000_000 + i128::from(nanos), 9).normalize()
    })
}

/// Whole units and nanos of a quantity with at most 9 fractional digits (checked at the door, or
/// by the rule that made it): exact.
pub fn units_and_nanos(quantity: Decimal) -> (i64, i32) {
    let nanos = quantity.mantissa() * 10i128.pow(9u32.saturating_sub(quantity.scale()));
    (
        i64::try_from(nanos / 1_000_000_000).unwrap_or(i64::MAX),
        (nanos % 1_000_000_000) as i32,
    )
}

/// Looks an attribute up by name in an event's attribute pairs.
pub fn attribute<'a>(attributes: &'a [(String, String)], name: &str) -> Option<&'a str> {
    attributes.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Why an event was not rated (SPEC section 2). Rejected events wait in suspense with this reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RejectReason {
    InvalidField,
    UnknownMeter,
    NoTariff,
    TooOld,
    TooFarInFuture,
    PeriodClosed,
    Conflict,
    /// A prepaid account's balance (with its credit limit) cannot pay the event's charge, and
    /// its plan rejects rather than overdraws (reprocessable after a top-up).
    InsufficientBalance,
}

impl RejectReason {
    pub const ALL: [RejectReason; 8] = [
        RejectReason::InvalidField,
        RejectReason::UnknownMeter,
        RejectReason::NoTariff,
        RejectReason::TooOld,
        RejectReason::TooFarInFuture,
        RejectReason::PeriodClosed,
        RejectReason::Conflict,
        RejectReason::InsufficientBalance,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::InvalidField => "INVALID_FIELD",
            RejectReason::UnknownMeter => "UNKNOWN_METER",
            RejectReason::NoTariff => "NO_TARIFF",
            RejectReason::TooOld => "TOO_OLD",
            RejectReason::TooFarInFuture => "TOO_FAR_IN_FUTURE",
            RejectReason::PeriodClosed => "PERIOD_CLOSED",
            RejectReason::Conflict => "CONFLICT",
            RejectReason::InsufficientBalance => "INSUFFICIENT_BALANCE",
        }
    }
}

impl RejectReason {
    /// Position in [`RejectReason::ALL`]: the stored code of the reason.
    pub fn code(self) -> u8 {
        // Invariant: ALL lists every variant.
        RejectReason::ALL
            .iter()
            .position(|r| *r == self)
            .expect("every reason is in ALL") as u8
    }

    pub fn from_code(code: u8) -> Option<RejectReason> {
        RejectReason::ALL.get(usize::from(code)).copied()
    }
}

/// The outcome of an event that was not accepted, as acknowledged to the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventOutcome {
    pub index: u32,
    /// `None` for DUPLICATE or DROPPED (successes), `Some(reason)` for REJECTED.
    pub rejected: Option<RejectReason>,
    /// For DROPPED: the normalization rule that matched it (not rated, not kept, counted under
    /// the rule's name).
    pub dropped_by: Option<std::sync::Arc<str>>,
    pub detail: String,
}

/// The acknowledgement of a batch: sent only when every accepted event in it is durable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ack {
    pub batch_id: u64,
    pub accepted: u32,
    pub duplicate: u32,
    pub rejected: u32,
    /// Events normalization rules dropped (received = accepted + duplicate + rejected + dropped).
    pub dropped: u32,
    /// Every event that was not accepted, in index order.
    pub results: Vec<EventOutcome>,
}
