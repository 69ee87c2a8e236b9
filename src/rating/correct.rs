//! Corrections priced: the current record of each event of one account's (period, plan), and
//! which of them a [`Change`] changes and how ([`correct`]). Pure: the shard reads the records
//! and writes the reversals and replacements (docs/corrections.md).
//!
//! Every correction rates the period's events again in the order they were first rated, from a
//! usage of zero, so a cumulative model (graduated, volume, package, an allowance) re-prices the
//! period as a whole and the current records' charges still sum to the price of the total. An
//! event whose charge, rated quantity or version comes out different is changed: its current
//! record is reversed and the new rating replaces it. Records of meters ratingd writes itself
//! (one-off charges, fees, true-ups) are never rated again; a void may take one back.

use rust_decimal::Decimal;

use crate::domain::correction::Change;
use crate::domain::record::RatedRecord;
use crate::domain::record::RatingInput;
use crate::domain::tariff::Plan;

use super::{RatingError, rate_with};

/// Why a correction cannot be priced; nothing is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorrectError {
    #[error("event {0:?} has no rated record in force in this period (unknown, or already voided)")]
    UnknownEvent(String),
    #[error("event {0:?} is a charge or fee ratingd wrote itself: it can be voided, not amended")]
    NotUsage(String),
    #[error("the amendment of event {0:?} changes neither its quantity nor its attributes")]
    NoChange(String),
    #[error("plan {plan:?} has no version {version}")]
    NoVersion { plan: String, version: u32 },
    #[error("event {event_id:?} cannot be rated again: {error}")]
    Rating { event_id: String, error: RatingError },
}

/// The current record of each event among `records` (one account's records of one (period,
/// plan), in commit order): the last replacement, or the original; an event whose chain ends in a
/// reversal is left out. In the order the events were first rated.
pub fn current(records: impl IntoIterator<Item = RatedRecord>) -> Vec<RatedRecord> {
    let mut slots: Vec<Option<RatedRecord>> = Vec::new();
    let mut by_id: ahash::AHashMap<String, usize> = ahash::AHashMap::new();
    for record in records {
        match by_id.get(&record.event_id) {
            Some(&slot) => {
                slots[slot] = if record.is_reversal() { None } else { Some(record) };
            }
            None => {
                by_id.insert(record.event_id.clone(), slots.len());
                slots.push((!record.is_reversal()).then_some(record));
            }
        }
    }
    slots.into_iter().flatten().collect()
}

/// One event a correction changes: the index of its current record, and its new rating (`None`
/// when it is voided). The new record has no `correction` yet: the writer adds it.
pub type Revision = (usize, Option<RatedRecord>);

/// Rates `current` (from [`current`]) again with `change` applied and returns the events whose
/// rating changes. A re-rate rates the selected meter's records under the versions in force at
/// their times; a void or amend keeps every other record's own version (only its usage before
/// moves), and rates the amended event under the version in force at its time.
pub fn correct(plan: &Plan, current: &[RatedRecord], change: &Change) -> Result<Vec<Revision>, CorrectError> {
    let target = change.event_id();
    if let Some(id) = target
        && !current.iter().any(|r| r.event_id == id)
    {
        return Err(CorrectError::UnknownEvent(id.to_string()));
    }
    let mut usage: Vec<(&str, Decimal)> = Vec::new();
    let mut out = Vec::new();
    for (i, r) in current.iter().enumerate() {
        let is_target = target == Some(r.event_id.as_str());
        if r.origin().is_own() {
            match change {
                Change::Void { .. } if is_target => out.push((i, None)),
                Change::Amend { .. } if is_target => return Err(CorrectError::NotUsage(r.event_id.clone())),
                _ => {}
            }
            continue;
        }
        if is_target && matches!(change, Change::Void { .. }) {
            // Its usage no longer counts: the events after it move down.
            out.push((i, None));
            continue;
        }
        let (quantity, attributes) = match change {
            Change::Amend {
                quantity, attributes, ..
            } if is_target => {
                let q = quantity.unwrap_or(r.quantity);
                let mut a = r.attributes.clone();
                for (key, value) in attributes.iter().flatten() {
                    match a.iter_mut().find(|(k, _)| k == key) {
                        Some((_, v)) => v.clone_from(value),
                        None => a.push((key.clone(), value.clone())),
                    }
                }
                if q == r.quantity && a == r.attributes {
                    return Err(CorrectError::NoChange(r.event_id.clone()));
                }
                (q, a)
            }
            _ => (r.quantity, r.attributes.clone()),
        };
        let in_force = match change {
            Change::Rerate { meter } => meter.as_deref().is_none_or(|m| m == r.meter),
            _ => is_target,
        };
        let version = if in_force {
            plan.version_at(r.at()).ok_or_else(|| CorrectError::Rating {
                event_id: r.event_id.clone(),
                error: RatingError::NoVersion {
                    plan: plan.id.clone(),
                    at: r.at(),
                },
            })?
        } else {
            plan.version(r.version).ok_or_else(|| CorrectError::NoVersion {
                plan: plan.id.clone(),
                version: r.version,
            })?
        };
        let before = usage
            .iter()
            .find(|(m, _)| *m == r.meter)
            .map_or(Decimal::ZERO, |(_, u)| *u);
        let input = RatingInput {
            meter: &r.meter,
            quantity,
            at: r.at(),
            attributes: &attributes,
            period_usage: before,
            subscription_discount: r.subscription_discount,
        };
        let rated = rate_with(plan, version, &input).map_err(|error| CorrectError::Rating {
            event_id: r.event_id.clone(),
            error,
        })?;
        match usage.iter_mut().find(|(m, _)| *m == r.meter) {
            Some((_, u)) => *u += rated.rated_quantity,
            None => usage.push((&r.meter, rated.rated_quantity)),
        }
        let changed = is_target
            || rated.charge != r.charge
            || rated.rated_quantity != r.rated_quantity
            || version.number != r.version;
        if changed {
            out.push((
                i,
                Some(RatedRecord {
                    quantity,
                    attributes,
                    version: version.number,
                    period_usage_before: before,
                    rated_quantity: rated.rated_quantity,
                    charge: rated.charge,
                    correction: None,
                    ..r.clone()
                }),
            ));
        }
    }
    Ok(out)
}

/// The reversal of `record`: the same rating with quantity, rated quantity and charge negated.
pub fn reversal_of(record: &RatedRecord) -> RatedRecord {
    RatedRecord {
        quantity: -record.quantity,
        rated_quantity: -record.rated_quantity,
        charge: -record.charge,
        correction: None,
        ..record.clone()
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use rust_decimal_macros::dec;

    use super::*;
    use crate::domain::correction::{Action, Correction, Role};
    use crate::domain::tariff_file::parse_catalogue;
    use crate::rating::rate;

    const VOICE: &str = r#"
[plans.versions.meters.voice]
model = "per_unit"
per = 60
price = "0.60"
duration = true
increments = { first = 60, next = 1 }
connect_fee = "0.05"
bands = [
  { name = "peak", factor = "1", windows = [{ days = ["mon-sun"], from = "00:00", to = "18:00" }] },
  { name = "off-peak", factor = "0.5", windows = [{ days = ["mon-sun"], from = "18:00", to = "24:00" }] },
]
"#;

    /// Prices entered wrong in version 1, fixed by version 2 from the same date: a per-unit meter
    /// (0.10, fixed to 0.01) and a volume meter (10 each up to 100 units, then 8 each, fixed to 7
    /// each); and a per-minute voice meter with a connect fee, 60/1 increments and an off-peak
    /// band from 18:00 at half price, the same in both.
    fn plans() -> String {
        let version = |extra: &str, price: &str, tier: &str| {
            format!(
                "[[plans.versions]]\neffective_from = \"2026-01-01T00:00:00Z\"\n{extra}[plans.versions.meters.api]\nmodel = \"per_unit\"\nprice = \"{price}\"\n\
                 [plans.versions.meters.storage]\nmodel = \"volume\"\ntiers = [{{ up_to = \"100\", price = \"10\" }}, {{ price = \"{tier}\" }}]\n{VOICE}"
            )
        };
        format!(
            "[[plans]]\nid = \"p\"\ncurrency = \"EUR\"\ntime_zone = \"UTC\"\nrounding = {{ places = 2, mode = \"half-up\" }}\n{}{}",
            version("", "0.10", "8"),
            version("supersedes = 1\n", "0.01", "7")
        )
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// Rates events in order under `version` (as ingest did before the fix), as records.
    fn rated(plan: &Plan, version: u32, events: &[(&str, &str, Decimal, &str)]) -> Vec<RatedRecord> {
        let mut usage: Vec<(String, Decimal)> = Vec::new();
        let v = plan.version(version).unwrap();
        events
            .iter()
            .map(|(id, meter, quantity, time)| {
                let before = usage
                    .iter()
                    .find(|(m, _)| m == meter)
                    .map_or(Decimal::ZERO, |(_, u)| *u);
                let input = RatingInput {
                    meter,
                    quantity: *quantity,
                    at: at(time),
                    attributes: &[],
                    period_usage: before,
                    subscription_discount: None,
                };
                let r = rate_with(plan, v, &input).unwrap();
                match usage.iter_mut().find(|(m, _)| m == meter) {
                    Some((_, u)) => *u += r.rated_quantity,
                    None => usage.push((meter.to_string(), r.rated_quantity)),
                }
                RatedRecord {
                    content: 0,
                    event_id: id.to_string(),
                    account_id: "a".into(),
                    meter: meter.to_string(),
                    quantity: *quantity,
                    timestamp_unix_nanos: at(time).timestamp_nanos_opt().unwrap(),
                    attributes: Vec::new(),
                    plan: "p".into(),
                    version,
                    period: "2026-11".into(),
                    period_usage_before: before,
                    subscription_discount: None,
                    rated_quantity: r.rated_quantity,
                    charge: r.charge,
                    correction: None,
                    as_sent: None,
                }
            })
            .collect()
    }

    /// Applies revisions as the shard writes them: reversal, then replacement.
    fn apply(records: &mut Vec<RatedRecord>, current: &[RatedRecord], revisions: Vec<Revision>) {
        let c = |role| {
            Some(Correction {
                role,
                action: Action::Rerate,
                id: "x".into(),
                reason: "r".into(),
                requested_by: String::new(),
                at_unix_nanos: 0,
                booked: None,
            })
        };
        for (i, new) in revisions {
            records.push(RatedRecord {
                correction: c(Role::Reversal),
                ..reversal_of(&current[i])
            });
            if let Some(new) = new {
                records.push(RatedRecord {
                    correction: c(Role::Replacement),
                    ..new
                });
            }
        }
    }

    fn sum(records: &[RatedRecord]) -> Decimal {
        records.iter().map(|r| r.charge).sum()
    }

    #[test]
    fn the_superseding_version_is_in_force_and_the_old_one_still_explains() {
        let catalogue = parse_catalogue(&plans()).unwrap();
        let plan = catalogue.plan("p").unwrap();
        assert_eq!(plan.version_at(at("2026-11-03T10:00:00Z")).unwrap().number, 2);
        let old = rated(plan, 1, &[("e1", "api", dec!(1000), "2026-11-03T10:00:00Z")]);
        assert_eq!(old[0].charge, dec!(100.000000000));
        // The stored record still rates to its stored charge under its own version.
        assert_eq!(crate::rating::rerate(plan, &old[0]).unwrap().charge, dec!(100));
    }

    /// A per-unit price fix: 1,000 calls at 0.10 (100.00) become 1,000 at 0.01 (10.00).
    #[test]
    fn a_per_unit_price_fix_reverses_and_replaces_each_record() {
        let catalogue = parse_catalogue(&plans()).unwrap();
        let plan = catalogue.plan("p").unwrap();
        let mut records = rated(
            plan,
            1,
            &[
                ("e1", "api", dec!(1000), "2026-11-03T10:00:00Z"),
                ("e2", "api", dec!(500), "2026-11-04T10:00:00Z"),
            ],
        );
        assert_eq!(sum(&records), dec!(150));
        let now = current(records.clone());
        let revisions = correct(plan, &now, &Change::Rerate { meter: None }).unwrap();
        assert_eq!(revisions.len(), 2);
        apply(&mut records, &now, revisions);
        assert_eq!(sum(&records), dec!(15), "10.00 + 5.00");
        let after = current(records.clone());
        assert!(after.iter().all(|r| r.version == 2));
        // A second re-rate finds nothing to change.
        assert!(
            correct(plan, &after, &Change::Rerate { meter: None })
                .unwrap()
                .is_empty()
        );
    }

    /// Volume pricing: 60 + 60 units reach the 8 tier (120 x 8 = 960, the second record's
    /// marginal charge 960 - 600 = 360). Voiding the first leaves 60 units at 10 = 600: the
    /// second record is re-priced from 360 to 600, and the total is the price of the new total.
    #[test]
    fn a_void_moves_the_account_back_below_a_volume_tier() {
        let catalogue = parse_catalogue(&plans()).unwrap();
        let plan = catalogue.plan("p").unwrap();
        let mut records = rated(
            plan,
            1,
            &[
                ("s1", "storage", dec!(60), "2026-11-03T10:00:00Z"),
                ("s2", "storage", dec!(60), "2026-11-04T10:00:00Z"),
            ],
        );
        assert_eq!(records[1].charge, dec!(360));
        assert_eq!(sum(&records), dec!(960));
        let now = current(records.clone());
        let revisions = correct(plan, &now, &Change::Void { event_id: "s1".into() }).unwrap();
        assert_eq!(revisions.len(), 2, "s1 voided, s2 re-priced");
        assert!(revisions[0].1.is_none());
        let s2 = revisions[1].1.clone().unwrap();
        assert_eq!((s2.period_usage_before, s2.charge), (dec!(0), dec!(600)));
        apply(&mut records, &now, revisions);
        assert_eq!(sum(&records), dec!(600));
        let after = current(records.clone());
        assert_eq!(after.len(), 1);
        // The voided event cannot be voided or amended again.
        assert_eq!(
            correct(plan, &after, &Change::Void { event_id: "s1".into() }),
            Err(CorrectError::UnknownEvent("s1".into()))
        );
    }

    /// A volume-tier price fix re-prices the period: 60 + 60 units at the 8 tier (960; the second
    /// record 960 - 600 = 360) become 120 x 7 = 840. The first record is 600 under both versions
    /// (below the tier), yet it is rated again under version 2 (its version changes); the
    /// second becomes 840 - 600 = 240. The records in force sum to the price of the total.
    #[test]
    fn a_volume_tier_price_fix_reprices_the_period() {
        let catalogue = parse_catalogue(&plans()).unwrap();
        let plan = catalogue.plan("p").unwrap();
        let mut records = rated(
            plan,
            1,
            &[
                ("s1", "storage", dec!(60), "2026-11-03T10:00:00Z"),
                ("s2", "storage", dec!(60), "2026-11-04T10:00:00Z"),
            ],
        );
        assert_eq!(sum(&records), dec!(960));
        let now = current(records.clone());
        let revisions = correct(plan, &now, &Change::Rerate { meter: None }).unwrap();
        let charges: Vec<Decimal> = revisions.iter().map(|(_, r)| r.as_ref().unwrap().charge).collect();
        assert_eq!(charges, [dec!(600), dec!(240)]);
        apply(&mut records, &now, revisions);
        assert_eq!(sum(&records), dec!(840));
        let whole = rate(
            plan,
            &RatingInput {
                meter: "storage",
                quantity: dec!(120),
                at: at("2026-11-04T10:00:00Z"),
                attributes: &[],
                period_usage: Decimal::ZERO,
                subscription_discount: None,
            },
        )
        .unwrap();
        assert_eq!(whole.charge, sum(&current(records)));
    }

    /// An amend across a band: a call at 17:58 of 60 s (peak: 0.05 + 0.60 = 0.65) amended to
    /// 300 s runs 120 s at peak and 180 s off-peak: 0.05 + 120/60 x 0.60 + 180/60 x 0.30 = 2.15.
    #[test]
    fn an_amend_across_a_time_of_day_band_is_rated_at_the_events_time() {
        let catalogue = parse_catalogue(&plans()).unwrap();
        let plan = catalogue.plan("p").unwrap();
        let mut records = rated(plan, 2, &[("c1", "voice", dec!(60), "2026-11-03T17:58:00Z")]);
        assert_eq!(records[0].charge, dec!(0.65));
        let now = current(records.clone());
        let change = Change::Amend {
            event_id: "c1".into(),
            quantity: Some(dec!(300)),
            attributes: None,
        };
        let revisions = correct(plan, &now, &change).unwrap();
        let new = revisions[0].1.clone().unwrap();
        assert_eq!(new.charge, dec!(2.15));
        // The same as rating the amended event afresh.
        let fresh = rate(
            plan,
            &RatingInput {
                meter: "voice",
                quantity: dec!(300),
                at: at("2026-11-03T17:58:00Z"),
                attributes: &[],
                period_usage: Decimal::ZERO,
                subscription_discount: None,
            },
        )
        .unwrap();
        assert_eq!(fresh.charge, new.charge);
        apply(&mut records, &now, revisions);
        assert_eq!(sum(&records), dec!(2.15));
        // An amendment to the same quantity changes nothing and is refused.
        let after = current(records);
        let same = Change::Amend {
            event_id: "c1".into(),
            quantity: Some(dec!(300)),
            attributes: None,
        };
        assert_eq!(correct(plan, &after, &same), Err(CorrectError::NoChange("c1".into())));
    }

    #[test]
    fn a_rerate_of_one_meter_leaves_the_others() {
        let catalogue = parse_catalogue(&plans()).unwrap();
        let plan = catalogue.plan("p").unwrap();
        let records = rated(
            plan,
            1,
            &[
                ("e1", "api", dec!(10), "2026-11-03T10:00:00Z"),
                ("c1", "voice", dec!(60), "2026-11-03T10:00:00Z"),
            ],
        );
        let now = current(records);
        let change = Change::Rerate {
            meter: Some("voice".into()),
        };
        // Voice did not change between the versions, but its version number does.
        let revisions = correct(plan, &now, &change).unwrap();
        assert_eq!(revisions.len(), 1);
        assert_eq!(now[revisions[0].0].meter, "voice");
        assert_eq!(revisions[0].1.as_ref().unwrap().charge, now[1].charge);
    }

    #[test]
    fn a_negative_amended_quantity_is_refused() {
        let catalogue = parse_catalogue(&plans()).unwrap();
        let plan = catalogue.plan("p").unwrap();
        let now = current(rated(plan, 2, &[("e1", "api", dec!(10), "2026-11-03T10:00:00Z")]));
        let change = Change::Amend {
            event_id: "e1".into(),
            quantity: Some(dec!(-1)),
            attributes: None,
        };
        assert!(matches!(correct(plan, &now, &change), Err(CorrectError::Rating { .. })));
    }
}
