//! A batch's place in the pipeline: its admission permit, and the ticket that gathers its shards'
//! outcomes and sends the acknowledgement once the last part is durable.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, oneshot};

use super::{PipelineError, lock};
use crate::domain::usage::{Ack, EventOutcome};

/// acknowledged or fails, or when it is refused before being routed.
pub struct Admitted(#[allow(dead_code)] OwnedSemaphorePermit);

impl Admitted {
    /// A place from a permit of the admission semaphore (the pipeline's; benches make their own).
    pub fn new(permit: OwnedSemaphorePermit) -> Admitted {
        // Per batch, not per event.
        metrics::gauge!(crate::telemetry::BATCHES_IN_FLIGHT).increment(1.0);
        Admitted(permit)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        metrics::gauge!(crate::telemetry::BATCHES_IN_FLIGHT).decrement(1.0);
    }
}

/// One admitted batch: collects the shards' outcomes and sends the ack when the last part is durable.
pub struct BatchTicket {
    batch_id: u64,
    parts_left: AtomicUsize,
    ack: Mutex<Ack>,
    reply: Mutex<Option<oneshot::Sender<Result<Ack, PipelineError>>>>,
    admitted: Mutex<Option<Admitted>>,
    /// False for corrections: their records are not received events.
    counted: bool,
}

impl BatchTicket {
    pub fn new(
        batch_id: u64,
        parts: usize,
        admitted: Admitted,
    ) -> (Arc<BatchTicket>, oneshot::Receiver<Result<Ack, PipelineError>>) {
        BatchTicket::counting(batch_id, parts, admitted, true)
    }

    /// A ticket whose acknowledgement is not counted in the event metrics (a correction).
    pub fn uncounted(
        batch_id: u64,
        parts: usize,
        admitted: Admitted,
    ) -> (Arc<BatchTicket>, oneshot::Receiver<Result<Ack, PipelineError>>) {
        BatchTicket::counting(batch_id, parts, admitted, false)
    }

    pub(crate) fn counting(
        batch_id: u64,
        parts: usize,
        admitted: Admitted,
        counted: bool,
    ) -> (Arc<BatchTicket>, oneshot::Receiver<Result<Ack, PipelineError>>) {
        let (tx, rx) = oneshot::channel();
        let ticket = BatchTicket {
            batch_id,
            parts_left: AtomicUsize::new(parts),
            ack: Mutex::new(Ack {
                batch_id,
                ..Ack::default()
            }),
            reply: Mutex::new(Some(tx)),
            admitted: Mutex::new(Some(admitted)),
            counted,
        };
        (Arc::new(ticket), rx)
    }

    /// Records one durable part; the last one sends the ack.
    pub fn part_done(&self, accepted: u32, duplicate: u32, results: Vec<EventOutcome>) {
        {
            let mut ack = lock(&self.ack);
            ack.accepted += accepted;
            ack.duplicate += duplicate;
            ack.rejected += results.iter().filter(|r| r.rejected.is_some()).count() as u32;
            ack.results.extend(results);
        }
        if self.parts_left.fetch_sub(1, Ordering::AcqRel) == 1 {
            let mut ack = std::mem::take(&mut *lock(&self.ack));
            ack.batch_id = self.batch_id;
            ack.results.sort_by_key(|r| r.index);
            if self.counted {
                crate::telemetry::count_ack(&ack);
            }
            self.finish(Ok(ack));
        }
    }

    /// Notes the events normalization rules dropped (before any part is done): they are answered
    /// DROPPED with the rule's name.
    pub fn dropped(&self, dropped: Vec<(u32, Arc<str>)>) {
        if dropped.is_empty() {
            return;
        }
        let mut ack = lock(&self.ack);
        ack.dropped += dropped.len() as u32;
        ack.results
            .extend(dropped.into_iter().map(|(index, rule)| EventOutcome {
                index,
                rejected: None,
                detail: format!("dropped by rule {rule:?}"),
                dropped_by: Some(rule),
            }));
    }

    /// Fails the batch (once); later parts are ignored.
    pub fn fail(&self, error: PipelineError) {
        self.finish(Err(error));
    }

    fn finish(&self, result: Result<Ack, PipelineError>) {
        if let Some(reply) = lock(&self.reply).take() {
            // The agent may have gone away; the batch is durable (or failed) either way.
            let _ = reply.send(result);
        }
        lock(&self.admitted).take();
    }
}
