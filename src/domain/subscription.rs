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

/// Every subscription by account, plus the default plan: which plan prices an account's event.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionBook {
    by_account: ahash::AHashMap<String, Vec<Subscription>>,
    default_plan: Option<String>,
}

impl SubscriptionBook {
    pub fn new(subscriptions: &[Subscription], default_plan: Option<String>) -> Self {
        let mut by_account: ahash::AHashMap<String, Vec<Subscription>> = ahash::AHashMap::new();
        for s in subscriptions {
            by_account.entry(s.account_id.clone()).or_default().push(s.clone());
        }
        SubscriptionBook {
            by_account,
            default_plan,
        }
    }

    /// The plan id and subscription discount in force for `account` at `at`.
    pub fn plan_for(&self, account: &str, at: DateTime<Utc>) -> Option<(&str, Option<Decimal>)> {
        if let Some(list) = self.by_account.get(account) {
            if let Some(s) = list.iter().find(|s| s.covers(at)) {
                return Some((&s.plan_id, s.discount_percent));
            }
        }
        self.default_plan.as_deref().map(|p| (p, None))
    }
}
