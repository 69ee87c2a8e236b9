//! The projected period-end charge of one plan's part of an open account-period (GetTotals,
//! `ratectl totals`; docs/tariffs.md, "Projected charge"). Only usage grows with time, and only
//! while the account's subscriptions to the plan are in force:
//!
//! ```text
//! projected = usage x covered / elapsed + fees due + true-up + other fixed charges
//! ```
//!
//! - `usage`: the charge of the part's usage records so far;
//! - `covered`: the seconds of the period the subscriptions to the plan cover (the whole period
//!   for a default plan); `elapsed`: the seconds of them up to now. Before any of it has passed,
//!   or once all of it has, usage stays as it is;
//! - `fees due`: every fee prorated over the same windows, in advance (charged already) or in
//!   arrears (charged at the close);
//! - `true-up`: what brings the projected usage and fees up to the prorated minimum commitment;
//! - other fixed charges: one-off charges and credits, and corrections of closed periods booked
//!   into this one, as they are.
//!
//! Exact: one multiplication and one division, rounded half-even to the 9 places of a record's
//! charge.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::proration::{Windows, fees_due, minimum_due, seconds_covered};
use crate::domain::aggregate::PeriodTotals;
use crate::domain::money::{exact_mul, round_quotient};
use crate::domain::origin::Origin;
use crate::domain::period::Period;
use crate::domain::tariff::Plan;

/// The projection of `part` (of `plan`, in `period`) at `now`, given the account's windows of
/// subscription to the plan (empty: the default plan, in force the whole period).
pub fn projected(plan: &Plan, part: &PeriodTotals, windows: &Windows, period: &Period, now: DateTime<Utc>) -> Decimal {
    let whole = [(period.start, None)];
    let windows = if windows.is_empty() { &whole[..] } else { windows };
    let (mut usage, mut fees, mut trued_up) = (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO);
    for m in &part.meters {
        match Origin::of_meter(&m.meter) {
            Origin::Usage => usage += m.charge,
            Origin::Fee => fees += m.charge,
            Origin::Minimum => trued_up += m.charge,
            Origin::Charge | Origin::Adjustment => {}
        }
    }
    // One-off charges and credits, and corrections of closed periods booked here.
    let other = part.total_charge - usage - fees - trued_up;
    let covered = seconds_covered(windows, period.start, period.end);
    let elapsed = seconds_covered(windows, period.start, now.min(period.end));
    let usage = extrapolated(usage, covered, elapsed);
    let fees: Decimal = fees_due(plan, windows, period).iter().map(|f| f.due).sum();
    let true_up =
        minimum_due(plan, windows, period).map_or(Decimal::ZERO, |m| (m.due - usage - fees).max(Decimal::ZERO));
    usage + fees + true_up + other
}

/// `usage x covered / elapsed`, exact to 9 places; `usage` itself when nothing or everything of
/// the covered time has passed.
fn extrapolated(usage: Decimal, covered: i64, elapsed: i64) -> Decimal {
    if elapsed <= 0 || elapsed >= covered {
        return usage;
    }
    let Ok(elapsed) = u32::try_from(elapsed) else {
        return usage;
    };
    exact_mul(usage, Decimal::from(covered))
        .and_then(|n| round_quotient(n, elapsed))
        .unwrap_or(usage)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::TimeZone;

    use super::*;
    use crate::domain::origin::{CHARGE_METER, fee_meter};
    use crate::domain::tariff_file::parse_catalogue;

    /// A month of 30 days (November 2026), a fee in advance, one in arrears and a minimum.
    const PLANS: &str = r#"
[[plans]]
id = "team"
currency = "USD"
time_zone = "UTC"
rounding = { places = 2, mode = "half-even" }
[[plans.versions]]
effective_from = "2026-01-01T00:00:00Z"
minimum = "100"
fees = [
  { name = "platform", amount = "49.00", billing = "in_advance" },
  { name = "support", amount = "20.00", billing = "in_arrears" },
]
[plans.versions.meters."api.requests"]
model = "per_unit"
price = "0.0012"
"#;

    fn utc(day: u32, hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, day, hour, 0, 0).unwrap()
    }

    /// The projection of the team plan's November part holding `charges` (meter, charge), for a
    /// subscription from the 5th, on the 18th at noon.
    fn project(charges: &[(&str, &str)]) -> Decimal {
        let catalogue = parse_catalogue(PLANS).unwrap();
        let plan = catalogue.plan("team").unwrap();
        let period = plan.period.period_of(plan.time_zone, utc(18, 12));
        let mut part = PeriodTotals::new(
            Arc::from("acme"),
            Arc::from(period.label.as_str()),
            Arc::from("team"),
            plan.currency,
            plan.rounding,
        );
        for (meter, charge) in charges {
            part.add(meter, Decimal::ONE, Decimal::ONE, charge.parse().unwrap());
        }
        projected(plan, &part, &[(utc(5, 0), None)], &period, utc(18, 12))
    }

    /// Figures by hand. Covered: the 5th to the end, 26 days (2,246,400 s); elapsed by the 18th
    /// noon: 13.5 days (1,166,400 s). Fees due over 26 of 30 days: platform 42.466666667,
    /// support 17.333333333 (59.800000000); minimum 86.666666667.
    #[test]
    fn only_usage_is_extrapolated_over_the_time_subscribed() {
        let platform = fee_meter("platform");
        // Nothing but the fee in advance: the fees come to 59.80 (support accrues), below the
        // prorated minimum: the period is projected at the minimum, 86.666666667.
        assert_eq!(project(&[(&platform, "42.466666667")]).to_string(), "86.666666667");
        // With usage of 60.00 so far: 60 x 2,246,400 / 1,166,400 = 115.555555556, plus the
        // fees 59.80 and a one-off charge of 10 as it is: 185.355555556.
        let busy = [
            (platform.as_str(), "42.466666667"),
            ("api.requests", "60"),
            (CHARGE_METER, "10"),
        ];
        assert_eq!(project(&busy).to_string(), "185.355555556");
        // Little usage: 6 x 2,246,400 / 1,166,400 = 11.555555556; with the fees 71.355555556, so
        // the true-up to the minimum is 15.311111111; the one-off charge is apart from it.
        let quiet = [
            (platform.as_str(), "42.466666667"),
            ("api.requests", "6"),
            (CHARGE_METER, "10"),
        ];
        assert_eq!(project(&quiet).to_string(), "96.666666667");
    }

    #[test]
    fn nothing_is_extrapolated_before_or_after_the_time_subscribed() {
        assert_eq!(extrapolated(Decimal::from(7), 100, 0), Decimal::from(7));
        assert_eq!(extrapolated(Decimal::from(7), 100, 100), Decimal::from(7));
        assert_eq!(extrapolated(Decimal::from(7), 100, 50).to_string(), "14.000000000");
    }
}
