//! The daemon's configuration file (`config/ratingd.toml`): raw serde structs that refuse unknown
//! keys, then one validation pass that gathers every error with its path, then the typed
//! [`Config`]. Relative paths are taken from the working directory.

use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::domain::money::parse_exact;
use crate::domain::subscription::Subscription;
use crate::domain::tariff::Catalogue;
use crate::domain::tariff_file::parse_catalogue;

/// Longest account id (SPEC section 2).
pub const MAX_ACCOUNT_BYTES: usize = 128;

/// A validated configuration, with the tariff catalogue it names already loaded.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub tariffs_path: PathBuf,
    pub catalogue: Catalogue,
    /// Plan for accounts with no subscription; `None` sends their events to suspense (`NO_TARIFF`).
    pub default_plan: Option<String>,
    pub subscriptions: Vec<Subscription>,
}

/// Every problem found in a configuration, each with its path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    tariffs: PathBuf,
    default_plan: Option<String>,
    #[serde(default)]
    subscriptions: Vec<RawSubscription>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubscription {
    account: String,
    plan: String,
    from: String,
    to: Option<String>,
    discount_percent: Option<String>,
}

impl Config {
    /// Reads and validates the configuration at `path` and the tariff file it names.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigErrors(vec![format!("{}: cannot read: {e}", path.display())]))?;
        let raw: RawConfig = toml::from_str(&text).map_err(|e| {
            ConfigErrors(vec![format!(
                "{}: {}",
                path.display(),
                e.to_string().trim_end().replace('\n', " | ")
            )])
        })?;
        let tariff_text = std::fs::read_to_string(&raw.tariffs)
            .map_err(|e| ConfigErrors(vec![format!("tariffs: cannot read {}: {e}", raw.tariffs.display())]))?;
        let catalogue = parse_catalogue(&tariff_text).map_err(|errors| {
            ConfigErrors(
                errors
                    .0
                    .iter()
                    .map(|e| format!("{}: {e}", raw.tariffs.display()))
                    .collect(),
            )
        })?;
        let mut errors = Vec::new();
        if let Some(plan) = &raw.default_plan {
            if catalogue.plan(plan).is_none() {
                errors.push(format!("default_plan: unknown plan {plan:?}"));
            }
        }
        let subscriptions = raw
            .subscriptions
            .into_iter()
            .enumerate()
            .filter_map(|(i, s)| subscription(&catalogue, &format!("subscriptions[{i}]"), s, &mut errors))
            .collect::<Vec<_>>();
        overlapping(&subscriptions, &mut errors);
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok(Config {
            path: path.to_path_buf(),
            tariffs_path: raw.tariffs,
            catalogue,
            default_plan: raw.default_plan,
            subscriptions,
        })
    }
}

fn instant(path: &str, text: &str, errors: &mut Vec<String>) -> Option<DateTime<Utc>> {
    match DateTime::parse_from_rfc3339(text) {
        Ok(t) => Some(t.with_timezone(&Utc)),
        Err(_) => {
            errors.push(format!("{path}: {text:?} is not an RFC 3339 date-time"));
            None
        }
    }
}

fn subscription(
    catalogue: &Catalogue,
    path: &str,
    raw: RawSubscription,
    errors: &mut Vec<String>,
) -> Option<Subscription> {
    let before = errors.len();
    if raw.account.is_empty() || raw.account.len() > MAX_ACCOUNT_BYTES {
        errors.push(format!("{path}.account: must be 1..={MAX_ACCOUNT_BYTES} bytes"));
    }
    if catalogue.plan(&raw.plan).is_none() {
        errors.push(format!("{path}.plan: unknown plan {:?}", raw.plan));
    }
    let from = instant(&format!("{path}.from"), &raw.from, errors);
    let to = raw
        .to
        .as_deref()
        .and_then(|t| instant(&format!("{path}.to"), t, errors));
    if let (Some(from), Some(to)) = (from, to) {
        if to <= from {
            errors.push(format!("{path}.to: must be after from"));
        }
    }
    let discount = raw.discount_percent.as_deref().and_then(|d| match parse_exact(d) {
        Ok(d) if d > rust_decimal::Decimal::ZERO && d <= rust_decimal::Decimal::ONE_HUNDRED => Some(d),
        Ok(_) => {
            errors.push(format!(
                "{path}.discount_percent: must be greater than 0 and at most 100"
            ));
            None
        }
        Err(m) => {
            errors.push(format!("{path}.discount_percent: {m}"));
            None
        }
    });
    (errors.len() == before).then(|| Subscription {
        account_id: raw.account,
        plan_id: raw.plan,
        // Invariant: `from` parsed, or an error was pushed and we returned above.
        from: from.expect("from validated"),
        to,
        discount_percent: discount,
    })
}

/// Two subscriptions of one account may not both be in force at the same instant.
fn overlapping(subscriptions: &[Subscription], errors: &mut Vec<String>) {
    for (i, a) in subscriptions.iter().enumerate() {
        for (j, b) in subscriptions.iter().enumerate().skip(i + 1) {
            let overlap =
                a.account_id == b.account_id && a.to.is_none_or(|to| b.from < to) && b.to.is_none_or(|to| a.from < to);
            if overlap {
                errors.push(format!(
                    "subscriptions[{j}]: account {:?} already has a subscription in force then (subscriptions[{i}])",
                    b.account_id
                ));
            }
        }
    }
}
