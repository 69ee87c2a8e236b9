//! A shard's balance operations (`Pipeline::balance`): each is handled in order with the
//! accounts' events, its writes (and, for a session's end, its record) form one output, and its
//! answer is read by the caller once that output is committed. Top-ups and limits change the
//! wallet book ([`super::wallets`]); authorize, update and terminate drive a charging session
//! ([`super::sessions`]); corrections of records paid from a balance adjust it here.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::rate::Touched;
use super::sessions::AuthorizeAsk;
use super::{ShardEnv, ShardState, outputs_committed};
use crate::domain::money::Currency;
use crate::pipeline::balance::{BalanceError, BalanceJob, BalanceOp, BalanceReply};
use crate::pipeline::{RatingContext, ShardOutput, lock};
use crate::store::Write;
use crate::store::balance::StoredTopUp;

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
        self.wallets.forget_committed(committed);
        self.sessions.forget_committed(committed);
        self.output = output;
        let mut out = ShardOutput::empty(job.ticket, std::time::Instant::now());
        let mut touched = Touched::default();
        self.segment.begin(Vec::new());
        let now = self.job_now;
        // What a balance operation refuses into suspense (a session's end) was received now.
        self.received_at = now;
        if matches!(job.op, BalanceOp::Sweep) {
            // Partial sessions whose timeout passed are rated from the parts they have.
            self.time_out_partials(ctx, &mut out, &mut touched);
        }
        // What is due goes first: lapsed reservations, then expiring credit.
        let answer = self
            .release_due(now)
            .and_then(|()| self.wallets.expire_lots(now))
            .and_then(|()| self.balance_op(ctx, env, job.op, now, &mut out, &mut touched));
        if answer.is_err() {
            // A refusal writes nothing but the sweep's changes (kept: they are due either way).
            self.wallets.paying = None;
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
            BalanceOp::Get { account } => Ok(self.wallet_reply(&account, false)),
            BalanceOp::TopUp {
                account,
                currency,
                amount,
                id,
                expires,
            } => {
                let asked = StoredTopUp {
                    currency,
                    amount,
                    expires,
                    entry: 0,
                };
                self.top_up(ctx, env, account, id, asked, now)
            }
            BalanceOp::Configure {
                account,
                currency,
                credit_limit,
                low_balance,
            } => {
                self.billed_in(ctx, &account, currency, now)?;
                let purse = self.wallets.wallet_mut(&account).purse_mut(currency);
                if let Some(limit) = credit_limit {
                    purse.credit_limit = limit;
                }
                if let Some(mut thresholds) = low_balance {
                    thresholds.sort();
                    thresholds.dedup();
                    purse.low_balance = thresholds;
                }
                // The settings are stored; the sums come back from the ledger at start.
                if let Some(wallet) = self.wallets.get(&account).cloned() {
                    self.wallets.write(Write::WalletSettings(wallet));
                }
                Ok(self.wallet_reply(&account, false))
            }
            BalanceOp::Authorize {
                session,
                account,
                meter,
                attributes,
                requested,
                started,
                as_sent,
            } => {
                let ask = AuthorizeAsk {
                    id: session,
                    account,
                    meter,
                    attributes,
                    requested,
                    started: started.unwrap_or(now),
                    as_sent,
                };
                self.authorize(ctx, env, ask, now)
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

    fn wallet_reply(&self, account: &str, already_applied: bool) -> BalanceReply {
        BalanceReply::Wallet {
            wallet: self.wallets.get(account).cloned(),
            already_applied,
        }
    }

    /// A top-up, exactly once by its id: a resend with the same content answers the wallet as
    /// it stands, one with other content is refused.
    fn top_up(
        &mut self,
        ctx: &RatingContext,
        env: &ShardEnv,
        account: String,
        id: String,
        asked: StoredTopUp,
        now: DateTime<Utc>,
    ) -> Result<BalanceReply, BalanceError> {
        let earlier = match self.wallets.recent_topup(&account, &id) {
            Some(t) => Some(t.clone()),
            None => env
                .balances
                .topup(&account, &id)
                .map_err(|e| BalanceError::Storage(e.to_string()))?,
        };
        if let Some(earlier) = earlier {
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
            return Ok(self.wallet_reply(&account, true));
        }
        let (currency, amount, expires) = (asked.currency, asked.amount, asked.expires);
        self.billed_in(ctx, &account, currency, now)?;
        if let Some(expires) = expires.filter(|e| *e <= now) {
            return Err(BalanceError::Invalid(format!(
                "expires_at {} is not in the future",
                expires.to_rfc3339()
            )));
        }
        let entry = self.wallets.apply(&account, currency, now, |w| {
            w.top_up(currency, amount, &id, expires, now)
        })?;
        if let Some(wallet) = self.wallets.get(&account).cloned() {
            self.wallets.note_lots(&wallet);
        }
        let stored = StoredTopUp {
            entry: entry.number,
            ..asked
        };
        let reply = self.wallet_reply(&account, false);
        self.wallets.write_topup(account, id, stored, self.output);
        Ok(reply)
    }

    /// Refuses a currency none of the account's plans in force bills in (and no purse holds).
    fn billed_in(
        &self,
        ctx: &RatingContext,
        account: &str,
        currency: Currency,
        now: DateTime<Utc>,
    ) -> Result<(), BalanceError> {
        let held = self.wallets.get(account).is_some_and(|w| w.purse(currency).is_some());
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
            if !self.wallets.contains(&outcome.account) {
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
            let applied = self.wallets.apply(&outcome.account, currency, at, |w| {
                w.adjust(currency, -difference, id, at, detail)
            });
            if let Err(error) = applied {
                tracing::error!(account = %outcome.account, %error, "the correction's balance adjustment failed");
            }
        }
    }
}
