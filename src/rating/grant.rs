//! Grants of units for a charging session: how many units a budget pays, priced exactly as
//! [`rate`] prices the session's usage at its end (one event from the session's start: one
//! connect fee, increments on the whole duration, bands split from the start, tiers from the
//! period-to-date usage).

use rust_decimal::Decimal;

use super::{RatingError, RatingInput, rate};
use crate::domain::tariff::Plan;

/// Units granted and what the session's usage then costs in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Units granted beyond `used` (zero: not even one unit is affordable).
    pub units: Decimal,
    /// The charge of `used + units`: what the session's reservation holds.
    pub price: Decimal,
}

/// The most units in `[0, requested]` (whole units, or `requested` itself) such that the
/// session's usage of `used + units` costs at most `budget`. `input` is the session's event
/// (its quantity is ignored). Every price is [`rate`]'s, so the grant is exact: a call with a
/// connect fee and 60/1 increments is granted 187 s when 187 s are paid and 188 s are not.
///
/// Prices only grow with the units for every model but a volume tier (whose whole quantity
/// moves to a lower price at a boundary); there the grant is still affordable, though a larger
/// one past the boundary might be too.
pub fn grant(
    plan: &Plan,
    input: &RatingInput<'_>,
    used: Decimal,
    requested: Decimal,
    budget: Decimal,
) -> Result<Grant, RatingError> {
    let price = |units: Decimal| -> Result<Decimal, RatingError> {
        let mut at = *input;
        at.quantity = used + units;
        Ok(rate(plan, &at)?.charge)
    };
    let whole = price(requested)?;
    if whole <= budget {
        return Ok(Grant {
            units: requested,
            price: whole,
        });
    }
    // Binary search over whole units: `lo` is affordable (or zero), `hi` is not.
    let (mut lo, mut hi) = (Decimal::ZERO, requested.floor());
    if price(hi)? <= budget {
        lo = hi;
    } else {
        while hi - lo > Decimal::ONE {
            let mid = ((lo + hi) / Decimal::TWO).floor();
            if price(mid)? <= budget {
                lo = mid;
            } else {
                hi = mid;
            }
        }
    }
    let at_lo = price(lo)?;
    if lo.is_zero() && at_lo > budget {
        // Not even the units already used are paid: nothing more is granted.
        return Ok(Grant {
            units: Decimal::ZERO,
            price: at_lo,
        });
    }
    Ok(Grant {
        units: lo,
        price: at_lo,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::tariff_file::parse_catalogue;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    const VOICE: &str = r#"
[[plans]]
id = "voice"
currency = "EUR"
time_zone = "UTC"
rounding = { places = 2, mode = "half-even" }
billing_period = { kind = "month", anchor_day = 1 }

[[plans.versions]]
effective_from = "2026-01-01T00:00:00Z"

[plans.versions.meters."call_seconds"]
model = "per_unit"
duration = true
per = 60
increments = { first = 60, next = 1 }
connect_fee = "0.10"
price = "0.06"
"#;

    fn input<'a>(at: &str, attributes: &'a [(String, String)]) -> RatingInput<'a> {
        RatingInput {
            meter: "call_seconds",
            quantity: Decimal::ZERO,
            at: at.parse().unwrap(),
            attributes,
            period_usage: Decimal::ZERO,
            subscription_discount: None,
        }
    }

    #[test]
    fn a_call_is_granted_the_seconds_the_budget_pays() {
        let catalogue = parse_catalogue(VOICE).unwrap();
        let plan = catalogue.plan("voice").unwrap();
        let event = input("2026-11-18T10:00:00Z", &[]);
        // 0.10 connect + 0.001 a second, the first minute in full: 0.16 pays 60 s, and each
        // further 0.001 one second: 0.287 pays 187 s (0.10 + 187 x 0.001 = 0.287).
        let g = grant(plan, &event, Decimal::ZERO, d("600"), d("0.287")).unwrap();
        assert_eq!((g.units, g.price), (d("187"), d("0.287000000")));
        let g = grant(plan, &event, Decimal::ZERO, d("600"), d("0.2869")).unwrap();
        assert_eq!(g.units, d("186"));
        // Less than the first increment: nothing.
        let g = grant(plan, &event, Decimal::ZERO, d("600"), d("0.159")).unwrap();
        assert_eq!(g.units, Decimal::ZERO);
        // Everything asked for when it is paid.
        let g = grant(plan, &event, Decimal::ZERO, d("30"), d("1")).unwrap();
        assert_eq!((g.units, g.price), (d("30"), d("0.160000000")));
        // An update: 100 s used, the whole call from its start costs 0.10 + 0.001 x (100 + n).
        let g = grant(plan, &event, d("100"), d("600"), d("0.25")).unwrap();
        assert_eq!((g.units, g.price), (d("50"), d("0.250000000")));
    }
}
