//! Statements: invoice-ready line items of one account and period, rebuilt from its rated
//! records. Each record is rated again from its stored inputs twice: as charged, and without
//! discounts, so the discount appears as its own line and subtotal + discount = total exactly.
//! [`sections`] puts one plan's statement per section, checked against the committed totals,
//! with what still accrues in the open period ([`super::accrual`]).

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use chrono::{DateTime, Utc};

use super::part::PartView;
use crate::domain::aggregate::{AccountPeriod, PeriodTotals};
use crate::domain::charge::description_of;
use crate::domain::origin::{CHARGE_ID_PREFIX, Origin, fee_name};
use crate::domain::record::RatedRecord;
use crate::domain::tariff::{Model, Plan};
use crate::domain::usage::attribute;
use crate::pipeline::{Committed, RatingContext};
use crate::rating::{ModelKind, RateSource, RatingInput, RerateError, rate_with, rerate};

/// Why a statement cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum StatementError {
    #[error("plan {0:?} is no longer in the tariff catalogue")]
    PlanGone(String),
    #[error(transparent)]
    Rerate(#[from] RerateError),
    /// The records read back do not sum to the committed totals: one of them cannot be trusted.
    #[error("the records of {account:?} {period:?} sum to {records} but the totals say {totals}")]
    RecordsDisagree {
        account: String,
        period: String,
        records: Decimal,
        totals: Decimal,
    },
}

/// One plan's statement within the period, with its totals and how it is shown.
pub struct Section {
    pub totals: PeriodTotals,
    pub closed: bool,
    pub covered: Option<(DateTime<Utc>, DateTime<Utc>)>,
    pub statement: Statement,
}

/// The sections of the statement of (`account`, `label`): one per plan of `totals`, each built
/// from `records` (the account's records that count in the period, in commit order) and checked
/// against its committed totals, then what accrues and is not charged yet.
pub fn sections(
    context: &RatingContext,
    committed: &Committed,
    account: &str,
    label: &str,
    totals: &AccountPeriod,
    records: &[RatedRecord],
) -> Result<Vec<Section>, StatementError> {
    let mut sections = Vec::with_capacity(totals.parts.len());
    for part in &totals.parts {
        let plan = context
            .catalogue
            .plan(&part.plan)
            .ok_or_else(|| StatementError::PlanGone(part.plan.to_string()))?;
        let of_plan: Vec<RatedRecord> = records
            .iter()
            .filter(|r| *r.booked().0 == *part.plan)
            .cloned()
            .collect();
        let statement = build(plan, &of_plan)?;
        if statement.total != part.total_charge {
            return Err(StatementError::RecordsDisagree {
                account: account.to_string(),
                period: label.to_string(),
                records: statement.total,
                totals: part.total_charge,
            });
        }
        let view = PartView::of(context, committed, part);
        sections.push(Section {
            totals: part.clone(),
            closed: view.closed,
            covered: view.covered,
            statement,
        });
    }
    super::accrual::add_accruing(context, committed, account, label, &mut sections);
    Ok(sections)
}

/// One line: `amount` is `None` for detail lines that explain the line above.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub meter: String,
    pub description: String,
    pub amount: Option<Decimal>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub lines: Vec<Line>,
    pub subtotal: Decimal,
    pub discount: Decimal,
    pub total: Decimal,
}

#[derive(Default)]
struct MeterSum {
    events: u64,
    quantity: Decimal,
    rated: Decimal,
    undiscounted: Decimal,
    charged: Decimal,
    bands: BTreeMap<String, Decimal>,
    tiers: BTreeMap<usize, Decimal>,
    prefixes: BTreeMap<String, Decimal>,
    connect_fees: (u64, Decimal),
    free: Decimal,
    minimums: u64,
    /// For volume and package models: how the period ends (usage, description).
    period_end: (Decimal, String),
}

/// Builds the statement of `records` (one account's records that count in one period under
/// `plan`, in commit order). Corrected events are shown as they stand (their records in force),
/// with a "corrections" section saying what changed them and why; corrections of a closed
/// period booked into this one are lines of their own.
pub fn build(plan: &Plan, records: &[RatedRecord]) -> Result<Statement, RerateError> {
    let (adjustments, own): (Vec<&RatedRecord>, Vec<&RatedRecord>) = records
        .iter()
        .partition(|r| r.correction.as_ref().is_some_and(|c| c.booked.is_some()));
    let corrections = corrections_of(own.iter().copied().filter(|r| r.correction.is_some()));
    let in_force = crate::rating::correct::current(own.into_iter().cloned());
    let mut statement = build_in_force(plan, &in_force)?;
    // Adjustments of closed periods: one line per correction and period corrected.
    let mut adjusted: Vec<(String, Decimal)> = Vec::new();
    for r in adjustments {
        let Some(c) = &r.correction else { continue };
        let text = format!(
            "adjustment of period {} ({} {}, {}): {}",
            r.period,
            c.action.as_str(),
            c.id,
            c.at().format("%Y-%m-%d"),
            c.reason
        );
        match adjusted.iter_mut().find(|(t, _)| *t == text) {
            Some((_, sum)) => *sum += r.charge,
            None => adjusted.push((text, r.charge)),
        }
    }
    let at = statement
        .lines
        .iter()
        .rposition(|l| l.description.starts_with("discount "))
        .unwrap_or(statement.lines.len());
    for (description, amount) in adjusted.into_iter().rev() {
        statement.subtotal += amount;
        statement.total += amount;
        statement.lines.insert(
            at,
            Line {
                meter: String::new(),
                description,
                amount: Some(amount),
            },
        );
    }
    if !corrections.is_empty() {
        statement.lines.push(Line {
            meter: String::new(),
            description: "corrections (included above):".to_string(),
            amount: None,
        });
        statement.lines.extend(corrections.into_iter().map(|description| Line {
            meter: String::new(),
            description,
            amount: None,
        }));
    }
    Ok(statement)
}

/// One line per correction among `records`: what, when, who, the events it changed, the
/// difference it made and why.
fn corrections_of<'a>(records: impl Iterator<Item = &'a RatedRecord>) -> Vec<String> {
    // (id, action, at, by, reason) -> (events reversed, difference)
    type Key = (String, &'static str, String, String, String);
    let mut seen: Vec<(Key, (u64, Decimal))> = Vec::new();
    for r in records {
        let Some(c) = &r.correction else { continue };
        let key = (
            c.id.clone(),
            c.action.as_str(),
            c.at().format("%Y-%m-%d %H:%M UTC").to_string(),
            c.requested_by.clone(),
            c.reason.clone(),
        );
        let entry = match seen.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v,
            None => {
                seen.push((key, (0, Decimal::ZERO)));
                &mut seen.last_mut().expect("pushed above").1
            }
        };
        entry.0 += u64::from(r.is_reversal());
        entry.1 += r.charge;
    }
    seen.into_iter()
        .map(|((id, action, at, by, reason), (events, difference))| {
            let by = if by.is_empty() {
                String::new()
            } else {
                format!(" by {by}")
            };
            format!("  {action} {id} ({at}{by}): {events} events changed, {difference} in all: {reason}")
        })
        .collect()
}

/// The statement of the records in force.
fn build_in_force(plan: &Plan, records: &[RatedRecord]) -> Result<Statement, RerateError> {
    let mut undiscounted_plan = plan.clone();
    for v in &mut undiscounted_plan.versions {
        v.discount_percent = None;
    }
    let mut meters: BTreeMap<String, MeterSum> = BTreeMap::new();
    let mut discounts: BTreeMap<String, ()> = BTreeMap::new();
    // One-off charges and credits, and recurring fees: their own lines, never discounted. A fee's
    // records (its charge and any correction after a subscription change) make one line.
    let mut one_offs: Vec<Line> = Vec::new();
    let mut fees: BTreeMap<String, (Decimal, String)> = BTreeMap::new();
    for r in records {
        let origin = r.origin();
        if let Some(name) = fee_name(&r.meter).filter(|_| origin == Origin::Fee) {
            let billing = attribute(&r.attributes, "billing").unwrap_or("").replace('_', " ");
            let line = format!("fee {name} ({billing}): {}", description_of(&r.attributes));
            let entry = fees.entry(name.to_string()).or_default();
            entry.0 += r.charge;
            entry.1 = line;
            continue;
        }
        if origin == Origin::Minimum {
            one_offs.push(Line {
                meter: String::new(),
                description: format!("minimum commitment true-up: {}", description_of(&r.attributes)),
                amount: Some(r.charge),
            });
            continue;
        }
        if origin == Origin::Charge {
            let id = r.event_id.strip_prefix(CHARGE_ID_PREFIX).unwrap_or(&r.event_id);
            let kind = if r.charge.is_sign_negative() {
                "credit"
            } else {
                "one-off charge"
            };
            one_offs.push(Line {
                meter: String::new(),
                description: format!("{kind} {id}: {}", description_of(&r.attributes)),
                amount: Some(r.charge),
            });
            continue;
        }
        let charged = rerate(plan, r)?;
        let failed = |error| RerateError::Rating {
            event_id: r.event_id.clone(),
            error,
        };
        // Under the record's own version (a later one may supersede it).
        let version = undiscounted_plan.version(r.version).ok_or_else(|| {
            failed(crate::rating::RatingError::NoVersion {
                plan: plan.id.clone(),
                at: r.at(),
            })
        })?;
        let plain = rate_with(
            &undiscounted_plan,
            version,
            &RatingInput {
                subscription_discount: None,
                ..r.rating_input()
            },
        )
        .map_err(failed)?;
        let e = &charged.explanation;
        if let Some(d) = e.version_discount {
            discounts.insert(format!("{d}% (plan version {})", e.version), ());
        }
        if let Some(d) = e.subscription_discount {
            discounts.insert(format!("{d}% (subscription)"), ());
        }
        let m = meters.entry(r.meter.clone()).or_default();
        m.events += 1;
        m.quantity += r.quantity;
        m.rated += r.rated_quantity;
        m.undiscounted += plain.charge;
        m.charged += r.charge;
        if !e.connect_fee.is_zero() {
            m.connect_fees.0 += 1;
            m.connect_fees.1 = e.connect_fee;
        }
        m.minimums += u64::from(e.minimum_applied.is_some());
        if let Some(a) = &e.allowance {
            m.free += a.free;
        }
        let version = plan.versions.iter().find(|v| v.number == e.version);
        let tariff = version.and_then(|v| v.meters.get(&r.meter));
        if let Some(Model::PerUnit(p)) = tariff.map(|t| &t.model) {
            for part in &e.parts {
                let name = p
                    .bands
                    .as_ref()
                    .and_then(|b| b.bands.get(usize::from(part.band)))
                    .map_or("?", |b| b.name.as_str());
                *m.bands.entry(name.to_string()).or_default() += part.quantity - part.free;
            }
            if let (Some(rate), Some(table)) = (&e.rate, &p.rates.prefix) {
                let key = match rate.source {
                    RateSource::Prefix { len } => {
                        let value = crate::domain::usage::attribute(&r.attributes, &table.attribute).unwrap_or("");
                        format!("{} at {}", value.get(..usize::from(len)).unwrap_or(value), rate.price)
                    }
                    RateSource::Match { rule } => format!("rule {} at {}", rule + 1, rate.price),
                    RateSource::Default => format!("other at {}", rate.price),
                };
                *m.prefixes.entry(key).or_default() += r.rated_quantity;
            }
        }
        if let Some(c) = &e.cumulative {
            match e.model {
                ModelKind::Graduated => {
                    for step in &c.steps {
                        *m.tiers.entry(step.tier).or_default() += step.quantity;
                    }
                }
                ModelKind::Volume => {
                    if let Some(after) = c.steps.last().filter(|_| c.usage_after >= m.period_end.0) {
                        m.period_end = (
                            c.usage_after,
                            format!("volume tier {} reached: every unit at {}", after.tier + 1, after.price),
                        );
                    }
                }
                ModelKind::Package => {
                    if let Some((_, blocks)) = c.blocks.filter(|_| c.usage_after >= m.period_end.0) {
                        m.period_end = (c.usage_after, format!("{blocks} started blocks"));
                    }
                }
                ModelKind::PerUnit => {}
            }
        }
    }
    let mut lines = Vec::new();
    let mut subtotal = Decimal::ZERO;
    let mut total = Decimal::ZERO;
    for (meter, m) in &meters {
        subtotal += m.undiscounted;
        total += m.charged;
        lines.push(Line {
            meter: meter.clone(),
            description: format!(
                "{meter}: {} events, quantity {}, rated {}",
                m.events,
                m.quantity.normalize(),
                m.rated.normalize()
            ),
            amount: Some(m.undiscounted),
        });
        let mut detail = |text: String| {
            lines.push(Line {
                meter: meter.clone(),
                description: text,
                amount: None,
            })
        };
        for (prefix, units) in &m.prefixes {
            detail(format!("  destinations {prefix}: {} units", units.normalize()));
        }
        for (band, units) in &m.bands {
            detail(format!("  band {band}: {} units", units.normalize()));
        }
        let tiers = plan.versions.last().and_then(|v| v.meters.get(meter)).map(|t| &t.model);
        for (tier, units) in &m.tiers {
            let price = match tiers {
                Some(Model::Graduated(t)) => t.get(*tier).map(|t| t.price.to_string()).unwrap_or_default(),
                _ => String::new(),
            };
            detail(format!("  tier {} at {price}: {} units", tier + 1, units.normalize()));
        }
        if !m.period_end.1.is_empty() {
            detail(format!("  {}", m.period_end.1));
        }
        if !m.free.is_zero() {
            detail(format!("  included allowance: {} units free", m.free.normalize()));
        }
        if m.connect_fees.0 > 0 {
            detail(format!("  connect fees: {} x {}", m.connect_fees.0, m.connect_fees.1));
        }
        if m.minimums > 0 {
            detail(format!("  minimum charge applied to {} events", m.minimums));
        }
    }
    let fee_lines = fees.into_values().map(|(amount, description)| Line {
        meter: String::new(),
        description,
        amount: Some(amount),
    });
    for line in fee_lines.chain(one_offs) {
        let amount = line.amount.unwrap_or_default();
        subtotal += amount;
        total += amount;
        lines.push(line);
    }
    let discount = total - subtotal;
    if !discount.is_zero() {
        let which: Vec<String> = discounts.into_keys().collect();
        lines.push(Line {
            meter: String::new(),
            description: format!("discount {}", which.join(", ")),
            amount: Some(discount),
        });
    }
    Ok(Statement {
        lines,
        subtotal,
        discount,
        total,
    })
}
