//! Tariff files: TOML -> raw serde structs (unknown keys refused) -> validation that gathers every
//! error with its path -> the typed [`Catalogue`]. The raw shape is in `raw`, the parsing of days,
//! clocks and the week's band segments in `week`.
//!
//! Parsing is pure (a `&str` in, a catalogue or a list of errors out); reading the file is the
//! caller's job. Money is never read from a TOML float: prices are strings (`"0.0200"`) or integers.

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, Utc, Weekday};
use chrono_tz::Tz;
use rust_decimal::Decimal;

use crate::domain::balance::BalancePolicy;
use crate::domain::money::{Currency, InvoiceRounding, MAX_INPUT_SCALE, RECORD_SCALE};
use crate::domain::period::BillingPeriod;
use crate::domain::tariff::{Billing, Catalogue, Fee, Plan, Version};

pub mod content;
mod models;
mod raw;
mod week;

use raw::*;
use week::*;

use crate::limits::{MAX_PER, MAX_TARIFF_NAME_BYTES as MAX_NAME_BYTES};

/// One problem in a tariff file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TariffError {
    /// Dotted path such as `plans[1].versions[0].meters."voice.seconds".prefixes."+44"`; empty for
    /// a syntax error (whose message carries the line and column).
    pub path: String,
    pub message: String,
}

impl fmt::Display for TariffError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every error found in a tariff file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct TariffErrors(pub Vec<TariffError>);

impl fmt::Display for TariffErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// Parses and validates a tariff file's text.
pub fn parse_catalogue(text: &str) -> Result<Catalogue, TariffErrors> {
    let raw: RawFile = toml::from_str(text).map_err(|error| {
        let message = error.to_string().trim_end().replace('\n', " | ");
        TariffErrors(vec![TariffError {
            path: String::new(),
            message,
        }])
    })?;
    let mut v = Validator::default();
    let mut plans = v.file(raw);
    if !v.errors.is_empty() {
        return Err(TariffErrors(v.errors));
    }
    // Valid files keep their plans and versions in file order (versions sorted by date).
    let contents = content::version_contents(text).unwrap_or_default();
    for (plan, contents) in plans.iter_mut().zip(contents) {
        for (version, content) in plan.versions.iter_mut().zip(contents) {
            version.content = content;
        }
    }
    let index = plans.iter().enumerate().map(|(i, p)| (p.id.clone(), i)).collect();
    let meters = plans
        .iter()
        .flat_map(|p| &p.versions)
        .flat_map(|v| v.meters.keys().cloned())
        .collect();
    Ok(Catalogue { plans, index, meters })
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Validator {
    errors: Vec<TariffError>,
}

/// Appends a field name to a path.
fn key(path: &str, key: &str) -> String {
    format!("{path}.{key}")
}

/// Appends a map key as TOML writes it: bare when it is a bare key, quoted otherwise.
fn quoted(path: &str, key: &str) -> String {
    let bare = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        format!("{path}.{key}")
    } else {
        format!("{path}.{key:?}")
    }
}

fn indexed(path: &str, field: &str, i: usize) -> String {
    if path.is_empty() {
        format!("{field}[{i}]")
    } else {
        format!("{path}.{field}[{i}]")
    }
}

impl Validator {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(TariffError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn file(&mut self, raw: RawFile) -> Vec<Plan> {
        if raw.plans.is_empty() {
            self.error("plans", "at least one plan is required");
        }
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut plans = Vec::with_capacity(raw.plans.len());
        for (i, raw_plan) in raw.plans.into_iter().enumerate() {
            let path = indexed("", "plans", i);
            if let Some(first) = seen.get(&raw_plan.id) {
                self.error(
                    key(&path, "id"),
                    format!("duplicate plan id {:?} (also plans[{first}])", raw_plan.id),
                );
            } else {
                seen.insert(raw_plan.id.clone(), i);
            }
            if let Some(plan) = self.plan(&path, raw_plan) {
                plans.push(plan);
            }
        }
        plans
    }

    fn plan(&mut self, path: &str, raw: RawPlan) -> Option<Plan> {
        self.name(&key(path, "id"), &raw.id);
        let currency = raw
            .currency
            .parse::<Currency>()
            .map_err(|m| self.error(key(path, "currency"), m))
            .ok();
        let time_zone = raw
            .time_zone
            .parse::<Tz>()
            .map_err(|_| {
                self.error(
                    key(path, "time_zone"),
                    format!("unknown IANA time zone {:?}", raw.time_zone),
                )
            })
            .ok();
        if raw.rounding.places > RECORD_SCALE {
            self.error(key(path, "rounding.places"), format!("must be at most {RECORD_SCALE}"));
        }
        if let Some(c) = currency.filter(|_| !raw.rounding.minor_unit_override) {
            match c.minor_unit() {
                Some(unit) if unit != raw.rounding.places => self.error(
                    key(path, "rounding.places"),
                    format!(
                        "{} differs from the minor unit of {c} ({unit}); set rounding.minor_unit_override = true \
                         if that is intended",
                        raw.rounding.places
                    ),
                ),
                None => self.error(
                    key(path, "rounding.places"),
                    format!("{c} has no ISO 4217 minor unit; set rounding.minor_unit_override = true"),
                ),
                Some(_) => {}
            }
        }
        let rounding = InvoiceRounding {
            places: raw.rounding.places.min(RECORD_SCALE),
            mode: raw.rounding.mode,
        };
        let period = match raw.billing_period {
            None => Some(BillingPeriod::Month { anchor_day: 1 }),
            Some(p) => self.period(&key(path, "billing_period"), p),
        };
        let versions = self.versions(path, raw.versions);
        let insufficient_balance = match raw.insufficient_balance.as_deref() {
            None | Some("reject") => BalancePolicy::Reject,
            Some("overdraft") => BalancePolicy::Overdraft,
            Some(other) => {
                let detail = format!("must be \"reject\" or \"overdraft\", got {other:?}");
                self.error(key(path, "insufficient_balance"), detail);
                BalancePolicy::Reject
            }
        };
        Some(Plan {
            id: raw.id,
            name: raw.name,
            addon: raw.addon,
            insufficient_balance,
            currency: currency?,
            rounding,
            time_zone: time_zone?,
            period: period?,
            timeline: versions.as_deref().map(Plan::timeline_of).unwrap_or_default(),
            versions: versions?,
        })
    }

    fn period(&mut self, path: &str, raw: RawPeriod) -> Option<BillingPeriod> {
        let misplaced = |v: &mut Self, field: &str, present: bool| {
            if present {
                v.error(key(path, field), format!("not valid for kind {:?}", raw.kind));
            }
        };
        match raw.kind.as_str() {
            "month" => {
                misplaced(self, "week_start", raw.week_start.is_some());
                let anchor_day = raw.anchor_day.unwrap_or(1);
                if !(1..=31).contains(&anchor_day) {
                    self.error(key(path, "anchor_day"), "must be between 1 and 31");
                    return None;
                }
                Some(BillingPeriod::Month { anchor_day })
            }
            "week" => {
                misplaced(self, "anchor_day", raw.anchor_day.is_some());
                let start = match raw.week_start.as_deref() {
                    None => Weekday::Mon,
                    Some(day) => match parse_weekday(day) {
                        Some(d) => d,
                        None => {
                            self.error(key(path, "week_start"), format!("{day:?} is not a weekday (mon..sun)"));
                            return None;
                        }
                    },
                };
                Some(BillingPeriod::Week { start })
            }
            "day" => {
                misplaced(self, "anchor_day", raw.anchor_day.is_some());
                misplaced(self, "week_start", raw.week_start.is_some());
                Some(BillingPeriod::Day)
            }
            other => {
                self.error(
                    key(path, "kind"),
                    format!("{other:?} is not one of \"month\", \"week\", \"day\""),
                );
                None
            }
        }
    }

    fn versions(&mut self, path: &str, raw: Vec<RawVersion>) -> Option<Vec<Version>> {
        if raw.is_empty() {
            self.error(key(path, "versions"), "at least one version is required");
            return None;
        }
        let mut versions = Vec::with_capacity(raw.len());
        let mut ok = true;
        let mut previous: Option<DateTime<Utc>> = None;
        // (number, effective_from, superseded yet) of every version read so far.
        let mut seen: Vec<(u32, Option<DateTime<Utc>>, bool)> = Vec::new();
        for (i, raw_version) in raw.into_iter().enumerate() {
            let vpath = indexed(path, "versions", i);
            let from = self.instant(&key(&vpath, "effective_from"), &raw_version.effective_from);
            let number = u32::try_from(i + 1).unwrap_or(u32::MAX);
            match raw_version.supersedes {
                // A correction of an earlier version: from the same date, not in the date order.
                Some(n) => match seen.iter_mut().find(|s| s.0 == n) {
                    None => self.error(
                        key(&vpath, "supersedes"),
                        format!("names version {n}, which is not an earlier version of this plan (versions are numbered from 1 in file order)"),
                    ),
                    Some((_, _, true)) => self.error(
                        key(&vpath, "supersedes"),
                        format!("version {n} is already superseded by another version: supersede that one instead"),
                    ),
                    Some((_, old_from, superseded)) => {
                        *superseded = true;
                        if let (Some(old), Some(from)) = (*old_from, from)
                            && old != from
                        {
                            self.error(
                                key(&vpath, "effective_from"),
                                format!("must be that of the version it supersedes ({old}), not {from}"),
                            );
                        }
                    }
                },
                None => {
                    if let (Some(prev), Some(from)) = (previous, from)
                        && from <= prev
                    {
                        self.error(
                            key(&vpath, "effective_from"),
                            format!("versions must be sorted by effective_from without overlap: {from} is not after {prev}"),
                        );
                    }
                    previous = from.or(previous);
                }
            }
            seen.push((number, from, false));
            let discount = raw_version
                .discount_percent
                .and_then(|d| self.percent(&key(&vpath, "discount_percent"), d));
            let fees = self.fees(&vpath, raw_version.fees);
            let minimum = raw_version
                .minimum
                .and_then(|m| self.amount(&key(&vpath, "minimum"), m));
            let has_fees = fees.as_ref().is_some_and(|f| !f.is_empty());
            let meters = self.meters(&vpath, raw_version.meters, has_fees);
            match (from, meters, fees) {
                (Some(effective_from), Some(meters), Some(fees)) => versions.push(Version {
                    number,
                    supersedes: raw_version.supersedes,
                    effective_from,
                    discount_percent: discount,
                    meters,
                    fees,
                    minimum,
                    content: String::new(),
                }),
                _ => ok = false,
            }
        }
        ok.then_some(versions)
    }

    fn instant(&mut self, path: &str, raw: &RawInstant) -> Option<DateTime<Utc>> {
        let text = match raw {
            RawInstant::Native(dt) => dt.to_string(),
            RawInstant::Text(s) => s.clone(),
        };
        match DateTime::parse_from_rfc3339(&text) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(_) => {
                self.error(
                    path,
                    format!("{text:?} is not an RFC 3339 date-time with an offset (e.g. 2027-01-01T00:00:00Z)"),
                );
                None
            }
        }
    }

    fn percent(&mut self, path: &str, raw: Dec) -> Option<Decimal> {
        let d = self.amount(path, raw)?;
        if d <= Decimal::ZERO || d > Decimal::ONE_HUNDRED {
            self.error(path, "must be greater than 0 and at most 100");
            return None;
        }
        Some(d)
    }

    /// A non-negative decimal with at most 9 fractional digits.
    fn amount(&mut self, path: &str, raw: Dec) -> Option<Decimal> {
        match raw.0 {
            Err(message) => {
                self.error(path, message);
                None
            }
            Ok(d) if d.is_sign_negative() && !d.is_zero() => {
                self.error(path, "must be >= 0");
                None
            }
            Ok(d) if d.scale() > MAX_INPUT_SCALE => {
                self.error(path, format!("has more than {MAX_INPUT_SCALE} fractional digits"));
                None
            }
            Ok(d) => Some(d),
        }
    }

    fn price(&mut self, path: &str, raw: Dec) -> Option<Decimal> {
        match raw.0 {
            Ok(d) if d.is_sign_negative() && !d.is_zero() => {
                self.error(path, "price must be >= 0");
                None
            }
            _ => self.amount(path, raw),
        }
    }

    fn positive(&mut self, path: &str, raw: Dec) -> Option<Decimal> {
        let d = self.amount(path, raw)?;
        if d.is_zero() {
            self.error(path, "must be greater than 0");
            return None;
        }
        Some(d)
    }

    fn name(&mut self, path: &str, name: &str) -> bool {
        let ok = !name.is_empty() && name.len() <= MAX_NAME_BYTES && !name.chars().any(char::is_whitespace);
        if !ok {
            self.error(
                path,
                format!("must be 1..={MAX_NAME_BYTES} bytes without spaces, got {name:?}"),
            );
        }
        ok
    }

    fn fees(&mut self, vpath: &str, raw: Vec<RawFee>) -> Option<Vec<Fee>> {
        let mut fees: Vec<Fee> = Vec::with_capacity(raw.len());
        let mut names: Vec<String> = Vec::with_capacity(raw.len());
        let mut ok = true;
        for (i, f) in raw.into_iter().enumerate() {
            let fpath = indexed(vpath, "fees", i);
            ok &= self.name(&key(&fpath, "name"), &f.name);
            if crate::domain::origin::is_reserved(&f.name) {
                self.error(key(&fpath, "name"), "fee names cannot start with @");
                ok = false;
            }
            if names.contains(&f.name) {
                self.error(key(&fpath, "name"), format!("fee {:?} is named twice", f.name));
                ok = false;
            }
            names.push(f.name.clone());
            let billing = match f.billing.as_str() {
                "in_advance" => Some(Billing::InAdvance),
                "in_arrears" => Some(Billing::InArrears),
                other => {
                    self.error(
                        key(&fpath, "billing"),
                        format!("unknown billing mode {other:?}: in_advance or in_arrears"),
                    );
                    None
                }
            };
            match (self.amount(&key(&fpath, "amount"), f.amount), billing) {
                (Some(amount), Some(billing)) => fees.push(Fee {
                    name: f.name,
                    amount,
                    billing,
                }),
                _ => ok = false,
            }
        }
        ok.then_some(fees)
    }
}
