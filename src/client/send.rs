//! Sending batches over one bidirectional stream with up to `in_flight` batches outstanding, and
//! resending every unacknowledged batch (same batch and event ids) after a failure.

use std::collections::BTreeMap;
use std::time::Duration;

use indicatif::ProgressBar;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};

use crate::wire::proto::{self, ingest_client::IngestClient};

/// What the daemon said about everything sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub sent: u64,
    pub accepted: u64,
    pub duplicate: u64,
    /// Rejected events by reason (`NO_TARIFF`, ...).
    pub rejected: BTreeMap<String, u64>,
    /// Events the daemon's normalization rules dropped, by rule.
    pub dropped: BTreeMap<String, u64>,
}

impl Summary {
    fn add(&mut self, batch: &proto::UsageBatch, ack: &proto::BatchAck) {
        self.sent += batch.events.len() as u64;
        self.accepted += u64::from(ack.accepted);
        self.duplicate += u64::from(ack.duplicate);
        for r in &ack.results {
            if r.outcome == proto::Outcome::Rejected as i32 {
                let reason = proto::RejectReason::try_from(r.reason).unwrap_or(proto::RejectReason::Unspecified);
                let name = reason.as_str_name().trim_start_matches("REJECT_REASON_").to_string();
                *self.rejected.entry(name).or_default() += 1;
            } else if r.outcome == proto::Outcome::Dropped as i32 {
                // The detail is `dropped by rule "<name>"`.
                let rule = r.detail.split('"').nth(1).unwrap_or(&r.detail).to_string();
                *self.dropped.entry(rule).or_default() += 1;
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("the daemon refused a batch: {0}")]
    Refused(Status),
    #[error("gave up after {attempts} attempts; last error: {last}")]
    GaveUp { attempts: u32, last: String },
}

/// Options of a send.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// Token and TLS trust.
    pub access: crate::client::connect::Access,
    pub in_flight: usize,
    pub retries: u32,
    pub max_message_bytes: usize,
}

/// Sends every batch until each is acknowledged (or a batch is refused, or retries run out).
pub async fn send_all(
    options: &SendOptions,
    batches: Vec<proto::UsageBatch>,
    progress: &ProgressBar,
) -> Result<Summary, SendError> {
    let mut pending: BTreeMap<u64, proto::UsageBatch> = batches.into_iter().map(|b| (b.batch_id, b)).collect();
    let mut summary = Summary::default();
    let mut failures = 0u32;
    while !pending.is_empty() {
        let before = pending.len();
        match one_pass(options, &mut pending, &mut summary, progress).await {
            Ok(()) => {}
            Err(status)
                if matches!(
                    status.code(),
                    Code::InvalidArgument | Code::ResourceExhausted | Code::PermissionDenied | Code::Unauthenticated
                ) =>
            {
                return Err(SendError::Refused(status));
            }
            Err(status) => {
                // Progress resets the count: only consecutive fruitless attempts give up.
                failures = if pending.len() < before { 1 } else { failures + 1 };
                if failures > options.retries {
                    return Err(SendError::GaveUp {
                        attempts: failures,
                        last: status.to_string(),
                    });
                }
                let backoff = Duration::from_millis(100 * (1u64 << failures.min(6)));
                progress.set_message(format!("retrying in {backoff:?}: {}", status.message()));
                tokio::time::sleep(backoff).await;
            }
        }
    }
    Ok(summary)
}

async fn one_pass(
    options: &SendOptions,
    pending: &mut BTreeMap<u64, proto::UsageBatch>,
    summary: &mut Summary,
    progress: &ProgressBar,
) -> Result<(), Status> {
    let channel = options.access.authed().await.map_err(Status::unavailable)?;
    let mut client = IngestClient::new(channel)
        .max_decoding_message_size(options.max_message_bytes)
        .max_encoding_message_size(options.max_message_bytes);
    let (tx, rx) = mpsc::channel(options.in_flight);
    let ids: Vec<u64> = pending.keys().copied().collect();
    let mut next = 0;
    let mut outstanding = 0;
    while outstanding < options.in_flight && next < ids.len() {
        let _ = tx.send(pending[&ids[next]].clone()).await;
        next += 1;
        outstanding += 1;
    }
    let mut acks = client.stream(ReceiverStream::new(rx)).await?.into_inner();
    while outstanding > 0 {
        let ack = acks
            .message()
            .await?
            .ok_or_else(|| Status::unavailable("the stream ended before every ack"))?;
        outstanding -= 1;
        if let Some(batch) = pending.remove(&ack.batch_id) {
            summary.add(&batch, &ack);
            progress.inc(batch.events.len() as u64);
        }
        if next < ids.len() {
            if tx.send(pending[&ids[next]].clone()).await.is_err() {
                return Err(Status::unavailable("the stream closed"));
            }
            next += 1;
            outstanding += 1;
        }
    }
    Ok(())
}
