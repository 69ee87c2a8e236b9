//! The explanation of a charge for people and machines: [`Report`] resolves a compact
//! [`Explanation`] against its plan (plan id, version date, band and tier bounds, the attribute a
//! prefix matched) and prints as text or serializes as JSON.

use std::fmt;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;

use super::{Allowance, Explanation, ModelKind, RateSource};
use crate::domain::money::RECORD_SCALE;
use crate::domain::tariff::{MeterTariff, Model, Plan};
use crate::domain::usage::attribute;

/// A charge explained in full.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub plan: String,
    pub version: u32,
    pub version_effective_from: Option<DateTime<Utc>>,
    pub currency: String,
    pub meter: String,
    pub model: ModelKind,
    pub quantity: Decimal,
    pub rated_quantity: Decimal,
    /// Prices are per this many units.
    pub per: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub increments: Option<IncrementsView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateView>,
    /// Banded events: the rated quantity split by band.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<PartView>,
    /// Per-unit events: `sum((units - free) x price x band factor)`, exact, before the connect
    /// fee, minimum, discounts and division by `per`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_amount: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowance: Option<Allowance>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cumulative: Option<CumulativeView>,
    pub connect_fee: Decimal,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minimum_charge_applied: Option<Decimal>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub discounts: Vec<DiscountView>,
    /// Why a charge looks surprising (a negative volume-tier marginal), when it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The exact charge before rounding, as an expression.
    pub unrounded: String,
    pub rounding: String,
    pub charge: Decimal,
}

#[derive(Debug, Clone, Serialize)]
pub struct IncrementsView {
    pub first: Decimal,
    pub next: Decimal,
}

#[derive(Debug, Clone, Serialize)]
pub struct RateView {
    pub price: Decimal,
    /// `match`, `prefix` or `default`.
    pub source: &'static str,
    pub why: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub band: Option<String>,
    pub factor: Decimal,
    pub start: DateTime<Utc>,
    pub quantity: Decimal,
    pub free: Decimal,
    /// `(quantity - free) x price x factor`, before division by `per`.
    pub amount: Decimal,
}

#[derive(Debug, Clone, Serialize)]
pub struct CumulativeView {
    pub period_usage_before: Decimal,
    pub period_usage_after: Decimal,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<TierView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocks: Option<BlocksView>,
    /// Price of the period before and after this event, discounted and rounded to 9 places.
    pub price_before: Decimal,
    pub price_after: Decimal,
}

#[derive(Debug, Clone, Serialize)]
pub struct TierView {
    /// 1-based tier number.
    pub tier: usize,
    pub above: Decimal,
    pub up_to: Option<Decimal>,
    /// Graduated: the event's units in this tier. Volume: the billable period quantity that
    /// reached this tier (before, then after the event).
    pub quantity: Decimal,
    pub price: Decimal,
}

#[derive(Debug, Clone, Serialize)]
pub struct BlocksView {
    pub block_size: Decimal,
    pub block_price: Decimal,
    pub before: Decimal,
    pub after: Decimal,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiscountView {
    /// `version` or `subscription`.
    pub source: &'static str,
    pub percent: Decimal,
}

impl Report {
    /// Resolves `explanation` (of an event on `meter` with `attributes`) against `plan`.
    pub fn new(plan: &Plan, meter: &str, attributes: &[(String, String)], explanation: &Explanation) -> Report {
        let version = plan.versions.iter().find(|v| v.number == explanation.version);
        let tariff = version.and_then(|v| v.meters.get(meter));
        let e = explanation;
        let mut discounts = Vec::new();
        if let Some(percent) = e.version_discount {
            discounts.push(DiscountView {
                source: "version",
                percent,
            });
        }
        if let Some(percent) = e.subscription_discount {
            discounts.push(DiscountView {
                source: "subscription",
                percent,
            });
        }
        let price = e.rate.as_ref().map_or(Decimal::ZERO, |r| r.price);
        let unrounded = match &e.cumulative {
            Some(c) => format!("{} - {}", c.price_after, c.price_before),
            None if e.per == 1 => e.numerator.normalize().to_string(),
            None => format!("{} / {}", e.numerator.normalize(), e.per),
        };
        Report {
            plan: plan.id.clone(),
            version: e.version,
            version_effective_from: version.map(|v| v.effective_from),
            currency: plan.currency.to_string(),
            meter: meter.to_string(),
            model: e.model,
            quantity: e.quantity,
            rated_quantity: e.rated_quantity,
            per: e.per,
            increments: e.increments.map(|(first, next)| IncrementsView { first, next }),
            rate: e
                .rate
                .as_ref()
                .map(|r| rate_view(tariff, attributes, &r.source, r.price)),
            parts: e.parts.iter().map(|p| part_view(tariff, price, p)).collect(),
            usage_amount: e.rate.as_ref().map(|r| {
                let free = e.allowance.as_ref().map_or(Decimal::ZERO, |a| a.free);
                let plain = (e.rated_quantity - free) * r.price;
                let banded = e
                    .parts
                    .iter()
                    .map(|p| part_view(tariff, r.price, p).amount)
                    .sum::<Decimal>();
                if e.parts.is_empty() {
                    plain.normalize()
                } else {
                    banded.normalize()
                }
            }),
            allowance: e.allowance.clone(),
            cumulative: e.cumulative.as_ref().map(|c| cumulative_view(tariff, c)),
            connect_fee: e.connect_fee,
            minimum_charge_applied: e.minimum_applied,
            discounts,
            note: (e.model == ModelKind::Volume && e.charge.is_sign_negative() && !e.charge.is_zero()).then(|| {
                "volume pricing prices the whole period quantity at the tier it reaches; this event moved the \
                 period into a cheaper tier, so the period costs less than before and this record's charge is \
                 negative"
                    .to_string()
            }),
            unrounded,
            rounding: if e.cumulative.is_some() {
                format!("period prices rounded half-even to {RECORD_SCALE} places, charge is their difference")
            } else {
                format!("rounded once, half-even, to {RECORD_SCALE} places")
            },
            charge: e.charge,
        }
    }
}

fn rate_view(
    tariff: Option<&MeterTariff>,
    attributes: &[(String, String)],
    source: &RateSource,
    price: Decimal,
) -> RateView {
    let per_unit = tariff.and_then(|t| match &t.model {
        Model::PerUnit(p) => Some(p),
        _ => None,
    });
    match source {
        RateSource::Match { rule } => {
            let rule_text = per_unit
                .and_then(|p| p.rates.matches.get(*rule))
                .map(|r| {
                    r.attributes
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            RateView {
                price,
                source: "match",
                why: format!("match rule {} ({rule_text})", rule + 1),
            }
        }
        RateSource::Prefix { len } => {
            let name = per_unit
                .and_then(|p| p.rates.prefix.as_ref())
                .map_or("?", |t| t.attribute.as_str());
            let value = attribute(attributes, name).unwrap_or("");
            let prefix = value.get(..usize::from(*len)).unwrap_or(value);
            RateView {
                price,
                source: "prefix",
                why: format!("longest prefix {prefix:?} of {name}={value:?}"),
            }
        }
        RateSource::Default => RateView {
            price,
            source: "default",
            why: "no match rule or prefix applied".to_string(),
        },
    }
}

fn part_view(tariff: Option<&MeterTariff>, price: Decimal, part: &super::Part) -> PartView {
    let band = tariff.and_then(|t| match &t.model {
        Model::PerUnit(p) => p.bands.as_ref().and_then(|b| b.bands.get(usize::from(part.band))),
        _ => None,
    });
    let factor = band.map_or(Decimal::ONE, |b| b.factor);
    PartView {
        band: Some(band.map_or_else(|| format!("band {}", part.band + 1), |b| b.name.clone())),
        factor,
        start: part.start,
        quantity: part.quantity.normalize(),
        free: part.free.normalize(),
        amount: ((part.quantity - part.free) * price * factor).normalize(),
    }
}

fn cumulative_view(tariff: Option<&MeterTariff>, c: &super::Cumulative) -> CumulativeView {
    let tiers = match tariff.map(|t| &t.model) {
        Some(Model::Graduated(tiers) | Model::Volume(tiers)) => c
            .steps
            .iter()
            .map(|s| TierView {
                tier: s.tier + 1,
                above: if s.tier == 0 {
                    Decimal::ZERO
                } else {
                    tiers[s.tier - 1].up_to.unwrap_or_default()
                },
                up_to: tiers.get(s.tier).and_then(|t| t.up_to),
                quantity: s.quantity,
                price: s.price,
            })
            .collect(),
        _ => Vec::new(),
    };
    let blocks = match (tariff.map(|t| &t.model), c.blocks) {
        (
            Some(Model::Package {
                block_size,
                block_price,
            }),
            Some((before, after)),
        ) => Some(BlocksView {
            block_size: *block_size,
            block_price: *block_price,
            before,
            after,
        }),
        _ => None,
    };
    CumulativeView {
        period_usage_before: c.usage_before,
        period_usage_after: c.usage_after,
        tiers,
        blocks,
        price_before: c.price_before,
        price_after: c.price_after,
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let from = self.version_effective_from.map(|d| d.to_rfc3339()).unwrap_or_default();
        writeln!(
            f,
            "plan      {} version {} (effective {from}), {}",
            self.plan, self.version, self.currency
        )?;
        writeln!(
            f,
            "meter     {} ({}), quantity {}",
            self.meter,
            self.model.as_str(),
            self.quantity
        )?;
        if let Some(inc) = &self.increments {
            writeln!(
                f,
                "increments {}/{}: rated quantity {}",
                inc.first, inc.next, self.rated_quantity
            )?;
        }
        if let Some(rate) = &self.rate {
            writeln!(f, "rate      {} per {} unit(s), {}", rate.price, self.per, rate.why)?;
        }
        for part in &self.parts {
            let band = part
                .band
                .as_deref()
                .map(|b| format!(" band {b} x{}", part.factor))
                .unwrap_or_default();
            let free = if part.free.is_zero() {
                String::new()
            } else {
                format!(", {} free", part.free)
            };
            writeln!(
                f,
                "  part{band} from {}: {} units{free} -> {}",
                part.start.to_rfc3339(),
                part.quantity,
                part.amount
            )?;
        }
        if let Some(amount) = self.usage_amount {
            writeln!(
                f,
                "usage     {amount} (before fee, minimum, discounts, and / {})",
                self.per
            )?;
        }
        if let Some(a) = &self.allowance {
            writeln!(
                f,
                "allowance {} included, {} used before, {} free in this event",
                a.included, a.used_before, a.free
            )?;
        }
        if let Some(c) = &self.cumulative {
            writeln!(
                f,
                "period    usage {} -> {}",
                c.period_usage_before, c.period_usage_after
            )?;
            let volume = self.model == ModelKind::Volume;
            for (i, t) in c.tiers.iter().enumerate() {
                let upper = t.up_to.map(|u| u.to_string()).unwrap_or_else(|| "and more".to_string());
                let tier = format!("tier {} (above {} up to {upper}) at {}", t.tier, t.above, t.price);
                if volume {
                    let when = if i == 0 { "before" } else { "after" };
                    writeln!(f, "  {when}: {} billable units reach {tier}", t.quantity)?;
                } else {
                    writeln!(f, "  {tier}: {} units", t.quantity)?;
                }
            }
            if let Some(b) = &c.blocks {
                writeln!(
                    f,
                    "  blocks of {} at {}: {} -> {}",
                    b.block_size, b.block_price, b.before, b.after
                )?;
            }
            writeln!(f, "  period price {} -> {}", c.price_before, c.price_after)?;
        }
        if !self.connect_fee.is_zero() {
            writeln!(f, "connect fee {}", self.connect_fee)?;
        }
        if let Some(m) = self.minimum_charge_applied {
            writeln!(f, "minimum charge {m} applied")?;
        }
        for d in &self.discounts {
            writeln!(f, "discount  {}% ({})", d.percent, d.source)?;
        }
        if let Some(note) = &self.note {
            writeln!(f, "note      {note}")?;
        }
        writeln!(f, "exact     {}", self.unrounded)?;
        write!(f, "charge    {} {} ({})", self.charge, self.currency, self.rounding)
    }
}
