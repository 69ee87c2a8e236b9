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
    /// Spend alerts: period charges (in the plan's currency) that raise an alert when first
    /// crossed, on top of the plan's own thresholds.
    pub alert_thresholds: Vec<Decimal>,
}

impl Subscription {
    pub fn covers(&self, at: DateTime<Utc>) -> bool {
        self.from <= at && self.to.is_none_or(|to| at < to)
    }

    /// True when both are the same account's and in force at some common instant.
    pub fn overlaps(&self, other: &Subscription) -> bool {
        self.account_id == other.account_id
            && self.to.is_none_or(|to| other.from < to)
            && other.to.is_none_or(|to| self.from < to)
    }
}

/// Why a subscription cannot be added; `index` is its position when several came at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    #[error("{}`to` must be after `from`", at(*.index))]
    EndsBeforeStart { index: Option<usize> },
    #[error("{}overlaps the subscription to {plan:?} from {}", at(*.index), .from.to_rfc3339())]
    Overlaps {
        index: Option<usize>,
        plan: String,
        from: DateTime<Utc>,
    },
}

fn at(index: Option<usize>) -> String {
    index.map(|i| format!("subscription {i}: ")).unwrap_or_default()
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

    /// The subscriptions of one account, in the order they were added.
    pub fn of(&self, account: &str) -> &[Subscription] {
        self.by_account.get(account).map_or(&[], Vec::as_slice)
    }

    pub fn all(&self) -> impl Iterator<Item = &Subscription> {
        self.by_account.values().flatten()
    }

    pub fn default_plan(&self) -> Option<&str> {
        self.default_plan.as_deref()
    }

    /// A book with every subscription of `list` added in order, each replacing the account's
    /// subscription with the same `from`, or the first refusal (an overlap with another
    /// subscription of the account, or `to` not after `from`) with its position. The book is
    /// cloned once, however long the list.
    pub fn with_all(&self, list: Vec<Subscription>) -> Result<SubscriptionBook, SubscriptionError> {
        let mut book = self.clone();
        let many = list.len() > 1;
        for (i, s) in list.into_iter().enumerate() {
            let index = many.then_some(i);
            if s.to.is_some_and(|to| to <= s.from) {
                return Err(SubscriptionError::EndsBeforeStart { index });
            }
            let list = book.by_account.entry(s.account_id.clone()).or_default();
            if let Some(o) = list.iter().find(|o| o.from != s.from && o.overlaps(&s)) {
                return Err(SubscriptionError::Overlaps {
                    index,
                    plan: o.plan_id.clone(),
                    from: o.from,
                });
            }
            list.retain(|o| o.from != s.from);
            list.push(s);
            list.sort_by_key(|o| o.from);
        }
        Ok(book)
    }

    pub fn plan_for(&self, account: &str, at: DateTime<Utc>) -> Option<(&str, Option<Decimal>)> {
        if let Some(list) = self.by_account.get(account)
            && let Some(s) = list.iter().find(|s| s.covers(at))
        {
            return Some((&s.plan_id, s.discount_percent));
        }
        self.default_plan.as_deref().map(|p| (p, None))
    }
}
