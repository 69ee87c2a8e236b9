//! Billing periods: calendar month (with an anchor day), week, or day, in the plan's time zone.
//!
//! A period boundary is local midnight in the plan's zone (resolved by [`super::localtime`] when
//! midnight falls into a daylight-saving gap). An event belongs to the period containing its
//! timestamp. Labels follow SPEC section 4: `YYYY-MM` for months anchored on day 1, otherwise the
//! period's first local date `YYYY-MM-DD`.

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, Utc, Weekday};
use chrono_tz::Tz;
use serde::Serialize;

use super::localtime::first_instant_at_or_after;

/// How a plan cuts time into billing periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BillingPeriod {
    /// Calendar month starting on `anchor_day` (1..=31). In a month shorter than the anchor the
    /// period starts on the month's last day.
    Month { anchor_day: u32 },
    /// Seven days starting on `start` at local midnight.
    Week { start: Weekday },
    /// One local calendar day.
    Day,
}

/// One concrete billing period: `[start, end)` in UTC, with its label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Period {
    pub label: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl BillingPeriod {
    /// The period containing `at` for a plan in zone `tz`.
    pub fn period_of(&self, tz: Tz, at: DateTime<Utc>) -> Period {
        let date = at.with_timezone(&tz).date_naive();
        let (first, next) = self.bounds_of(date);
        let midnight = |d: NaiveDate| first_instant_at_or_after(tz, d.and_time(chrono::NaiveTime::MIN));
        Period {
            label: self.label(first),
            start: midnight(first),
            end: midnight(next),
        }
    }

    /// The period whose label is `label`, if the label is one this billing period produces.
    pub fn period_labelled(&self, tz: Tz, label: &str) -> Option<Period> {
        let date = match label.len() {
            7 => NaiveDate::parse_from_str(&format!("{label}-01"), "%Y-%m-%d").ok()?,
            10 => NaiveDate::parse_from_str(label, "%Y-%m-%d").ok()?,
            _ => return None,
        };
        let start = first_instant_at_or_after(tz, date.and_time(chrono::NaiveTime::MIN));
        let period = self.period_of(tz, start);
        (period.label == label).then_some(period)
    }

    /// The first local date of the period holding `date`, and the first date of the next one.
    fn bounds_of(&self, date: NaiveDate) -> (NaiveDate, NaiveDate) {
        match *self {
            BillingPeriod::Month { anchor_day } => {
                let this_month = anchored(date.year(), date.month(), anchor_day);
                let first = if date >= this_month {
                    this_month
                } else {
                    let prev = first_of_month(date) - Months::new(1);
                    anchored(prev.year(), prev.month(), anchor_day)
                };
                let following = first_of_month(first) + Months::new(1);
                (first, anchored(following.year(), following.month(), anchor_day))
            }
            BillingPeriod::Week { start } => {
                let back = (7 + date.weekday().num_days_from_monday() - start.num_days_from_monday()) % 7;
                let first = date - Days::new(u64::from(back));
                (first, first + Days::new(7))
            }
            BillingPeriod::Day => (date, date + Days::new(1)),
        }
    }

    fn label(&self, first: NaiveDate) -> String {
        match *self {
            BillingPeriod::Month { anchor_day: 1 } => first.format("%Y-%m").to_string(),
            _ => first.format("%Y-%m-%d").to_string(),
        }
    }
}

fn first_of_month(date: NaiveDate) -> NaiveDate {
    // Invariant: day 1 exists in every month.
    date.with_day(1).expect("day 1 exists")
}

/// The anchor day in a given month, clamped to the month's last day.
fn anchored(year: i32, month: u32, anchor_day: u32) -> NaiveDate {
    let mut day = anchor_day.clamp(1, 31);
    loop {
        if let Some(date) = NaiveDate::from_ymd_opt(year, month, day) {
            return date;
        }
        day -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn month_in_berlin_starts_at_local_midnight() {
        let p =
            BillingPeriod::Month { anchor_day: 1 }.period_of(chrono_tz::Europe::Berlin, utc("2026-10-31T23:30:00Z"));
        // 23:30 UTC on Oct 31 is 00:30 CET on Nov 1.
        assert_eq!(p.label, "2026-11");
        assert_eq!(p.start, utc("2026-10-31T23:00:00Z"));
        assert_eq!(p.end, utc("2026-11-30T23:00:00Z"));
    }

    #[test]
    fn anchor_31_clamps_to_short_months_and_leap_days() {
        let m = BillingPeriod::Month { anchor_day: 31 };
        let p = m.period_of(chrono_tz::UTC, utc("2028-03-01T00:00:00Z"));
        assert_eq!(p.label, "2028-02-29");
        assert_eq!(p.end, utc("2028-03-31T00:00:00Z"));
        let p = m.period_of(chrono_tz::UTC, utc("2027-02-27T00:00:00Z"));
        assert_eq!(p.label, "2027-01-31");
        assert_eq!(p.end, utc("2027-02-28T00:00:00Z"));
    }

    #[test]
    fn labels_map_back_to_their_periods() {
        let m = BillingPeriod::Month { anchor_day: 1 };
        let p = m.period_labelled(chrono_tz::Europe::Berlin, "2026-11").unwrap();
        assert_eq!(p.start, utc("2026-10-31T23:00:00Z"));
        assert!(m.period_labelled(chrono_tz::Europe::Berlin, "2026-11-05").is_none());
        assert!(m.period_labelled(chrono_tz::Europe::Berlin, "2026-13").is_none());
        let w = BillingPeriod::Week { start: Weekday::Mon };
        assert!(w.period_labelled(chrono_tz::UTC, "2026-11-23").is_some());
        assert!(w.period_labelled(chrono_tz::UTC, "2026-11-24").is_none());
    }

    #[test]
    fn week_and_day() {
        let w = BillingPeriod::Week { start: Weekday::Mon }.period_of(chrono_tz::UTC, utc("2026-11-26T12:00:00Z"));
        assert_eq!(w.label, "2026-11-23");
        assert_eq!(w.end, utc("2026-11-30T00:00:00Z"));
        let d = BillingPeriod::Day.period_of(chrono_tz::America::New_York, utc("2026-03-08T12:00:00Z"));
        // The spring-forward day in New York is 23 hours long.
        assert_eq!(d.label, "2026-03-08");
        assert_eq!(d.end - d.start, chrono::Duration::hours(23));
    }
}
