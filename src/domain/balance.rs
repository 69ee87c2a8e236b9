//! Prepaid balances: a wallet per account holds one purse per currency, and every change to a
//! purse is a numbered ledger entry (top-up, reservation, commit, release, expiry, adjustment)
//! with the id that makes it once-only. The purse keeps the running sums; the ledger explains
//! them, and [`Wallet::replay`] (at every start) proves one against the other:
//!
//! ```text
//! available = top-ups + adjustments - commits - expiries - open reservations
//! ```
//!
//! A purse may go below zero down to its credit limit (a postpaid account's), and a commit
//! that the purse cannot pay is still written when the usage happened (a session's final
//! units, a prepaid plan that allows overdraft): the amount past the limit is its overdraft.
//! Credit topped up with an expiry is spent first (soonest expiry first); what is left of it at
//! its expiry leaves the purse as an expiry entry.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::money::{Currency, Inexact, exact_add, exact_sub};

/// What a ledger entry did to its purse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// Credit added (`TopUp`): `amount` > 0.
    TopUp,
    /// Money held for a session's granted units: `amount` > 0 leaves `available` for `reserved`.
    Reservation,
    /// Usage paid: `amount` >= 0 leaves the purse.
    Commit,
    /// A reservation given back (at an update, the session's end or its expiry).
    Release,
    /// Unspent credit past its expiry leaves the purse.
    Expiry,
    /// A signed correction of the balance (a voided or re-rated prepaid record, an operator's).
    Adjustment,
}

impl EntryKind {
    pub const ALL: [EntryKind; 6] = [
        EntryKind::TopUp,
        EntryKind::Reservation,
        EntryKind::Commit,
        EntryKind::Release,
        EntryKind::Expiry,
        EntryKind::Adjustment,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::TopUp => "topup",
            EntryKind::Reservation => "reservation",
            EntryKind::Commit => "commit",
            EntryKind::Release => "release",
            EntryKind::Expiry => "expiry",
            EntryKind::Adjustment => "adjustment",
        }
    }

    /// The stored code (1..=6); never renumbered.
    pub fn code(self) -> u8 {
        // Invariant: ALL lists every variant.
        EntryKind::ALL.iter().position(|k| *k == self).expect("listed") as u8 + 1
    }

    pub fn from_code(code: u8) -> Option<EntryKind> {
        EntryKind::ALL.get(usize::from(code).checked_sub(1)?).copied()
    }
}

/// One change of a purse, numbered per account from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub account: String,
    pub number: u64,
    pub kind: EntryKind,
    pub currency: Currency,
    /// The amount moved: positive, except an adjustment's, which is signed.
    pub amount: Decimal,
    /// What the entry belongs to: the top-up id, the session id, the event id of a prepaid
    /// record, the correction id. A change is applied once per id.
    pub id: String,
    pub at_unix_nanos: i64,
    /// The purse after the entry.
    pub available_after: Decimal,
    pub reserved_after: Decimal,
    /// Why, for a reader: "session s1 expired", "overdraft 0.25 past the credit limit".
    pub detail: String,
    /// A top-up's expiry (what is left of it then expires).
    pub expires_unix_nanos: Option<i64>,
}

impl LedgerEntry {
    pub fn at(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_nanos(self.at_unix_nanos)
    }

    /// The entry's effect on `available` (what the ledger sums to).
    pub fn effect(&self) -> Decimal {
        match self.kind {
            EntryKind::TopUp | EntryKind::Release | EntryKind::Adjustment => self.amount,
            EntryKind::Reservation | EntryKind::Commit | EntryKind::Expiry => -self.amount,
        }
    }
}

/// Credit topped up with an expiry, and what is left of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lot {
    /// The top-up's id.
    pub id: String,
    pub expires_unix_nanos: i64,
    pub remaining: Decimal,
}

/// One currency of a wallet: the running sums of its ledger, its credit limit and low-balance
/// thresholds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purse {
    pub currency: Currency,
    pub topped_up: Decimal,
    pub adjusted: Decimal,
    pub committed: Decimal,
    pub expired: Decimal,
    /// Held by open reservations.
    pub reserved: Decimal,
    /// How far below zero `available` may go (0 for a prepaid account).
    pub credit_limit: Decimal,
    /// Available balances that raise a low-balance alert when the balance falls below them.
    pub low_balance: Vec<Decimal>,
    /// Expiring credit not yet spent or expired, soonest expiry first.
    pub lots: Vec<Lot>,
}

impl Purse {
    pub fn new(currency: Currency) -> Purse {
        Purse {
            currency,
            topped_up: Decimal::ZERO,
            adjusted: Decimal::ZERO,
            committed: Decimal::ZERO,
            expired: Decimal::ZERO,
            reserved: Decimal::ZERO,
            credit_limit: Decimal::ZERO,
            low_balance: Vec::new(),
            lots: Vec::new(),
        }
    }

    /// What may still be reserved or spent before the credit limit: negative past zero. With the
    /// 9 places of record charges, whatever the places of its parts.
    pub fn available(&self) -> Decimal {
        at_record_scale(self.topped_up + self.adjusted - self.committed - self.expired - self.reserved)
    }

    /// `available` plus the credit limit: what a grant or a prepaid debit may use.
    pub fn spendable(&self) -> Decimal {
        self.available() + self.credit_limit
    }
}

/// The check the tests hold every purse to (the start replays the ledger instead,
/// [`Wallet::replay`]).
#[cfg(test)]
impl Purse {
    /// Checks the purse's sums against its ledger entries (all of them, in any order): the
    /// invariant `available = top-ups + adjustments - commits - expiries - open reservations`,
    /// each sum on its own, and that the entries after the last one say the same.
    pub fn check(&self, entries: &[&LedgerEntry]) -> Result<(), String> {
        let mut sums = Purse::new(self.currency);
        for e in entries {
            let slot = match e.kind {
                EntryKind::TopUp => &mut sums.topped_up,
                EntryKind::Adjustment => &mut sums.adjusted,
                EntryKind::Commit => &mut sums.committed,
                EntryKind::Expiry => &mut sums.expired,
                EntryKind::Reservation => &mut sums.reserved,
                EntryKind::Release => {
                    sums.reserved -= e.amount;
                    continue;
                }
            };
            *slot += e.amount;
        }
        let pairs = [
            ("top-ups", sums.topped_up, self.topped_up),
            ("adjustments", sums.adjusted, self.adjusted),
            ("commits", sums.committed, self.committed),
            ("expiries", sums.expired, self.expired),
            ("open reservations", sums.reserved, self.reserved),
        ];
        for (name, ledger, purse) in pairs {
            if ledger != purse {
                return Err(format!(
                    "{}: the ledger's {name} sum to {ledger}, the balance holds {purse}",
                    self.currency
                ));
            }
        }
        let effect: Decimal = entries.iter().map(|e| e.effect()).sum();
        if effect != self.available() {
            return Err(format!(
                "{}: the ledger sums to {effect}, the available balance is {}",
                self.currency,
                self.available()
            ));
        }
        if let Some(last) = entries.iter().max_by_key(|e| e.number)
            && (last.available_after != self.available() || last.reserved_after != self.reserved)
        {
            return Err(format!(
                "{}: the last entry ({}) leaves {} available and {} reserved, the balance holds {} and {}",
                self.currency,
                last.number,
                last.available_after,
                last.reserved_after,
                self.available(),
                self.reserved
            ));
        }
        Ok(())
    }
}

/// `amount` with the 9 places of record charges (every amount here has at most 9, so exactly).
pub fn at_record_scale(mut amount: Decimal) -> Decimal {
    amount.rescale(super::money::RECORD_SCALE);
    amount
}

/// An account's purses and the number its next ledger entry gets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Wallet {
    pub account: String,
    pub next_entry: u64,
    pub purses: Vec<Purse>,
}

/// What readers of committed balances see of a wallet (the Redis projection): per currency its
/// available balance, what is reserved and the credit limit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BalanceView {
    pub purses: Vec<(Currency, Decimal, Decimal, Decimal)>,
}

impl Wallet {
    pub fn view(&self) -> BalanceView {
        BalanceView {
            purses: self
                .purses
                .iter()
                .map(|p| (p.currency, p.available(), p.reserved, p.credit_limit))
                .collect(),
        }
    }
}

/// Why a change is not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BalanceError {
    #[error("amount must be > 0, got {0}")]
    NotPositive(Decimal),
    #[error(transparent)]
    Inexact(#[from] Inexact),
}

impl Wallet {
    pub fn new(account: &str) -> Wallet {
        Wallet {
            account: account.to_string(),
            next_entry: 1,
            purses: Vec::new(),
        }
    }

    pub fn purse(&self, currency: Currency) -> Option<&Purse> {
        self.purses.iter().find(|p| p.currency == currency)
    }

    /// The purse of `currency`, created empty when absent.
    pub fn purse_mut(&mut self, currency: Currency) -> &mut Purse {
        let i = match self.purses.iter().position(|p| p.currency == currency) {
            Some(i) => i,
            None => {
                self.purses.push(Purse::new(currency));
                self.purses.len() - 1
            }
        };
        &mut self.purses[i]
    }

    /// What `currency` may still use (available plus the credit limit): zero without a purse.
    pub fn spendable(&self, currency: Currency) -> Decimal {
        self.purse(currency).map_or(Decimal::ZERO, Purse::spendable)
    }

    /// Numbers and records a change already applied to the purse of `currency`.
    fn entry(
        &mut self,
        kind: EntryKind,
        currency: Currency,
        amount: Decimal,
        id: &str,
        at: DateTime<Utc>,
        detail: String,
    ) -> LedgerEntry {
        let number = self.next_entry;
        self.next_entry += 1;
        let account = self.account.clone();
        let purse = self.purse_mut(currency);
        LedgerEntry {
            account,
            number,
            kind,
            currency,
            amount,
            id: id.to_string(),
            at_unix_nanos: at.timestamp_nanos_opt().unwrap_or(0),
            available_after: purse.available(),
            reserved_after: at_record_scale(purse.reserved),
            detail,
            expires_unix_nanos: None,
        }
    }

    /// Adds credit; with `expires`, what is left of it then expires.
    pub fn top_up(
        &mut self,
        currency: Currency,
        amount: Decimal,
        id: &str,
        expires: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    ) -> Result<LedgerEntry, BalanceError> {
        if amount <= Decimal::ZERO {
            return Err(BalanceError::NotPositive(amount));
        }
        let purse = self.purse_mut(currency);
        purse.topped_up = exact_add(purse.topped_up, amount)?;
        let expires_unix_nanos = expires.map(|e| e.timestamp_nanos_opt().unwrap_or(i64::MAX));
        let detail = match expires {
            Some(expires) => {
                let expires_unix_nanos = expires.timestamp_nanos_opt().unwrap_or(i64::MAX);
                let at = purse
                    .lots
                    .partition_point(|l| l.expires_unix_nanos <= expires_unix_nanos);
                purse.lots.insert(
                    at,
                    Lot {
                        id: id.to_string(),
                        expires_unix_nanos,
                        remaining: amount,
                    },
                );
                format!("expires {}", expires.to_rfc3339())
            }
            None => String::new(),
        };
        let mut entry = self.entry(EntryKind::TopUp, currency, amount, id, at, detail);
        entry.expires_unix_nanos = expires_unix_nanos;
        Ok(entry)
    }

    /// Holds `amount` for a session (`id`).
    pub fn reserve(
        &mut self,
        currency: Currency,
        amount: Decimal,
        id: &str,
        at: DateTime<Utc>,
    ) -> Result<LedgerEntry, BalanceError> {
        let purse = self.purse_mut(currency);
        purse.reserved = exact_add(purse.reserved, amount)?;
        Ok(self.entry(EntryKind::Reservation, currency, amount, id, at, String::new()))
    }

    /// Gives back `amount` of a session's reservation.
    pub fn release(
        &mut self,
        currency: Currency,
        amount: Decimal,
        id: &str,
        at: DateTime<Utc>,
        detail: String,
    ) -> Result<LedgerEntry, BalanceError> {
        let purse = self.purse_mut(currency);
        purse.reserved = exact_sub(purse.reserved, amount)?;
        Ok(self.entry(EntryKind::Release, currency, amount, id, at, detail))
    }

    /// Pays `amount` of usage (`id`: the session or the event), spending expiring credit first.
    /// Never refused: the caller decided it is paid. Returns the entry and the overdraft (what
    /// the commit took past the credit limit; zero when the purse could pay).
    pub fn commit(
        &mut self,
        currency: Currency,
        amount: Decimal,
        id: &str,
        at: DateTime<Utc>,
        detail: String,
    ) -> Result<(LedgerEntry, Decimal), BalanceError> {
        let purse = self.purse_mut(currency);
        let before = purse.spendable().max(Decimal::ZERO);
        purse.committed = exact_add(purse.committed, amount)?;
        let mut left = amount;
        for lot in purse.lots.iter_mut() {
            let spent = left.min(lot.remaining);
            lot.remaining -= spent;
            left -= spent;
            if left <= Decimal::ZERO {
                break;
            }
        }
        purse.lots.retain(|l| l.remaining > Decimal::ZERO);
        let overdraft = (amount - before).max(Decimal::ZERO);
        let detail = if overdraft > Decimal::ZERO {
            let past = format!("overdraft {overdraft} past the credit limit");
            if detail.is_empty() {
                past
            } else {
                format!("{detail}; {past}")
            }
        } else {
            detail
        };
        Ok((
            self.entry(EntryKind::Commit, currency, amount, id, at, detail),
            overdraft,
        ))
    }

    /// A signed correction of the balance.
    pub fn adjust(
        &mut self,
        currency: Currency,
        amount: Decimal,
        id: &str,
        at: DateTime<Utc>,
        detail: String,
    ) -> Result<LedgerEntry, BalanceError> {
        let purse = self.purse_mut(currency);
        purse.adjusted = exact_add(purse.adjusted, amount)?;
        Ok(self.entry(EntryKind::Adjustment, currency, amount, id, at, detail))
    }

    /// Expires what is left of every lot whose expiry is at or before `now`.
    pub fn expire_lots(&mut self, now: DateTime<Utc>) -> Result<Vec<LedgerEntry>, BalanceError> {
        let now_nanos = now.timestamp_nanos_opt().unwrap_or(i64::MAX);
        let due: Vec<(Currency, String)> = self
            .purses
            .iter()
            .flat_map(|p| {
                p.lots
                    .iter()
                    .take_while(|l| l.expires_unix_nanos <= now_nanos)
                    .map(|l| (p.currency, l.id.clone()))
            })
            .collect();
        due.into_iter()
            .map(|(currency, id)| self.expire_lot(currency, &id, now))
            .collect()
    }

    /// Expires what is left of the lot of top-up `id`.
    fn expire_lot(&mut self, currency: Currency, id: &str, at: DateTime<Utc>) -> Result<LedgerEntry, BalanceError> {
        let purse = self.purse_mut(currency);
        let remaining = match purse.lots.iter().position(|l| l.id == id) {
            Some(i) => purse.lots.remove(i).remaining,
            None => Decimal::ZERO,
        };
        purse.expired = exact_add(purse.expired, remaining)?;
        let detail = format!("credit of top-up {id} expired");
        Ok(self.entry(EntryKind::Expiry, currency, remaining, id, at, detail))
    }

    /// Applies a stored entry again (the start rebuilds each wallet from its ledger): the same
    /// change as when it was written, which must leave the same balance the entry says it left.
    /// An entry out of sequence, or a balance that differs, is the ledger's damage.
    pub fn replay(&mut self, e: &LedgerEntry) -> Result<(), String> {
        if e.number != self.next_entry {
            return Err(format!(
                "entry {} where entry {} was due (an entry is missing or repeated)",
                e.number, self.next_entry
            ));
        }
        let (c, at, id) = (e.currency, e.at(), e.id.as_str());
        let produced = match e.kind {
            EntryKind::TopUp => {
                let expires = e.expires_unix_nanos.map(DateTime::from_timestamp_nanos);
                self.top_up(c, e.amount, id, expires, at)
            }
            EntryKind::Reservation => self.reserve(c, e.amount, id, at),
            EntryKind::Release => self.release(c, e.amount, id, at, String::new()),
            EntryKind::Commit => self.commit(c, e.amount, id, at, String::new()).map(|(e, _)| e),
            EntryKind::Adjustment => self.adjust(c, e.amount, id, at, String::new()),
            EntryKind::Expiry => self.expire_lot(c, id, at),
        }
        .map_err(|error| format!("entry {}: {error}", e.number))?;
        if (produced.amount, produced.available_after, produced.reserved_after)
            != (e.amount, e.available_after, e.reserved_after)
        {
            return Err(format!(
                "entry {} ({} {} {}) says it left {} available and {} reserved; the entries before it and it leave {} and {}",
                e.number,
                e.kind.as_str(),
                e.amount,
                c,
                e.available_after,
                e.reserved_after,
                produced.available_after,
                produced.reserved_after
            ));
        }
        Ok(())
    }

    /// The soonest lot expiry of any purse, if any credit expires.
    pub fn next_lot_expiry(&self) -> Option<i64> {
        self.purses
            .iter()
            .filter_map(|p| p.lots.first().map(|l| l.expires_unix_nanos))
            .min()
    }
}

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

/// A charging session (`Charging.Authorize` .. `Terminate`): what was granted and is held for
/// it. The session's usage is rated once, at its end, as one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub account: String,
    pub meter: String,
    pub attributes: Vec<(String, String)>,
    pub currency: Currency,
    /// When it began (its event time: bands split from it).
    pub started_unix_nanos: i64,
    /// Units granted in all (used and still to use).
    pub granted: Decimal,
    /// Units reported used so far.
    pub used: Decimal,
    /// Money held for the granted units (zero once expired).
    pub reserved: Decimal,
    /// When the reservation lapses unless an update renews it.
    pub expires_unix_nanos: i64,
    /// Set by `Terminate`.
    pub outcome: Option<SessionOutcome>,
}

impl Session {
    pub fn started(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_nanos(self.started_unix_nanos)
    }

    pub fn expires(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_nanos(self.expires_unix_nanos)
    }
}

/// How a session ended: what a resent `Terminate` answers again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOutcome {
    pub used: Decimal,
    /// The record's charge (zero when rejected).
    pub charge: Decimal,
    /// Paid past the credit limit.
    pub overdraft: Decimal,
    /// Units used beyond the units granted.
    pub beyond_grant: Decimal,
    /// The reservation given back.
    pub released: Decimal,
    /// The record's rejection (its reason code and detail), when it went to suspense instead.
    pub rejected: Option<(String, String)>,
    pub at_unix_nanos: i64,
}

/// What a prepaid plan does with usage the balance cannot pay (`[plans.X] insufficient_balance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BalancePolicy {
    /// The event is rejected INSUFFICIENT_BALANCE into suspense (reprocessable after a top-up).
    #[default]
    Reject,
    /// The event is rated and paid; what the balance could not pay is recorded as overdraft.
    Overdraft,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn eur() -> Currency {
        "EUR".parse().unwrap()
    }

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn a_reserved_session_commits_its_charge_and_releases_the_rest() {
        let mut w = Wallet::new("acc");
        let mut ledger = vec![w.top_up(eur(), d("10"), "t1", None, at(0)).unwrap()];
        ledger.push(w.reserve(eur(), d("3.5"), "s1", at(1)).unwrap());
        assert_eq!(w.purse(eur()).unwrap().available(), d("6.5"));
        ledger.push(w.release(eur(), d("3.5"), "s1", at(2), String::new()).unwrap());
        let (e, overdraft) = w.commit(eur(), d("2.25"), "s1", at(2), String::new()).unwrap();
        ledger.push(e);
        assert_eq!(overdraft, Decimal::ZERO);
        let purse = w.purse(eur()).unwrap();
        assert_eq!(purse.available(), d("7.75"));
        assert_eq!(purse.reserved, Decimal::ZERO);
        assert_eq!(ledger.iter().map(|e| e.number).collect::<Vec<_>>(), [1, 2, 3, 4]);
        purse.check(&ledger.iter().collect::<Vec<_>>()).unwrap();
    }

    #[test]
    fn expiring_credit_is_spent_first_and_its_rest_expires() {
        let mut w = Wallet::new("acc");
        w.top_up(eur(), d("5"), "forever", None, at(0)).unwrap();
        w.top_up(eur(), d("4"), "promo", Some(at(100)), at(0)).unwrap();
        w.commit(eur(), d("3"), "e1", at(10), String::new()).unwrap();
        assert_eq!(w.purse(eur()).unwrap().lots[0].remaining, d("1"));
        assert!(w.expire_lots(at(99)).unwrap().is_empty());
        let expired = w.expire_lots(at(100)).unwrap();
        assert_eq!(expired.len(), 1);
        assert_eq!((expired[0].kind, expired[0].amount), (EntryKind::Expiry, d("1")));
        assert_eq!(w.purse(eur()).unwrap().available(), d("5"));
    }

    #[test]
    fn a_commit_past_the_credit_limit_is_its_overdraft() {
        let mut w = Wallet::new("acc");
        w.purse_mut(eur()).credit_limit = d("2");
        w.top_up(eur(), d("1"), "t", None, at(0)).unwrap();
        let (e, overdraft) = w.commit(eur(), d("4.5"), "e", at(1), String::new()).unwrap();
        assert_eq!(overdraft, d("1.5"));
        assert!(e.detail.contains("overdraft 1.5"), "{}", e.detail);
        assert_eq!(w.purse(eur()).unwrap().available(), d("-3.5"));
    }

    #[test]
    fn low_balance_and_exhaustion_alerts_fire_when_crossed() {
        let mut w = Wallet::new("acc");
        w.purse_mut(eur()).low_balance = vec![d("5"), d("2")];
        w.top_up(eur(), d("10"), "t", None, at(0)).unwrap();
        let before = w.purse(eur()).unwrap().available();
        let (e, _) = w.commit(eur(), d("6"), "e1", at(1), String::new()).unwrap();
        let after = w.purse(eur()).unwrap().available();
        let alerts = alerts_of_change("acc", w.purse(eur()).unwrap(), (before, after), e.number, at(1));
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].kind, BalanceAlertKind::LowBalance(d("5")));
        assert_eq!(alerts[0].id(), "acc|balance:EUR|low_balance:5|2");
        let before = w.purse(eur()).unwrap().available();
        let (e, _) = w.commit(eur(), d("4"), "e2", at(2), String::new()).unwrap();
        let after = w.purse(eur()).unwrap().available();
        let kinds: Vec<_> = alerts_of_change("acc", w.purse(eur()).unwrap(), (before, after), e.number, at(2))
            .into_iter()
            .map(|a| a.kind)
            .collect();
        assert_eq!(
            kinds,
            [BalanceAlertKind::LowBalance(d("2")), BalanceAlertKind::Exhausted]
        );
    }

    #[test]
    fn a_ledger_that_misses_an_entry_fails_the_check() {
        let mut w = Wallet::new("acc");
        let a = w.top_up(eur(), d("10"), "t1", None, at(0)).unwrap();
        let b = w.reserve(eur(), d("1"), "s", at(1)).unwrap();
        let purse = w.purse(eur()).unwrap();
        purse.check(&[&a, &b]).unwrap();
        let error = purse.check(&[&a]).unwrap_err();
        assert!(error.contains("open reservations"), "{error}");
    }

    #[test]
    fn a_wallet_replayed_from_its_ledger_is_the_same_and_a_changed_entry_is_found() {
        let mut w = Wallet::new("acc");
        let mut ledger = vec![w.top_up(eur(), d("10"), "t1", Some(at(50)), at(0)).unwrap()];
        ledger.push(w.reserve(eur(), d("2"), "s", at(1)).unwrap());
        ledger.push(w.commit(eur(), d("1.5"), "e", at(2), String::new()).unwrap().0);
        ledger.push(w.release(eur(), d("2"), "s", at(3), String::new()).unwrap());
        ledger.extend(w.expire_lots(at(60)).unwrap());
        let mut again = Wallet::new("acc");
        for e in &ledger {
            again.replay(e).unwrap();
        }
        assert_eq!(again, w);
        let mut changed = ledger.clone();
        changed[2].amount = d("1");
        let mut again = Wallet::new("acc");
        let error = changed.iter().try_for_each(|e| again.replay(e)).unwrap_err();
        assert!(error.starts_with("entry 3 (commit 1 EUR) says it left"), "{error}");
        let mut again = Wallet::new("acc");
        let error = ledger[1..].iter().try_for_each(|e| again.replay(e)).unwrap_err();
        assert!(error.contains("entry 2 where entry 1 was due"), "{error}");
    }

    #[derive(Debug, Clone)]
    enum Op {
        TopUp(u32, Option<i64>),
        Reserve(u32),
        Release(u32),
        Commit(u32),
        Adjust(i32),
        Expire(i64),
        Limit(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1u32..10_000, proptest::option::of(0i64..1000)).prop_map(|(a, e)| Op::TopUp(a, e)),
            (0u32..5_000).prop_map(Op::Reserve),
            (0u32..5_000).prop_map(Op::Release),
            (0u32..5_000).prop_map(Op::Commit),
            (-5_000i32..5_000).prop_map(Op::Adjust),
            (0i64..1000).prop_map(Op::Expire),
            (0u32..5_000).prop_map(Op::Limit),
        ]
    }

    proptest! {
        /// Whatever happens to a wallet, each purse equals the sum of its ledger.
        #[test]
        fn the_balance_always_equals_the_ledgers_sum(ops in proptest::collection::vec(op(), 1..60)) {
            let mut w = Wallet::new("acc");
            w.purse_mut(eur());
            let mut ledger = Vec::new();
            let cents = |n: i64| Decimal::new(n, 2);
            for (i, op) in ops.into_iter().enumerate() {
                let id = format!("op{i}");
                let now = at(i as i64);
                match op {
                    Op::TopUp(a, e) => ledger.push(w.top_up(eur(), cents(a.into()), &id, e.map(at), now).unwrap()),
                    Op::Reserve(a) => ledger.push(w.reserve(eur(), cents(a.into()), &id, now).unwrap()),
                    Op::Release(a) => {
                        let held = w.purse(eur()).map_or(Decimal::ZERO, |p| p.reserved);
                        let amount = cents(a.into()).min(held);
                        ledger.push(w.release(eur(), amount, &id, now, String::new()).unwrap());
                    }
                    Op::Commit(a) => ledger.push(w.commit(eur(), cents(a.into()), &id, now, String::new()).unwrap().0),
                    Op::Adjust(a) => ledger.push(w.adjust(eur(), cents(a.into()), &id, now, String::new()).unwrap()),
                    Op::Expire(t) => ledger.extend(w.expire_lots(at(t)).unwrap()),
                    Op::Limit(l) => w.purse_mut(eur()).credit_limit = cents(l.into()),
                }
                let purse = w.purse(eur()).unwrap();
                prop_assert!(purse.check(&ledger.iter().collect::<Vec<_>>()).is_ok());
                prop_assert!(purse.lots.iter().all(|l| l.remaining > Decimal::ZERO));
                prop_assert!(purse.reserved >= Decimal::ZERO);
            }
            let numbers: Vec<u64> = ledger.iter().map(|e| e.number).collect();
            prop_assert_eq!(numbers, (1..=ledger.len() as u64).collect::<Vec<_>>());
            // The ledger alone rebuilds the wallet (what the start does), credit limit aside.
            let mut again = Wallet::new("acc");
            again.purse_mut(eur()).credit_limit = w.purse(eur()).unwrap().credit_limit;
            for e in &ledger {
                let replayed = again.replay(e);
                prop_assert!(replayed.is_ok(), "{:?}", replayed);
            }
            prop_assert_eq!(again, w);
        }
    }
}
