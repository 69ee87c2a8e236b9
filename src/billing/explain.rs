//! The explanation of a record ratingd wrote itself (not rated: its amount is its charge): a
//! one-off charge or credit, a recurring fee with its proration, or a minimum-commitment
//! true-up. `ExplainRecord` shows it where a usage record shows its rating.

use crate::domain::charge::{self, description_of};
use crate::domain::origin::{Origin, fee_name};
use crate::domain::record::RatedRecord;
use crate::domain::usage::attribute;

/// What an own record is, for machines (`json`) and for people (`text`).
pub struct OwnExplanation {
    pub json: serde_json::Value,
    pub text: String,
}

/// The explanation of `record`, when ratingd wrote it itself; `None` for usage.
pub fn own_record(record: &RatedRecord) -> Option<OwnExplanation> {
    let origin = record.origin();
    let description = description_of(&record.attributes);
    let text = match origin {
        Origin::Usage => return None,
        Origin::Charge => {
            let kind = if record.charge.is_sign_negative() {
                "credit"
            } else {
                "charge"
            };
            let currency = charge::currency_of(&record.attributes);
            format!(
                "one-off {kind} of {} {currency} added through Admin.AddCharge",
                record.charge
            )
        }
        Origin::Minimum => format!("minimum-commitment true-up of {} written at the close", record.charge),
        // Not a record's origin (a closed period's correction keeps its record's meter): its
        // charge is what it is.
        Origin::Adjustment => format!("adjustment of {} booked into this period", record.charge),
        Origin::Fee => {
            let name = fee_name(&record.meter).unwrap_or(&record.meter);
            let billing = attribute(&record.attributes, "billing").unwrap_or("");
            format!("recurring fee {name} ({billing}): {} charged", record.charge)
        }
    };
    let json = serde_json::json!({
        origin.label(): {
            "amount": record.charge.to_string(),
            "description": description,
            "plan": record.plan,
            "period": record.period,
        }
    });
    Some(OwnExplanation {
        json,
        text: format!(
            "{text}, in period {} of plan {:?}: {description}",
            record.period, record.plan
        ),
    })
}
