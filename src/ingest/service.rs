//! `ratingd.v1.Ingest`: batches in, acknowledgements out after fsync.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::debug;

use super::convert::{Converted, Window, convert, reason_to_proto};
use crate::config::Limits;
use crate::domain::usage::Ack;
use crate::pipeline::{Pipeline, PipelineError};
use crate::security::{self, auth::Principal};
use crate::wire::proto::{self, ingest_server::Ingest};

/// The method named in refusal logs for batches (both paths share the checks).
const SUBMIT: &str = "/ratingd.v1.Ingest/Submit|Stream";

/// The one mapping of pipeline errors to gRPC status codes.
pub fn status_of(error: PipelineError) -> Status {
    match error {
        PipelineError::StorageFailed(m) => Status::unavailable(m),
        PipelineError::ShuttingDown => Status::unavailable("ratingd is shutting down"),
    }
}

pub struct IngestService {
    pipeline: Arc<Pipeline>,
    limits: Limits,
    window_days: u32,
    skew_seconds: u32,
    shutdown: watch::Receiver<bool>,
}

impl IngestService {
    pub fn new(
        pipeline: Arc<Pipeline>,
        limits: Limits,
        window_days: u32,
        skew_seconds: u32,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        IngestService {
            pipeline,
            limits,
            window_days,
            skew_seconds,
            shutdown,
        }
    }

    /// Admits one batch (waiting for room: the backpressure point), validates and routes it.
    /// A batch over the size limit, or holding an account outside the caller's scope, is refused
    /// whole before anything of it is written.
    pub async fn admit(
        &self,
        batch: proto::UsageBatch,
        caller: Option<&Principal>,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<Ack, PipelineError>>, Status> {
        if batch.events.len() > self.limits.max_batch_events {
            let status = Status::resource_exhausted(format!(
                "batch {} holds {} events; the limit is {}",
                batch.batch_id,
                batch.events.len(),
                self.limits.max_batch_events
            ));
            security::note(SUBMIT, &status);
            return Err(status);
        }
        if let Some(caller) = caller
            && let Some((i, e)) = batch
                .events
                .iter()
                .enumerate()
                .find(|(_, e)| !caller.may_touch(&e.account_id))
        {
            let status = Status::permission_denied(format!(
                "batch {} refused whole: event {i} has account {:?}, outside the accounts of token {:?} \
                 (those that start with {:?})",
                batch.batch_id,
                e.account_id,
                caller.name,
                caller.account_prefix.as_deref().unwrap_or_default()
            ));
            security::note(SUBMIT, &status);
            return Err(status);
        }
        let committed = &self.pipeline.committed;
        if !committed.damaged.is_empty()
            && let Some(Err(damage)) = batch
                .events
                .iter()
                .map(|e| committed.check_damage(&e.account_id))
                .find(Result::is_err)
        {
            // Its totals and dedupe claims are unknown: rating more would charge on a wrong base.
            let status = Status::data_loss(format!("batch {} refused whole: {}", batch.batch_id, damage.message()));
            security::note(SUBMIT, &status);
            return Err(status);
        }
        let permit = self.pipeline.admit().await.map_err(status_of)?;
        let window = Window::at(self.pipeline.clock.now(), self.window_days, self.skew_seconds);
        let context = self.pipeline.context.load();
        let catalogue = &context.catalogue;
        let mut valid = Vec::with_capacity(batch.events.len());
        let mut rejected = Vec::new();
        for (i, event) in batch.events.into_iter().enumerate() {
            match convert(i as u32, event, &self.pipeline.key, &window, &self.limits, catalogue) {
                Converted::Valid(v) => valid.push(v),
                Converted::Rejected(r) => rejected.push(r),
            }
        }
        Ok(self.pipeline.submit(batch.batch_id, permit, valid, rejected))
    }
}

/// The proto form of an acknowledgement.
pub fn ack_to_proto(ack: Ack) -> proto::BatchAck {
    proto::BatchAck {
        batch_id: ack.batch_id,
        accepted: ack.accepted,
        duplicate: ack.duplicate,
        rejected: ack.rejected,
        results: ack
            .results
            .into_iter()
            .map(|r| proto::EventResult {
                index: r.index,
                outcome: if r.rejected.is_some() {
                    proto::Outcome::Rejected
                } else {
                    proto::Outcome::Duplicate
                } as i32,
                reason: r.rejected.map_or(proto::RejectReason::Unspecified, reason_to_proto) as i32,
                detail: r.detail,
            })
            .collect(),
    }
}

async fn shutting_down(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

#[tonic::async_trait]
impl Ingest for Arc<IngestService> {
    type StreamStream = ReceiverStream<Result<proto::BatchAck, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<proto::UsageBatch>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let caller = security::auth::principal(&request).cloned();
        let mut inbound = request.into_inner();
        let in_flight = self.limits.max_inflight_per_stream;
        // Bound: acks waiting to be written back to this agent.
        let (tx, rx) = mpsc::channel(in_flight);
        let service = self.clone();
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(in_flight));
            let stop = shutting_down(service.shutdown.clone());
            tokio::pin!(stop);
            loop {
                // Past `in_flight` unacknowledged batches this stream is not read, so HTTP/2 flow
                // control holds the agent back.
                let slot = tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot { Ok(s) => s, Err(_) => break },
                    _ = &mut stop => break,
                };
                let message = tokio::select! {
                    m = inbound.message() => m,
                    _ = &mut stop => break,
                };
                let batch = match message {
                    Ok(Some(batch)) => batch,
                    Ok(None) => break,
                    Err(status) => {
                        // A batch that cannot be read is refused with a reason; a client that went
                        // away just ends the stream.
                        let refusal = match status.code() {
                            Code::InvalidArgument => Some(status),
                            Code::OutOfRange => Some(Status::resource_exhausted(status.message().to_string())),
                            _ => None,
                        };
                        debug!(?refusal, "stream ended");
                        if let Some(refusal) = refusal {
                            security::note("/ratingd.v1.Ingest/Stream", &refusal);
                            let _ = tx.send(Err(refusal)).await;
                        }
                        break;
                    }
                };
                let started = std::time::Instant::now();
                let pending = match service.admit(batch, caller.as_ref()).await {
                    Ok(p) => p,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    let reply = match pending.await {
                        Ok(Ok(ack)) => {
                            metrics::histogram!(crate::telemetry::BATCH_ACK_DURATION)
                                .record(started.elapsed().as_secs_f64());
                            Ok(ack_to_proto(ack))
                        }
                        Ok(Err(e)) => Err(status_of(e)),
                        Err(_) => Err(Status::unavailable("ratingd is shutting down")),
                    };
                    let _ = tx.send(reply).await;
                    drop(slot);
                });
            }
            // Finish what is in flight before the response stream ends.
            let _ = slots.acquire_many(in_flight as u32).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn submit(&self, request: Request<proto::UsageBatch>) -> Result<Response<proto::BatchAck>, Status> {
        if *self.shutdown.borrow() {
            return Err(Status::unavailable("ratingd is shutting down"));
        }
        let started = std::time::Instant::now();
        let caller = security::auth::principal(&request).cloned();
        let pending = self.admit(request.into_inner(), caller.as_ref()).await?;
        match pending.await {
            Ok(Ok(ack)) => {
                metrics::histogram!(crate::telemetry::BATCH_ACK_DURATION).record(started.elapsed().as_secs_f64());
                Ok(Response::new(ack_to_proto(ack)))
            }
            Ok(Err(e)) => Err(status_of(e)),
            Err(_) => Err(Status::unavailable("ratingd is shutting down")),
        }
    }
}
