//! The meters of a tariff version validated: each charge model (per unit with its rates,
//! prefixes, bands, increments and fees per event; graduated, volume and package tiers) checked
//! field by field, every error with its path.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rust_decimal::Decimal;

use crate::domain::tariff::{
    Band, Bands, FastMap, Increments, MINUTES_PER_WEEK, MatchRule, MeterTariff, Model, PerUnit, PrefixTable, RateTable,
    Tier,
};

use super::raw::*;
use super::week::*;
use super::{MAX_NAME_BYTES, MAX_PER, Validator, indexed, key, quoted};

impl Validator {
    pub(super) fn meters(
        &mut self,
        vpath: &str,
        raw: BTreeMap<String, RawMeter>,
        has_fees: bool,
    ) -> Option<FastMap<String, MeterTariff>> {
        if raw.is_empty() && !has_fees {
            self.error(key(vpath, "meters"), "at least one meter or fee is required");
            return None;
        }
        let mut meters = FastMap::with_capacity(raw.len());
        let mut ok = true;
        for (name, raw_meter) in raw {
            let mpath = quoted(&key(vpath, "meters"), &name);
            ok &= self.name(&mpath, &name);
            if crate::domain::origin::is_reserved(&name) {
                self.error(
                    &mpath,
                    "meter names starting with @ are reserved (one-off charges are @charge)",
                );
                ok = false;
            }
            match self.meter(&mpath, raw_meter) {
                Some(m) => {
                    meters.insert(name, m);
                }
                None => ok = false,
            }
        }
        ok.then_some(meters)
    }

    fn meter(&mut self, path: &str, mut raw: RawMeter) -> Option<MeterTariff> {
        let before = self.errors.len();
        let per = raw.per.unwrap_or(1);
        if per == 0 || per > MAX_PER {
            self.error(key(path, "per"), format!("must be between 1 and {MAX_PER}"));
        }
        let included = raw
            .included
            .take()
            .and_then(|d| self.amount(&key(path, "included"), d))
            .unwrap_or_default();
        let model = match raw.model.as_str() {
            "per_unit" => self.per_unit(path, raw).map(Model::PerUnit),
            "graduated" | "volume" => {
                let volume = raw.model == "volume";
                self.only_fields(path, &raw, &["tiers"]);
                let tiers = self.tiers(path, raw.tiers);
                tiers.map(|t| if volume { Model::Volume(t) } else { Model::Graduated(t) })
            }
            "package" => {
                self.only_fields(path, &raw, &["block_size", "block_price"]);
                let size = self
                    .required(path, "block_size", raw.block_size)
                    .and_then(|d| self.positive(&key(path, "block_size"), d));
                let price = self
                    .required(path, "block_price", raw.block_price)
                    .and_then(|d| self.price(&key(path, "block_price"), d));
                Some(Model::Package {
                    block_size: size?,
                    block_price: price?,
                })
            }
            other => {
                self.error(
                    key(path, "model"),
                    format!("{other:?} is not one of \"per_unit\", \"graduated\", \"volume\", \"package\""),
                );
                None
            }
        };
        (self.errors.len() == before).then_some(MeterTariff {
            per,
            included,
            model: model?,
        })
    }

    fn required(&mut self, path: &str, field: &str, value: Option<Dec>) -> Option<Dec> {
        if value.is_none() {
            self.error(key(path, field), "is required for this model");
        }
        value
    }

    /// Reports every model-specific field present that `allowed` does not list.
    fn only_fields(&mut self, path: &str, raw: &RawMeter, allowed: &[&str]) {
        let present = [
            ("price", raw.price.is_some()),
            ("prefix_attribute", raw.prefix_attribute.is_some()),
            ("prefixes", raw.prefixes.is_some()),
            ("match", raw.matches.is_some()),
            ("duration", raw.duration.is_some()),
            ("increments", raw.increments.is_some()),
            ("connect_fee", raw.connect_fee.is_some()),
            ("minimum_charge", raw.minimum_charge.is_some()),
            ("bands", raw.bands.is_some()),
            ("tiers", raw.tiers.is_some()),
            ("block_size", raw.block_size.is_some()),
            ("block_price", raw.block_price.is_some()),
        ];
        for (field, is_present) in present {
            if is_present && !allowed.contains(&field) {
                self.error(key(path, field), format!("not valid for model {:?}", raw.model));
            }
        }
    }

    fn per_unit(&mut self, path: &str, mut raw: RawMeter) -> Option<PerUnit> {
        self.only_fields(
            path,
            &raw,
            &[
                "price",
                "prefix_attribute",
                "prefixes",
                "match",
                "duration",
                "increments",
                "connect_fee",
                "minimum_charge",
                "bands",
            ],
        );
        let has_rate = raw.price.is_some() || raw.prefixes.is_some() || raw.matches.is_some();
        let default = raw.price.take().and_then(|d| self.price(&key(path, "price"), d));
        let prefix = self.prefixes(path, raw.prefix_attribute.take(), raw.prefixes.take());
        let matches = self.matches(path, raw.matches.take().unwrap_or_default());
        if !has_rate {
            self.error(path, "a per_unit meter needs a price, prefixes or match rules");
        }
        let duration = raw.duration.unwrap_or(false);
        let increments = raw.increments.take().and_then(|inc| {
            let ipath = key(path, "increments");
            if !duration {
                self.error(&ipath, "increments apply to durations: set duration = true");
            }
            let first = self.positive(&key(&ipath, "first"), inc.first);
            let next = self.positive(&key(&ipath, "next"), inc.next);
            Some(Increments {
                first: first?,
                next: next?,
            })
        });
        let connect_fee = raw
            .connect_fee
            .take()
            .and_then(|d| self.price(&key(path, "connect_fee"), d))
            .unwrap_or_default();
        let minimum_charge = raw
            .minimum_charge
            .take()
            .and_then(|d| self.price(&key(path, "minimum_charge"), d))
            .unwrap_or_default();
        let bands = raw.bands.take().and_then(|b| self.bands(&key(path, "bands"), b));
        Some(PerUnit {
            rates: RateTable {
                matches,
                prefix,
                default,
            },
            duration,
            increments,
            bands,
            connect_fee,
            minimum_charge,
        })
    }

    fn prefixes(
        &mut self,
        path: &str,
        attribute: Option<String>,
        prices: Option<BTreeMap<String, Dec>>,
    ) -> Option<PrefixTable> {
        match (attribute, prices) {
            (None, None) => None,
            (Some(_), None) => {
                self.error(
                    key(path, "prefixes"),
                    "prefix_attribute is set but there are no prefixes",
                );
                None
            }
            (None, Some(_)) => {
                self.error(
                    key(path, "prefix_attribute"),
                    "prefixes need the attribute they match on",
                );
                None
            }
            (Some(attribute), Some(raw)) => {
                self.name(&key(path, "prefix_attribute"), &attribute);
                let ppath = key(path, "prefixes");
                if raw.is_empty() {
                    self.error(&ppath, "must hold at least one prefix");
                }
                let mut prices = FastMap::with_capacity(raw.len());
                for (prefix, dec) in raw {
                    let epath = quoted(&ppath, &prefix);
                    if prefix.is_empty() || prefix.len() > MAX_NAME_BYTES {
                        self.error(&epath, format!("prefix must be 1..={MAX_NAME_BYTES} bytes"));
                    }
                    if let Some(price) = self.price(&epath, dec) {
                        prices.insert(prefix, price);
                    }
                }
                let longest = prices.keys().map(String::len).max().unwrap_or(0);
                Some(PrefixTable {
                    attribute,
                    prices,
                    longest,
                })
            }
        }
    }

    fn matches(&mut self, path: &str, raw: Vec<RawMatch>) -> Vec<MatchRule> {
        let mut rules = Vec::with_capacity(raw.len());
        for (i, rule) in raw.into_iter().enumerate() {
            let rpath = indexed(path, "match", i);
            if rule.attributes.is_empty() {
                self.error(key(&rpath, "attributes"), "must name at least one attribute");
            }
            for (name, value) in &rule.attributes {
                self.name(&quoted(&key(&rpath, "attributes"), name), name);
                if value.len() > MAX_NAME_BYTES {
                    self.error(
                        quoted(&key(&rpath, "attributes"), name),
                        format!("value longer than {MAX_NAME_BYTES} bytes"),
                    );
                }
            }
            if let Some(price) = self.price(&key(&rpath, "price"), rule.price) {
                rules.push(MatchRule {
                    attributes: rule.attributes.into_iter().collect(),
                    price,
                });
            }
        }
        rules
    }

    fn tiers(&mut self, path: &str, raw: Option<Vec<RawTier>>) -> Option<Vec<Tier>> {
        let tpath = key(path, "tiers");
        let Some(raw) = raw else {
            self.error(&tpath, "is required for this model");
            return None;
        };
        if raw.is_empty() {
            self.error(&tpath, "must hold at least one tier");
            return None;
        }
        let last = raw.len() - 1;
        let mut tiers = Vec::with_capacity(raw.len());
        let mut previous = Decimal::ZERO;
        for (i, tier) in raw.into_iter().enumerate() {
            let ipath = format!("{tpath}[{i}]");
            let price = self.price(&key(&ipath, "price"), tier.price);
            let up_to = match tier.up_to {
                None if i != last => {
                    self.error(key(&ipath, "up_to"), "is required on every tier but the last");
                    None
                }
                Some(_) if i == last => {
                    self.error(key(&ipath, "up_to"), "the last tier is open-ended and takes no up_to");
                    None
                }
                None => None,
                Some(d) => {
                    let bound = self.amount(&key(&ipath, "up_to"), d);
                    if let Some(b) = bound {
                        if b <= previous {
                            self.error(
                                key(&ipath, "up_to"),
                                format!("tiers must increase: {b} is not above {previous}"),
                            );
                        }
                        previous = b;
                    }
                    bound
                }
            };
            if let Some(price) = price {
                tiers.push(Tier { up_to, price });
            }
        }
        Some(tiers)
    }

    fn bands(&mut self, path: &str, raw: Vec<RawBand>) -> Option<Bands> {
        if raw.is_empty() {
            self.error(path, "must hold at least one band");
            return None;
        }
        let before = self.errors.len();
        let mut owner: Vec<Option<usize>> = vec![None; MINUTES_PER_WEEK as usize];
        let mut overlaps: BTreeSet<(usize, usize)> = BTreeSet::new();
        let mut overlap_minutes: Vec<u32> = Vec::new();
        let mut bands = Vec::with_capacity(raw.len());
        let mut names = HashMap::new();
        for (b, band) in raw.into_iter().enumerate() {
            let bpath = format!("{path}[{b}]");
            if let Some(first) = names.insert(band.name.clone(), b) {
                self.error(
                    key(&bpath, "name"),
                    format!("duplicate band name {:?} (also {path}[{first}])", band.name),
                );
            }
            self.name(&key(&bpath, "name"), &band.name);
            let factor = self.amount(&key(&bpath, "factor"), band.factor).unwrap_or_default();
            if band.windows.is_empty() {
                self.error(key(&bpath, "windows"), "must hold at least one window");
            }
            for (w, window) in band.windows.iter().enumerate() {
                let wpath = indexed(&bpath, "windows", w);
                for minute in self.window_minutes(&wpath, window) {
                    match owner[minute as usize] {
                        Some(other) => {
                            overlaps.insert((other, b));
                            overlap_minutes.push(minute);
                        }
                        None => owner[minute as usize] = Some(b),
                    }
                }
            }
            bands.push(Band {
                name: band.name,
                factor,
            });
        }
        if self.errors.len() != before {
            return None;
        }
        for (a, b) in overlaps {
            let at = overlap_minutes
                .iter()
                .copied()
                .find(|&m| owner[m as usize] == Some(a))
                .unwrap_or(0);
            self.error(
                path,
                format!(
                    "bands {:?} and {:?} overlap (first at {})",
                    bands[a].name,
                    bands[b].name,
                    minute_label(at)
                ),
            );
        }
        for (start, end) in gaps(&owner) {
            self.error(
                path,
                format!(
                    "{} to {} is not covered by any band",
                    minute_label(start),
                    minute_label(end)
                ),
            );
        }
        if self.errors.len() != before {
            return None;
        }
        Some(Bands {
            segments: segments(&owner),
            bands,
        })
    }

    /// The minutes of the week a window covers; reports malformed days or times.
    fn window_minutes(&mut self, path: &str, window: &RawWindow) -> Vec<u32> {
        let from = parse_clock(&window.from);
        let to = parse_clock(&window.to);
        if from.is_none() || from == Some(24 * 60) {
            self.error(
                key(path, "from"),
                format!("{:?} is not a time HH:MM between 00:00 and 23:59", window.from),
            );
        }
        if to.is_none() {
            self.error(
                key(path, "to"),
                format!("{:?} is not a time HH:MM between 00:00 and 24:00", window.to),
            );
        }
        let mut days = Vec::new();
        for (i, spec) in window.days.iter().enumerate() {
            match parse_days(spec) {
                Some(mut d) => days.append(&mut d),
                None => self.error(
                    format!("{path}.days[{i}]"),
                    format!("{spec:?} is not a weekday or range like \"mon-fri\""),
                ),
            }
        }
        if window.days.is_empty() {
            self.error(key(path, "days"), "must name at least one day");
        }
        let (Some(from), Some(to)) = (from, to) else {
            return Vec::new();
        };
        if from >= to {
            self.error(path, format!("from {} must be before to {}", window.from, window.to));
            return Vec::new();
        }
        days.sort_unstable();
        days.dedup();
        days.iter().flat_map(|&d| (d * 1440 + from)..(d * 1440 + to)).collect()
    }
}
