//! Corrections of rated records (`Admin.Rerate`, `Admin.VoidEvent`, `Admin.AmendEvent`): a rated
//! record is never changed. A correction appends a **reversal** of the record (the same rating
//! with quantity, rated quantity and charge negated) and, unless the event is voided, a
//! **replacement** (the event rated again). Both carry a [`Correction`]: what asked for it, why,
//! who and when. The chain of one event is its original record, then each reversal and
//! replacement in commit order; the event's current record is the last replacement (or the
//! original), and none when the chain ends in a reversal (voided). docs/corrections.md.

use rust_decimal::Decimal;

/// Whether a correction record takes a record back or puts its corrected rating in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Reversal,
    Replacement,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reversal => "reversal",
            Role::Replacement => "replacement",
        }
    }
}

/// What asked for a correction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `Admin.Rerate`: the records rated again under the versions now in force.
    Rerate,
    /// `Admin.VoidEvent`: the event taken back.
    Void,
    /// `Admin.AmendEvent`: the event's quantity or attributes changed.
    Amend,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Rerate => "rerate",
            Action::Void => "void",
            Action::Amend => "amend",
        }
    }
}

/// Where a correction of a closed period is booked: the account's open period of a plan in the
/// same currency. The record itself keeps the closed period's plan, version and period, so it
/// explains like the record it corrects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Booking {
    pub plan: String,
    pub period: String,
}

/// Why a correction record exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Correction {
    pub role: Role,
    pub action: Action,
    /// The correction's idempotency id (a re-rate's id; a void's or amend's id).
    pub id: String,
    pub reason: String,
    /// The token name of the caller (empty when the daemon runs without tokens).
    pub requested_by: String,
    pub at_unix_nanos: i64,
    /// Set when the corrected period was closed: the record counts in this open period instead
    /// (an adjustment; under [`ADJUSTMENT_METER`]).
    pub booked: Option<Booking>,
}

impl Correction {
    pub fn at(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::<chrono::Utc>::from_timestamp_nanos(self.at_unix_nanos)
    }
}

/// What a correction changes in the rated set of one account's period.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Rate every record (of `meter` only, when set) again under the versions now in force.
    Rerate { meter: Option<String> },
    /// Take the event back.
    Void { event_id: String },
    /// Rate the event again with a new quantity and/or attributes (`None`: unchanged; the
    /// attributes given are set, the event's others kept).
    Amend {
        event_id: String,
        quantity: Option<Decimal>,
        attributes: Option<Vec<(String, String)>>,
    },
}

impl Change {
    pub fn action(&self) -> Action {
        match self {
            Change::Rerate { .. } => Action::Rerate,
            Change::Void { .. } => Action::Void,
            Change::Amend { .. } => Action::Amend,
        }
    }

    /// The event a void or amend names.
    pub fn event_id(&self) -> Option<&str> {
        match self {
            Change::Rerate { .. } => None,
            Change::Void { event_id } | Change::Amend { event_id, .. } => Some(event_id),
        }
    }
}
