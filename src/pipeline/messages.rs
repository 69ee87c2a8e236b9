//! What moves between the pipeline's threads: a batch's events checked at the door, the job of
//! one shard, a shard's output to the committer, and the control messages of both queues.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::ticket::BatchTicket;
use super::{balance, corrections, shard};
use crate::domain::record::AsSent;
use crate::domain::usage::{EventOutcome, Rejected, UsageEvent};
use crate::store::Write;

/// An event that passed validation, with its dedupe fingerprints.
#[derive(Debug)]
pub struct ValidEvent {
    pub index: u32,
    /// Keyed hash of (account, event id).
    pub fingerprint: u128,
    /// Hash of the content (meter, quantity, time, attributes).
    pub content: u64,
    pub event: UsageEvent,
    /// The event as sent, when normalization rules changed it (kept in its record, and what a
    /// rejection puts in suspense).
    pub as_sent: Option<Box<AsSent>>,
    /// Set on a part of a partial session (docs/mediation.md): held until its session merges.
    pub part: Option<Box<shard::PartIn>>,
}

/// An event refused before rating, on its way to suspense.
#[derive(Debug)]
pub struct RejectedEvent {
    pub index: u32,
    pub rejected: Rejected,
}

/// The part of one batch that belongs to one shard.
pub struct ShardJob {
    pub ticket: Arc<BatchTicket>,
    /// When it was routed (the shard-queue stage ends when the shard takes it).
    pub queued_at: std::time::Instant,
    /// When its batch was received (the pipeline's clock, read once at the door): the receipt
    /// time of every suspense entry of the batch, wherever it is refused.
    pub received_at: DateTime<Utc>,
    pub events: Vec<ValidEvent>,
    pub rejected: Vec<RejectedEvent>,
}

/// What a shard hands to the committer for one job.
pub struct ShardOutput {
    pub ticket: Arc<BatchTicket>,
    /// The shard that rated it.
    pub shard: usize,
    /// When the shard finished it (the commit-wait stage ends when its group commit starts).
    pub rated_at: std::time::Instant,
    /// The job's records as one compact segment (`store::compact`), empty when none.
    pub records: Vec<u8>,
    pub record_count: u32,
    pub duplicate: u32,
    /// Events not accepted (duplicates and rejections).
    pub results: Vec<EventOutcome>,
    /// What this job changed in its shard's totals, by slot (published after the commit).
    pub totals: super::committed::TotalsDelta,
    /// The accounts of the totals it changed: those its records are of.
    pub accounts: Vec<Arc<str>>,
    /// Balance changes (prepaid records, balance operations); `None` for most jobs.
    pub balance: Option<Box<shard::BalanceWrites>>,
    /// What its commit writes besides the records, typed (the store keys and encodes them):
    /// suspense entries of its rejections, dedupe claims of events whose account normalization
    /// rules changed, parts of partial sessions held and merged.
    pub writes: Vec<Write>,
    /// Parts of partial sessions held (accepted events without a record of their own).
    pub held: u32,
    /// Records of merged partial sessions (records that are not received events).
    pub merged: u32,
}

impl ShardOutput {
    /// The received events it accepted: its records and held parts, less the merged sessions'
    /// records (their parts were accepted when they came).
    pub fn accepted(&self) -> u32 {
        (self.record_count + self.held).saturating_sub(self.merged)
    }

    /// An output with nothing in it yet (the shard sets `shard`, and `rated_at` when done).
    pub fn empty(ticket: Arc<BatchTicket>, rated_at: std::time::Instant) -> ShardOutput {
        ShardOutput {
            ticket,
            shard: 0,
            rated_at,
            records: Vec::new(),
            record_count: 0,
            duplicate: 0,
            results: Vec::new(),
            totals: Default::default(),
            accounts: Vec::new(),
            balance: None,
            writes: Vec::new(),
            held: 0,
            merged: 0,
        }
    }
}

/// Messages to a shard thread, handled in queue order.
pub enum ShardMsg {
    Job(ShardJob),
    /// Serialize your state and send it to the committer behind your earlier outputs (checkpoint).
    Snapshot,
    /// A correction of some of the shard's accounts (`corrections`).
    Correct(corrections::CorrectionJob),
    /// A balance operation on one of the shard's accounts, or a sweep (`balance`).
    Balance(balance::BalanceJob),
    /// Finish: everything queued before this has been handled.
    Stop,
}

/// Messages to the committer, in each shard's order.
pub enum CommitterMsg {
    Output(ShardOutput),
    /// The point a shard's checkpoint copy reflects: every output the shard sent before this
    /// message, and nothing after it (the copy follows in a `Snapshot`).
    SnapshotCut {
        shard: usize,
    },
    /// A shard's state as of its last `SnapshotCut` (its dedupe part may hold later claims too,
    /// all of them in outputs sent before this message).
    Snapshot {
        shard: usize,
        state: shard::ShardSnapshot,
    },
}
