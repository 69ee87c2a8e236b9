//! Subscriptions: which plan prices an account's usage, over which dates.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

/// Account -> plan from `from` (inclusive) until `to` (exclusive, open-ended when `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub account_id: String,
    pub plan_id: String,
    pub from: DateTime<Utc>,
    pub to: Option<DateTime<Utc>>,
    /// Percentage off every charge of this subscription, on top of a version's own discount.
    pub discount_percent: Option<Decimal>,
}

impl Subscription {
    pub fn covers(&self, at: DateTime<Utc>) -> bool {
        self.from <= at && self.to.is_none_or(|to| at < to)
    }
}
