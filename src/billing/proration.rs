//! Recurring fees and minimums prorated: what an account's subscriptions to a plan owe for one billing period. A fee of
//! the plan version in force when the subscription's part of the period begins is prorated by
//! the second: `amount x seconds in force within the period / seconds in the period`, exact, then
//! rounded once half-even to 9 places. The daemon charges it as records of the reserved meter
//! `@fee:<name>` ([`super::fees`]): in advance from the period's start, in arrears at its close.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::domain::money::{exact_mul, round_quotient};
use crate::domain::origin::fee_meter;
use crate::domain::period::Period;
use crate::domain::tariff::{Billing, Plan};

/// One fee's due amount for a period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeeDue {
    pub name: String,
    pub billing: Billing,
    /// The full amount per period.
    pub amount: Decimal,
    /// Seconds of the period the subscriptions cover.
    pub covered: i64,
    /// Seconds in the period (a month with a daylight-saving change has an hour more or less).
    pub period: i64,
    /// `amount x covered / period`, rounded half-even to 9 places.
    pub due: Decimal,
}

impl FeeDue {
    /// The meter its records use.
    pub fn meter(&self) -> String {
        fee_meter(&self.name)
    }

    /// How it was prorated, for people: `49.00 x 21d 4h / 30d`.
    pub fn proration(&self) -> String {
        if self.covered == self.period {
            return format!("{} for the whole period", self.amount);
        }
        format!("{} x {} / {}", self.amount, span(self.covered), span(self.period))
    }
}

/// Seconds as days, hours, minutes and seconds, leaving out zeros: `21d 4h`.
pub fn span(seconds: i64) -> String {
    let parts = [
        (seconds / 86_400, "d"),
        (seconds % 86_400 / 3_600, "h"),
        (seconds % 3_600 / 60, "m"),
        (seconds % 60, "s"),
    ];
    let text: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if text.is_empty() {
        "0s".to_string()
    } else {
        text.join(" ")
    }
}

/// The minimum commitment of `plan` for `period` given the subscriptions' windows, prorated like a
/// fee (its name is `minimum`), when the version in force where they begin has one.
pub fn minimum_due(plan: &Plan, windows: &Windows, period: &Period) -> Option<FeeDue> {
    let (covered, first) = coverage(windows, period)?;
    let length = u32::try_from((period.end - period.start).num_seconds()).ok()?;
    let minimum = plan.version_at(first)?.minimum?;
    let due = exact_mul(minimum, Decimal::from(covered))
        .and_then(|n| round_quotient(n, length.max(1)))
        .ok()?;
    Some(FeeDue {
        name: "minimum".to_string(),
        billing: Billing::InArrears,
        amount: minimum,
        covered,
        period: i64::from(length),
        due,
    })
}

/// The subscriptions' windows (`from`, `to`; open-ended when `None`) of one account to one plan.
pub type Windows = [(DateTime<Utc>, Option<DateTime<Utc>>)];

/// Seconds of `period` the windows cover, and the first covered instant.
fn coverage(windows: &Windows, period: &Period) -> Option<(i64, DateTime<Utc>)> {
    let mut covered = 0i64;
    let mut first: Option<DateTime<Utc>> = None;
    for (from, to) in windows {
        let start = (*from).max(period.start);
        let end = to.map_or(period.end, |t| t.min(period.end));
        if start < end {
            covered += (end - start).num_seconds();
            first = Some(first.map_or(start, |f| f.min(start)));
        }
    }
    first.map(|f| (covered, f))
}

/// Seconds of [`start`, `end`) the windows cover (windows of one plan never overlap).
pub fn seconds_covered(windows: &Windows, start: DateTime<Utc>, end: DateTime<Utc>) -> i64 {
    if end <= start {
        return 0;
    }
    let bounded = Period {
        label: String::new(),
        start,
        end,
    };
    coverage(windows, &bounded).map_or(0, |(covered, _)| covered)
}

/// The fees `plan` charges for `period` given the windows (`from`, `to`; open-ended when `None`)
/// in which the account's subscriptions to the plan are planned to be in force. Empty when they
/// do not reach into the period or its version has no fees.
pub fn fees_due(plan: &Plan, windows: &Windows, period: &Period) -> Vec<FeeDue> {
    let (Some((covered, first)), Ok(length)) = (
        coverage(windows, period),
        u32::try_from((period.end - period.start).num_seconds()),
    ) else {
        return Vec::new();
    };
    let Some(version) = plan.version_at(first) else {
        return Vec::new();
    };
    version
        .fees
        .iter()
        .filter_map(|fee| {
            let due = exact_mul(fee.amount, Decimal::from(covered))
                .and_then(|n| round_quotient(n, length.max(1)))
                .ok()?;
            Some(FeeDue {
                name: fee.name.clone(),
                billing: fee.billing,
                amount: fee.amount,
                covered,
                period: i64::from(length),
                due,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::domain::tariff_file::parse_catalogue;

    const PLANS: &str = r#"
[[plans]]
id = "team"
currency = "USD"
time_zone = "UTC"
rounding = { places = 2, mode = "half-even" }
[[plans.versions]]
effective_from = "2026-01-01T00:00:00Z"
fees = [{ name = "platform", amount = "49.00", billing = "in_advance" }]

[[plans]]
id = "berlin"
currency = "EUR"
time_zone = "Europe/Berlin"
rounding = { places = 2, mode = "half-up" }
[[plans.versions]]
effective_from = "2026-01-01T00:00:00Z"
fees = [{ name = "line", amount = "31.00", billing = "in_arrears" }]
"#;

    fn utc(m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, m, d, h, 0, 0).unwrap()
    }

    fn due(plan: &str, windows: &[(DateTime<Utc>, Option<DateTime<Utc>>)], at: DateTime<Utc>) -> Vec<FeeDue> {
        let catalogue = parse_catalogue(PLANS).unwrap();
        let plan = catalogue.plan(plan).unwrap();
        let period = plan.period.period_of(plan.time_zone, at);
        fees_due(plan, windows, &period)
    }

    #[test]
    fn a_fee_is_prorated_by_the_second_at_start_end_and_change() {
        // November has 30 days: 2,592,000 s.
        let whole = due("team", &[(utc(1, 1, 0), None)], utc(11, 5, 0));
        assert_eq!(
            (whole[0].due.to_string(), whole[0].proration()),
            ("49.000000000".into(), "49.00 for the whole period".into())
        );
        // From the 10th: 21 days of 30: 49 x 21/30 = 34.3.
        let start = due("team", &[(utc(11, 10, 0), None)], utc(11, 15, 0));
        assert_eq!(
            (start[0].due.to_string(), start[0].proration()),
            ("34.300000000".into(), "49.00 x 21d / 30d".into())
        );
        // Until the 20th 06:00: 19 days 6 hours: 49 x 1,663,200 / 2,592,000 = 31.4416666...
        let end = due("team", &[(utc(1, 1, 0), Some(utc(11, 20, 6)))], utc(11, 15, 0));
        assert_eq!(
            (end[0].due.to_string(), end[0].proration()),
            ("31.441666667".into(), "49.00 x 19d 6h / 30d".into())
        );
        // A change of plan: the part before it and the part after it (two windows of one plan
        // that leave a gap) cover 10 + 5 days: 49 x 15/30 = 24.5.
        let two = due(
            "team",
            &[(utc(11, 1, 0), Some(utc(11, 11, 0))), (utc(11, 26, 0), None)],
            utc(11, 15, 0),
        );
        assert_eq!(two[0].due.to_string(), "24.500000000");
        // Not in the period: nothing.
        assert!(due("team", &[(utc(12, 1, 0), None)], utc(11, 15, 0)).is_empty());
    }

    #[test]
    fn a_month_with_a_daylight_saving_change_has_its_own_length() {
        // October 2026 in Berlin: 31 days and the hour the clocks go back (25 Oct): 2,682,000 s.
        // From 16 Oct 00:00 Berlin (15 Oct 22:00 UTC) to the end (31 Oct 23:00 UTC): 16 days and
        // 1 hour, 1,386,000 s: 31 x 1,386,000 / 2,682,000 = 16.020134228187...
        let fees = due("berlin", &[(utc(10, 15, 22), None)], utc(10, 20, 0));
        assert_eq!(fees[0].period, 2_682_000);
        assert_eq!(fees[0].covered, 1_386_000);
        assert_eq!(fees[0].due.to_string(), "16.020134228");
        assert_eq!(fees[0].proration(), "31.00 x 16d 1h / 31d 1h");
        // March 2026 loses an hour (29 Mar): 2,674,800 s.
        let march = due("berlin", &[(utc(1, 1, 0), None)], utc(3, 20, 0));
        assert_eq!(
            (march[0].period, march[0].due.to_string()),
            (2_674_800, "31.000000000".into())
        );
    }
}
