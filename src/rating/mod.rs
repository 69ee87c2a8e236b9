//! The rating engine: pure functions from (plan, event, period-to-date usage) to an exact charge
//! and its [`Explanation`].
//!
//! Order of operations for a per-unit meter (each step exact, one rounding at the end):
//! 1. telecom increments on the whole duration -> the rated quantity;
//! 2. the price: first matching attribute rule, else longest prefix, else the default;
//! 3. the rated quantity laid from the event's start and split at band boundaries (duration meters
//!    with bands), each part at price x band factor; a period's included allowance frees the
//!    earliest units;
//! 4. plus the connect fee; raised to the minimum charge; times each discount factor;
//! 5. divided by `per` and rounded once to 9 places, half-even.
//!
//! A period-cumulative meter (graduated, volume, package) charges `R(after) - R(before)`, where
//! `R(u)` is the price of `u` period units (after the allowance), discounted and rounded to 9
//! places. The differences telescope, so a period's record charges sum exactly to `R(total)` in any
//! order and batching of arrival.

mod bands;
pub mod correct;
mod cumulative;
pub mod explain;
pub mod grant;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::domain::money::{Inexact, ceil_div, discount_factor, exact_add, exact_mul, exact_sub, round_quotient};
use crate::domain::period::Period;
use crate::domain::record::RatedRecord;
pub use crate::domain::record::RatingInput;
use crate::domain::tariff::{Bands, Catalogue, Increments, Model, PerUnit, Plan, RateTable, Version};
use crate::domain::usage::{RejectReason, attribute};
pub use cumulative::period_price;
pub use explain::Report;

pub use crate::limits::MAX_BANDED_DURATION_SECONDS;

/// A priced event.
#[derive(Debug, Clone, PartialEq)]
pub struct Rated {
    /// Exactly 9 decimal places; negative only for a volume-tier marginal.
    pub charge: Decimal,
    /// The quantity after increments: what the period-to-date usage of the meter grows by.
    pub rated_quantity: Decimal,
    pub explanation: Explanation,
}

/// Why an event could not be priced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RatingError {
    #[error("plan {plan:?} has no version in force at {at}")]
    NoVersion { plan: String, at: DateTime<Utc> },
    #[error("meter {meter:?} is not priced by plan {plan:?} version {version}")]
    MeterNotPriced { plan: String, version: u32, meter: String },
    #[error("no price for meter {meter:?}: no match rule, prefix or default applies")]
    NoRate { meter: String },
    #[error("quantity must be >= 0")]
    NegativeQuantity,
    #[error("period usage must be >= 0")]
    NegativePeriodUsage,
    #[error("a banded duration may be at most {MAX_BANDED_DURATION_SECONDS} seconds")]
    DurationTooLong,
    #[error("the charge exceeds exact decimal precision")]
    Inexact,
}

impl From<Inexact> for RatingError {
    fn from(_: Inexact) -> Self {
        RatingError::Inexact
    }
}

impl RatingError {
    /// The suspense reason an event rejected for this error carries.
    pub fn reason(&self) -> RejectReason {
        match self {
            RatingError::NoVersion { .. } | RatingError::MeterNotPriced { .. } | RatingError::NoRate { .. } => {
                RejectReason::NoTariff
            }
            RatingError::NegativeQuantity
            | RatingError::NegativePeriodUsage
            | RatingError::DurationTooLong
            | RatingError::Inexact => RejectReason::InvalidField,
        }
    }
}

/// Why a stored record does not rate again to its stored charge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RerateError {
    #[error("cannot re-rate record {event_id:?}: {error}")]
    Rating { event_id: String, error: RatingError },
    /// Versions in force are never edited; if one was, it is said rather than explained wrongly.
    #[error(
        "plan {plan:?} version {version} no longer gives the stored charge {stored} of record {event_id:?} \
         (now {now}): was a version in force edited?"
    )]
    Changed {
        event_id: String,
        plan: String,
        version: u32,
        stored: Decimal,
        now: Decimal,
    },
}

/// Rates a stored record again under `plan` (the plan it names) from its stored inputs, and
/// checks that the version and charge are those stored: the one way a rating (and with it an
/// explanation) is rebuilt from a record.
pub fn rerate(plan: &Plan, record: &RatedRecord) -> Result<Rated, RerateError> {
    let failed = |error| RerateError::Rating {
        event_id: record.event_id.clone(),
        error,
    };
    // A superseded version still rates the records it rated (kept side by side).
    let version = plan.version(record.version).ok_or_else(|| {
        failed(RatingError::NoVersion {
            plan: plan.id.clone(),
            at: record.at(),
        })
    })?;
    // A reversal holds the negated rating of the record it takes back.
    let mut input = record.rating_input();
    let sign = if record.is_reversal() {
        -Decimal::ONE
    } else {
        Decimal::ONE
    };
    input.quantity *= sign;
    let mut rated = rate_with(plan, version, &input).map_err(failed)?;
    if record.is_reversal() {
        rated.charge = -rated.charge;
        rated.rated_quantity = -rated.rated_quantity;
        rated.explanation.charge = rated.charge;
    }
    if rated.charge != record.charge || rated.explanation.version != record.version {
        return Err(RerateError::Changed {
            event_id: record.event_id.clone(),
            plan: record.plan.clone(),
            version: record.version,
            stored: record.charge,
            now: rated.charge,
        });
    }
    Ok(rated)
}

/// Everything needed to explain a charge, compact enough to keep with the rated record. Names
/// (plan, bands, tiers) are resolved against the plan by [`Report`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    pub version: u32,
    pub model: ModelKind,
    pub quantity: Decimal,
    pub rated_quantity: Decimal,
    pub per: u32,
    pub increments: Option<(Decimal, Decimal)>,
    pub rate: Option<RateChoice>,
    pub parts: Vec<Part>,
    pub allowance: Option<Allowance>,
    /// Boxed: only cumulative meters have it, and per-unit rating should not move its bytes.
    pub cumulative: Option<Box<Cumulative>>,
    pub connect_fee: Decimal,
    /// The minimum charge, when it replaced a smaller charge.
    pub minimum_applied: Option<Decimal>,
    pub version_discount: Option<Decimal>,
    pub subscription_discount: Option<Decimal>,
    /// The exact charge before rounding is `numerator / per` (per-unit models).
    pub numerator: Decimal,
    pub charge: Decimal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    PerUnit,
    Graduated,
    Volume,
    Package,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::PerUnit => "per_unit",
            ModelKind::Graduated => "graduated",
            ModelKind::Volume => "volume",
            ModelKind::Package => "package",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateChoice {
    pub price: Decimal,
    pub source: RateSource,
}

/// Why this price was chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum RateSource {
    /// The `rule`-th (0-based) match rule had all its attributes equal to the event's.
    Match {
        rule: usize,
    },
    /// The longest configured prefix of the prefix attribute's value: its first `len` bytes
    /// (the value itself is in the event's attributes, so it is not copied here).
    Prefix {
        len: u16,
    },
    Default,
}

/// A piece of a banded per-unit event: the units of the rated quantity that fell in one band.
/// (An unbanded event has no parts: its whole rated quantity is priced at the chosen rate.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Part {
    /// Index of the band in the meter's band list.
    pub band: u16,
    pub start: DateTime<Utc>,
    pub quantity: Decimal,
    /// Units of this part covered by the included allowance.
    pub free: Decimal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Allowance {
    pub included: Decimal,
    pub used_before: Decimal,
    pub free: Decimal,
}

/// The marginal pricing of a period-cumulative model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cumulative {
    pub usage_before: Decimal,
    pub usage_after: Decimal,
    /// Tiers the event's units fell into (graduated), or the tiers reached before and after
    /// (volume); empty for package pricing.
    pub steps: Vec<TierStep>,
    pub blocks: Option<(Decimal, Decimal)>,
    /// `R(before)` and `R(after)`: period prices, discounted, rounded to 9 places.
    pub price_before: Decimal,
    pub price_after: Decimal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TierStep {
    pub tier: usize,
    pub quantity: Decimal,
    pub price: Decimal,
}

/// Prices one event against `plan`.
pub fn rate(plan: &Plan, input: &RatingInput<'_>) -> Result<Rated, RatingError> {
    let version = plan.version_at(input.at).ok_or_else(|| RatingError::NoVersion {
        plan: plan.id.clone(),
        at: input.at,
    })?;
    rate_with(plan, version, input)
}

/// Rates one event under a given version of `plan` (a record's own version, which a later
/// version may supersede: [`rerate`], corrections that keep a record's version).
pub fn rate_with(plan: &Plan, version: &Version, input: &RatingInput<'_>) -> Result<Rated, RatingError> {
    if input.quantity.is_sign_negative() && !input.quantity.is_zero() {
        return Err(RatingError::NegativeQuantity);
    }
    if input.period_usage.is_sign_negative() && !input.period_usage.is_zero() {
        return Err(RatingError::NegativePeriodUsage);
    }
    let tariff = version
        .meters
        .get(input.meter)
        .ok_or_else(|| RatingError::MeterNotPriced {
            plan: plan.id.clone(),
            version: version.number,
            meter: input.meter.to_string(),
        })?;
    let discounts = Discounts::new(version, input.subscription_discount)?;
    let mut explanation = Explanation {
        version: version.number,
        model: ModelKind::PerUnit,
        quantity: input.quantity,
        rated_quantity: input.quantity,
        per: tariff.per,
        increments: None,
        rate: None,
        parts: Vec::new(),
        allowance: None,
        cumulative: None,
        connect_fee: Decimal::ZERO,
        minimum_applied: None,
        version_discount: version.discount_percent,
        subscription_discount: input.subscription_discount,
        numerator: Decimal::ZERO,
        charge: Decimal::ZERO,
    };
    let charge = match &tariff.model {
        Model::PerUnit(per_unit) => rate_per_unit(
            plan.time_zone,
            per_unit,
            tariff.per,
            tariff.included,
            input,
            &discounts,
            &mut explanation,
        )?,
        model => cumulative::rate_cumulative(model, tariff.per, tariff.included, input, &discounts, &mut explanation)?,
    };
    debug_assert_eq!(charge.scale(), crate::domain::money::RECORD_SCALE);
    explanation.charge = charge;
    Ok(Rated {
        charge,
        rated_quantity: explanation.rated_quantity,
        explanation,
    })
}

/// The discount multipliers in force for one event.
struct Discounts {
    version: Option<Decimal>,
    subscription: Option<Decimal>,
}

impl Discounts {
    fn new(version: &Version, subscription: Option<Decimal>) -> Result<Self, Inexact> {
        Ok(Discounts {
            version: version.discount_percent.map(discount_factor).transpose()?,
            subscription: subscription.map(discount_factor).transpose()?,
        })
    }

    fn apply(&self, value: Decimal) -> Result<Decimal, Inexact> {
        let mut value = value;
        for factor in [self.version, self.subscription].into_iter().flatten() {
            value = exact_mul(value, factor)?;
        }
        Ok(value)
    }
}

fn rate_per_unit(
    tz: Tz,
    model: &PerUnit,
    per: u32,
    included: Decimal,
    input: &RatingInput<'_>,
    discounts: &Discounts,
    explanation: &mut Explanation,
) -> Result<Decimal, RatingError> {
    let rated = match model.increments {
        Some(increments) => {
            explanation.increments = Some((increments.first, increments.next));
            apply_increments(input.quantity, increments)?
        }
        None => input.quantity,
    };
    explanation.rated_quantity = rated;
    let choice = select_rate(&model.rates, input.attributes).ok_or_else(|| RatingError::NoRate {
        meter: input.meter.to_string(),
    })?;
    let price = choice.price;
    explanation.rate = Some(choice);

    let mut free = Decimal::ZERO;
    if !included.is_zero() {
        let remaining = exact_sub(included, input.period_usage)?.max(Decimal::ZERO);
        free = remaining.min(rated);
        explanation.allowance = Some(Allowance {
            included,
            used_before: input.period_usage,
            free,
        });
    }
    let mut numerator = match &model.bands {
        None => exact_mul(exact_sub(rated, free)?, price)?,
        Some(bands) => {
            let mut parts = if model.duration {
                bands::split_by_bands(bands, tz, input.at, rated)?
            } else {
                let band = bands.segment_at(bands::minute_of_week(tz, input.at)).band;
                vec![part(band, input.at, rated)]
            };
            let numerator = price_parts(bands, &mut parts, price, free)?;
            explanation.parts = parts;
            numerator
        }
    };

    let per_decimal = Decimal::from(per);
    if !model.connect_fee.is_zero() {
        explanation.connect_fee = model.connect_fee;
        numerator = exact_add(numerator, exact_mul(model.connect_fee, per_decimal)?)?;
    }
    if !model.minimum_charge.is_zero() {
        let minimum = exact_mul(model.minimum_charge, per_decimal)?;
        if numerator < minimum {
            numerator = minimum;
            explanation.minimum_applied = Some(model.minimum_charge);
        }
    }
    numerator = discounts.apply(numerator)?;
    explanation.numerator = numerator;
    Ok(round_quotient(numerator, per)?)
}

fn part(band: usize, start: DateTime<Utc>, quantity: Decimal) -> Part {
    // Invariant: validation caps a meter's bands far below u16::MAX (one per minute of the week).
    let band = u16::try_from(band).expect("band index fits u16");
    Part {
        band,
        start,
        quantity,
        free: Decimal::ZERO,
    }
}

/// Prices the parts of a banded event: `sum((quantity - free) x price x factor)`, the allowance
/// freeing the earliest units first. Exact, before division by `per`.
fn price_parts(bands: &Bands, parts: &mut [Part], price: Decimal, free: Decimal) -> Result<Decimal, Inexact> {
    let mut free_left = free;
    let mut numerator = Decimal::ZERO;
    for part in parts {
        part.free = free_left.min(part.quantity);
        free_left -= part.free;
        let factor = bands.bands[usize::from(part.band)].factor;
        let mut amount = exact_mul(exact_sub(part.quantity, part.free)?, price)?;
        if factor != Decimal::ONE {
            amount = exact_mul(amount, factor)?;
        }
        numerator = exact_add(numerator, amount)?;
    }
    Ok(numerator)
}

/// First increment charged whole, then every started subsequent increment; zero stays zero.
pub fn apply_increments(quantity: Decimal, increments: Increments) -> Result<Decimal, Inexact> {
    if quantity.is_zero() {
        return Ok(Decimal::ZERO);
    }
    if quantity <= increments.first {
        return Ok(increments.first);
    }
    let beyond = exact_sub(quantity, increments.first)?;
    let steps = ceil_div(beyond, increments.next)?;
    exact_add(increments.first, exact_mul(steps, increments.next)?)
}

/// The price of an event: first match rule, else longest prefix, else the default.
pub fn select_rate(rates: &RateTable, attributes: &[(String, String)]) -> Option<RateChoice> {
    for (rule, candidate) in rates.matches.iter().enumerate() {
        if candidate
            .attributes
            .iter()
            .all(|(k, v)| attribute(attributes, k) == Some(v.as_str()))
        {
            return Some(RateChoice {
                price: candidate.price,
                source: RateSource::Match { rule },
            });
        }
    }
    if let Some(table) = &rates.prefix
        && let Some(value) = attribute(attributes, &table.attribute)
    {
        for len in (1..=value.len().min(table.longest)).rev() {
            if !value.is_char_boundary(len) {
                continue;
            }
            if let Some(&price) = table.prices.get(&value[..len]) {
                // `len <= table.longest`, which validation keeps at most MAX_NAME_BYTES.
                let len = u16::try_from(len).unwrap_or(u16::MAX);
                return Some(RateChoice {
                    price,
                    source: RateSource::Prefix { len },
                });
            }
        }
    }
    rates.default.map(|price| RateChoice {
        price,
        source: RateSource::Default,
    })
}

/// Why a quote could not be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    #[error("unknown plan {0:?}")]
    UnknownPlan(String),
    #[error("unknown meter {0:?}: no plan in the catalogue prices it")]
    UnknownMeter(String),
    #[error(transparent)]
    Rating(#[from] RatingError),
}

impl QuoteError {
    pub fn reason(&self) -> RejectReason {
        match self {
            QuoteError::UnknownPlan(_) => RejectReason::NoTariff,
            QuoteError::UnknownMeter(_) => RejectReason::UnknownMeter,
            QuoteError::Rating(e) => e.reason(),
        }
    }
}

/// An event priced against a catalogue plan, with the billing period it falls in.
#[derive(Debug, Clone)]
pub struct Quote<'c> {
    pub plan: &'c Plan,
    pub period: Period,
    pub rated: Rated,
}

/// Prices one event against plan `plan_id` of `catalogue`, without recording anything.
///
/// ```
/// use ratingd::domain::tariff_file::parse_catalogue;
/// use ratingd::rating::{RatingInput, quote};
///
/// let catalogue = parse_catalogue(include_str!("../../config/tariffs.toml")).unwrap();
/// let destination = [("destination".to_string(), "+447911123456".to_string())];
/// let input = RatingInput {
///     meter: "voice.seconds",
///     quantity: "30".parse().unwrap(),
///     at: "2026-11-25T09:00:00Z".parse().unwrap(),
///     attributes: &destination,
///     period_usage: Default::default(),
///     subscription_discount: None,
/// };
/// let q = quote(&catalogue, "telecom-standard", &input).unwrap();
/// // 30 s is billed as the first 60-second increment: 0.09 + the 0.01 connect fee.
/// assert_eq!(q.rated.charge.to_string(), "0.100000000");
/// assert_eq!(q.period.label, "2026-11");
/// ```
pub fn quote<'c>(catalogue: &'c Catalogue, plan_id: &str, input: &RatingInput<'_>) -> Result<Quote<'c>, QuoteError> {
    let plan = catalogue
        .plan(plan_id)
        .ok_or_else(|| QuoteError::UnknownPlan(plan_id.to_string()))?;
    if !catalogue.knows_meter(input.meter) {
        return Err(QuoteError::UnknownMeter(input.meter.to_string()));
    }
    let rated = rate(plan, input)?;
    let period = plan.period.period_of(plan.time_zone, input.at);
    Ok(Quote { plan, period, rated })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::tariff_file::parse_catalogue;
    use rust_decimal_macros::dec;

    fn inc(first: Decimal, next: Decimal) -> Increments {
        Increments { first, next }
    }

    #[test]
    fn telecom_increments() {
        let table = [
            // (first, next, duration, billed)
            (dec!(60), dec!(60), dec!(1), dec!(60)),
            (dec!(60), dec!(60), dec!(61), dec!(120)),
            (dec!(60), dec!(1), dec!(61), dec!(61)),
            (dec!(60), dec!(1), dec!(60.001), dec!(61)),
            (dec!(30), dec!(6), dec!(30), dec!(30)),
            (dec!(30), dec!(6), dec!(31), dec!(36)),
            (dec!(30), dec!(6), dec!(36), dec!(36)),
            (dec!(30), dec!(6), dec!(37), dec!(42)),
            (dec!(1), dec!(1), dec!(0.5), dec!(1)),
            (dec!(1), dec!(1), dec!(7.2), dec!(8)),
            (dec!(60), dec!(1), dec!(0), dec!(0)),
        ];
        for (first, next, duration, billed) in table {
            assert_eq!(
                apply_increments(duration, inc(first, next)).unwrap(),
                billed,
                "{first}/{next} of {duration}"
            );
        }
    }

    const RATES: &str = r#"
[[plans]]
id = "p"
currency = "EUR"
time_zone = "UTC"
rounding = { places = 2, mode = "half-up" }
[[plans.versions]]
effective_from = "2026-01-01T00:00:00Z"
[plans.versions.meters.m]
model = "per_unit"
price = "9"
prefix_attribute = "dest"
prefixes = { "+4" = "4", "+44" = "44", "+447" = "447" }
match = [{ attributes = { region = "eu", tier = "gold" }, price = "1" }, { attributes = { region = "eu" }, price = "2" }]
"#;

    fn choose(attrs: &[(&str, &str)]) -> RateChoice {
        let catalogue = parse_catalogue(RATES).unwrap();
        let plan = catalogue.plan("p").unwrap();
        let crate::domain::tariff::Model::PerUnit(per_unit) = &plan.versions[0].meters["m"].model else {
            panic!("per-unit meter")
        };
        let attrs: Vec<(String, String)> = attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        select_rate(&per_unit.rates, &attrs).unwrap()
    }

    #[test]
    fn rate_selection_order_match_then_longest_prefix_then_default() {
        let gold = choose(&[("region", "eu"), ("tier", "gold"), ("dest", "+447")]);
        assert_eq!((gold.price, gold.source), (dec!(1), RateSource::Match { rule: 0 }));
        assert_eq!(
            choose(&[("region", "eu"), ("dest", "+447")]).source,
            RateSource::Match { rule: 1 }
        );
        let mobile = choose(&[("dest", "+4479")]);
        assert_eq!(
            (mobile.price, mobile.source),
            (dec!(447), RateSource::Prefix { len: 4 })
        );
        assert_eq!(choose(&[("dest", "+441")]).price, dec!(44));
        assert_eq!(choose(&[("dest", "+49")]).price, dec!(4));
        assert_eq!(choose(&[("dest", "+33")]).source, RateSource::Default);
        assert_eq!(choose(&[]).price, dec!(9));
        // Multi-byte characters never split a prefix probe.
        assert_eq!(choose(&[("dest", "+4é")]).price, dec!(4));
    }

    fn shipped() -> Catalogue {
        parse_catalogue(include_str!("../../config/tariffs.toml")).unwrap()
    }

    #[test]
    fn explanations_carry_the_tiers_crossed_and_allowance_used() {
        let catalogue = shipped();
        let plan = catalogue.plan("telecom-standard").unwrap();
        let at = "2026-11-25T10:00:00Z".parse().unwrap();
        let data = RatingInput {
            meter: "data.mb",
            quantity: dec!(50),
            at,
            attributes: &[],
            period_usage: dec!(1000),
            subscription_discount: Some(dec!(50)),
        };
        let rated = rate(plan, &data).unwrap();
        // (24 x 0.01 + 26 x 0.005) = 0.37, half off.
        assert_eq!(rated.charge, dec!(0.185000000));
        let c = rated.explanation.cumulative.as_ref().unwrap();
        assert_eq!(
            c.steps.iter().map(|s| (s.tier, s.quantity)).collect::<Vec<_>>(),
            [(0, dec!(24)), (1, dec!(26))]
        );
        assert_eq!(rated.explanation.subscription_discount, Some(dec!(50)));
        let sms = RatingInput {
            meter: "sms.count",
            quantity: dec!(5),
            period_usage: dec!(97),
            ..data
        };
        let rated = rate(
            plan,
            &RatingInput {
                subscription_discount: None,
                ..sms
            },
        )
        .unwrap();
        let allowance = rated.explanation.allowance.unwrap();
        assert_eq!((allowance.used_before, allowance.free), (dec!(97), dec!(3)));
        assert_eq!(rated.charge, dec!(0.100000000));
    }

    #[test]
    fn bad_inputs_are_errors_with_reasons() {
        let catalogue = shipped();
        let plan = catalogue.plan("telecom-standard").unwrap();
        let at = "2026-11-25T10:00:00Z".parse().unwrap();
        let base = RatingInput {
            meter: "voice.seconds",
            quantity: dec!(60),
            at,
            attributes: &[],
            period_usage: Decimal::ZERO,
            subscription_discount: None,
        };
        let err = |input: RatingInput<'_>| rate(plan, &input).unwrap_err();
        assert_eq!(
            err(RatingInput {
                quantity: dec!(-1),
                ..base
            })
            .reason(),
            RejectReason::InvalidField
        );
        assert_eq!(
            err(RatingInput {
                quantity: dec!(3000000),
                ..base
            }),
            RatingError::DurationTooLong
        );
        assert_eq!(
            err(RatingInput {
                meter: "api.requests",
                ..base
            })
            .reason(),
            RejectReason::NoTariff
        );
        let early = "2025-12-31T23:59:59Z".parse().unwrap();
        assert!(matches!(
            err(RatingInput { at: early, ..base }),
            RatingError::NoVersion { .. }
        ));
    }
}
