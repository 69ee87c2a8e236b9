//! The content of a plan version as sorted `path = value` lines: what a version in force may never
//! change (docs/tariffs.md). The lines hold the version's table and the plan keys that change how
//! it rates (currency, time zone, rounding, billing period). Amounts are normalized ("0.0100" and
//! "0.01" are one price), so re-formatting a file is not an edit; changing a price, a tier, a band,
//! an increment or the date a version takes effect is.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::domain::money::parse_exact;
use crate::domain::tariff::Catalogue;

/// The plan keys a version's rating depends on.
const PLAN_KEYS: [&str; 4] = ["currency", "time_zone", "rounding", "billing_period"];

/// Per plan of the file (in file order), per version (in file order): its content. `None` when
/// the text is not TOML (the typed parse reports that).
pub fn version_contents(text: &str) -> Option<Vec<Vec<String>>> {
    let file: toml::Table = toml::from_str(text).ok()?;
    let plans = file.get("plans").and_then(toml::Value::as_array)?;
    let contents = plans
        .iter()
        .map(|plan| {
            let mut shared = BTreeMap::new();
            for k in PLAN_KEYS {
                if let Some(v) = plan.get(k) {
                    flatten(&format!("plan.{k}"), v, &mut shared);
                }
            }
            let versions = plan.get("versions").and_then(toml::Value::as_array);
            versions
                .map(|list| {
                    list.iter()
                        .map(|version| {
                            let mut lines = shared.clone();
                            if let Some(table) = version.as_table() {
                                for (k, v) in table {
                                    flatten(k, v, &mut lines);
                                }
                            }
                            lines.iter().map(|(k, v)| format!("{k} = {v}\n")).collect()
                        })
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    Some(contents)
}

fn flatten(path: &str, value: &toml::Value, out: &mut BTreeMap<String, String>) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let bare = k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                let key = if bare { k.clone() } else { format!("{k:?}") };
                flatten(&format!("{path}.{key}"), v, out);
            }
        }
        toml::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                flatten(&format!("{path}[{i}]"), v, out);
            }
        }
        toml::Value::String(s) => {
            let text = match parse_exact(s) {
                Ok(d) => d.normalize().to_string(),
                Err(_) => format!("{s:?}"),
            };
            out.insert(path.to_string(), text);
        }
        toml::Value::Integer(n) => {
            out.insert(path.to_string(), n.to_string());
        }
        other => {
            out.insert(path.to_string(), other.to_string());
        }
    }
}

/// A version known to have been published: stored at an earlier start or reload, or in the
/// catalogue a reload replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownVersion {
    pub plan: String,
    pub number: u32,
    pub effective_from: DateTime<Utc>,
    pub content: String,
}

impl KnownVersion {
    pub fn of(catalogue: &Catalogue) -> Vec<KnownVersion> {
        catalogue
            .plans()
            .iter()
            .flat_map(|p| {
                p.versions.iter().map(|v| KnownVersion {
                    plan: p.id.clone(),
                    number: v.number,
                    effective_from: v.effective_from,
                    content: v.content.clone(),
                })
            })
            .collect()
    }
}

/// Every version of `known` in force at `now` (effective at or before it) that `new` edits or
/// drops, one message each naming the plan, the version and what changed. A plan `new` lacks
/// altogether is left to the check of the plans in use; versions not yet in force may change.
pub fn edited_in_force(known: &[KnownVersion], new: &Catalogue, now: DateTime<Utc>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for k in known.iter().filter(|k| k.effective_from <= now) {
        let Some(plan) = new.plan(&k.plan) else { continue };
        let since = k.effective_from.to_rfc3339();
        let message = match plan.versions.iter().find(|v| v.number == k.number) {
            None => format!(
                "plan {:?} version {} (in force since {since}) is missing",
                k.plan, k.number
            ),
            Some(v) if v.content != k.content => format!(
                "plan {:?} version {} (in force since {since}) was edited: {}",
                k.plan,
                k.number,
                changes(&k.content, &v.content, 3).join("; ")
            ),
            Some(_) => continue,
        };
        if !out.contains(&message) {
            out.push(message);
        }
    }
    out
}

/// What differs between two contents of one version, one entry per changed line: `path: old ->
/// new` (`(none)` for a line only one side has), at most `limit`, then how many more.
pub fn changes(old: &str, new: &str, limit: usize) -> Vec<String> {
    let parse = |text: &str| -> BTreeMap<String, String> {
        text.lines()
            .filter_map(|l| l.split_once(" = "))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let (a, b) = (parse(old), parse(new));
    let none = "(none)".to_string();
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let changed: Vec<String> = keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{k}: {} -> {}", a.get(k).unwrap_or(&none), b.get(k).unwrap_or(&none)))
        .collect();
    let more = changed.len().saturating_sub(limit);
    let mut shown: Vec<String> = changed.into_iter().take(limit).collect();
    if more > 0 {
        shown.push(format!("and {more} more"));
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
[[plans]]
id = "p"
currency = "EUR"
time_zone = "UTC"
rounding = { places = 2, mode = "half-up" }
[[plans.versions]]
effective_from = "2026-01-01T00:00:00Z"
[plans.versions.meters."api.requests"]
model = "graduated"
tiers = [{ up_to = 1000, price = "0.0100" }, { price = "0.005" }]
"#;

    #[test]
    fn formatting_is_not_an_edit_and_a_price_is() {
        let a = &version_contents(FILE).unwrap()[0][0];
        let reformatted = FILE
            .replace("\"0.0100\"", "\"0.01\"")
            .replace("up_to = 1000,", "up_to = \"1000.0\",");
        assert_eq!(a, &version_contents(&reformatted).unwrap()[0][0]);
        let edited = FILE.replace("\"0.0100\"", "\"0.0200\"");
        let b = &version_contents(&edited).unwrap()[0][0];
        assert_eq!(
            changes(a, b, 5),
            ["meters.\"api.requests\".tiers[0].price: 0.01 -> 0.02"]
        );
        let zone = FILE.replace("\"UTC\"", "\"Europe/Berlin\"");
        assert_eq!(
            changes(a, &version_contents(&zone).unwrap()[0][0], 5),
            ["plan.time_zone: \"UTC\" -> \"Europe/Berlin\""]
        );
    }
}
