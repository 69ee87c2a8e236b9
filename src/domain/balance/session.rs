//! Charging sessions (`Charging.Authorize` .. `Terminate`): what was granted and is held for a
//! session, and how it ended.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::domain::money::Currency;
use crate::domain::record::AsSent;

/// A charging session (`Charging.Authorize` .. `Terminate`): what was granted and is held for
/// it. The session's usage is rated once, at its end, as one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub account: String,
    pub meter: String,
    pub attributes: Vec<(String, String)>,
    pub currency: Currency,
    /// When it began (its event time: bands split from it).
    pub started_unix_nanos: i64,
    /// Units granted in all (used and still to use).
    pub granted: Decimal,
    /// Units reported used so far.
    pub used: Decimal,
    /// Money held for the granted units (zero once expired).
    pub reserved: Decimal,
    /// When the reservation lapses unless an update renews it.
    pub expires_unix_nanos: i64,
    /// Set by `Terminate`.
    pub outcome: Option<SessionOutcome>,
    /// Set when normalization rules changed the session's event at Authorize: the account,
    /// meter and attributes as the caller sent them, and the rules (its record keeps them).
    pub as_sent: Option<Box<AsSent>>,
}

impl Session {
    pub fn started(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_nanos(self.started_unix_nanos)
    }

    pub fn expires(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_nanos(self.expires_unix_nanos)
    }
}

/// How a session ended: what a resent `Terminate` answers again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOutcome {
    pub used: Decimal,
    /// The record's charge (zero when rejected).
    pub charge: Decimal,
    /// Paid past the credit limit.
    pub overdraft: Decimal,
    /// Units used beyond the units granted.
    pub beyond_grant: Decimal,
    /// The reservation given back.
    pub released: Decimal,
    /// The record's rejection (its reason code and detail), when it went to suspense instead.
    pub rejected: Option<(String, String)>,
    pub at_unix_nanos: i64,
}
