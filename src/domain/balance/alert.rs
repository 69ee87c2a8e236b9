//! Balance alerts: a change to a purse that crosses one of its lines (a low-balance threshold,
//! zero, the credit limit) raises one alert, once per ledger entry; a session's end past its
//! grant or its credit raises an overdraft alert. Announced on `<prefix>:alerts`.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::Purse;
use crate::domain::money::Currency;

/// An alert about a balance, raised when a change crosses one of its lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceAlert {
    pub account: String,
    pub currency: Currency,
    pub kind: BalanceAlertKind,
    /// The available balance after the change.
    pub available: Decimal,
    /// The ledger entry that crossed the line (what makes the alert once-only).
    pub entry: u64,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BalanceAlertKind {
    /// The available balance fell below a low-balance threshold.
    LowBalance(Decimal),
    /// Nothing is left to spend: the available balance plus the credit limit reached zero.
    Exhausted,
    /// Usage was paid past the credit limit (`amount`, a prepaid plan that allows overdraft or
    /// a session's end), or a session used more units than it was granted (`beyond_grant`).
    Overdraft { amount: Decimal, beyond_grant: Decimal },
}

impl BalanceAlert {
    fn kind_name(&self) -> &'static str {
        match self.kind {
            BalanceAlertKind::LowBalance(_) => "low_balance",
            BalanceAlertKind::Exhausted => "balance_exhausted",
            BalanceAlertKind::Overdraft { .. } => "overdraft",
        }
    }

    /// `<account>|balance:<currency>|<kind>|<entry>`: once per crossing (consumers dedupe on it).
    pub fn id(&self) -> String {
        let line = match &self.kind {
            BalanceAlertKind::LowBalance(t) => format!(":{}", t.normalize()),
            _ => String::new(),
        };
        format!(
            "{}|balance:{}|{}{line}|{}",
            self.account,
            self.currency,
            self.kind_name(),
            self.entry
        )
    }

    /// `<account>|<entry, 20 digits>|<kind>`: an account's alerts sort in the order of the
    /// changes that raised them (the order they are announced in).
    pub fn order_key(&self) -> String {
        let id = self.id();
        let kind = id.split('|').nth(2).unwrap_or_default();
        format!("{}|{:020}|{kind}", self.account, self.entry)
    }

    /// The stream entry on `<prefix>:alerts` (docs/redis.md): one JSON object of strings.
    pub fn entry(&self) -> serde_json::Value {
        let mut entry = serde_json::json!({
            "alert_id": self.id(),
            "kind": self.kind_name(),
            "account": self.account,
            "currency": self.currency.to_string(),
            "available": self.available.to_string(),
            "ledger_entry": self.entry.to_string(),
            "crossed_at": self.at.to_rfc3339(),
        });
        match &self.kind {
            BalanceAlertKind::LowBalance(t) => entry["threshold"] = t.normalize().to_string().into(),
            BalanceAlertKind::Overdraft { amount, beyond_grant } => {
                entry["overdraft"] = amount.to_string().into();
                entry["beyond_grant"] = beyond_grant.normalize().to_string().into();
            }
            BalanceAlertKind::Exhausted => {}
        }
        entry
    }
}

/// The alerts a change of `purse` (its ledger entry `entry`) raises, its available balance going
/// from `available_before` to `after`: each low-balance threshold it fell below (from at or above
/// it), exhaustion when the spendable balance reached zero from above.
pub fn alerts_of_change(
    account: &str,
    purse: &Purse,
    (available_before, after): (Decimal, Decimal),
    entry: u64,
    at: DateTime<Utc>,
) -> Vec<BalanceAlert> {
    let alert = |kind| BalanceAlert {
        account: account.to_string(),
        currency: purse.currency,
        kind,
        available: after,
        entry,
        at,
    };
    let mut out: Vec<BalanceAlert> = purse
        .low_balance
        .iter()
        .filter(|&&t| available_before >= t && after < t)
        .map(|&t| alert(BalanceAlertKind::LowBalance(t)))
        .collect();
    if available_before + purse.credit_limit > Decimal::ZERO && after + purse.credit_limit <= Decimal::ZERO {
        out.push(alert(BalanceAlertKind::Exhausted));
    }
    out
}
