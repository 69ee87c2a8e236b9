//! `ratingd.v1.Ingest`: batches in, acknowledgements out after fsync.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::debug;

use crate::edge::ApiError;
use crate::edge::access::{note, principal};
use crate::pipeline::{Pending, Pipeline, PipelineError};
use crate::security::auth::Principal;
use crate::shutdown::Shutdown;
use crate::wire::convert::{ack_to_proto, raw_event};
use crate::wire::proto::{self, ingest_server::Ingest};

/// The method named in refusal logs for batches (both paths share the checks).
const SUBMIT: &str = "/ratingd.v1.Ingest/Submit|Stream";

pub struct IngestService {
    pipeline: Arc<Pipeline>,
    /// Most events in one batch; a larger one is refused whole.
    max_batch_events: usize,
    /// Batches in flight on one stream; past it the stream is not read (HTTP/2 flow control).
    max_inflight_per_stream: usize,
    shutdown: Shutdown,
}

/// A refusal as the status returned, counted and logged (at most once a second per reason).
fn refuse(error: ApiError) -> Status {
    let status = Status::from(error);
    note(SUBMIT, &status);
    status
}

impl IngestService {
    pub fn new(
        pipeline: Arc<Pipeline>,
        max_batch_events: usize,
        max_inflight_per_stream: usize,
        shutdown: Shutdown,
    ) -> Self {
        IngestService {
            pipeline,
            max_batch_events,
            max_inflight_per_stream,
            shutdown,
        }
    }

    /// Checks one batch against the size limit and the caller's account scope (refused whole,
    /// before anything of it is written), then takes it into the pipeline (waiting for room: the
    /// backpressure point).
    async fn take(&self, batch: proto::UsageBatch, caller: Option<&Principal>) -> Result<Pending, ApiError> {
        let batch_id = batch.batch_id;
        if batch.events.len() > self.max_batch_events {
            return Err(ApiError::BatchTooLarge {
                batch_id,
                events: batch.events.len(),
                limit: self.max_batch_events,
            });
        }
        if let Some(caller) = caller
            && let Some((index, e)) = batch
                .events
                .iter()
                .enumerate()
                .find(|(_, e)| !caller.may_touch(&e.account_id))
        {
            return Err(ApiError::BatchOutOfScope {
                batch_id,
                index,
                account: e.account_id.clone(),
                token: caller.name.to_string(),
                prefix: caller.prefix().to_string(),
            });
        }
        let events = batch.events.into_iter().map(raw_event);
        let scope = caller.and_then(|c| c.account_prefix.as_deref());
        self.pipeline
            .intake(batch_id, events, scope)
            .await
            .map_err(|cause| match cause {
                PipelineError::Damaged { .. } => ApiError::BatchRefused { batch_id, cause },
                other => ApiError::Pipeline(other),
            })
    }
}

#[tonic::async_trait]
impl Ingest for Arc<IngestService> {
    type StreamStream = ReceiverStream<Result<proto::BatchAck, Status>>;

    async fn stream(
        &self,
        request: Request<Streaming<proto::UsageBatch>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let caller = principal(&request).cloned();
        let mut inbound = request.into_inner();
        let in_flight = self.max_inflight_per_stream;
        // Bound: acks waiting to be written back to this agent.
        let (tx, rx) = mpsc::channel(in_flight);
        let service = self.clone();
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(in_flight));
            let mut shutdown = service.shutdown.clone();
            let stop = shutdown.started();
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
                            Code::OutOfRange => {
                                Some(Status::from(ApiError::MessageTooLarge(status.message().to_string())))
                            }
                            _ => None,
                        };
                        debug!(?refusal, "stream ended");
                        if let Some(refusal) = refusal {
                            note("/ratingd.v1.Ingest/Stream", &refusal);
                            let _ = tx.send(Err(refusal)).await;
                        }
                        break;
                    }
                };
                let started = std::time::Instant::now();
                let pending = match service.take(batch, caller.as_ref()).await {
                    Ok(p) => p,
                    Err(error) => {
                        let _ = tx.send(Err(refuse(error))).await;
                        break;
                    }
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    let reply = match pending.ack().await {
                        Ok(ack) => {
                            metrics::histogram!(crate::telemetry::BATCH_ACK_DURATION)
                                .record(started.elapsed().as_secs_f64());
                            Ok(ack_to_proto(ack))
                        }
                        Err(e) => Err(Status::from(ApiError::Pipeline(e))),
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
        if self.shutdown.is_started() {
            return Err(Status::from(ApiError::Pipeline(PipelineError::ShuttingDown)));
        }
        let started = std::time::Instant::now();
        let caller = principal(&request).cloned();
        let pending = self.take(request.into_inner(), caller.as_ref()).await.map_err(refuse)?;
        let ack = pending.ack().await.map_err(|e| Status::from(ApiError::Pipeline(e)))?;
        metrics::histogram!(crate::telemetry::BATCH_ACK_DURATION).record(started.elapsed().as_secs_f64());
        Ok(Response::new(ack_to_proto(ack)))
    }
}
