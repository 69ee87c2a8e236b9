//! Period-cumulative models (graduated, volume, package): an event is charged the difference of
//! the period's price after and before it, so a period's record charges telescope to the price of
//! its total whatever the order and batching of arrival.

use rust_decimal::Decimal;

use super::{Allowance, Cumulative, Discounts, Explanation, ModelKind, RatingError, RatingInput, TierStep};
use crate::domain::money::{Inexact, ceil_div, exact_add, exact_mul, exact_sub, round_quotient};
use crate::domain::tariff::{Model, Tier};

pub(super) fn rate_cumulative(
    model: &Model,
    per: u32,
    included: Decimal,
    input: &RatingInput<'_>,
    discounts: &Discounts,
    explanation: &mut Explanation,
) -> Result<Decimal, RatingError> {
    let before = input.period_usage;
    let after = exact_add(before, input.quantity)?;
    let billable = |usage: Decimal| -> Result<Decimal, Inexact> { Ok(exact_sub(usage, included)?.max(Decimal::ZERO)) };
    let (b0, b1) = (billable(before)?, billable(after)?);
    if !included.is_zero() {
        let free = exact_sub(input.quantity, exact_sub(b1, b0)?)?;
        explanation.allowance = Some(Allowance {
            included,
            used_before: before,
            free,
        });
    }
    let price_of = |units: Decimal| -> Result<Decimal, Inexact> {
        let exact = period_price(model, units)?;
        round_quotient(discounts.apply(exact)?, per)
    };
    let (price_before, price_after) = (price_of(b0)?, price_of(b1)?);
    let (kind, steps, blocks) = match model {
        Model::Graduated(tiers) => (ModelKind::Graduated, graduated_steps(tiers, b0, b1)?, None),
        Model::Volume(tiers) => {
            let steps = [b0, b1]
                .iter()
                .map(|&u| {
                    let i = volume_tier(tiers, u);
                    TierStep {
                        tier: i,
                        quantity: u,
                        price: tiers[i].price,
                    }
                })
                .collect();
            (ModelKind::Volume, steps, None)
        }
        Model::Package { block_size, .. } => (
            ModelKind::Package,
            Vec::new(),
            Some((ceil_div(b0, *block_size)?, ceil_div(b1, *block_size)?)),
        ),
        Model::PerUnit(_) => unreachable!("per-unit meters are rated by rate_per_unit"),
    };
    explanation.model = kind;
    explanation.numerator = discounts.apply(period_price(model, b1)?)?;
    explanation.cumulative = Some(Box::new(Cumulative {
        usage_before: before,
        usage_after: after,
        steps,
        blocks,
        price_before,
        price_after,
    }));
    Ok(exact_sub(price_after, price_before)?)
}

/// The exact (undiscounted, undivided) price of `units` of a period under a cumulative model.
pub fn period_price(model: &Model, units: Decimal) -> Result<Decimal, Inexact> {
    match model {
        Model::Graduated(tiers) => {
            let mut total = Decimal::ZERO;
            let mut lower = Decimal::ZERO;
            for tier in tiers {
                if units <= lower {
                    break;
                }
                let upper = tier.up_to.map_or(units, |u| u.min(units));
                total = exact_add(total, exact_mul(exact_sub(upper, lower)?, tier.price)?)?;
                lower = upper;
            }
            Ok(total)
        }
        Model::Volume(tiers) => exact_mul(units, tiers[volume_tier(tiers, units)].price),
        Model::Package {
            block_size,
            block_price,
        } => exact_mul(ceil_div(units, *block_size)?, *block_price),
        Model::PerUnit(_) => unreachable!("per-unit meters have no period price"),
    }
}

/// The tier a period quantity reaches: the first whose `up_to` it does not exceed.
fn volume_tier(tiers: &[Tier], units: Decimal) -> usize {
    tiers
        .iter()
        .position(|t| t.up_to.is_none_or(|u| units <= u))
        .unwrap_or(tiers.len() - 1)
}

/// The units of `(b0, b1]` falling into each graduated tier.
fn graduated_steps(tiers: &[Tier], b0: Decimal, b1: Decimal) -> Result<Vec<TierStep>, Inexact> {
    let mut steps = Vec::new();
    let mut lower = Decimal::ZERO;
    for (i, tier) in tiers.iter().enumerate() {
        let upper = tier.up_to;
        let from = b0.max(lower);
        let to = upper.map_or(b1, |u| u.min(b1));
        if to > from {
            steps.push(TierStep {
                tier: i,
                quantity: exact_sub(to, from)?,
                price: tier.price,
            });
        }
        match upper {
            Some(u) if u < b1 => lower = u,
            _ => break,
        }
    }
    Ok(steps)
}
