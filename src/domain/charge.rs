//! One-off charges and credits (`Admin.AddCharge`). A charge travels the events' path as an event
//! of the reserved meter [`CHARGE_METER`]: deduped on its id (in the account's event-id space as
//! `charge:<id>`), rated into the period of the subscription in force at its time that bills in
//! its currency, kept as a rated record, acknowledged after the fsync. So it has the events'
//! exactly-once guarantee, crash safety, totals, Redis figures, statements and export, and a
//! resend with other content is a CONFLICT like an event's.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::money::Currency;
use super::origin::{CHARGE_ID_PREFIX, CHARGE_METER, Origin};
use super::usage::{RawEvent, UsageEvent, attribute};

const CURRENCY: &str = "currency";
const DESCRIPTION: &str = "description";

/// A one-off charge (positive) or credit (negative), checked by the Admin API.
#[derive(Debug, Clone, PartialEq)]
pub struct OneOffCharge {
    pub account_id: String,
    pub charge_id: String,
    pub amount: Decimal,
    pub currency: Currency,
    pub description: String,
    pub at: DateTime<Utc>,
}

impl OneOffCharge {
    /// The id of its event (and record): `charge:<charge id>`.
    pub fn event_id(&self) -> String {
        format!("{CHARGE_ID_PREFIX}{}", self.charge_id)
    }

    fn attributes(&self) -> Vec<(String, String)> {
        vec![
            (CURRENCY.to_string(), self.currency.to_string()),
            (DESCRIPTION.to_string(), self.description.clone()),
        ]
    }

    /// The event as received, for its content hash (a resend with the same content is a
    /// duplicate): the amount as whole units and nanos, both negative for a credit.
    pub fn raw(&self) -> RawEvent {
        self.event().to_raw()
    }

    /// The event rated into the totals: the amount as its quantity.
    pub fn event(&self) -> UsageEvent {
        UsageEvent {
            event_id: self.event_id(),
            account_id: self.account_id.clone(),
            meter: CHARGE_METER.to_string(),
            quantity: self.amount,
            timestamp: self.at,
            attributes: self.attributes(),
            origin: Origin::Charge,
        }
    }
}

/// The currency a charge event or record names.
pub fn currency_of(attributes: &[(String, String)]) -> &str {
    attribute(attributes, CURRENCY).unwrap_or("")
}

/// The description a charge event or record carries.
pub fn description_of(attributes: &[(String, String)]) -> &str {
    attribute(attributes, DESCRIPTION).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_raw_amount_keeps_sign_and_nanos() {
        let charge = |amount: &str| OneOffCharge {
            account_id: "a".into(),
            charge_id: "c".into(),
            amount: amount.parse().unwrap(),
            currency: "EUR".parse().unwrap(),
            description: String::new(),
            at: DateTime::<Utc>::from_timestamp(0, 0).unwrap(),
        };
        assert_eq!(charge("12.50").raw().quantity, Some((12, 500_000_000)));
        assert_eq!(charge("-0.25").raw().quantity, Some((0, -250_000_000)));
        assert_eq!(charge("-3").raw().quantity, Some((-3, 0)));
        assert_eq!(charge("-3").raw().event_id, "charge:c");
    }
}
