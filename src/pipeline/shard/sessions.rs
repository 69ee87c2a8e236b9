//! A shard's charging sessions (docs/charging.md): the sessions of its accounts that hold a
//! reservation, their expiries, and the state machine of one session. Authorize grants the most
//! units the balance pays and reserves their price; Update reports the units used and grants
//! again; Terminate releases what is held and rates the usage once as an event, paid from the
//! balance in the same output; a reservation that lapses is released by the sweep. Every change
//! is written as the session as it stands (`g/`), in the output of the change.

use std::collections::BTreeSet;

use ahash::AHashMap;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::rate::{Touched, reject};
use super::wallets::Paying;
use super::{ShardEnv, ShardState};
use crate::domain::balance::{BalanceAlert, BalanceAlertKind, Session, SessionOutcome};
use crate::domain::record::RatingInput;
use crate::domain::tariff::Plan;
use crate::pipeline::balance::{BalanceError, BalanceReply};
use crate::pipeline::{RatingContext, ShardOutput};
use crate::store::Write;

/// The sessions of one shard's accounts.
#[derive(Default)]
pub struct Sessions {
    /// Sessions holding a reservation, by id.
    open: AHashMap<String, Session>,
    /// (expiry, session id) of every session in `open`: the next due first.
    expiries: BTreeSet<(i64, String)>,
    /// Sessions written by outputs not yet committed, with the output's number: read before the
    /// store, so a resend right after the first is answered the same.
    recent: AHashMap<String, (Session, u64)>,
}

impl Sessions {
    /// Installs a session that held a reservation at the last stop.
    pub fn load(&mut self, session: Session) {
        self.expiries.insert((session.expires_unix_nanos, session.id.clone()));
        metrics::gauge!(crate::telemetry::RESERVATIONS_OPEN).increment(1.0);
        self.open.insert(session.id.clone(), session);
    }

    /// Forgets the recent sessions of outputs committed by now (the store answers for them).
    pub(super) fn forget_committed(&mut self, committed: u64) {
        self.recent.retain(|_, (_, n)| *n > committed);
    }

    /// The session as it stands: open in memory, else as last written (committed or not).
    fn find(&self, env: &ShardEnv, id: &str) -> Result<Option<Session>, BalanceError> {
        if let Some(s) = self.open.get(id) {
            return Ok(Some(s.clone()));
        }
        if let Some((s, _)) = self.recent.get(id) {
            return Ok(Some(s.clone()));
        }
        env.balances
            .session(id)
            .map_err(|e| BalanceError::Storage(e.to_string()))
    }

    /// The write of a session as it stands, remembered until output `output` is committed.
    fn written(&mut self, session: &Session, output: u64) -> Write {
        self.recent.insert(session.id.clone(), (session.clone(), output));
        Write::Session(session.clone())
    }

    /// Keeps a session with a reservation in memory, with its expiry.
    fn hold(&mut self, session: Session) {
        self.expiries.insert((session.expires_unix_nanos, session.id.clone()));
        self.open.insert(session.id.clone(), session);
    }

    /// Takes a session out of memory (its expiry too); true when it held a reservation there.
    fn unhold(&mut self, session: &Session) -> bool {
        self.expiries.remove(&(session.expires_unix_nanos, session.id.clone()));
        self.open.remove(&session.id).is_some()
    }

    /// The next session whose reservation is due at `now_nanos`, taken out of memory.
    fn next_due(&mut self, now_nanos: i64) -> Option<Session> {
        while self.expiries.first().is_some_and(|(due, _)| *due <= now_nanos) {
            let (_, id) = self.expiries.pop_first()?;
            if let Some(session) = self.open.remove(&id) {
                return Some(session);
            }
        }
        None
    }
}

/// A grant that cannot be priced: no tariff for the meter (a rule of the tariffs), or a bad input.
fn grant_error(error: crate::rating::RatingError) -> BalanceError {
    match error.reason() {
        crate::domain::usage::RejectReason::NoTariff => BalanceError::NoTariff(error.to_string()),
        _ => BalanceError::Invalid(error.to_string()),
    }
}

/// What an Authorize asks.
pub(super) struct AuthorizeAsk {
    pub(super) id: String,
    pub(super) account: String,
    pub(super) meter: String,
    pub(super) attributes: Vec<(String, String)>,
    pub(super) requested: Decimal,
    pub(super) started: DateTime<Utc>,
    pub(super) as_sent: Option<Box<crate::domain::record::AsSent>>,
}

impl ShardState {
    /// Writes `session` as it stands into the current output.
    fn write_session(&mut self, session: &Session) {
        let write = self.sessions.written(session, self.output);
        self.wallets.write(write);
    }

    /// Releases the reservations due at `now` (the sweep, and before every balance operation).
    pub(super) fn release_due(&mut self, now: DateTime<Utc>) -> Result<(), BalanceError> {
        let now_nanos = now.timestamp_nanos_opt().unwrap_or(i64::MAX);
        while let Some(mut session) = self.sessions.next_due(now_nanos) {
            let (id, held, currency) = (session.id.clone(), session.reserved, session.currency);
            let detail = format!("the reservation of session {id} expired");
            self.wallets.apply(&session.account, currency, now, |w| {
                w.release(currency, held, &id, now, detail)
            })?;
            session.reserved = Decimal::ZERO;
            self.write_session(&session);
            metrics::counter!(crate::telemetry::RESERVATIONS_EXPIRED).increment(1);
            metrics::gauge!(crate::telemetry::RESERVATIONS_OPEN).decrement(1.0);
        }
        Ok(())
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
            .and_then(|list| {
                list.iter()
                    .filter_map(|&slot| self.totals.get(slot))
                    .find(|t| t.period == period && t.plan == plan_key)
            })
            .map_or(Decimal::ZERO, |t| t.usage(meter));
        Ok((plan, discount, usage))
    }

    pub(super) fn authorize(
        &mut self,
        ctx: &RatingContext,
        env: &ShardEnv,
        ask: AuthorizeAsk,
        now: DateTime<Utc>,
    ) -> Result<BalanceReply, BalanceError> {
        let AuthorizeAsk {
            id,
            account,
            meter,
            attributes,
            requested,
            started,
            as_sent,
        } = ask;
        if let Some(s) = self.sessions.find(env, &id)? {
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
        if self.wallets.get(&account).is_none() {
            return Err(BalanceError::NoBalance(format!(
                "account {account:?} has no balance: top it up or give it a credit limit"
            )));
        }
        let budget = self.wallets.spendable(&account, currency);
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
            as_sent,
        };
        self.wallets
            .apply(&account, currency, now, |w| w.reserve(currency, grant.price, &id, now))?;
        self.write_session(&session);
        self.sessions.hold(session.clone());
        metrics::gauge!(crate::telemetry::RESERVATIONS_OPEN).increment(1.0);
        Ok(BalanceReply::Granted {
            granted: grant.units,
            session,
        })
    }

    pub(super) fn update(
        &mut self,
        ctx: &RatingContext,
        env: &ShardEnv,
        id: &str,
        used: Decimal,
        requested: Decimal,
        now: DateTime<Utc>,
    ) -> Result<BalanceReply, BalanceError> {
        let Some(mut session) = self.sessions.find(env, id)? else {
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
        let budget = self.wallets.spendable(&account, currency) + session.reserved;
        let input = RatingInput {
            meter: &session.meter,
            quantity: Decimal::ZERO,
            at: session.started(),
            attributes: &session.attributes,
            period_usage: usage,
            subscription_discount: discount,
        };
        let grant = crate::rating::grant::grant(plan, &input, used, requested, budget).map_err(grant_error)?;
        let held = self.sessions.unhold(&session);
        session.used = used;
        if grant.units.is_zero() {
            metrics::counter!(crate::telemetry::RESERVATIONS_DENIED).increment(1);
        } else {
            let old = session.reserved;
            if old > Decimal::ZERO {
                let detail = format!("session {id} updated: {used} units used");
                self.wallets
                    .apply(&account, currency, now, |w| w.release(currency, old, id, now, detail))?;
            }
            self.wallets
                .apply(&account, currency, now, |w| w.reserve(currency, grant.price, id, now))?;
            session.reserved = grant.price;
            session.granted = used + grant.units;
        }
        session.expires_unix_nanos = (now + env.reservation_ttl).timestamp_nanos_opt().unwrap_or(i64::MAX);
        self.write_session(&session);
        if session.reserved > Decimal::ZERO {
            if !held {
                metrics::gauge!(crate::telemetry::RESERVATIONS_OPEN).increment(1.0);
            }
            self.sessions.hold(session.clone());
        } else if held {
            metrics::gauge!(crate::telemetry::RESERVATIONS_OPEN).decrement(1.0);
        }
        Ok(BalanceReply::Granted {
            granted: grant.units,
            session,
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn terminate(
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
        let Some(mut session) = self.sessions.find(env, id)? else {
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
        if self.sessions.unhold(&session) {
            metrics::gauge!(crate::telemetry::RESERVATIONS_OPEN).decrement(1.0);
        }
        let released = session.reserved;
        if released > Decimal::ZERO {
            let detail = format!("session {id} ended: {used} units used");
            self.wallets.apply(&account, currency, now, |w| {
                w.release(currency, released, id, now, detail)
            })?;
        }
        // The session's usage goes the way of every event: dedupe, plan, rating, totals, record.
        self.wallets.paying = Some(Paying { paid: None });
        let results_before = out.results.len();
        match event {
            Ok(valid) => self.rate_one(ctx, valid, out, touched),
            Err(rejected) => reject(out, 0, rejected),
        }
        let paid = self.wallets.paying.take().and_then(|p| p.paid);
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
            let wallet = self.wallets.get(&account);
            let available = wallet
                .and_then(|w| w.purse(currency))
                .map_or(Decimal::ZERO, |p| p.available());
            let entry = wallet.map_or(0, |w| w.next_entry - 1);
            self.wallets.alert(BalanceAlert {
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
        self.write_session(&session);
        Ok(BalanceReply::Terminated { session })
    }
}
