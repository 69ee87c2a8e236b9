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
