//! An independent reference pricer: what every integration test compares the daemon's money with.
//!
//! Written from docs/tariffs.md ("How a charge is computed"), not from the engine: it shares no
//! code with `ratingd::rating` or `ratingd::domain`. It reads the tariff TOML itself (as a plain
//! `toml::Value`), finds periods and bands with chrono-tz, splits a call at every whole UTC minute
//! (bands are minute-resolution local times, and offsets change on whole minutes), and rounds with
//! its own integer division. It knows what the test catalogues use: per-unit with match rules, a
//! longest-prefix table and a default price, duration, increments, bands, connect fee, minimum and
//! allowance; graduated, volume and package; version and subscription discounts; monthly periods
//! anchored on day 1; the four invoice rounding modes. Anything else panics rather than guess.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Datelike, Duration, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;

use ratingd::wire::proto;

/// A plan as the reference reads it.
#[derive(Debug, Clone)]
pub struct Plan {
    pub id: String,
    pub currency: String,
    /// Held beside a base subscription; prices only its own meters.
    addon: bool,
    zone: Tz,
    places: u32,
    mode: String,
    versions: Vec<Version>,
}

#[derive(Debug, Clone)]
struct Version {
    from: DateTime<Utc>,
    discount_percent: Decimal,
    meters: HashMap<String, Meter>,
}

#[derive(Debug, Clone)]
struct Meter {
    per: Decimal,
    included: Decimal,
    model: Model,
}

#[derive(Debug, Clone)]
enum Model {
    PerUnit(PerUnit),
    /// (up_to, price); the last tier has no bound.
    Graduated(Vec<(Option<Decimal>, Decimal)>),
    Volume(Vec<(Option<Decimal>, Decimal)>),
    Package {
        block: Decimal,
        price: Decimal,
    },
}

#[derive(Debug, Clone)]
struct PerUnit {
    rules: Vec<(Vec<(String, String)>, Decimal)>,
    prefix_attribute: Option<String>,
    prefixes: Vec<(String, Decimal)>,
    default: Option<Decimal>,
    duration: bool,
    /// (first, next) in seconds.
    increments: Option<(Decimal, Decimal)>,
    connect_fee: Decimal,
    minimum: Option<Decimal>,
    bands: Vec<Band>,
}

#[derive(Debug, Clone)]
struct Band {
    factor: Decimal,
    /// (weekday numbers from Monday = 0, from minute, to minute) in local time.
    windows: Vec<(Vec<u32>, u32, u32)>,
}

fn amount(v: &toml::Value) -> Decimal {
    match v {
        toml::Value::String(s) => s.parse().unwrap_or_else(|e| panic!("amount {s:?}: {e}")),
        toml::Value::Integer(i) => Decimal::from(*i),
        other => panic!("the reference reads amounts as strings or integers, not {other:?}"),
    }
}

fn table<'a>(v: &'a toml::Value, key: &str) -> Option<&'a toml::Value> {
    v.as_table().and_then(|t| t.get(key))
}

fn text(v: &toml::Value, key: &str) -> String {
    table(v, key)
        .and_then(|x| x.as_str())
        .unwrap_or_else(|| panic!("{key} missing"))
        .to_string()
}

fn instant(v: &toml::Value) -> DateTime<Utc> {
    let s = match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Datetime(d) => d.to_string(),
        other => panic!("not a date-time: {other:?}"),
    };
    DateTime::parse_from_rfc3339(&s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .with_timezone(&Utc)
}

fn weekday(name: &str) -> u32 {
    ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .iter()
        .position(|d| *d == name)
        .unwrap_or_else(|| panic!("day {name}")) as u32
}

fn days(list: &toml::Value) -> Vec<u32> {
    let mut out = Vec::new();
    for d in list.as_array().expect("days") {
        let d = d.as_str().expect("day");
        match d.split_once('-') {
            Some((a, b)) => out.extend(weekday(a)..=weekday(b)),
            None => out.push(weekday(d)),
        }
    }
    out
}

fn minute(hhmm: &str) -> u32 {
    let (h, m) = hhmm.split_once(':').expect("HH:MM");
    h.parse::<u32>().unwrap() * 60 + m.parse::<u32>().unwrap()
}

fn tiers(v: &toml::Value) -> Vec<(Option<Decimal>, Decimal)> {
    table(v, "tiers")
        .and_then(|t| t.as_array())
        .expect("tiers")
        .iter()
        .map(|t| (table(t, "up_to").map(amount), amount(table(t, "price").expect("price"))))
        .collect()
}

fn meter(v: &toml::Value) -> Meter {
    let per = table(v, "per").map_or(Decimal::ONE, amount);
    let included = table(v, "included").map_or(Decimal::ZERO, amount);
    let model = match text(v, "model").as_str() {
        "per_unit" => Model::PerUnit(PerUnit {
            rules: table(v, "match")
                .and_then(|m| m.as_array())
                .map(|rules| {
                    rules
                        .iter()
                        .map(|r| {
                            let attrs = table(r, "attributes")
                                .and_then(|a| a.as_table())
                                .expect("match attributes")
                                .iter()
                                .map(|(k, v)| (k.clone(), v.as_str().expect("attribute value").to_string()))
                                .collect();
                            (attrs, amount(table(r, "price").expect("price")))
                        })
                        .collect()
                })
                .unwrap_or_default(),
            prefix_attribute: table(v, "prefix_attribute").map(|a| a.as_str().unwrap().to_string()),
            prefixes: table(v, "prefixes")
                .and_then(|p| p.as_table())
                .map(|p| p.iter().map(|(k, v)| (k.clone(), amount(v))).collect())
                .unwrap_or_default(),
            default: table(v, "price").map(amount),
            duration: table(v, "duration").and_then(|d| d.as_bool()).unwrap_or(false),
            increments: table(v, "increments").map(|i| {
                (
                    amount(table(i, "first").expect("first")),
                    amount(table(i, "next").expect("next")),
                )
            }),
            connect_fee: table(v, "connect_fee").map_or(Decimal::ZERO, amount),
            minimum: table(v, "minimum_charge").map(amount),
            bands: table(v, "bands")
                .and_then(|b| b.as_array())
                .map(|bands| {
                    bands
                        .iter()
                        .map(|b| Band {
                            factor: amount(table(b, "factor").expect("factor")),
                            windows: table(b, "windows")
                                .and_then(|w| w.as_array())
                                .expect("windows")
                                .iter()
                                .map(|w| {
                                    (
                                        days(table(w, "days").expect("days")),
                                        minute(&text(w, "from")),
                                        minute(&text(w, "to")),
                                    )
                                })
                                .collect(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }),
        "graduated" => Model::Graduated(tiers(v)),
        "volume" => Model::Volume(tiers(v)),
        "package" => Model::Package {
            block: amount(table(v, "block_size").expect("block_size")),
            price: amount(table(v, "block_price").expect("block_price")),
        },
        other => panic!("the reference does not know model {other}"),
    };
    Meter { per, included, model }
}

/// The plans of a tariff file, by id.
pub fn plans(toml_text: &str) -> BTreeMap<String, Plan> {
    let root: toml::Value = toml::from_str(toml_text).expect("tariff TOML");
    let mut out = BTreeMap::new();
    for p in table(&root, "plans").and_then(|p| p.as_array()).expect("plans") {
        if let Some(period) = table(p, "billing_period") {
            let anchored_on_first = text(period, "kind") == "month"
                && table(period, "anchor_day").is_none_or(|d| d.as_integer() == Some(1));
            assert!(anchored_on_first, "the reference knows months anchored on day 1 only");
        }
        let rounding = table(p, "rounding").expect("rounding");
        let plan = Plan {
            id: text(p, "id"),
            currency: text(p, "currency"),
            addon: table(p, "addon").and_then(|a| a.as_bool()).unwrap_or(false),
            zone: text(p, "time_zone").parse().expect("IANA zone"),
            places: table(rounding, "places").and_then(|x| x.as_integer()).expect("places") as u32,
            mode: text(rounding, "mode"),
            versions: in_force(
                table(p, "versions")
                    .and_then(|v| v.as_array())
                    .expect("versions")
                    .iter()
                    .map(|v| {
                        let version = Version {
                            from: instant(table(v, "effective_from").expect("effective_from")),
                            discount_percent: table(v, "discount_percent").map_or(Decimal::ZERO, amount),
                            meters: table(v, "meters")
                                .and_then(|m| m.as_table())
                                .map(|m| m.iter().map(|(name, m)| (name.clone(), meter(m))).collect())
                                .unwrap_or_default(),
                        };
                        let supersedes = table(v, "supersedes").and_then(|n| n.as_integer()).map(|n| n as usize);
                        (version, supersedes)
                    })
                    .collect(),
            ),
        };
        out.insert(plan.id.clone(), plan);
    }
    out
}

/// The versions in force, by date: a version that `supersedes` version `n` (numbered from 1 in
/// file order) takes its place; the others in file order.
fn in_force(list: Vec<(Version, Option<usize>)>) -> Vec<Version> {
    let mut out: Vec<Version> = Vec::new();
    // The slot in `out` of each version number (a superseding version takes its target's slot).
    let mut slot_of: Vec<usize> = Vec::new();
    for (version, supersedes) in list {
        match supersedes {
            Some(n) => {
                let slot = slot_of[n - 1];
                out[slot] = version;
                slot_of.push(slot);
            }
            None => {
                slot_of.push(out.len());
                out.push(version);
            }
        }
    }
    out
}

/// `n / d` rounded half-even to 9 decimal places, by integer division on the exact values.
pub fn round9(n: Decimal, d: Decimal) -> Decimal {
    assert!(d > Decimal::ZERO);
    // Both as integers at one common scale: n / d = N / D.
    let scale = n.scale().max(d.scale());
    let widen = |x: Decimal| {
        x.mantissa()
            .checked_mul(10i128.pow(scale - x.scale()))
            .expect("reference arithmetic fits i128")
    };
    let (num, den) = (widen(n) * 1_000_000_000, widen(d));
    let (q, r) = (num.div_euclid(den), num.rem_euclid(den));
    // Half-even on the remainder: r / den against one half.
    let q = match (2 * r).cmp(&den) {
        std::cmp::Ordering::Less => q,
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal => q + (q & 1),
    };
    Decimal::from_i128_with_scale(q, 9)
}

/// A total rounded to `places` by an invoice rounding mode of docs/tariffs.md.
pub fn round_invoice(x: Decimal, places: u32, mode: &str) -> Decimal {
    let x9 = x.mantissa() * 10i128.pow(9u32.checked_sub(x.scale()).expect("totals carry at most 9 places"));
    let unit = 10i128.pow(9 - places);
    let (q, r) = (x9.div_euclid(unit), x9.rem_euclid(unit));
    let negative = x9 < 0;
    // Round the magnitude: |x| = m + f with f in [0, unit).
    let (m, f) = if negative && r != 0 {
        (-(q + 1), unit - r)
    } else {
        (q.abs(), r)
    };
    let up = match mode {
        "up" => f != 0,
        "down" => false,
        "half-up" => 2 * f >= unit,
        "half-even" => 2 * f > unit || (2 * f == unit && m % 2 == 1),
        other => panic!("rounding mode {other}"),
    };
    let m = if up { m + 1 } else { m };
    Decimal::from_i128_with_scale(if negative { -m } else { m }, places)
}

fn at_least_zero(x: Decimal) -> Decimal {
    x.max(Decimal::ZERO)
}

/// Ceiling of a non-negative decimal.
fn ceil(x: Decimal) -> Decimal {
    let t = x.trunc();
    if t == x { t } else { t + Decimal::ONE }
}

fn rated_duration(d: Decimal, (first, next): (Decimal, Decimal)) -> Decimal {
    if d <= Decimal::ZERO {
        Decimal::ZERO
    } else if d <= first {
        first
    } else {
        first + ceil((d - first) / next) * next
    }
}

impl Plan {
    fn version_at(&self, t: DateTime<Utc>) -> Option<&Version> {
        self.versions.iter().rev().find(|v| v.from <= t)
    }

    /// The label of the billing period of `t` (`YYYY-MM` of the local date).
    pub fn period_of(&self, t: DateTime<Utc>) -> String {
        t.with_timezone(&self.zone).format("%Y-%m").to_string()
    }

    /// The first instant of the month after the one `label` names, in this plan's zone.
    pub fn period_end(&self, label: &str) -> DateTime<Utc> {
        let (y, m) = label.split_once('-').expect("YYYY-MM");
        let (y, m): (i32, u32) = (y.parse().unwrap(), m.parse().unwrap());
        let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
        self.zone
            .with_ymd_and_hms(y, m, 1, 0, 0, 0)
            .earliest()
            .expect("midnight exists on the 1st in the test zones")
            .with_timezone(&Utc)
    }

    pub fn amount(&self, total: Decimal) -> Decimal {
        round_invoice(total, self.places, &self.mode)
    }

    fn band_factor(&self, bands: &[Band], t: DateTime<Utc>) -> Decimal {
        let local = t.with_timezone(&self.zone);
        let day = local.weekday().num_days_from_monday();
        let minute = local.hour() * 60 + local.minute();
        bands
            .iter()
            .find(|b| {
                b.windows
                    .iter()
                    .any(|(days, from, to)| days.contains(&day) && *from <= minute && minute < *to)
            })
            .unwrap_or_else(|| panic!("no band covers {local}"))
            .factor
    }

    /// The charge and the rated quantity of one event, given the period-to-date rated quantity
    /// of its meter; `None` when the plan cannot price it (NO_TARIFF).
    pub fn price(
        &self,
        meter: &str,
        quantity: Decimal,
        at: DateTime<Utc>,
        attributes: &[(String, String)],
        usage_before: Decimal,
        subscription_discount: Decimal,
    ) -> Option<(Decimal, Decimal)> {
        let version = self.version_at(at)?;
        let m = version.meters.get(meter)?;
        // (100 - version %) x (100 - subscription %) / 10,000 is the discount factor.
        let keep = (Decimal::ONE_HUNDRED - version.discount_percent) * (Decimal::ONE_HUNDRED - subscription_discount);
        let cumulative = |price_of: &dyn Fn(Decimal) -> Decimal| {
            let r = |u: Decimal| {
                round9(
                    price_of(at_least_zero(u - m.included)) * keep,
                    m.per * Decimal::from(10_000),
                )
            };
            Some((r(usage_before + quantity) - r(usage_before), quantity))
        };
        match &m.model {
            Model::PerUnit(p) => self.per_unit(p, m, quantity, at, attributes, usage_before, keep),
            Model::Graduated(tiers) => cumulative(&|q| {
                let mut lower = Decimal::ZERO;
                let mut sum = Decimal::ZERO;
                for (up_to, price) in tiers {
                    let upper = up_to.unwrap_or(Decimal::MAX);
                    if q > lower {
                        sum += (q.min(upper) - lower) * price;
                    }
                    lower = upper;
                }
                sum
            }),
            Model::Volume(tiers) => cumulative(&|q| {
                let price = tiers
                    .iter()
                    .find(|(up_to, _)| up_to.is_none_or(|b| q <= b))
                    .expect("the last tier is unbounded")
                    .1;
                q * price
            }),
            Model::Package { block, price } => cumulative(&|q| ceil(q / block) * price),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn per_unit(
        &self,
        p: &PerUnit,
        m: &Meter,
        quantity: Decimal,
        at: DateTime<Utc>,
        attributes: &[(String, String)],
        usage_before: Decimal,
        keep: Decimal,
    ) -> Option<(Decimal, Decimal)> {
        let value = |key: &str| attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        let by_rule = p
            .rules
            .iter()
            .find(|(attrs, _)| attrs.iter().all(|(k, v)| value(k) == Some(v.as_str())))
            .map(|(_, price)| *price);
        let by_prefix = || {
            let subject = value(p.prefix_attribute.as_deref()?)?;
            p.prefixes
                .iter()
                .filter(|(prefix, _)| subject.starts_with(prefix.as_str()))
                .max_by_key(|(prefix, _)| prefix.len())
                .map(|(_, price)| *price)
        };
        let price = by_rule.or_else(by_prefix).or(p.default)?;
        let rated = match (p.duration, p.increments) {
            (true, Some(inc)) => rated_duration(quantity, inc),
            _ => quantity,
        };
        // Parts in time order: (units, band factor). A call is cut at every whole UTC minute.
        let parts: Vec<(Decimal, Decimal)> = if p.bands.is_empty() {
            vec![(rated, Decimal::ONE)]
        } else if !p.duration {
            vec![(rated, self.band_factor(&p.bands, at))]
        } else {
            let nanos = |d: Decimal| {
                use rust_decimal::prelude::ToPrimitive;
                (d * Decimal::from(1_000_000_000))
                    .to_i64()
                    .expect("a call shorter than 292 years")
            };
            let end = at + Duration::nanoseconds(nanos(rated));
            let mut parts = Vec::new();
            let mut t = at;
            while t < end {
                let next_minute = Utc
                    .timestamp_opt(t.timestamp() - t.timestamp().rem_euclid(60) + 60, 0)
                    .unwrap()
                    .min(end);
                let seconds =
                    Decimal::from_i128_with_scale(i128::from((next_minute - t).num_nanoseconds().unwrap()), 9);
                parts.push((seconds, self.band_factor(&p.bands, t)));
                t = next_minute;
            }
            parts
        };
        let mut free = at_least_zero(m.included - usage_before).min(rated);
        let mut usage = Decimal::ZERO;
        for (units, factor) in parts {
            let taken = free.min(units);
            free -= taken;
            usage += (units - taken) * price * factor;
        }
        let mut numerator = usage + p.connect_fee * m.per;
        if let Some(minimum) = p.minimum {
            numerator = numerator.max(minimum * m.per);
        }
        Some((round9(numerator * keep, m.per * Decimal::from(10_000)), rated))
    }
}

/// An account's subscription as the reference knows it.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub plan: String,
    pub from: DateTime<Utc>,
    pub to: Option<DateTime<Utc>>,
    pub discount_percent: Decimal,
}

/// What one meter of an account-period should hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeterTotals {
    pub quantity: Decimal,
    pub rated_quantity: Decimal,
    pub charge: Decimal,
    pub events: u64,
}

/// What an account-period should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Totals {
    pub plan: String,
    pub currency: String,
    pub meters: BTreeMap<String, MeterTotals>,
    pub total_charge: Decimal,
    /// The total rounded with the plan's invoice rounding.
    pub total_amount: Decimal,
}

/// One event as the reference rated it.
#[derive(Debug, Clone)]
pub struct Rated {
    pub account: String,
    pub event_id: String,
    pub period: String,
    pub meter: String,
    pub charge: Decimal,
}

/// What the daemon should report after a sequence of events.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The totals of every (account, period) rated by one plan: what the top-level figures of
    /// GetTotals show. A period with a plan change is in `parts` only.
    pub totals: BTreeMap<(String, String), Totals>,
    /// The totals of every (account, period, plan): each plan of a period counts its own usage.
    pub parts: BTreeMap<(String, String, String), Totals>,
    pub records: Vec<Rated>,
    pub accepted: u64,
    pub duplicate: u64,
    /// Events the reference could not price (no subscription, plan or meter price) or whose id
    /// was already rated with other content.
    pub rejected: u64,
}

/// The reference: a catalogue and the subscriptions of the test accounts.
#[derive(Debug, Clone)]
pub struct Reference {
    pub plans: BTreeMap<String, Plan>,
    subscriptions: BTreeMap<String, Vec<Subscription>>,
}

impl Reference {
    pub fn new(toml_text: &str) -> Reference {
        Reference {
            plans: plans(toml_text),
            subscriptions: BTreeMap::new(),
        }
    }

    /// The shipped catalogue with the accounts of `common::write_config`: `tel-N` on
    /// telecom-standard and `saas-N` on saas-pro, from 2020.
    pub fn shipped() -> Reference {
        Reference::accounts_on(include_str!("../../config/tariffs.toml"))
    }

    /// The accounts of `common::write_config` (as [`Reference::shipped`]) on the catalogue
    /// `toml_text`, which holds at least the shipped plans.
    pub fn accounts_on(toml_text: &str) -> Reference {
        let mut r = Reference::new(toml_text);
        let from = Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap();
        for i in 0..super::ACCOUNTS_PER_PLAN {
            r.subscribe(&format!("tel-{i}"), "telecom-standard", from, None, Decimal::ZERO);
            r.subscribe(&format!("saas-{i}"), "saas-pro", from, None, Decimal::ZERO);
        }
        r
    }

    pub fn subscribe(
        &mut self,
        account: &str,
        plan: &str,
        from: DateTime<Utc>,
        to: Option<DateTime<Utc>>,
        discount_percent: Decimal,
    ) -> &mut Reference {
        assert!(self.plans.contains_key(plan), "unknown plan {plan}");
        self.subscriptions
            .entry(account.to_string())
            .or_default()
            .push(Subscription {
                plan: plan.to_string(),
                from,
                to,
                discount_percent,
            });
        self
    }

    pub fn plan(&self, id: &str) -> &Plan {
        &self.plans[id]
    }

    /// The same catalogue and subscriptions with every discount removed: what a statement's
    /// subtotal (before its discount line) adds up.
    pub fn without_discounts(&self) -> Reference {
        let mut r = self.clone();
        for plan in r.plans.values_mut() {
            for v in &mut plan.versions {
                v.discount_percent = Decimal::ZERO;
            }
        }
        for subs in r.subscriptions.values_mut() {
            for s in subs {
                s.discount_percent = Decimal::ZERO;
            }
        }
        r
    }

    /// The plan that prices the account's `meter` at `t`, with the subscription's discount: the
    /// one subscription in force then; with several (a base plan and add-ons), the one whose
    /// plan prices the meter, else the base one (docs/tariffs.md, "Add-ons").
    pub fn plan_at(&self, account: &str, t: DateTime<Utc>, meter: &str) -> Option<(&Plan, Decimal)> {
        let covering: Vec<&Subscription> = self
            .subscriptions
            .get(account)?
            .iter()
            .filter(|s| s.from <= t && s.to.is_none_or(|to| t < to))
            .collect();
        let plan = |s: &Subscription| &self.plans[&s.plan];
        let prices = |s: &&&Subscription| plan(s).version_at(t).is_some_and(|v| v.meters.contains_key(meter));
        let chosen = match covering.as_slice() {
            [] => return None,
            [one] => *one,
            several => several
                .iter()
                .find(prices)
                .or_else(|| several.iter().find(|s| !plan(s).addon))
                .unwrap_or(&several[0]),
        };
        Some((plan(chosen), chosen.discount_percent))
    }

    /// Rates `events` in order, as the daemon rates them when they arrive in that order: each
    /// (account, event id) once, resends with the same content are duplicates, with other content
    /// conflicts. Period totals do not depend on the order (docs/tariffs.md); record charges of
    /// cumulative models and allowances do.
    pub fn rate(&self, events: &[proto::UsageEvent]) -> Outcome {
        let mut out = Outcome::default();
        let mut claimed: HashMap<(String, String), proto::UsageEvent> = HashMap::new();
        let mut usage: HashMap<(String, String, String), Decimal> = HashMap::new();
        for e in events {
            let id = (e.account_id.clone(), e.event_id.clone());
            if let Some(first) = claimed.get(&id) {
                if first == e {
                    out.duplicate += 1;
                } else {
                    out.rejected += 1;
                }
                continue;
            }
            let at = DateTime::<Utc>::from_timestamp_nanos(e.timestamp_unix_nanos);
            let q = e.quantity.expect("a quantity");
            let quantity = Decimal::from_i128_with_scale(i128::from(q.units) * 1_000_000_000 + i128::from(q.nanos), 9);
            let attributes: Vec<(String, String)> =
                e.attributes.iter().map(|a| (a.key.clone(), a.value.clone())).collect();
            let Some((plan, discount)) = self.plan_at(&e.account_id, at, &e.meter) else {
                out.rejected += 1;
                continue;
            };
            let period = plan.period_of(at);
            // Cumulative tiers and allowances count the usage of this plan in the period only.
            let key = (e.account_id.clone(), format!("{period}|{}", plan.id), e.meter.clone());
            let before = usage.get(&key).copied().unwrap_or_default();
            let Some((charge, rated)) = plan.price(&e.meter, quantity, at, &attributes, before, discount) else {
                out.rejected += 1;
                continue;
            };
            claimed.insert(id, e.clone());
            out.accepted += 1;
            usage.insert(key, before + rated);
            let totals = out
                .parts
                .entry((e.account_id.clone(), period.clone(), plan.id.clone()))
                .or_insert_with(|| Totals {
                    plan: plan.id.clone(),
                    currency: plan.currency.clone(),
                    meters: BTreeMap::new(),
                    total_charge: Decimal::ZERO,
                    total_amount: Decimal::ZERO,
                });
            let m = totals.meters.entry(e.meter.clone()).or_default();
            m.quantity += quantity;
            m.rated_quantity += rated;
            m.charge += charge;
            m.events += 1;
            totals.total_charge += charge;
            totals.total_amount = plan.amount(totals.total_charge);
            out.records.push(Rated {
                account: e.account_id.clone(),
                event_id: e.event_id.clone(),
                period,
                meter: e.meter.clone(),
                charge,
            });
        }
        let mut plans_of: HashMap<(String, String), usize> = HashMap::new();
        for (account, period, _) in out.parts.keys() {
            *plans_of.entry((account.clone(), period.clone())).or_default() += 1;
        }
        for ((account, period, _), totals) in &out.parts {
            let key = (account.clone(), period.clone());
            if plans_of[&key] == 1 {
                out.totals.insert(key, totals.clone());
            }
        }
        out
    }
}
