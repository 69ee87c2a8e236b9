//! Where an event, and so its record, comes from. An agent's usage is rated against the tariff;
//! what ratingd writes itself (one-off charges, recurring fees, minimum-commitment true-ups, and
//! in the totals the corrections of closed periods) carries its amount as its charge. The origin
//! is set once where the event enters (the door, `Admin.AddCharge`, the billing cycle) and read
//! as an enum from there on.
//!
//! On disk, in Redis and in the totals an origin is told by its meter: the reserved names below
//! (a tariff file cannot name a meter starting with `@`). Those names are a lasting format; only
//! [`Origin::of_meter`] reads them back, for records read from the store.

/// The meter of one-off charge records (`Admin.AddCharge`).
pub const CHARGE_METER: &str = "@charge";
/// The event-id prefix of one-off charges (`charge:<id>`); usage events may not use it.
pub const CHARGE_ID_PREFIX: &str = "charge:";
/// The meter of fee records: `@fee:<fee name>`.
pub const FEE_METER_PREFIX: &str = "@fee:";
/// The event-id prefix of fee and true-up records (`fee:<plan>:<period>:<name>:<n>`); usage
/// events may not use it.
pub const FEE_ID_PREFIX: &str = "fee:";
/// The meter of minimum-commitment true-ups.
pub const MINIMUM_METER: &str = "@minimum";
/// The meter under which a closed period's corrections count in the open period's totals: the
/// charge only, so the open period's usage (its tiers and allowances) is not moved by them.
pub const ADJUSTMENT_METER: &str = "@adjustment";

/// The first character of every reserved meter.
const RESERVED: char = '@';

/// Where an event or record comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// An agent's usage (or a charging session's), rated against the tariff.
    Usage,
    /// A one-off charge or credit from `Admin.AddCharge`.
    Charge,
    /// A recurring fee, in advance or in arrears.
    Fee,
    /// A minimum-commitment true-up, written at the close.
    Minimum,
    /// A closed period's correction, booked into an open period.
    Adjustment,
}

impl Origin {
    /// The origin a stored meter stands for.
    pub fn of_meter(meter: &str) -> Origin {
        if !meter.starts_with(RESERVED) {
            return Origin::Usage;
        }
        if meter == CHARGE_METER {
            Origin::Charge
        } else if meter == MINIMUM_METER {
            Origin::Minimum
        } else if meter == ADJUSTMENT_METER {
            Origin::Adjustment
        } else {
            // `@fee:<name>`; no other reserved meter is ever written.
            Origin::Fee
        }
    }

    /// True for what ratingd writes itself: not rated (its amount is its charge), and refused to
    /// its writer rather than kept in suspense.
    pub fn is_own(self) -> bool {
        self != Origin::Usage
    }

    /// True for what the billing cycle writes for a plan it names (fees and true-ups): the
    /// record names its plan in an attribute, and a period's close writes it after its grace.
    pub fn names_its_plan(self) -> bool {
        matches!(self, Origin::Fee | Origin::Minimum)
    }

    /// Its label in explanations and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Origin::Usage => "usage",
            Origin::Charge => "one_off",
            Origin::Fee => "fee",
            Origin::Minimum => "minimum_true_up",
            Origin::Adjustment => "adjustment",
        }
    }
}

/// The meter of the fee `name`.
pub fn fee_meter(name: &str) -> String {
    format!("{FEE_METER_PREFIX}{name}")
}

/// The fee name of a fee meter; `None` for any other meter.
pub fn fee_name(meter: &str) -> Option<&str> {
    meter.strip_prefix(FEE_METER_PREFIX)
}

/// True when a tariff file may not use `name` as a meter or fee name.
pub fn is_reserved(name: &str) -> bool {
    name.starts_with(RESERVED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reserved_meter_reads_back_as_its_origin() {
        assert_eq!(Origin::of_meter("voice.seconds"), Origin::Usage);
        assert_eq!(Origin::of_meter(CHARGE_METER), Origin::Charge);
        assert_eq!(Origin::of_meter(&fee_meter("platform")), Origin::Fee);
        assert_eq!(Origin::of_meter(MINIMUM_METER), Origin::Minimum);
        assert_eq!(Origin::of_meter(ADJUSTMENT_METER), Origin::Adjustment);
        assert_eq!(fee_name("@fee:platform"), Some("platform"));
        assert_eq!(fee_name(MINIMUM_METER), None);
        assert!(!Origin::Usage.is_own() && Origin::Charge.is_own());
        assert!(Origin::Fee.names_its_plan() && Origin::Minimum.names_its_plan());
        assert!(!Origin::Charge.names_its_plan());
        for meter in [CHARGE_METER, FEE_METER_PREFIX, MINIMUM_METER, ADJUSTMENT_METER] {
            assert!(is_reserved(meter), "{meter}");
        }
    }
}
