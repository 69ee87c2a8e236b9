//! Storage faults through a failpoint on every commit's fsync (`store::FlushHook`): a stalled
//! flush holds every acknowledgement and every total until it returns; a failed flush
//! acknowledges nothing, stops intake, is counted and logged, and a restart rates each
//! unacknowledged event once.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use chrono::Duration;
use common::*;
use ratingd::store::FlushHook;
use ratingd::wire::proto;
use tokio_stream::StreamExt;

/// Holds flushes while `held`, fails them while `failing`, and logs what happened in order.
#[derive(Default)]
struct Failpoint {
    held: Mutex<bool>,
    released: Condvar,
    failing: AtomicBool,
    log: Mutex<Vec<String>>,
}

impl Failpoint {
    fn note(&self, what: String) {
        self.log.lock().unwrap().push(what);
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn release(&self) {
        *self.held.lock().unwrap() = false;
        self.released.notify_all();
    }
}

impl FlushHook for Failpoint {
    fn before_flush(&self, seq: u64) -> std::io::Result<()> {
        self.note(format!("flush {seq} entered"));
        let mut held = self.held.lock().unwrap();
        while *held {
            held = self.released.wait(held).unwrap();
        }
        if self.failing.load(Ordering::Acquire) {
            return Err(std::io::Error::other("injected fsync failure"));
        }
        Ok(())
    }

    fn after_flush(&self, seq: u64) {
        self.note(format!("flush {seq} returned"));
    }
}

fn options(failpoint: &Arc<Failpoint>) -> ratingd::app::StartOptions {
    ratingd::app::StartOptions {
        flush_hook: Some(failpoint.clone()),
        ..Default::default()
    }
}

fn batch(id: u64, account: &str, n: usize) -> proto::UsageBatch {
    let at = test_now() - Duration::minutes(5);
    proto::UsageBatch {
        batch_id: id,
        events: (0..n)
            .map(|i| event(&format!("{account}-{id}-{i}"), account, "api.requests", 100, 0, at, &[]))
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_acknowledged_or_visible_before_its_flush_returns() {
    let dir = TempDir::new("flush-stall");
    let failpoint = Arc::new(Failpoint::default());
    *failpoint.held.lock().unwrap() = true;
    let d = TestDaemon::start_with(&write_config(&dir.0, ""), options(&failpoint)).await;
    let first = batch(1, "saas-0", 3);
    let mut ingest = d.ingest().await;
    let mut sending = tokio::spawn(async move { ingest.submit(first).await });
    wait_until(20, "the first commit to reach its flush", || {
        let entered = failpoint.log().iter().any(|l| l.ends_with("entered"));
        async move { entered }
    })
    .await;
    // While the flush is held, its totals are not served (readers see durable totals only)...
    assert!(
        d.totals("saas-0", "2026-11").await.is_none(),
        "totals published before their flush"
    );
    // ...and no acknowledgement comes: 300 ms is ample for one that does not wait for the flush.
    let early = tokio::time::timeout(std::time::Duration::from_millis(300), &mut sending).await;
    assert!(early.is_err(), "acknowledged while its flush was held: {early:?}");
    failpoint.note("released".into());
    failpoint.release();
    let ack = within(20, "the acknowledgement after the flush", sending)
        .await
        .unwrap()
        .unwrap()
        .into_inner();
    failpoint.note("acknowledged".into());
    assert_eq!(ack.accepted, 3);
    let log = failpoint.log();
    let position = |what: &str| {
        log.iter()
            .position(|l| l == what)
            .unwrap_or_else(|| panic!("{what} in {log:?}"))
    };
    assert!(position("flush 0 entered") < position("released"), "{log:?}");
    assert!(position("released") < position("flush 0 returned"), "{log:?}");
    assert!(position("flush 0 returned") < position("acknowledged"), "{log:?}");
    assert_totals_match(&d.target, &batch(1, "saas-0", 3).events).await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_flush_acknowledges_nothing_stops_intake_and_is_counted() {
    let dir = TempDir::new("flush-fail");
    let metrics = format!("127.0.0.1:{}", free_port());
    let config = write_config(&dir.0, &format!("metrics_listen = \"{metrics}\""));
    let failpoint = Arc::new(Failpoint::default());
    failpoint.failing.store(true, Ordering::Release);
    let d = TestDaemon::start_with(&config, options(&failpoint)).await;
    let mut ingest = d.ingest().await;

    let refused = within(20, "the failed commit's answer", ingest.submit(batch(1, "saas-1", 4)))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("injected fsync failure"), "{refused:?}");
    assert!(!failpoint.log().iter().any(|l| l.ends_with("returned")));
    assert!(d.totals("saas-1", "2026-11").await.is_none(), "nothing published");

    // Intake stops: later batches are refused on both paths, before anything is rated.
    let later = within(20, "a later batch's answer", ingest.submit(batch(2, "saas-2", 2)))
        .await
        .unwrap_err();
    assert_eq!(later.code(), tonic::Code::Unavailable);
    assert!(later.message().contains("an earlier commit failed"), "{later:?}");
    let mut acks = ingest
        .stream(tokio_stream::iter(vec![batch(3, "saas-2", 2)]))
        .await
        .unwrap()
        .into_inner();
    let on_stream = within(20, "the stream's answer", acks.next()).await.expect("an answer");
    assert_eq!(on_stream.unwrap_err().code(), tonic::Code::Unavailable);
    assert_eq!(
        failpoint.log().iter().filter(|l| l.ends_with("entered")).count(),
        1,
        "no commit after the failed one"
    );

    // Reported: counted once; nothing was counted as received or accepted.
    let m = scrape_metrics(&metrics);
    assert_eq!(m.get("ratingd_commit_failures_total"), Some(&1.0), "{m:?}");
    assert_eq!(m.get("ratingd_events_accepted_total").copied().unwrap_or(0.0), 0.0);
    d.stop().await;

    // A restart rebuilds from what is durable; the resent batches are rated once.
    let d = TestDaemon::start(&config).await;
    let mut ingest = d.ingest().await;
    let first = ingest.submit(batch(1, "saas-1", 4)).await.unwrap().into_inner();
    assert_eq!(first.accepted + first.duplicate, 4, "{first:?}");
    let second = ingest.submit(batch(2, "saas-2", 2)).await.unwrap().into_inner();
    assert_eq!(second.accepted, 2);
    let mut sent = batch(1, "saas-1", 4).events;
    sent.extend(batch(2, "saas-2", 2).events);
    assert_totals_match(&d.target, &sent).await;
    d.stop().await;
}
