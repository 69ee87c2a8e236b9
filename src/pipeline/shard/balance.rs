//! A shard's balances: the wallets of its accounts and the charging sessions that hold
//! reservations, changed only here (in order with the accounts' events) and written into the
//! same output, and so the same commit, as the records they pay for.

use std::collections::BTreeSet;
use std::sync::Arc;

use ahash::AHashMap;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::rate::{Touched, reject};
use super::{ShardEnv, ShardState, outputs_committed};
use crate::domain::balance::{
    BalanceAlert, BalanceAlertKind, BalancePolicy, LedgerEntry, Session, SessionOutcome, Wallet, alerts_of_change,
};
use crate::domain::money::Currency;
use crate::domain::record::RatingInput;
use crate::domain::tariff::Plan;
use crate::pipeline::balance::{BalanceError, BalanceJob, BalanceOp, BalanceReply};
use crate::pipeline::{RatingContext, ShardOutput, lock};
use crate::store::balance::{
    StoredTopUp, balance_alert_key, decode_session, decode_topup, encode_balance_alert, encode_entry, encode_session,
    encode_topup, encode_wallet, session_key, topup_key, wallet_key,
};

/// What a job's balance changes add to its commit.
#[derive(Default)]
pub struct BalanceWrites {
    /// Keys and values for the commit's batch (`store::balance`).
    pub writes: Vec<(Vec<u8>, Vec<u8>)>,
    /// Ledger entries, encoded, with their account, in order.
    pub ledger: Vec<(Arc<str>, Vec<u8>)>,
    /// The wallets changed, as they are now (the committed view and the Redis projection).
    pub wallets: Vec<(Arc<str>, crate::domain::balance::BalanceView)>,
    /// True when a balance alert was written.
    pub alerts: bool,
}

/// The session whose end is being rated: its record is paid from the balance whatever the
/// balance holds (the usage happened), and what was paid is noted here.
struct Paying {
    paid: Option<(Decimal, Decimal)>,
}

/// The balances of one shard's accounts.
#[derive(Default)]
pub struct Balances {
    wallets: AHashMap<Arc<str>, Wallet>,
    /// Sessions holding a reservation, by id.
    sessions: AHashMap<String, Session>,
    /// (expiry, session id) of every session in `sessions`: the next due first.
    expiries: BTreeSet<(i64, String)>,
    /// The soonest expiry of any topped-up credit (`None`: none expires).
    next_lot_due: Option<i64>,
    /// Session and top-up keys written by outputs not yet committed, with the output's number:
    /// read before the store, so a resend right after the first is answered the same.
    recent: AHashMap<Vec<u8>, (Vec<u8>, u64)>,
    /// The output being built: its number among the shard's outputs.
    output: u64,
    /// Accounts whose wallet changed in the current job (one hash lookup per change: a job of a
    /// thousand prepaid events touches about as many wallets).
    touched: ahash::AHashSet<Arc<str>>,
    /// Ledger entries written in the current job, by kind (counted once a job).
    entries: [u64; 6],
    pending: BalanceWrites,
    paying: Option<Paying>,
}

impl Balances {
    /// Installs a wallet read at start.
    pub fn load_wallet(&mut self, wallet: Wallet) {
        self.note_lots(&wallet);
        self.wallets.insert(Arc::from(wallet.account.as_str()), wallet);
    }

    /// Installs a session that held a reservation at the last stop.
    pub fn load_session(&mut self, session: Session) {
        self.expiries.insert((session.expires_unix_nanos, session.id.clone()));
        metrics::gauge!(crate::telemetry::RESERVATIONS_OPEN).increment(1.0);
        self.sessions.insert(session.id.clone(), session);
    }

    fn note_lots(&mut self, wallet: &Wallet) {
        if let Some(due) = wallet.next_lot_expiry() {
            self.next_lot_due = Some(self.next_lot_due.map_or(due, |d| d.min(due)));
        }
    }

    /// The account's wallet, created empty when absent; noted as changed by the job.
    fn wallet_mut(&mut self, account: &str) -> &mut Wallet {
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

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.pending.writes.push((key, value));
    }

    /// A session or top-up key, remembered until its output is committed.
    fn put_recent(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.recent.insert(key.clone(), (value.clone(), self.output));
        self.put(key, value);
    }

    fn read(&self, env: &ShardEnv, key: &[u8]) -> Result<Option<Vec<u8>>, BalanceError> {
        if let Some((value, _)) = self.recent.get(key) {
            return Ok(Some(value.clone()));
        }
        let stored = env
            .balances
            .raw(key)
            .map_err(|e| BalanceError::Storage(e.to_string()))?;
        Ok(stored.map(|v| v.to_vec()))
    }

    /// Applies one change to the account's purse in `currency`, writes its ledger entry and the
    /// alerts it raises.
    fn apply(
        &mut self,
        account: &str,
        currency: Currency,
        now: DateTime<Utc>,
        change: impl FnOnce(&mut Wallet) -> Result<LedgerEntry, crate::domain::balance::BalanceError>,
    ) -> Result<LedgerEntry, BalanceError> {
        let wallet = self.wallet_mut(account);
        let before = wallet.purse(currency).map_or(Decimal::ZERO, |p| p.available());
        let entry = change(wallet).map_err(|e| BalanceError::Invalid(e.to_string()))?;
        let alerts = match wallet.purse(currency) {
            Some(purse) => alerts_of_change(account, purse, (before, entry.available_after), entry.number, now),
            None => Vec::new(),
        };
        self.note_entry(&entry);
        for alert in alerts {
            self.alert(alert);
        }
        Ok(entry)
    }

    /// A ledger entry into the job's output (its account's key is the wallet's).
    fn note_entry(&mut self, entry: &LedgerEntry) {
        self.entries[usize::from(entry.kind.code() - 1)] += 1;
        let account = match self.wallets.get_key_value(entry.account.as_str()) {
            Some((key, _)) => key.clone(),
            None => Arc::from(entry.account.as_str()),
        };
        self.pending.ledger.push((account, encode_entry(entry)));
    }

    fn alert(&mut self, alert: BalanceAlert) {
        let entry = alert.entry().to_string();
        self.put(balance_alert_key(&alert.order_key()), encode_balance_alert(&entry));
        self.pending.alerts = true;
    }

    /// The balance writes of the job, with every changed wallet (none: `None`, nothing to add).
    pub(super) fn take(&mut self) -> Option<Box<BalanceWrites>> {
        if self.touched.is_empty() && self.pending.writes.is_empty() && self.pending.ledger.is_empty() {
            return None;
        }
        for (kind, n) in crate::domain::balance::EntryKind::ALL
            .iter()
            .zip(std::mem::take(&mut self.entries))
        {
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
            let spendable = self
                .wallets
                .get(account)
                .map_or(Decimal::ZERO, |w| w.spendable(currency));
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

    /// Releases the reservations and expires the credit due at `now`.
    fn sweep(&mut self, now: DateTime<Utc>) -> Result<(), BalanceError> {
        let now_nanos = now.timestamp_nanos_opt().unwrap_or(i64::MAX);
        while self.expiries.first().is_some_and(|(due, _)| *due <= now_nanos) {
            let Some((_, id)) = self.expiries.pop_first() else {
                break;
            };
            let Some(mut session) = self.sessions.remove(&id) else {
                continue;
            };
            let held = session.reserved;
            let detail = format!("the reservation of session {id} expired");
            let currency = session.currency;
            self.apply(&session.account, currency, now, |w| {
                w.release(currency, held, &id, now, detail)
            })?;
            session.reserved = Decimal::ZERO;
            self.put_recent(session_key(&id), encode_session(&session));
            metrics::counter!(crate::telemetry::RESERVATIONS_EXPIRED).increment(1);
            metrics::gauge!(crate::telemetry::RESERVATIONS_OPEN).decrement(1.0);
        }
        if self.next_lot_due.is_some_and(|due| due <= now_nanos) {
            self.next_lot_due = None;
            let due: Vec<Arc<str>> = self
                .wallets
                .iter()
                .filter(|(_, w)| w.next_lot_expiry().is_some_and(|d| d <= now_nanos))
                .map(|(a, _)| a.clone())
                .collect();
            for account in due {
                let wallet = self.wallet_mut(&account);
                let before: Vec<(Currency, Decimal)> =
                    wallet.purses.iter().map(|p| (p.currency, p.available())).collect();
                let entries = wallet
                    .expire_lots(now)
                    .map_err(|e| BalanceError::Invalid(e.to_string()))?;
                let mut alerts = Vec::new();
                let mut before = before;
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
                for entry in &entries {
                    self.note_entry(entry);
                }
                for alert in alerts {
                    self.alert(alert);
                }
            }
            let wallets: Vec<i64> = self.wallets.values().filter_map(Wallet::next_lot_expiry).collect();
            self.next_lot_due = wallets.into_iter().min();
        }
        Ok(())
    }
}

/// A grant that cannot be priced: no tariff for the meter (a rule of the tariffs), or a bad input.
fn grant_error(error: crate::rating::RatingError) -> BalanceError {
    match error.reason() {
        crate::domain::usage::RejectReason::NoTariff => BalanceError::NoTariff(error.to_string()),
        _ => BalanceError::Invalid(error.to_string()),
    }
}

impl ShardState {
    /// Handles one balance operation: its writes (and, for a session's end, its record) form
    /// one output, and its answer is read by the caller once that output is committed.
    pub(super) fn balance_job(
        &mut self,
        ctx: &RatingContext,
        env: &ShardEnv,
        job: BalanceJob,
        output: u64,
    ) -> ShardOutput {
        let committed = outputs_committed(env);
        self.balances.recent.retain(|_, (_, n)| *n > committed);
        self.balances.output = output;
        let mut out = ShardOutput::empty(job.ticket, std::time::Instant::now());
        let mut touched = Touched::default();
        self.segment.begin(Vec::new());
        let now = self.job_now;
        if matches!(job.op, BalanceOp::Sweep) {
            // Partial sessions whose timeout passed are rated from the parts they have.
            self.time_out_partials(ctx, &mut out, &mut touched);
        }
        let answer = self
            .balances
            .sweep(now)
            .and_then(|()| self.balance_op(ctx, env, job.op, now, &mut out, &mut touched));
        if answer.is_err() {
            // A refusal writes nothing but the sweep's changes (kept: they are due either way).
            self.balances.paying = None;
        }
        self.finish_output(touched, &mut out);
        *lock(&job.answer) = Some(answer);
        out
    }

    fn balance_op(
        &mut self,
        ctx: &RatingContext,
        env: &ShardEnv,
        op: BalanceOp,
        now: DateTime<Utc>,
        out: &mut ShardOutput,
        touched: &mut Touched,
    ) -> Result<BalanceReply, BalanceError> {
        match op {
            BalanceOp::Sweep => Ok(BalanceReply::Swept),
            BalanceOp::Get { account } => Ok(BalanceReply::Wallet {
                wallet: self.balances.wallets.get(account.as_str()).cloned(),
                already_applied: false,
            }),
            BalanceOp::TopUp {
                account,
                currency,
                amount,
                id,
                expires,
            } => {
                let key = topup_key(&account, &id);
                let asked = StoredTopUp {
                    currency,
                    amount,
                    expires,
                    entry: 0,
                };
                if let Some(bytes) = self.balances.read(env, &key)? {
                    let earlier = decode_topup(&bytes).map_err(|e| BalanceError::Storage(e.to_string()))?;
                    if (StoredTopUp { entry: 0, ..earlier }) != asked {
                        return Err(BalanceError::IdTaken(format!(
                            "top-up id {id:?} of account {account:?} was used for {} {}{}",
                            earlier.amount,
                            earlier.currency,
                            earlier
                                .expires
                                .map(|e| format!(" expiring {}", e.to_rfc3339()))
                                .unwrap_or_default()
                        )));
                    }
                    return Ok(BalanceReply::Wallet {
                        wallet: self.balances.wallets.get(account.as_str()).cloned(),
                        already_applied: true,
                    });
                }
                self.billed_in(ctx, &account, currency, now)?;
                if let Some(expires) = expires.filter(|e| *e <= now) {
                    return Err(BalanceError::Invalid(format!(
                        "expires_at {} is not in the future",
                        expires.to_rfc3339()
                    )));
                }
                let entry = self.balances.apply(&account, currency, now, |w| {
                    w.top_up(currency, amount, &id, expires, now)
                })?;
                if let Some(wallet) = self.balances.wallets.get(account.as_str()) {
                    let wallet = wallet.clone();
                    self.balances.note_lots(&wallet);
                }
                let stored = StoredTopUp {
                    entry: entry.number,
                    ..asked
                };
                self.balances.put_recent(key, encode_topup(&stored));
                Ok(BalanceReply::Wallet {
                    wallet: self.balances.wallets.get(account.as_str()).cloned(),
                    already_applied: false,
                })
            }
            BalanceOp::Configure {
                account,
                currency,
                credit_limit,
                low_balance,
            } => {
                self.billed_in(ctx, &account, currency, now)?;
                let purse = self.balances.wallet_mut(&account).purse_mut(currency);
                if let Some(limit) = credit_limit {
                    purse.credit_limit = limit;
                }
                if let Some(mut thresholds) = low_balance {
                    thresholds.sort();
                    thresholds.dedup();
                    purse.low_balance = thresholds;
                }
                // The settings are stored; the sums come back from the ledger at start.
                if let Some(wallet) = self.balances.wallets.get(account.as_str()) {
                    let settings = encode_wallet(wallet);
                    self.balances.put(wallet_key(&account), settings);
                }
                Ok(BalanceReply::Wallet {
                    wallet: self.balances.wallets.get(account.as_str()).cloned(),
                    already_applied: false,
                })
            }
            BalanceOp::Authorize {
                session,
                account,
                meter,
                attributes,
                requested,
                started,
            } => {
                let started = started.unwrap_or(now);
                self.authorize(ctx, env, session, account, meter, attributes, requested, started, now)
            }
            BalanceOp::Update {
                session,
                account: _,
                used,
                requested,
            } => self.update(ctx, env, &session, used, requested, now),
            BalanceOp::Terminate {
                session,
                account: _,
                used,
                event,
            } => self.terminate(ctx, env, &session, used, *event, now, out, touched),
        }
    }

    /// Refuses a currency none of the account's plans in force bills in (and no purse holds).
    fn billed_in(
        &self,
        ctx: &RatingContext,
        account: &str,
        currency: Currency,
        now: DateTime<Utc>,
    ) -> Result<(), BalanceError> {
        let held = self
            .balances
            .wallets
            .get(account)
            .is_some_and(|w| w.purse(currency).is_some());
        let billed = ctx
            .subscriptions
            .plan_in_currency(account, now, currency.as_str(), &ctx.catalogue)
            .is_some();
        if held || billed {
            return Ok(());
        }
        Err(BalanceError::Invalid(format!(
            "account {account:?} is billed in no plan in {currency} now, and holds no {currency} balance"
        )))
    }

    /// A session: the open one in memory, else as last written (committed or not).
    fn find_session(&self, env: &ShardEnv, id: &str) -> Result<Option<Session>, BalanceError> {
        if let Some(s) = self.balances.sessions.get(id) {
            return Ok(Some(s.clone()));
        }
        match self.balances.read(env, &session_key(id))? {
            None => Ok(None),
            Some(bytes) => decode_session(&bytes)
                .map(Some)
                .map_err(|e| BalanceError::Storage(e.to_string())),
        }
    }

    /// The plan that prices the session's meter now, and the period-to-date usage of the meter.
    fn session_plan<'c>(
        &mut self,
        ctx: &'c RatingContext,
        account: &str,
        meter: &str,
        at: DateTime<Utc>,
    ) -> Result<(&'c Plan, Option<Decimal>, Decimal), BalanceError> {
        if !ctx.catalogue.knows_meter(meter) {
            return Err(BalanceError::Invalid(format!("no tariff defines meter {meter:?}")));
        }
        let Some((plan_id, discount, _)) = ctx.subscriptions.plan_for(account, at, meter, &ctx.catalogue) else {
            return Err(BalanceError::NoTariff(ctx.subscriptions.no_plan_detail(account, at)));
        };
        let plan = ctx
            .catalogue
            .plan(plan_id)
            .ok_or_else(|| BalanceError::NoTariff(format!("plan {plan_id:?} is not in the tariff catalogue")))?;
        let (period, _, plan_key) = self.period(plan, at);
        let usage = self
            .accounts
            .get(account)
            .and_then(|list| list.iter().find(|t| t.period == period && t.plan == plan_key))
            .map_or(Decimal::ZERO, |t| t.usage(meter));
        Ok((plan, discount, usage))
    }

    #[allow(clippy::too_many_arguments)]
    fn authorize(
        &mut self,
        ctx: &RatingContext,
        env: &ShardEnv,
        id: String,
        account: String,
        meter: String,
        attributes: Vec<(String, String)>,
        requested: Decimal,
        started: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<BalanceReply, BalanceError> {
        if let Some(s) = self.find_session(env, &id)? {
            // A resend of the same Authorize answers the session as it stands.
            if s.account == account && s.meter == meter && s.attributes == attributes && s.outcome.is_none() {
                return Ok(BalanceReply::Granted {
                    granted: s.granted - s.used,
                    session: s,
                });
            }
            return Err(BalanceError::SessionExists(id));
        }
        let (plan, discount, usage) = self.session_plan(ctx, &account, &meter, started)?;
        let currency = plan.currency;
        let Some(wallet) = self.balances.wallets.get(account.as_str()) else {
            return Err(BalanceError::NoBalance(format!(
                "account {account:?} has no balance: top it up or give it a credit limit"
            )));
        };
        let budget = wallet.spendable(currency);
        let input = RatingInput {
            meter: &meter,
            quantity: Decimal::ZERO,
            at: started,
            attributes: &attributes,
            period_usage: usage,
            subscription_discount: discount,
        };
        let grant = crate::rating::grant::grant(plan, &input, Decimal::ZERO, requested, budget).map_err(grant_error)?;
        if grant.units.is_zero() {
            metrics::counter!(crate::telemetry::RESERVATIONS_DENIED).increment(1);
            return Err(BalanceError::Insufficient(format!(
                "account {account:?} has {budget} {currency} to spend (available plus credit limit); \
                 the first unit of {meter:?} costs {}",
                grant.price
            )));
        }
        let session = Session {
            id: id.clone(),
            account: account.clone(),
            meter,
            attributes,
            currency,
            started_unix_nanos: started.timestamp_nanos_opt().unwrap_or(0),
            granted: grant.units,
            used: Decimal::ZERO,
            reserved: grant.price,
            expires_unix_nanos: (now + env.reservation_ttl).timestamp_nanos_opt().unwrap_or(i64::MAX),
            outcome: None,
        };
        self.balances
            .apply(&account, currency, now, |w| w.reserve(currency, grant.price, &id, now))?;
        self.hold(session.clone());
        metrics::gauge!(crate::telemetry::RESERVATIONS_OPEN).increment(1.0);
        Ok(BalanceReply::Granted {
            granted: grant.units,
            session,
        })
    }

    /// Keeps a session with a reservation in memory (with its expiry) and writes it.
    fn hold(&mut self, session: Session) {
        self.balances
            .put_recent(session_key(&session.id), encode_session(&session));
        self.balances
            .expiries
            .insert((session.expires_unix_nanos, session.id.clone()));
        self.balances.sessions.insert(session.id.clone(), session);
    }

    /// Takes a session out of memory (its expiry too); true when it held a reservation there.
    fn unhold(&mut self, session: &Session) -> bool {
        self.balances
            .expiries
            .remove(&(session.expires_unix_nanos, session.id.clone()));
        self.balances.sessions.remove(&session.id).is_some()
    }

    fn update(
        &mut self,
        ctx: &RatingContext,
        env: &ShardEnv,
        id: &str,
        used: Decimal,
        requested: Decimal,
        now: DateTime<Utc>,
    ) -> Result<BalanceReply, BalanceError> {
        let Some(mut session) = self.find_session(env, id)? else {
            return Err(BalanceError::UnknownSession(id.to_string()));
        };
        if session.outcome.is_some() {
            return Err(BalanceError::SessionEnded(id.to_string()));
        }
        if used < session.used {
            return Err(BalanceError::Invalid(format!(
                "used units only grow: session {id:?} reported {} before, {used} now",
                session.used
            )));
        }
        let account = session.account.clone();
        let (plan, discount, usage) = self.session_plan(ctx, &account, &session.meter, session.started())?;
        let currency = session.currency;
        let budget = self
            .balances
            .wallets
            .get(account.as_str())
            .map_or(Decimal::ZERO, |w| w.spendable(currency))
            + session.reserved;
        let input = RatingInput {
            meter: &session.meter,
            quantity: Decimal::ZERO,
            at: session.started(),
            attributes: &session.attributes,
            period_usage: usage,
            subscription_discount: discount,
        };
        let grant = crate::rating::grant::grant(plan, &input, used, requested, budget).map_err(grant_error)?;
        let held = self.unhold(&session);
        session.used = used;
        if grant.units.is_zero() {
            metrics::counter!(crate::telemetry::RESERVATIONS_DENIED).increment(1);
        } else {
            let old = session.reserved;
            if old > Decimal::ZERO {
                let detail = format!("session {id} updated: {used} units used");
                self.balances
                    .apply(&account, currency, now, |w| w.release(currency, old, id, now, detail))?;
            }
            self.balances
                .apply(&account, currency, now, |w| w.reserve(currency, grant.price, id, now))?;
            session.reserved = grant.price;
            session.granted = used + grant.units;
        }
        session.expires_unix_nanos = (now + env.reservation_ttl).timestamp_nanos_opt().unwrap_or(i64::MAX);
        if session.reserved > Decimal::ZERO {
            if !held {
                metrics::gauge!(crate::telemetry::RESERVATIONS_OPEN).increment(1.0);
            }
            self.hold(session.clone());
        } else {
            if held {
                metrics::gauge!(crate::telemetry::RESERVATIONS_OPEN).decrement(1.0);
            }
            self.balances.put_recent(session_key(id), encode_session(&session));
        }
        Ok(BalanceReply::Granted {
            granted: grant.units,
            session,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn terminate(
        &mut self,
        ctx: &RatingContext,
        env: &ShardEnv,
        id: &str,
        used: Decimal,
        event: Result<crate::pipeline::ValidEvent, crate::domain::usage::Rejected>,
        now: DateTime<Utc>,
        out: &mut ShardOutput,
        touched: &mut Touched,
    ) -> Result<BalanceReply, BalanceError> {
        let Some(mut session) = self.find_session(env, id)? else {
            return Err(BalanceError::UnknownSession(id.to_string()));
        };
        if session.outcome.is_some() {
            // Terminate is idempotent by session id: the first outcome stands.
            return Ok(BalanceReply::Terminated { session });
        }
        if used < session.used {
            return Err(BalanceError::Invalid(format!(
                "used units only grow: session {id:?} reported {} before, {used} now",
                session.used
            )));
        }
        let account = session.account.clone();
        let currency = session.currency;
        if self.unhold(&session) {
            metrics::gauge!(crate::telemetry::RESERVATIONS_OPEN).decrement(1.0);
        }
        let released = session.reserved;
        if released > Decimal::ZERO {
            let detail = format!("session {id} ended: {used} units used");
            self.balances.apply(&account, currency, now, |w| {
                w.release(currency, released, id, now, detail)
            })?;
        }
        // The session's usage goes the way of every event: dedupe, plan, rating, totals, record.
        self.balances.paying = Some(Paying { paid: None });
        let results_before = out.results.len();
        match event {
            Ok(valid) => self.rate_one(ctx, valid, out, touched),
            Err(rejected) => reject(out, 0, rejected),
        }
        let paid = self.balances.paying.take().and_then(|p| p.paid);
        let rejected = out.results[results_before..].first().map(|r| match r.rejected {
            Some(reason) => (reason.as_str().to_string(), r.detail.clone()),
            None => (
                "DUPLICATE".to_string(),
                format!("an event with id {id:?} was rated before"),
            ),
        });
        let (charge, overdraft) = paid.unwrap_or((Decimal::ZERO, Decimal::ZERO));
        let beyond_grant = (used - session.granted).max(Decimal::ZERO);
        if (beyond_grant > Decimal::ZERO || overdraft > Decimal::ZERO) && rejected.is_none() {
            let available = self
                .balances
                .wallets
                .get(account.as_str())
                .and_then(|w| w.purse(currency))
                .map_or(Decimal::ZERO, |p| p.available());
            let entry = self
                .balances
                .wallets
                .get(account.as_str())
                .map_or(0, |w| w.next_entry - 1);
            self.balances.alert(BalanceAlert {
                account: account.clone(),
                currency,
                kind: BalanceAlertKind::Overdraft {
                    amount: overdraft,
                    beyond_grant,
                },
                available,
                entry,
                at: now,
            });
        }
        session.reserved = Decimal::ZERO;
        session.used = used;
        session.outcome = Some(SessionOutcome {
            used,
            charge,
            overdraft,
            beyond_grant,
            released,
            rejected,
            at_unix_nanos: now.timestamp_nanos_opt().unwrap_or(0),
        });
        self.balances.put_recent(session_key(id), encode_session(&session));
        Ok(BalanceReply::Terminated { session })
    }
}

impl ShardState {
    /// A correction of records that were paid from the balance (a prepaid subscription's, a
    /// session's end) gives back or takes the difference: one adjustment per corrected (account,
    /// period, plan), under the correction's id, in the same output as its records. A record was
    /// paid when its account's ledger holds a commit (or a tier's credit) under its event id.
    pub(super) fn adjust_paid_corrections(
        &mut self,
        store: &crate::store::Balances,
        request: &crate::pipeline::corrections::CorrectionRequest,
        at: DateTime<Utc>,
        outcomes: &[crate::pipeline::corrections::Outcome],
    ) {
        use crate::domain::balance::EntryKind;
        for outcome in outcomes.iter().filter(|o| !o.already_applied) {
            if !self.balances.wallets.contains_key(outcome.account.as_str()) {
                continue;
            }
            let paid: ahash::AHashSet<String> = match store.ledger(&outcome.account, 0, usize::MAX) {
                Ok(entries) => entries
                    .into_iter()
                    .filter(|e| matches!(e.kind, EntryKind::Commit | EntryKind::Adjustment))
                    .map(|e| e.id)
                    .collect(),
                Err(error) => {
                    tracing::error!(account = %outcome.account, %error, "cannot read the ledger; the correction's balance adjustment is not made");
                    continue;
                }
            };
            let difference: Decimal = outcome
                .records
                .iter()
                .filter(|r| paid.contains(&r.event_id))
                .map(|r| r.charge)
                .sum();
            if difference.is_zero() {
                continue;
            }
            let (currency, id) = (outcome.currency, request.id.as_str());
            let detail = format!(
                "correction {id} ({}) of {} {}: {}",
                request.change.action().as_str(),
                outcome.plan,
                outcome.period,
                request.reason
            );
            let applied = self.balances.apply(&outcome.account, currency, at, |w| {
                w.adjust(currency, -difference, id, at, detail)
            });
            if let Err(error) = applied {
                tracing::error!(account = %outcome.account, %error, "the correction's balance adjustment failed");
            }
        }
    }
}
