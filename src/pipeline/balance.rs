//! Balances through the pipeline: every change of an account's balance (a top-up, its limits, a
//! charging session's authorize, update and terminate, an expiry) is handled by the shard that
//! owns the account, in order with its events, and written in one commit with them. The caller
//! gets its answer once that commit is durable (docs/charging.md).

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::domain::balance::{Session, Wallet};
use crate::domain::money::Currency;
use crate::domain::usage::{RawEvent, Rejected};

use super::intake::{Window, accept, check, content_hash, rejected_at_door};
use super::{BatchTicket, Pipeline, PipelineError, ShardMsg, ValidEvent, lock};

/// A change or read of balances, for the shard that owns its account.
#[derive(Debug)]
pub enum BalanceOp {
    TopUp {
        account: String,
        currency: Currency,
        amount: Decimal,
        id: String,
        expires: Option<DateTime<Utc>>,
    },
    /// Sets a purse's credit limit and low-balance thresholds (each when given).
    Configure {
        account: String,
        currency: Currency,
        credit_limit: Option<Decimal>,
        low_balance: Option<Vec<Decimal>>,
    },
    /// The account's wallet, after its due expiries.
    Get { account: String },
    Authorize {
        session: String,
        account: String,
        meter: String,
        attributes: Vec<(String, String)>,
        requested: Decimal,
        /// When the session began (its event time); `None`: now.
        started: Option<DateTime<Utc>>,
    },
    Update {
        session: String,
        account: String,
        used: Decimal,
        requested: Decimal,
    },
    /// The session's usage as an event (checked at the door like any), or its rejection there.
    Terminate {
        session: String,
        account: String,
        used: Decimal,
        event: Box<Result<ValidEvent, Rejected>>,
    },
    /// Releases the reservations and expires the credit that are due, over the shard's accounts.
    Sweep,
}

impl BalanceOp {
    fn account(&self) -> Option<&str> {
        match self {
            BalanceOp::TopUp { account, .. }
            | BalanceOp::Configure { account, .. }
            | BalanceOp::Get { account }
            | BalanceOp::Authorize { account, .. }
            | BalanceOp::Update { account, .. }
            | BalanceOp::Terminate { account, .. } => Some(account),
            BalanceOp::Sweep => None,
        }
    }
}

/// What a balance operation answers, once its commit is durable.
#[derive(Debug, Clone, PartialEq)]
pub enum BalanceReply {
    /// The wallet after a top-up, a configuration or a read (`None`: the account has none);
    /// `already_applied` when a top-up's id was applied before (nothing changed now).
    Wallet {
        wallet: Option<Wallet>,
        already_applied: bool,
    },
    /// A grant: the units this call granted and the session after it.
    Granted {
        granted: Decimal,
        session: Session,
    },
    /// The session after its end (a resend answers the same).
    Terminated {
        session: Session,
    },
    Swept,
}

/// Why a balance operation was refused (nothing was written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BalanceError {
    #[error("unknown session {0:?}")]
    UnknownSession(String),
    #[error("session {0:?} exists already (for another account or meter)")]
    SessionExists(String),
    #[error("session {0:?} has ended")]
    SessionEnded(String),
    /// Nothing to reserve from: no purse in the currency, no credit limit.
    #[error("{0}")]
    NoBalance(String),
    /// Not even one unit is paid by what the balance holds.
    #[error("{0}")]
    Insufficient(String),
    /// The request does not apply: an unknown meter, a currency the account is not billed in,
    /// fewer units used than before, a rating error.
    #[error("{0}")]
    Invalid(String),
    /// No plan prices the meter for the account.
    #[error("{0}")]
    NoTariff(String),
    /// The id was applied before with other content.
    #[error("{0}")]
    IdTaken(String),
    #[error("{0}")]
    Storage(String),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

/// One balance operation on its way through a shard; the shard fills `answer` before its
/// output goes to the committer, and the caller reads it once the ticket is acknowledged.
pub struct BalanceJob {
    pub ticket: Arc<BatchTicket>,
    pub op: BalanceOp,
    pub answer: Arc<Mutex<Option<Result<BalanceReply, BalanceError>>>>,
}

impl Pipeline {
    /// Refuses a session start outside the window events are taken in (older than the dedupe
    /// window, or beyond the clock skew).
    pub fn check_session_start(&self, started: DateTime<Utc>) -> Result<(), BalanceError> {
        let config = &self.config;
        let window = Window::at(self.clock.now(), config.dedupe_window_days, config.future_skew_seconds);
        let at = started.timestamp_nanos_opt().unwrap_or(i64::MIN);
        if at < window.oldest_nanos || at > window.newest_nanos {
            return Err(BalanceError::Invalid(format!(
                "started_at {} is outside the window events are taken in (the dedupe window, the clock skew)",
                started.to_rfc3339()
            )));
        }
        Ok(())
    }

    /// Applies `op` in the shard of its account (behind the jobs queued there) and answers once
    /// its commit is durable.
    pub async fn balance(&self, op: BalanceOp) -> Result<BalanceReply, BalanceError> {
        let account = op.account().map(str::to_string);
        let shard = match &account {
            Some(a) => {
                self.committed.check_damage(a)?;
                self.key.shard_of(a, self.shard_tx.len())
            }
            None => 0,
        };
        let admitted = self.admit().await?;
        // A session's end is a received event: counted like one.
        let counted = matches!(op, BalanceOp::Terminate { .. });
        let (ticket, rx) = BatchTicket::counting(u64::MAX, 1, admitted, counted);
        let answer = Arc::new(Mutex::new(None));
        let job = BalanceJob {
            ticket: ticket.clone(),
            op,
            answer: answer.clone(),
        };
        if self.shard_tx[shard].send(ShardMsg::Balance(job)).is_err() {
            ticket.fail(PipelineError::ShuttingDown);
        }
        match rx.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(PipelineError::ShuttingDown.into()),
        }
        lock(&answer).take().unwrap_or(Err(PipelineError::ShuttingDown.into()))
    }

    /// Releases due reservations and expires due credit in every shard (the sweeper calls it
    /// every second; a balance read sweeps its own account first anyway).
    pub async fn sweep_balances(&self) -> Result<(), PipelineError> {
        let admitted = self.admit().await?;
        let shards = self.shard_tx.len();
        let (ticket, rx) = BatchTicket::counting(u64::MAX, shards, admitted, false);
        for tx in &self.shard_tx {
            let job = BalanceJob {
                ticket: ticket.clone(),
                op: BalanceOp::Sweep,
                answer: Arc::new(Mutex::new(None)),
            };
            if tx.send(ShardMsg::Balance(job)).is_err() {
                ticket.fail(PipelineError::ShuttingDown);
            }
        }
        match rx.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(PipelineError::ShuttingDown),
        }
    }

    /// The event a session's end rates: id = session id, time = the session's start, quantity =
    /// the units used; checked at the door like any event (window, meter, fields).
    pub fn session_event(&self, session: &Session, used: Decimal) -> Box<Result<ValidEvent, Rejected>> {
        use rust_decimal::prelude::ToPrimitive;
        // Units arrive with at most 9 places (the door's rule), so this is exact.
        let total_nanos = (used * Decimal::from(1_000_000_000)).trunc().to_i128().unwrap_or(-1);
        let raw = RawEvent {
            event_id: session.id.clone(),
            account_id: session.account.clone(),
            meter: session.meter.clone(),
            quantity: Some((
                i64::try_from(total_nanos.div_euclid(1_000_000_000)).unwrap_or(-1),
                total_nanos.rem_euclid(1_000_000_000) as i32,
            )),
            timestamp_unix_nanos: session.started_unix_nanos,
            attributes: session.attributes.clone(),
        };
        let config = &self.config;
        let window = Window::at(self.clock.now(), config.dedupe_window_days, config.future_skew_seconds);
        let context = self.context.load();
        Box::new(
            match check(&raw, &config.event_limits, Some(&window), &context.catalogue) {
                Ok(quantity) => Ok(ValidEvent {
                    index: 0,
                    fingerprint: self.key.fingerprint(&raw.account_id, &raw.event_id),
                    content: content_hash(self.key.seed(), &raw),
                    event: accept(raw, quantity),
                    // Not normalized: the session's units were granted for this meter and
                    // attributes at Authorize, and its end is charged for the same.
                    as_sent: None,
                    part: None,
                }),
                Err(why) => Err(rejected_at_door(raw, why, &config.event_limits, window.now_nanos)),
            },
        )
    }
}

/// Rebuilds the wallets at start: each purse's settings from `w/`, its sums and expiring credit
/// by replaying every ledger entry in commit order ([`Wallet::replay`], which checks that each
/// entry follows the one before it and leaves the balance it says it left: the invariant
/// `available = top-ups + adjustments - commits - expiries - open reservations` at every entry).
/// An account whose ledger fails is recorded as damaged, like one whose records fail their
/// checksum. Then hands each wallet and each session that holds a reservation to the shard
/// that owns its account. Returns the wallets (the committed view).
pub(super) fn load(
    store: &crate::store::Store,
    states: &mut [super::shard::ShardState],
) -> Result<Vec<Wallet>, crate::store::StoreError> {
    let balances = store.balances();
    let mut wallets: ahash::AHashMap<String, Wallet> = ahash::AHashMap::new();
    for settings in balances.settings()? {
        let mut wallet = Wallet::new(&settings.account);
        for p in settings.purses {
            let purse = wallet.purse_mut(p.currency);
            purse.credit_limit = p.credit_limit;
            purse.low_balance = p.low_balance;
        }
        wallets.insert(settings.account, wallet);
    }
    let mut damage: Vec<(String, String)> = Vec::new();
    for entry in balances.all_entries() {
        let entry = entry?;
        if damage.iter().any(|(a, _)| *a == entry.account) {
            continue;
        }
        let wallet = wallets
            .entry(entry.account.clone())
            .or_insert_with(|| Wallet::new(&entry.account));
        if let Err(why) = wallet.replay(&entry) {
            damage.push((
                entry.account.clone(),
                format!("its balance does not match its ledger: {why}"),
            ));
        }
    }
    for (account, why) in &damage {
        tracing::error!(
            account,
            why,
            "a balance does not match its ledger; the account is refused until restored"
        );
        wallets.remove(account);
    }
    store.record_damage(&damage)?;
    let key = store.key();
    let shards = states.len();
    let mut parts: Vec<(Vec<Wallet>, Vec<Session>)> = (0..shards).map(|_| Default::default()).collect();
    for w in wallets.values() {
        parts[key.shard_of(&w.account, shards)].0.push(w.clone());
    }
    for s in balances.reserved_sessions()? {
        parts[key.shard_of(&s.account, shards)].1.push(s);
    }
    for (state, (wallets, sessions)) in states.iter_mut().zip(parts) {
        state.load_balances(wallets, sessions);
    }
    Ok(wallets.into_values().collect())
}
