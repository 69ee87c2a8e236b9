//! `limits.max_inflight_batches`: with commits held, at most that many batches are admitted over
//! all agents; the others wait for admission (not in a queue) and are acknowledged once commits
//! run. Alone in its test binary: it reads the process-wide `ratingd_batches_in_flight` gauge.

mod common;

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::*;
use ratingd::wire::proto;

fn at() -> chrono::DateTime<chrono::Utc> {
    test_now() - chrono::Duration::minutes(5)
}

/// Holds every commit's flush until released.
#[derive(Default)]
struct Hold {
    held: Mutex<bool>,
    released: Condvar,
}

impl ratingd::store::FlushHook for Hold {
    fn before_flush(&self, _: u64) -> std::io::Result<()> {
        let mut held = self.held.lock().unwrap();
        while *held {
            held = self.released.wait(held).unwrap();
        }
        Ok(())
    }
}

fn gauge(metrics: &str, name: &str) -> f64 {
    scrape_metrics(metrics).get(name).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_inflight_batches_admits_that_many_over_all_streams() {
    let dir = TempDir::new("max-inflight");
    let metrics = format!("127.0.0.1:{}", free_port());
    let config = write_config(
        &dir.0,
        &format!("metrics_listen = \"{metrics}\"\n[limits]\nmax_inflight_batches = 2"),
    );
    let hold = Arc::new(Hold::default());
    *hold.held.lock().unwrap() = true;
    let options = ratingd::app::StartOptions {
        flush_hook: Some(hold.clone()),
        ..Default::default()
    };
    let d = TestDaemon::start_with(&config, options).await;
    // Four agents on four connections, while commits cannot finish.
    let mut sends = Vec::new();
    for i in 0..4u64 {
        let mut client = d.ingest().await;
        let batch = proto::UsageBatch {
            batch_id: i,
            events: vec![event(
                &format!("f-{i}"),
                &format!("saas-{i}"),
                "api.requests",
                1,
                0,
                at(),
                &[],
            )],
        };
        sends.push(tokio::spawn(async move { client.submit(batch).await }));
    }
    let m = metrics.clone();
    wait_until(20, "two batches in flight", || {
        let n = gauge(&m, "ratingd_batches_in_flight");
        async move { n >= 2.0 }
    })
    .await;
    // Held there: the other two wait for admission, not in a queue.
    let deadline = Instant::now() + Duration::from_millis(300);
    while Instant::now() < deadline {
        assert_eq!(gauge(&metrics, "ratingd_batches_in_flight"), 2.0);
        assert!(sends.iter().all(|s| !s.is_finished()), "an ack while commits were held");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    *hold.held.lock().unwrap() = false;
    hold.released.notify_all();
    for s in sends {
        let ack = within(20, "every ack once commits run", s).await.unwrap().unwrap();
        assert_eq!(ack.into_inner().accepted, 1);
    }
    // The permit is given back right after the ack is sent: poll (bounded) for it.
    wait_until(20, "no batch in flight", || {
        let n = gauge(&metrics, "ratingd_batches_in_flight");
        async move { n == 0.0 }
    })
    .await;
    d.stop().await;
}
