//! Balances through the pipeline: every change of an account's balance (a top-up, its limits, a
//! charging session's authorize, update and terminate, an expiry) is handled by the shard that
//! owns the account, in order with its events, and written in one commit with them. The caller
//! gets its answer once that commit is durable (docs/charging.md).

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::domain::balance::{Session, Wallet};
use crate::domain::mediation::Outcome;
use crate::domain::money::Currency;
use crate::domain::record::AsSent;
use crate::domain::usage::{RawEvent, Rejected, units_and_nanos};

use super::intake::{Sent, Window, accept, check, content_hash, rejected_at_door};
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
        /// The account, meter and attributes as sent, when normalization rules changed them
        /// ([`Pipeline::normalized`]).
        as_sent: Option<Box<AsSent>>,
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

    /// An Authorize's session as the normalization rules make it, the same rules the door
    /// applies to every event (docs/charging.md, "Normalization rules"): the account, meter and
    /// attributes normalized, those sent kept beside them; a session moved outside the caller's
    /// account prefix (`scope`), dropped or refused by a rule, or whose units a rule scales
    /// (grants are in the tariff's units, as the caller reports them) is refused. Other
    /// operations go through unchanged.
    pub fn normalized(&self, op: BalanceOp, scope: Option<&str>) -> Result<BalanceOp, BalanceError> {
        let BalanceOp::Authorize {
            session,
            account,
            meter,
            attributes,
            requested,
            started,
            as_sent: None,
        } = op
        else {
            return Ok(op);
        };
        let raw = RawEvent {
            event_id: session.clone(),
            account_id: account,
            meter,
            quantity: Some(units_and_nanos(requested)),
            timestamp_unix_nanos: started.map_or(0, |t| t.timestamp_nanos_opt().unwrap_or(0)),
            attributes,
        };
        let rules = &self.context.load().mediation;
        let outcome = if rules.is_empty() {
            Outcome::Unchanged
        } else {
            rules.apply(&raw)
        };
        let (event, as_sent) = match outcome {
            Outcome::Unchanged => (raw, None),
            Outcome::Normalized { event, rules } => {
                if event.quantity != raw.quantity {
                    return Err(BalanceError::Invalid(format!(
                        "rules {} change the quantity of meter {:?}: a charging session is granted and \
                         reported in the units of the tariff",
                        rules.join(", "),
                        raw.meter
                    )));
                }
                if let Some(prefix) = scope.filter(|p| !event.account_id.starts_with(*p)) {
                    return Err(BalanceError::Invalid(format!(
                        "rules {} moved the session to account {:?}, outside the caller's scope {prefix:?}",
                        rules.join(", "),
                        event.account_id
                    )));
                }
                (event, Some(Box::new(Sent { event: raw, rules }.kept(requested))))
            }
            Outcome::Dropped { rule } => {
                return Err(BalanceError::Invalid(format!(
                    "rule {rule:?} drops this session's event: nothing would be charged"
                )));
            }
            Outcome::Refused { rule, detail } => {
                return Err(BalanceError::Invalid(format!("rule {rule:?}: {detail}")));
            }
        };
        Ok(BalanceOp::Authorize {
            session,
            account: event.account_id,
            meter: event.meter,
            attributes: event.attributes,
            requested,
            started,
            as_sent,
        })
    }

    /// The event a session's end rates: id = session id, time = the session's start, quantity =
    /// the units used; checked at the door like any event (window, meter, fields). A session
    /// the rules normalized at Authorize is rated as normalized, and its record keeps what was
    /// sent; its dedupe keys, like an event's, are of the event as sent.
    pub fn session_event(&self, session: &Session, used: Decimal) -> Box<Result<ValidEvent, Rejected>> {
        let raw = RawEvent {
            event_id: session.id.clone(),
            account_id: session.account.clone(),
            meter: session.meter.clone(),
            // Units arrive with at most 9 places (the door's rule), so this is exact.
            quantity: Some(units_and_nanos(used)),
            timestamp_unix_nanos: session.started_unix_nanos,
            attributes: session.attributes.clone(),
        };
        let sent = session.as_sent.as_ref().map(|s| RawEvent {
            account_id: s.account_id.clone(),
            meter: s.meter.clone(),
            attributes: s.attributes.clone(),
            ..raw.clone()
        });
        let keyed = sent.as_ref().unwrap_or(&raw);
        let (fingerprint, content) = (
            self.key.fingerprint(&keyed.account_id, &keyed.event_id),
            content_hash(self.key.seed(), keyed),
        );
        let config = &self.config;
        let window = Window::at(self.clock.now(), config.dedupe_window_days, config.future_skew_seconds);
        let context = self.context.load();
        Box::new(
            match check(&raw, &config.event_limits, Some(&window), &context.catalogue) {
                Ok(quantity) => Ok(ValidEvent {
                    index: 0,
                    fingerprint,
                    content,
                    event: accept(raw, quantity),
                    as_sent: session.as_sent.as_ref().map(|s| {
                        Box::new(AsSent {
                            quantity: used,
                            ..(**s).clone()
                        })
                    }),
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
