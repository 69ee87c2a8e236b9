//! `loadtest sink`: the `ratingd.v1.Ingest` service that decodes every batch and acknowledges it
//! as all accepted, doing nothing else: the ceiling of the gRPC and protobuf stack here.

use std::net::SocketAddr;

use ratingd::wire::proto::{self, ingest_server::Ingest, ingest_server::IngestServer};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

/// Largest batch message the sink decodes (64 MiB).
const MAX_MESSAGE_BYTES: usize = 64 << 20;

struct Sink;

fn ack(batch: &proto::UsageBatch) -> proto::BatchAck {
    proto::BatchAck {
        batch_id: batch.batch_id,
        accepted: batch.events.len() as u32,
        ..proto::BatchAck::default()
    }
}

type AckStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<proto::BatchAck, Status>> + Send>>;

#[tonic::async_trait]
impl Ingest for Sink {
    type StreamStream = AckStream;

    async fn stream(&self, request: Request<Streaming<proto::UsageBatch>>) -> Result<Response<AckStream>, Status> {
        let acks = request.into_inner().map(|batch| batch.map(|b| ack(&b)));
        Ok(Response::new(Box::pin(acks)))
    }

    async fn submit(&self, request: Request<proto::UsageBatch>) -> Result<Response<proto::BatchAck>, Status> {
        Ok(Response::new(ack(&request.into_inner())))
    }
}

/// Serves until Ctrl-C or SIGTERM. Prints "sink listening on ADDR" once bound.
pub async fn serve(listen: SocketAddr) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("sink listening on {addr}");
    // Accepted as ratingd accepts them (TCP_NODELAY), so the two measure the same stack.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let service = IngestServer::new(Sink).max_decoding_message_size(MAX_MESSAGE_BYTES);
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, stop())
        .await
        .map_err(|e| format!("sink failed: {e}"))
}

async fn stop() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
