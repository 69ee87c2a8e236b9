//! Corrections through the pipeline (`Admin.Rerate`, `Admin.VoidEvent`, `Admin.AmendEvent`): each
//! goes to the shards that own the selected accounts, behind the jobs already queued there. A
//! shard first waits until its earlier outputs are committed, reads the accounts' records from
//! the blocks, prices the change (`rating::correct`) and writes the reversals and replacements as
//! one output: one commit, acknowledged after the fsync like a batch. So a correction is
//! serialized with the account's events, never half-applied for an account and period, and
//! exactly-once by its id: a shard finds an earlier application among the records it reads and
//! does not apply it again (docs/corrections.md).

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::domain::correction::{Booking, Change};
use crate::domain::money::Currency;
use crate::domain::record::RatedRecord;

use super::{BatchTicket, Pipeline, PipelineError, ShardMsg, lock};

pub use crate::limits::ACCOUNTS_PER_JOB;

/// A correction as asked, checked by the Admin API.
#[derive(Debug, Clone)]
pub struct CorrectionRequest {
    pub change: Change,
    /// The idempotency id: a correction found among an account's records under this id and
    /// action is not applied again.
    pub id: String,
    pub reason: String,
    pub requested_by: String,
    /// A re-rate's period label; `None` for a void or amend (the event's own period).
    pub period: Option<String>,
    /// A re-rate limited to one plan's records.
    pub plan: Option<String>,
    /// Price the correction and report it; write nothing.
    pub dry_run: bool,
}

/// What a correction did (or, in a dry run, would do) to one account's (period, plan).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub account: String,
    pub plan: String,
    pub period: String,
    pub currency: Currency,
    /// Set when the period was closed: where the records count instead.
    pub booked: Option<Booking>,
    /// The reversals and replacements, in the order written.
    pub records: Vec<RatedRecord>,
    /// The sum of their charges: what the correction adds to the account's charges.
    pub difference: Decimal,
    /// True when the records already held this correction (a resend): nothing was written now,
    /// and `records` lists what the first application wrote.
    pub already_applied: bool,
}

/// Why a correction of one account was refused (nothing was written for it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorrectionError {
    /// The event has no record in force (unknown, or voided).
    #[error("{0}")]
    UnknownEvent(String),
    /// The change cannot be priced (an invalid quantity, an amendment that changes nothing, a
    /// rating error).
    #[error("{0}")]
    Invalid(String),
    /// A closed period's correction has no open period to land in (no plan of the account bills
    /// in its currency now).
    #[error("{0}")]
    NoOpenPeriod(String),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// The records could not be read.
    #[error("{0}")]
    Storage(String),
}

/// The shards' answers for one correction, filled before its outputs go to the committer.
#[derive(Default)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
    pub refused: Vec<(String, CorrectionError)>,
}

/// One shard's part of a correction.
pub struct CorrectionJob {
    pub ticket: Arc<BatchTicket>,
    pub request: Arc<CorrectionRequest>,
    /// When it was asked (the pipeline's clock): stored in each record's correction.
    pub at: DateTime<Utc>,
    pub accounts: Vec<String>,
    pub report: Arc<Mutex<Report>>,
}

impl Pipeline {
    /// Applies `request` to `accounts` (each in its shard, behind the jobs queued before it) and
    /// returns once every part is committed (or, for a dry run, priced). A failure part-way
    /// leaves the rounds before it committed: calling again with the same id finishes.
    pub async fn correct(&self, request: CorrectionRequest, accounts: Vec<String>) -> Result<Report, PipelineError> {
        let shards = self.shard_tx.len();
        let mut by_shard: Vec<Vec<String>> = vec![Vec::new(); shards];
        for account in accounts {
            self.committed.check_damage(&account)?;
            by_shard[self.key.shard_of(&account, shards)].push(account);
        }
        let request = Arc::new(request);
        let report = Arc::new(Mutex::new(Report::default()));
        // In rounds of at most one job per shard, each round admitted like one batch: the shard
        // and committer queues stay within their bounds, however many accounts are selected.
        let rounds = by_shard
            .iter()
            .map(|l| l.len().div_ceil(ACCOUNTS_PER_JOB))
            .max()
            .unwrap_or(0);
        let at = self.clock.now();
        for round in 0..rounds {
            let jobs: Vec<(usize, Vec<String>)> = by_shard
                .iter()
                .enumerate()
                .filter_map(|(shard, list)| {
                    let chunk = list.chunks(ACCOUNTS_PER_JOB).nth(round)?;
                    Some((shard, chunk.to_vec()))
                })
                .collect();
            let admitted = self.admit().await?;
            let (ticket, rx) = BatchTicket::uncounted(u64::MAX, jobs.len(), admitted);
            for (shard, accounts) in jobs {
                let job = CorrectionJob {
                    ticket: ticket.clone(),
                    request: request.clone(),
                    at,
                    accounts,
                    report: report.clone(),
                };
                if self.shard_tx[shard].send(ShardMsg::Correct(job)).is_err() {
                    ticket.fail(PipelineError::ShuttingDown);
                }
            }
            match rx.await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(PipelineError::ShuttingDown),
            }
        }
        Ok(std::mem::take(&mut *lock(&report)))
    }
}
