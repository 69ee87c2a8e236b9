//! The typed, validated tariff catalogue: plans, effective-dated versions, and per-meter charge
//! models. Built only by [`super::tariff_file::parse_catalogue`], so every value here has passed
//! validation (prices >= 0 with at most 9 decimals, tiers increasing, bands covering the week once).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;

use super::money::{Currency, InvoiceRounding};
use super::period::BillingPeriod;

/// The map for catalogue lookups on the rating path (meter names, destination prefixes): aHash is
/// several times faster than SipHash on short keys, and its per-process random keys keep crafted
/// attribute values from choosing collisions.
pub type FastMap<K, V> = ahash::AHashMap<K, V>;

/// Minutes in a week: the resolution of time-of-day bands.
pub const MINUTES_PER_WEEK: u32 = 7 * 24 * 60;

/// All plans of one tariff file.
#[derive(Debug, Clone)]
pub struct Catalogue {
    pub(crate) plans: Vec<Plan>,
    pub(crate) index: FastMap<String, usize>,
    pub(crate) meters: BTreeSet<String>,
}

impl Catalogue {
    pub fn plan(&self, id: &str) -> Option<&Plan> {
        self.index.get(id).map(|&i| &self.plans[i])
    }

    pub fn plans(&self) -> &[Plan] {
        &self.plans
    }

    /// True when any version of any plan prices `meter`.
    pub fn knows_meter(&self, meter: &str) -> bool {
        self.meters.contains(meter)
    }

    /// Every meter name the catalogue defines, sorted.
    pub fn meters(&self) -> impl Iterator<Item = &str> {
        self.meters.iter().map(String::as_str)
    }
}

/// A price plan: currency, invoice rounding, time zone, billing period, versions.
#[derive(Debug, Clone)]
pub struct Plan {
    pub id: String,
    pub name: Option<String>,
    /// An add-on plan: an account holds it beside its one base subscription, and it may price
    /// only meters no other subscription in force at the same time prices.
    pub addon: bool,
    /// What a prepaid subscription's event that the balance cannot pay gets.
    pub insufficient_balance: crate::domain::balance::BalancePolicy,
    pub currency: Currency,
    pub rounding: InvoiceRounding,
    pub time_zone: Tz,
    pub period: BillingPeriod,
    /// In file order, numbered from 1; never empty. The versions that supersede none are sorted
    /// by `effective_from`, strictly increasing; a version that `supersedes` another comes after
    /// it with the same `effective_from`.
    pub versions: Vec<Version>,
    /// The index in `versions` of the version in force from each date, sorted by date: each
    /// version that supersedes none, replaced by the last of the chain that supersedes it. Empty
    /// when no version supersedes another (then `versions` is the timeline itself).
    pub timeline: Vec<usize>,
}

impl Plan {
    /// The version in force at `at`: of the last date not after it, the version that supersedes
    /// it last (if any does).
    pub fn version_at(&self, at: DateTime<Utc>) -> Option<&Version> {
        if self.timeline.is_empty() {
            let after = self.versions.partition_point(|v| v.effective_from <= at);
            return after.checked_sub(1).map(|i| &self.versions[i]);
        }
        let after = self
            .timeline
            .partition_point(|&i| self.versions[i].effective_from <= at);
        after.checked_sub(1).map(|i| &self.versions[self.timeline[i]])
    }

    /// The version numbered `number` (superseded or not: records keep the version that rated them).
    pub fn version(&self, number: u32) -> Option<&Version> {
        self.versions.iter().find(|v| v.number == number)
    }

    /// The timeline of `versions`: see [`Plan::timeline`] (empty when none supersedes another).
    /// Every `supersedes` names an earlier version (the validator's check).
    pub fn timeline_of(versions: &[Version]) -> Vec<usize> {
        if versions.iter().all(|v| v.supersedes.is_none()) {
            return Vec::new();
        }
        let mut timeline: Vec<usize> = Vec::new();
        for (i, v) in versions.iter().enumerate() {
            match v.supersedes {
                None => timeline.push(i),
                Some(n) => {
                    if let Some(slot) = timeline.iter_mut().find(|slot| versions[**slot].number == n) {
                        *slot = i;
                    }
                }
            }
        }
        timeline
    }

    /// True when some version has fees or a minimum commitment: the plan's periods are billed
    /// at their close even without usage.
    pub fn bills_without_usage(&self) -> bool {
        self.versions.iter().any(|v| !v.fees.is_empty() || v.minimum.is_some())
    }

    /// True when the version in force at `at` prices `meter`.
    pub fn prices(&self, meter: &str, at: DateTime<Utc>) -> bool {
        self.version_at(at).is_some_and(|v| v.meters.contains_key(meter))
    }

    /// A meter that some version of both plans prices, if any (the first in name order).
    pub fn shared_meter<'a>(&'a self, other: &Plan) -> Option<&'a str> {
        let mine: BTreeSet<&str> = self
            .versions
            .iter()
            .flat_map(|v| v.meters.keys())
            .map(String::as_str)
            .collect();
        let theirs: BTreeSet<&str> = other
            .versions
            .iter()
            .flat_map(|v| v.meters.keys())
            .map(String::as_str)
            .collect();
        mine.into_iter().find(|m| theirs.contains(m))
    }

    /// Versions published in advance: effective after `now`.
    pub fn upcoming(&self, now: DateTime<Utc>) -> impl Iterator<Item = &Version> {
        self.versions.iter().filter(move |v| v.effective_from > now)
    }
}

/// One effective-dated version of a plan. Never edited once in force; a change is a new version.
#[derive(Debug, Clone)]
pub struct Version {
    /// 1-based position in the plan's version list; stable because versions are only appended.
    pub number: u32,
    /// The version this one corrects, from the same `effective_from`: events rated from now on
    /// and `Admin.Rerate` use this one, records rated before keep (and explain with) the old one.
    pub supersedes: Option<u32>,
    pub effective_from: DateTime<Utc>,
    /// Percentage off every charge of this version (0 < d <= 100), if any.
    pub discount_percent: Option<Decimal>,
    pub meters: FastMap<String, MeterTariff>,
    /// Recurring fees: named amounts per billing period (docs/tariffs.md, "Recurring fees").
    pub fees: Vec<Fee>,
    /// Minimum commitment per billing period: at the close a true-up brings the subscription's
    /// subtotal up to it (prorated like a fee).
    pub minimum: Option<Decimal>,
    /// The version's content as sorted `path = value` lines (`tariff_file::content`): compared
    /// at every reload and start, so a version in force is never edited.
    pub content: String,
}

/// A recurring fee: `amount` per billing period, prorated by the second to the part of the
/// period a subscription is in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fee {
    pub name: String,
    pub amount: Decimal,
    pub billing: Billing,
}

/// When a recurring fee is charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Billing {
    /// Into the period's totals from its start, for the part the subscription is planned to be in
    /// force.
    InAdvance,
    /// Shown as accruing while the period is open; charged when it closes.
    InArrears,
}

impl Billing {
    pub fn name(self) -> &'static str {
        match self {
            Billing::InAdvance => "in_advance",
            Billing::InArrears => "in_arrears",
        }
    }
}

/// How one meter is priced in one version.
#[derive(Debug, Clone)]
pub struct MeterTariff {
    /// Prices are per this many units of quantity (60 for a per-minute price on seconds).
    pub per: u32,
    /// Units of each period that are free (an included allowance); 0 when none.
    pub included: Decimal,
    pub model: Model,
}

/// The charge model of a meter.
// Catalogues are built once and hold a handful of meters; keeping the per-unit model inline saves
// a pointer chase on the hottest rating path, so the size difference is accepted.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Model {
    /// Price per unit, chosen per event; priced event by event.
    PerUnit(PerUnit),
    /// Period-cumulative: each slab of the period quantity at its own price.
    Graduated(Vec<Tier>),
    /// Period-cumulative: the whole period quantity at the price of the tier it reached.
    Volume(Vec<Tier>),
    /// Period-cumulative: a price per started block of `block_size` units.
    Package { block_size: Decimal, block_price: Decimal },
}

impl Model {
    pub fn name(&self) -> &'static str {
        match self {
            Model::PerUnit(_) => "per_unit",
            Model::Graduated(_) => "graduated",
            Model::Volume(_) => "volume",
            Model::Package { .. } => "package",
        }
    }
}

/// One tier of a tiered model: up to `up_to` units of the period (the last tier has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    pub up_to: Option<Decimal>,
    pub price: Decimal,
}

/// The per-unit model with its per-event refinements.
#[derive(Debug, Clone)]
pub struct PerUnit {
    pub rates: RateTable,
    /// The quantity is a duration in seconds starting at the event's timestamp.
    pub duration: bool,
    pub increments: Option<Increments>,
    pub bands: Option<Bands>,
    pub connect_fee: Decimal,
    pub minimum_charge: Decimal,
}

/// Where the per-unit price of an event comes from, in this order: the first `matches` rule whose
/// attributes all equal the event's, else the longest prefix of `prefix.attribute`, else `default`.
#[derive(Debug, Clone)]
pub struct RateTable {
    pub matches: Vec<MatchRule>,
    pub prefix: Option<PrefixTable>,
    pub default: Option<Decimal>,
}

#[derive(Debug, Clone)]
pub struct MatchRule {
    pub attributes: Vec<(String, String)>,
    pub price: Decimal,
}

/// Longest-prefix price table on one attribute (telecom destinations).
#[derive(Debug, Clone)]
pub struct PrefixTable {
    pub attribute: String,
    pub prices: FastMap<String, Decimal>,
    /// Length in bytes of the longest prefix: lookups probe no longer prefixes.
    pub longest: usize,
}

/// Telecom increments: the first `first` seconds are charged whole, then each started `next`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Increments {
    pub first: Decimal,
    pub next: Decimal,
}

/// Time-of-day and weekday bands, covering every minute of the week exactly once.
#[derive(Debug, Clone)]
pub struct Bands {
    pub bands: Vec<Band>,
    /// Runs of minutes of the week (Monday 00:00 = 0) owned by one band, sorted, contiguous,
    /// covering `0..MINUTES_PER_WEEK`.
    pub segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Band {
    pub name: String,
    /// Multiplier applied to the selected per-unit price (0.5 = half price).
    pub factor: Decimal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub start: u32,
    pub end: u32,
    pub band: usize,
}

impl Bands {
    /// The segment containing `minute_of_week`.
    pub fn segment_at(&self, minute_of_week: u32) -> Segment {
        debug_assert!(minute_of_week < MINUTES_PER_WEEK);
        let i = self.segments.partition_point(|s| s.end <= minute_of_week);
        self.segments[i]
    }
}
