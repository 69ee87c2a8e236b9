//! A spend alert: an account's committed period charge reached a threshold of its plan or
//! subscription. Raised once per (account, period, threshold), kept durably, announced to Redis.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendAlert {
    pub account: String,
    pub period: String,
    pub plan: String,
    pub currency: String,
    /// The threshold reached (normalized: `800`, not `800.00`).
    pub threshold: Decimal,
    /// The period charge when it was first reached.
    pub total_charge: Decimal,
    pub crossed_at: DateTime<Utc>,
}

impl SpendAlert {
    /// `<account>|<period>|<threshold>`: what makes an alert once-only (consumers dedupe on it).
    pub fn id(&self) -> String {
        alert_id(&self.account, &self.period, self.threshold)
    }

    /// The alert as one JSON object of strings: what the store keeps, and what the Redis stream
    /// entry is made of (docs/redis.md), so the two can never differ.
    pub fn entry(&self) -> serde_json::Value {
        serde_json::json!({
            "alert_id": self.id(),
            "account": self.account,
            "period": self.period,
            "plan": self.plan,
            "currency": self.currency,
            "threshold": self.threshold.normalize().to_string(),
            "total_charge": self.total_charge.to_string(),
            "crossed_at": self.crossed_at.to_rfc3339(),
        })
    }
}

/// The id of the alert for `threshold` of (account, period).
pub fn alert_id(account: &str, period: &str, threshold: Decimal) -> String {
    format!("{account}|{period}|{}", threshold.normalize())
}
