//! `limits.max_inflight_per_stream`: an agent that never reads its acks is held back by HTTP/2
//! flow control (ratingd stops reading its stream), while the daemon's queues stay within their
//! bounds and other agents are served; once it reads, it goes on. Alone in its test binary: it
//! reads process-wide metrics.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use ratingd::wire::proto;
use tokio_stream::StreamExt;

fn at() -> chrono::DateTime<chrono::Utc> {
    test_now() - chrono::Duration::minutes(5)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_never_reads_its_acks_is_held_back_and_others_are_served() {
    let dir = TempDir::new("backpressure");
    let metrics = format!("127.0.0.1:{}", free_port());
    let config = write_config(
        &dir.0,
        &format!("metrics_listen = \"{metrics}\"\n[limits]\nmax_inflight_per_stream = 2\nmax_inflight_batches = 8"),
    );
    let d = TestDaemon::start(&config).await;
    // The greedy agent: a small receive window (16 KiB), and batches of 50 events for an unknown
    // meter, so each ack carries 50 reasons and a few fill the window it never empties.
    let channel = tonic::transport::Endpoint::from_shared(d.target.clone())
        .unwrap()
        .initial_stream_window_size(Some(16 * 1024))
        .initial_connection_window_size(Some(16 * 1024))
        .connect()
        .await
        .unwrap();
    let pulled = Arc::new(AtomicU64::new(0));
    const OFFERED: u64 = 100_000;
    let counter = pulled.clone();
    let batches = tokio_stream::iter(0..OFFERED).map(move |i| {
        counter.fetch_add(1, Ordering::Relaxed);
        proto::UsageBatch {
            batch_id: i,
            events: (0..50)
                .map(|j| event(&format!("g-{i}-{j}"), "tel-1", "fax.pages", 1, 0, at(), &[]))
                .collect(),
        }
    });
    let mut greedy = proto::ingest_client::IngestClient::new(channel);
    let response = within(20, "the greedy stream to open", greedy.stream(batches))
        .await
        .unwrap();
    // It stops being read: the count of batches taken from it stops growing, far below the offer.
    let mut last = (pulled.load(Ordering::Relaxed), Instant::now());
    let deadline = Instant::now() + Duration::from_secs(30);
    while last.1.elapsed() < Duration::from_millis(500) {
        assert!(Instant::now() < deadline, "still taking batches after 30 s: {}", last.0);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = pulled.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    let held_at = last.0;
    assert!(
        held_at < 2_000,
        "{held_at} of {OFFERED} batches taken from an agent that reads no ack"
    );
    // The daemon's queues stay within their bounds meanwhile.
    let m = scrape_metrics(&metrics);
    assert!(m["ratingd_batches_in_flight"] <= 8.0, "{m:?}");
    let depth: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("ratingd_shard_queue_depth"))
        .map(|(_, v)| *v)
        .sum();
    assert!(depth <= 8.0, "queued jobs {depth}");
    // Another agent is served.
    let ack = d
        .submit(1, vec![event("polite", "tel-0", "sms.count", 1, 0, at(), &[])])
        .await;
    assert_eq!(ack.accepted, 1);
    // Once the greedy agent reads, it goes on: the acks come (in completion order, each with its
    // batch id), each with its 50 reasons, and more batches are taken than while it was held.
    let mut acks = response.into_inner();
    let mut ids = Vec::new();
    for _ in 0..held_at + 20 {
        let ack = within(20, "the greedy agent's acks", acks.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ack.rejected, 50);
        ids.push(ack.batch_id);
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len() as u64, held_at + 20, "each batch acknowledged once");
    assert!(pulled.load(Ordering::Relaxed) >= held_at + 20);
    eprintln!("held at {held_at} batches taken");
    drop(acks);
    d.stop().await;
}
