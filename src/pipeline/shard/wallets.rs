//! A shard's wallet book: the wallets of its accounts, changed only here (in order with the
//! accounts' events), each change a ledger entry written into the same output, and so the same
//! commit, as the records it pays for. Prepaid records are paid here ([`Wallets::pay`]); credit
//! that expires is expired here; the alerts a change raises are written with it.

use std::sync::Arc;

use ahash::AHashMap;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::domain::balance::{
    BalanceAlert, BalanceAlertKind, BalancePolicy, BalanceView, EntryKind, LedgerEntry, Wallet, alerts_of_change,
};
use crate::domain::money::Currency;
use crate::domain::tariff::Plan;
use crate::pipeline::balance::BalanceError;
use crate::store::Write;
use crate::store::balance::StoredTopUp;

/// What a job's balance changes add to its commit.
#[derive(Default)]
pub struct BalanceWrites {
    /// Ledger entries, sessions, top-up ids, wallet settings and balance alerts, typed (the store
    /// keys and encodes them).
    pub writes: Vec<Write>,
    /// The wallets changed, as they are now (the committed view and the Redis projection).
    pub wallets: Vec<(Arc<str>, BalanceView)>,
    /// True when a balance alert was written.
    pub alerts: bool,
}

/// The session whose end is being rated: its record is paid from the balance whatever the
/// balance holds (the usage happened), and what was paid is noted here.
pub(super) struct Paying {
    pub(super) paid: Option<(Decimal, Decimal)>,
}

/// What a change left: its ledger entry's number and the balance available after it (the entry
/// itself goes into the output, not copied).
#[derive(Debug, Clone, Copy)]
pub(super) struct Applied {
    pub(super) number: u64,
    pub(super) available_after: Decimal,
}

/// The wallets of one shard's accounts, and what the current job writes of them.
#[derive(Default)]
pub struct Wallets {
    wallets: AHashMap<Arc<str>, Wallet>,
    /// The soonest expiry of any topped-up credit (`None`: none expires).
    next_lot_due: Option<i64>,
    /// Top-ups written by outputs not yet committed, with the output's number: read before the
    /// store, so a resend right after the first is answered the same.
    recent_topups: AHashMap<(String, String), (StoredTopUp, u64)>,
    /// Accounts whose wallet changed in the current job (one hash lookup per change: a job of a
    /// thousand prepaid events touches about as many wallets).
    touched: ahash::AHashSet<Arc<str>>,
    /// Ledger entries written in the current job, by kind (counted once a job).
    entries: [u64; 6],
    pending: BalanceWrites,
    pub(super) paying: Option<Paying>,
}

impl Wallets {
    /// Installs a wallet read at start.
    pub fn load(&mut self, wallet: Wallet) {
        self.note_lots(&wallet);
        self.wallets.insert(Arc::from(wallet.account.as_str()), wallet);
    }

    pub fn get(&self, account: &str) -> Option<&Wallet> {
        self.wallets.get(account)
    }

    pub fn contains(&self, account: &str) -> bool {
        self.wallets.contains_key(account)
    }

    /// What `account` may spend in `currency`: available plus credit limit (0 without a wallet).
    pub fn spendable(&self, account: &str, currency: Currency) -> Decimal {
        self.wallets
            .get(account)
            .map_or(Decimal::ZERO, |w| w.spendable(currency))
    }

    pub(super) fn note_lots(&mut self, wallet: &Wallet) {
        if let Some(due) = wallet.next_lot_expiry() {
            self.next_lot_due = Some(self.next_lot_due.map_or(due, |d| d.min(due)));
        }
    }

    /// The account's wallet, created empty when absent; noted as changed by the job.
    pub(super) fn wallet_mut(&mut self, account: &str) -> &mut Wallet {
        if !self.touched.contains(account) {
            let key = match self.wallets.get_key_value(account) {
                Some((key, _)) => key.clone(),
                None => {
                    let key: Arc<str> = Arc::from(account);
                    self.wallets.insert(key.clone(), Wallet::new(account));
                    key
                }
            };
            self.touched.insert(key);
        }
        // Invariant: a touched account's wallet is present (inserted above when it was not).
        self.wallets.get_mut(account).expect("wallet present")
    }

    /// A write of the current job.
    pub(super) fn write(&mut self, write: Write) {
        self.pending.writes.push(write);
    }

    /// The top-up applied under `id` to `account` by an output not yet committed, if any.
    pub(super) fn recent_topup(&self, account: &str, id: &str) -> Option<&StoredTopUp> {
        self.recent_topups
            .get(&(account.to_string(), id.to_string()))
            .map(|(t, _)| t)
    }

    /// Writes a top-up applied, remembered until output `output` is committed.
    pub(super) fn write_topup(&mut self, account: String, id: String, top_up: StoredTopUp, output: u64) {
        self.recent_topups
            .insert((account.clone(), id.clone()), (top_up.clone(), output));
        self.write(Write::TopUp { account, id, top_up });
    }

    /// Forgets the recent top-ups of outputs committed by now (the store answers for them).
    pub(super) fn forget_committed(&mut self, committed: u64) {
        self.recent_topups.retain(|_, (_, n)| *n > committed);
    }

    /// Applies one change to the account's purse in `currency`, writes its ledger entry and the
    /// alerts it raises.
    pub(super) fn apply(
        &mut self,
        account: &str,
        currency: Currency,
        now: DateTime<Utc>,
        change: impl FnOnce(&mut Wallet) -> Result<LedgerEntry, crate::domain::balance::BalanceError>,
    ) -> Result<Applied, BalanceError> {
        let wallet = self.wallet_mut(account);
        let before = wallet.purse(currency).map_or(Decimal::ZERO, |p| p.available());
        let entry = change(wallet).map_err(|e| BalanceError::Invalid(e.to_string()))?;
        let alerts = match wallet.purse(currency) {
            Some(purse) => alerts_of_change(account, purse, (before, entry.available_after), entry.number, now),
            None => Vec::new(),
        };
        let applied = Applied {
            number: entry.number,
            available_after: entry.available_after,
        };
        self.note_entry(entry);
        for alert in alerts {
            self.alert(alert);
        }
        Ok(applied)
    }

    /// A ledger entry into the job's output (its account's key is the wallet's).
    fn note_entry(&mut self, entry: LedgerEntry) {
        self.entries[usize::from(entry.kind.code() - 1)] += 1;
        let account = match self.wallets.get_key_value(entry.account.as_str()) {
            Some((key, _)) => key.clone(),
            None => Arc::from(entry.account.as_str()),
        };
        self.write(Write::Ledger { account, entry });
    }

    pub(super) fn alert(&mut self, alert: BalanceAlert) {
        let entry = alert.entry().to_string();
        self.write(Write::BalanceAlert {
            order: alert.order_key(),
            entry,
        });
        self.pending.alerts = true;
    }

    /// The balance writes of the job, with every changed wallet (none: `None`, nothing to add).
    pub(super) fn take(&mut self) -> Option<Box<BalanceWrites>> {
        if self.touched.is_empty() && self.pending.writes.is_empty() {
            return None;
        }
        for (kind, n) in EntryKind::ALL.iter().zip(std::mem::take(&mut self.entries)) {
            if n > 0 {
                metrics::counter!(crate::telemetry::LEDGER_ENTRIES, "kind" => kind.as_str()).increment(n);
            }
        }
        for account in std::mem::take(&mut self.touched) {
            if let Some(wallet) = self.wallets.get(&account) {
                self.pending.wallets.push((account, wallet.view()));
            }
        }
        Some(Box::new(std::mem::take(&mut self.pending)))
    }

    /// Pays a record's charge from its account's balance (a prepaid subscription's, or a
    /// session's end), or says why not: the balance (with its credit limit) cannot pay and the
    /// plan rejects.
    pub(super) fn pay(
        &mut self,
        account: &str,
        event_id: &str,
        plan: &Plan,
        charge: Decimal,
        now: DateTime<Utc>,
    ) -> Result<(), String> {
        let currency = plan.currency;
        let session = self.paying.is_some();
        if charge.is_zero() && !session {
            return Ok(());
        }
        if !session && plan.insufficient_balance == BalancePolicy::Reject {
            let spendable = self.spendable(account, currency);
            if charge > spendable {
                return Err(format!(
                    "the balance of account {account:?} pays {spendable} {currency} (available plus credit limit); \
                     the event costs {charge} {currency}: top up, then reprocess"
                ));
            }
        }
        let result = if charge.is_sign_negative() {
            // A volume tier's marginal below zero: the balance is credited.
            let detail = format!("record {event_id}: a volume tier lowered the period's charge");
            self.apply(account, currency, now, |w| {
                w.adjust(currency, -charge, event_id, now, detail)
            })
            .map(|_| Decimal::ZERO)
        } else {
            let mut overdraft = Decimal::ZERO;
            // The id names the record; a detail is written only for an overdraft.
            let detail = String::new();
            self.apply(account, currency, now, |w| {
                let (entry, over) = w.commit(currency, charge, event_id, now, detail)?;
                overdraft = over;
                Ok(entry)
            })
            .map(|entry| {
                // A session's end says its overdraft itself, with the units beyond its grant.
                if overdraft > Decimal::ZERO && !session {
                    self.alert(BalanceAlert {
                        account: account.to_string(),
                        currency,
                        kind: BalanceAlertKind::Overdraft {
                            amount: overdraft,
                            beyond_grant: Decimal::ZERO,
                        },
                        available: entry.available_after,
                        entry: entry.number,
                        at: now,
                    });
                }
                overdraft
            })
        };
        let overdraft = result.map_err(|e| e.to_string())?;
        if let Some(paying) = self.paying.as_mut() {
            paying.paid = Some((charge, overdraft));
        }
        Ok(())
    }

    /// True while a session's end is being rated: its record is paid whatever the subscription.
    pub(super) fn paying(&self) -> bool {
        self.paying.is_some()
    }

    /// Expires the topped-up credit due at `now`, with its ledger entries and alerts.
    pub(super) fn expire_lots(&mut self, now: DateTime<Utc>) -> Result<(), BalanceError> {
        let now_nanos = now.timestamp_nanos_opt().unwrap_or(i64::MAX);
        if self.next_lot_due.is_none_or(|due| due > now_nanos) {
            return Ok(());
        }
        self.next_lot_due = None;
        let due: Vec<Arc<str>> = self
            .wallets
            .iter()
            .filter(|(_, w)| w.next_lot_expiry().is_some_and(|d| d <= now_nanos))
            .map(|(a, _)| a.clone())
            .collect();
        for account in due {
            let wallet = self.wallet_mut(&account);
            let mut before: Vec<(Currency, Decimal)> =
                wallet.purses.iter().map(|p| (p.currency, p.available())).collect();
            let entries = wallet
                .expire_lots(now)
                .map_err(|e| BalanceError::Invalid(e.to_string()))?;
            let mut alerts = Vec::new();
            for entry in &entries {
                let Some((_, was)) = before.iter_mut().find(|(c, _)| *c == entry.currency) else {
                    continue;
                };
                if let Some(purse) = wallet.purse(entry.currency) {
                    let change = (*was, entry.available_after);
                    alerts.extend(alerts_of_change(&account, purse, change, entry.number, now));
                }
                *was = entry.available_after;
            }
            for entry in entries {
                self.note_entry(entry);
            }
            for alert in alerts {
                self.alert(alert);
            }
        }
        let wallets: Vec<i64> = self.wallets.values().filter_map(Wallet::next_lot_expiry).collect();
        self.next_lot_due = wallets.into_iter().min();
        Ok(())
    }
}
