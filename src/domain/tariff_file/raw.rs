//! The raw shape of a tariff file, as serde reads it: unknown keys refused, amounts read as
//! exact decimals (a TOML float is an error, never a number).

use std::collections::BTreeMap;
use std::fmt;

use rust_decimal::Decimal;
use serde::Deserialize;

use crate::domain::money::{RoundingMode, parse_exact};

// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    #[serde(default)]
    pub(super) plans: Vec<RawPlan>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlan {
    pub(super) id: String,
    pub(super) name: Option<String>,
    pub(super) currency: String,
    pub(super) time_zone: String,
    pub(super) rounding: RawRounding,
    pub(super) billing_period: Option<RawPeriod>,
    /// An add-on: held beside the account's base subscription.
    #[serde(default)]
    pub(super) addon: bool,
    /// "reject" (the default) or "overdraft": prepaid usage the balance cannot pay.
    pub(super) insufficient_balance: Option<String>,
    #[serde(default)]
    pub(super) versions: Vec<RawVersion>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRounding {
    pub(super) places: u32,
    pub(super) mode: RoundingMode,
    /// Places that differ from the currency's ISO 4217 minor unit on purpose.
    #[serde(default)]
    pub(super) minor_unit_override: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPeriod {
    pub(super) kind: String,
    pub(super) anchor_day: Option<u32>,
    pub(super) week_start: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVersion {
    pub(super) effective_from: RawInstant,
    /// The number of the version this one corrects (same `effective_from`).
    pub(super) supersedes: Option<u32>,
    pub(super) discount_percent: Option<Dec>,
    #[serde(default)]
    pub(super) meters: BTreeMap<String, RawMeter>,
    #[serde(default)]
    pub(super) fees: Vec<RawFee>,
    /// Minimum commitment per billing period.
    pub(super) minimum: Option<Dec>,
}

/// A recurring fee of a version: a named amount per billing period.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFee {
    pub(super) name: String,
    pub(super) amount: Dec,
    pub(super) billing: String,
}

/// A TOML offset date-time, or the same written as an RFC 3339 string.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawInstant {
    Native(toml::value::Datetime),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMeter {
    pub(super) model: String,
    pub(super) per: Option<u32>,
    pub(super) included: Option<Dec>,
    pub(super) price: Option<Dec>,
    pub(super) prefix_attribute: Option<String>,
    pub(super) prefixes: Option<BTreeMap<String, Dec>>,
    #[serde(rename = "match")]
    pub(super) matches: Option<Vec<RawMatch>>,
    pub(super) duration: Option<bool>,
    pub(super) increments: Option<RawIncrements>,
    pub(super) connect_fee: Option<Dec>,
    pub(super) minimum_charge: Option<Dec>,
    pub(super) bands: Option<Vec<RawBand>>,
    pub(super) tiers: Option<Vec<RawTier>>,
    pub(super) block_size: Option<Dec>,
    pub(super) block_price: Option<Dec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMatch {
    pub(super) attributes: BTreeMap<String, String>,
    pub(super) price: Dec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIncrements {
    pub(super) first: Dec,
    pub(super) next: Dec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBand {
    pub(super) name: String,
    pub(super) factor: Dec,
    pub(super) windows: Vec<RawWindow>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWindow {
    pub(super) days: Vec<String>,
    pub(super) from: String,
    pub(super) to: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTier {
    pub(super) up_to: Option<Dec>,
    pub(super) price: Dec,
}

/// A decimal read from a TOML string or integer. A TOML float is refused: it is binary, not exact.
pub(super) struct Dec(pub(super) Result<Decimal, String>);

impl<'de> Deserialize<'de> for Dec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Dec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a decimal string such as \"0.0200\", or an integer")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Dec, E> {
                Ok(Dec(parse_exact(text)))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Dec, E> {
                Ok(Dec(Ok(Decimal::from(n))))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Dec, E> {
                Ok(Dec(Ok(Decimal::from(n))))
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Dec, E> {
                Err(E::custom(format!(
                    "{n} is a TOML float, which is not exact; write the amount as a string, e.g. \"{n}\""
                )))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}
