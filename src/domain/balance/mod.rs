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

mod alert;
mod session;

use super::money::{Currency, Inexact, exact_add, exact_sub};

pub use alert::{BalanceAlert, BalanceAlertKind, alerts_of_change};
pub use session::{Session, SessionOutcome};

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
mod tests;
