//! Validation of the sections that need more than a range check: partial records, rules,
//! tokens, spend-alert thresholds, seeded subscriptions and their overlaps. Each adds every
//! error it finds, with its path, to the list.

use std::path::Path;

use chrono::{DateTime, Utc};

use super::raw::*;
use crate::domain::mediation::{Rules, parse_rules};
use crate::domain::money::parse_exact;
use crate::domain::partial::PartialLimits;
use crate::domain::subscription::Subscription;
use crate::domain::tariff::Catalogue;
use crate::limits::{MAX_ACCOUNT_BYTES, MAX_PARTIAL_PARTS};
use crate::security::auth::{Role, Token};

/// `[mediation.partial]`: a timeout of at least a second, 1..=10,000 parts, a quantity above 0.
pub(super) fn partial_limits(raw: &RawPartial, errors: &mut Vec<String>) -> PartialLimits {
    let defaults = PartialLimits::default();
    if raw.timeout_seconds == 0 {
        errors.push("mediation.partial.timeout_seconds: must be at least 1".into());
    }
    if !(1..=MAX_PARTIAL_PARTS).contains(&(raw.max_parts as usize)) {
        errors.push(format!("mediation.partial.max_parts: must be 1..={MAX_PARTIAL_PARTS}"));
    }
    let max_quantity = match raw.max_quantity.parse::<rust_decimal::Decimal>() {
        Ok(q) if q > rust_decimal::Decimal::ZERO => q,
        _ => {
            errors.push(format!(
                "mediation.partial.max_quantity: {:?} is not a decimal above 0",
                raw.max_quantity
            ));
            defaults.max_quantity
        }
    };
    PartialLimits {
        timeout_seconds: raw.timeout_seconds,
        max_parts: raw.max_parts,
        max_quantity,
    }
}

/// Reads and checks a normalization rules file: every error prefixed with the file's path.
pub fn load_rules(path: &Path) -> Result<Rules, Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![format!("mediation.rules: cannot read {}: {e}", path.display())])?;
    parse_rules(&text).map_err(|errors| errors.0.iter().map(|e| format!("{}: {e}", path.display())).collect())
}

/// `[[tokens]]`: unique names and hashes, known roles, a scope only for ingest and read tokens.
pub(super) fn tokens(raw: Vec<RawToken>, errors: &mut Vec<String>) -> Vec<Token> {
    let mut out: Vec<Token> = Vec::with_capacity(raw.len());
    let mut names = std::collections::BTreeSet::new();
    for (i, t) in raw.into_iter().enumerate() {
        let path = format!("tokens[{i}]");
        let before = errors.len();
        if t.name.is_empty() || !names.insert(t.name.clone()) {
            errors.push(format!("{path}.name: must be non-empty and unique"));
        }
        let hash: Option<[u8; 32]> = crate::domain::hex::unhex(&t.sha256).and_then(|h| h.try_into().ok());
        match hash {
            None => errors.push(format!(
                "{path}.sha256: must be 64 lowercase hex digits (the output of `ratectl token hash`)"
            )),
            Some(h) if out.iter().any(|o| o.sha256 == h) => {
                errors.push(format!("{path}.sha256: the same token is configured twice"))
            }
            Some(_) => {}
        }
        let role = Role::parse(&t.role);
        match role {
            None => errors.push(format!(
                "{path}.role: {:?} is not one of ingest, read, admin, charging",
                t.role
            )),
            Some(Role::Admin) if t.account_prefix.is_some() => {
                errors.push(format!("{path}.account_prefix: admin tokens cannot be scoped"))
            }
            Some(_) => {}
        }
        if t.account_prefix.as_deref() == Some("") {
            errors.push(format!("{path}.account_prefix: must be non-empty when set"));
        }
        let expires = t
            .expires
            .as_deref()
            .and_then(|e| instant(&format!("{path}.expires"), e, errors));
        if errors.len() == before
            && let (Some(sha256), Some(role)) = (hash, role)
        {
            out.push(Token {
                name: t.name.into(),
                sha256,
                role,
                account_prefix: t.account_prefix.map(Into::into),
                expires,
            });
        }
    }
    out
}

/// Alert thresholds: positive decimal strings.
pub(super) fn thresholds(path: &str, raw: &[String], errors: &mut Vec<String>) -> Vec<rust_decimal::Decimal> {
    let mut out = Vec::with_capacity(raw.len());
    for (i, text) in raw.iter().enumerate() {
        match parse_exact(text) {
            Ok(d) if d > rust_decimal::Decimal::ZERO => out.push(d),
            Ok(_) => errors.push(format!("{path}[{i}]: must be greater than 0")),
            Err(m) => errors.push(format!("{path}[{i}]: {m}")),
        }
    }
    out
}

pub(super) fn instant(path: &str, text: &str, errors: &mut Vec<String>) -> Option<DateTime<Utc>> {
    match DateTime::parse_from_rfc3339(text) {
        Ok(t) => Some(t.with_timezone(&Utc)),
        Err(_) => {
            errors.push(format!("{path}: {text:?} is not an RFC 3339 date-time"));
            None
        }
    }
}

pub(super) fn subscription(
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
    if let (Some(from), Some(to)) = (from, to)
        && to <= from
    {
        errors.push(format!("{path}.to: must be after from"));
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
        alert_thresholds: thresholds(&format!("{path}.alert_thresholds"), &raw.alert_thresholds, errors),
        prepaid: raw.prepaid,
    })
}

/// Two subscriptions of one account in force at the same instant must not clash: one base
/// subscription at a time, and a meter priced by one subscription at a time (add-ons).
pub(super) fn overlapping(subscriptions: &[Subscription], catalogue: &Catalogue, errors: &mut Vec<String>) {
    for (i, a) in subscriptions.iter().enumerate() {
        for (j, b) in subscriptions.iter().enumerate().skip(i + 1) {
            match crate::domain::subscription::clash(a, b, catalogue) {
                None => {}
                Some(crate::domain::subscription::Clash::Overlap) => errors.push(format!(
                    "subscriptions[{j}]: account {:?} already has a subscription in force then (subscriptions[{i}])",
                    b.account_id
                )),
                Some(crate::domain::subscription::Clash::SharedMeter(meter)) => errors.push(format!(
                    "subscriptions[{j}]: meter {meter:?} is also priced by subscriptions[{i}] (plan {:?}), in force \
                     at the same time",
                    a.plan_id
                )),
            }
        }
    }
}
