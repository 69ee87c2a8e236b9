//! Subscriptions: which plan prices an account's usage, over which dates.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::tariff::{Catalogue, Plan};

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
    /// A prepaid subscription: each of its records is paid from the account's balance in the
    /// same commit, or refused INSUFFICIENT_BALANCE as its plan says (docs/charging.md).
    pub prepaid: bool,
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
    #[error(
        "{}meter {meter:?} is also priced by the subscription to {plan:?} from {}, in force at the same time: \
         a meter is priced by one subscription at a time",
        at(*.index),
        .from.to_rfc3339()
    )]
    SharedMeter {
        index: Option<usize>,
        meter: String,
        plan: String,
        from: DateTime<Utc>,
    },
}

/// The windows (`from`, `to`) in which subscriptions of a list are to `plan`: what its fees and
/// minimum are prorated over.
pub fn windows_of(subscriptions: &[Subscription], plan: &str) -> Vec<(DateTime<Utc>, Option<DateTime<Utc>>)> {
    subscriptions
        .iter()
        .filter(|s| s.plan_id == plan)
        .map(|s| (s.from, s.to))
        .collect()
}

/// Why two subscriptions of one account cannot be in force at the same time, if they cannot:
/// two base subscriptions, the same add-on twice, or two plans pricing one meter. An add-on
/// beside a base subscription (or beside other add-ons) is fine when their meters differ.
pub fn clash(a: &Subscription, b: &Subscription, catalogue: &Catalogue) -> Option<Clash> {
    if !a.overlaps(b) {
        return None;
    }
    let (pa, pb) = (catalogue.plan(&a.plan_id), catalogue.plan(&b.plan_id));
    let addon = |p: Option<&Plan>| p.is_some_and(|p| p.addon);
    if a.plan_id == b.plan_id || (!addon(pa) && !addon(pb)) {
        return Some(Clash::Overlap);
    }
    let meter = pa.zip(pb).and_then(|(pa, pb)| pa.shared_meter(pb))?;
    Some(Clash::SharedMeter(meter.to_string()))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Clash {
    Overlap,
    SharedMeter(String),
}

impl Clash {
    /// The refusal of `index` (when several came at once) because of the subscription `other`.
    pub fn error(self, index: Option<usize>, other: &Subscription) -> SubscriptionError {
        let (plan, from) = (other.plan_id.clone(), other.from);
        match self {
            Clash::Overlap => SubscriptionError::Overlaps { index, plan, from },
            Clash::SharedMeter(meter) => SubscriptionError::SharedMeter {
                index,
                meter,
                plan,
                from,
            },
        }
    }
}

/// True when `b` replaces `a` in a book: the same account, start and plan, or two base
/// subscriptions starting at the same instant (a base subscription is changed by upserting it).
fn same_slot(a: &Subscription, b: &Subscription, catalogue: &Catalogue) -> bool {
    let addon = |s: &Subscription| catalogue.plan(&s.plan_id).is_some_and(|p| p.addon);
    a.account_id == b.account_id && a.from == b.from && (a.plan_id == b.plan_id || (!addon(a) && !addon(b)))
}

fn at(index: Option<usize>) -> String {
    index.map(|i| format!("subscription {i}: ")).unwrap_or_default()
}

/// Every subscription by account, plus the default plan: which plan prices an account's event.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionBook {
    by_account: ahash::AHashMap<String, Vec<Subscription>>,
    default_plan: Option<String>,
    /// False when no subscription has spend-alert thresholds (most books): the committer then
    /// skips the per-account lookup. Once true it stays true for the book's copies.
    any_alerts: bool,
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
            any_alerts: subscriptions.iter().any(|s| !s.alert_thresholds.is_empty()),
        }
    }

    /// True when some subscription may carry spend-alert thresholds.
    pub fn any_alerts(&self) -> bool {
        self.any_alerts
    }

    /// The subscriptions of one account, in the order they were added.
    pub fn of(&self, account: &str) -> &[Subscription] {
        self.by_account.get(account).map_or(&[], Vec::as_slice)
    }

    /// Every account with subscriptions, with them.
    pub fn accounts(&self) -> impl Iterator<Item = (&str, &[Subscription])> {
        self.by_account.iter().map(|(a, l)| (a.as_str(), l.as_slice()))
    }

    pub fn all(&self) -> impl Iterator<Item = &Subscription> {
        self.by_account.values().flatten()
    }

    pub fn default_plan(&self) -> Option<&str> {
        self.default_plan.as_deref()
    }

    /// A book with every subscription of `list` added in order, each replacing the account's
    /// subscription in the same slot (same start, and the same plan or both base plans), or the
    /// first refusal with its position: `to` not after `from`, or a clash with another
    /// subscription of the account in force at the same time ([`clash`]). The book is cloned
    /// once, however long the list.
    pub fn with_all(
        &self,
        list: Vec<Subscription>,
        catalogue: &Catalogue,
    ) -> Result<SubscriptionBook, SubscriptionError> {
        let mut book = self.clone();
        let many = list.len() > 1;
        for (i, s) in list.into_iter().enumerate() {
            let index = many.then_some(i);
            if s.to.is_some_and(|to| to <= s.from) {
                return Err(SubscriptionError::EndsBeforeStart { index });
            }
            let list = book.by_account.entry(s.account_id.clone()).or_default();
            list.retain(|o| !same_slot(o, &s, catalogue));
            if let Some((o, c)) = list.iter().find_map(|o| clash(o, &s, catalogue).map(|c| (o, c))) {
                return Err(c.error(index, o));
            }
            book.any_alerts |= !s.alert_thresholds.is_empty();
            list.push(s);
            list.sort_by(|a, b| a.from.cmp(&b.from).then_with(|| a.plan_id.cmp(&b.plan_id)));
        }
        Ok(book)
    }

    /// The first clash between the book's subscriptions under `catalogue` (a reload may give an
    /// add-on a meter its base plan prices): the account, the two plans and the clash.
    pub fn first_clash(&self, catalogue: &Catalogue) -> Option<(String, Subscription, Subscription, Clash)> {
        self.by_account.values().find_map(|list| {
            list.iter().enumerate().find_map(|(i, a)| {
                list[i + 1..]
                    .iter()
                    .find_map(|b| clash(a, b, catalogue).map(|c| (a.account_id.clone(), a.clone(), b.clone(), c)))
            })
        })
    }

    /// The part of `[start, end)` covered by the account's subscriptions to `plan`: from the
    /// first one's start to the last one's end, clipped to the span; the whole span when none
    /// names the plan (usage priced by the default plan).
    pub fn coverage(
        &self,
        account: &str,
        plan: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> (DateTime<Utc>, DateTime<Utc>) {
        let within = self
            .of(account)
            .iter()
            .filter(|s| s.plan_id == plan && s.from < end && s.to.is_none_or(|to| to > start));
        let mut span: Option<(DateTime<Utc>, DateTime<Utc>)> = None;
        for s in within {
            let (from, to) = (s.from.max(start), s.to.map_or(end, |to| to.min(end)));
            span = Some(span.map_or((from, to), |(a, b)| (a.min(from), b.max(to))));
        }
        span.unwrap_or((start, end))
    }

    /// Why no plan prices the account's event at `at`: the account's subscription windows (at
    /// most the first five), or that it has none and there is no default plan.
    pub fn no_plan_detail(&self, account: &str, at: DateTime<Utc>) -> String {
        const SHOWN: usize = 5;
        let list = self.of(account);
        if list.is_empty() {
            return format!("account {account:?} has no subscription and there is no default plan");
        }
        let mut windows: Vec<String> = list
            .iter()
            .take(SHOWN)
            .map(|s| {
                let to =
                    s.to.map_or_else(|| "open-ended".to_string(), |t| format!("to {}", t.to_rfc3339()));
                format!("{} from {} {to}", s.plan_id, s.from.to_rfc3339())
            })
            .collect();
        if list.len() > SHOWN {
            windows.push(format!("and {} more", list.len() - SHOWN));
        }
        format!(
            "account {account:?} has no subscription in force at {} and there is no default plan; its subscriptions: {}",
            at.to_rfc3339(),
            windows.join(", ")
        )
    }

    /// The plan that carries the account's one-off charge in `currency` at `at`: the base
    /// subscription in force then if it bills in that currency, else an add-on in force that does;
    /// with none in force, the default plan when it bills in it.
    pub fn plan_in_currency(
        &self,
        account: &str,
        at: DateTime<Utc>,
        currency: &str,
        catalogue: &Catalogue,
    ) -> Option<&str> {
        let bills = |id: &str| catalogue.plan(id).is_some_and(|p| p.currency.as_str() == currency);
        let covering: Vec<&Subscription> = self.of(account).iter().filter(|s| s.covers(at)).collect();
        if covering.is_empty() {
            return self.default_plan.as_deref().filter(|p| bills(p));
        }
        let addon = |s: &&&Subscription| catalogue.plan(&s.plan_id).is_some_and(|p| p.addon);
        let (addons, base): (Vec<&&Subscription>, Vec<&&Subscription>) = covering.iter().partition(addon);
        base.into_iter()
            .chain(addons)
            .find(|s| bills(&s.plan_id))
            .map(|s| s.plan_id.as_str())
    }

    /// The plan (with the subscription's discount and prepaid flag) that prices the account's `meter` at `at`: the one
    /// subscription in force then; with several (a base and add-ons), the one whose plan prices
    /// the meter, else the base one (whose plan then refuses the meter); with none, the default
    /// plan.
    pub fn plan_for(
        &self,
        account: &str,
        at: DateTime<Utc>,
        meter: &str,
        catalogue: &Catalogue,
    ) -> Option<(&str, Option<Decimal>, bool)> {
        fn of(s: &Subscription) -> (&str, Option<Decimal>, bool) {
            (s.plan_id.as_str(), s.discount_percent, s.prepaid)
        }
        if let Some(list) = self.by_account.get(account) {
            let mut covering = list.iter().filter(|s| s.covers(at));
            if let Some(first) = covering.next() {
                // Usually one subscription is in force at an instant: no meter lookup.
                let Some(second) = covering.next() else {
                    return Some(of(first));
                };
                let mut base = None;
                for s in [first, second].into_iter().chain(covering) {
                    let plan = catalogue.plan(&s.plan_id);
                    if plan.is_some_and(|p| p.prices(meter, at)) {
                        return Some(of(s));
                    }
                    if !plan.is_some_and(|p| p.addon) {
                        base = Some(s);
                    }
                }
                return Some(of(base.unwrap_or(first)));
            }
        }
        self.default_plan.as_deref().map(|p| (p, None, false))
    }
}
