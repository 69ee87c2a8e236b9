//! The Redis projection against redis-servers of the test's own on free ports: the documented
//! layout, and the faults (absent, wiped, killed). Every figure is compared with the reference
//! pricer's.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use ratingd::wire::proto;
use rust_decimal::Decimal;

fn hgetall(url: &str, key: &str) -> HashMap<String, String> {
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    redis::cmd("HGETALL").arg(key).query(&mut c).unwrap_or_default()
}

/// True when Redis holds exactly the reference pricer's totals for every account-period of
/// `events`: currency, exact total, invoice amount, and per meter charge, quantity and events; and
/// each account is in its period's set.
async fn redis_matches(url: &str, prefix: &str, events: &[proto::UsageEvent]) -> bool {
    let Ok(mut c) = redis::Client::open(url).and_then(|c| c.get_connection()) else {
        return false;
    };
    let dec = |x: Option<&String>| x.and_then(|x| x.parse::<Decimal>().ok());
    for ((account, period), want) in expected(events).totals {
        let h: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(format!("{prefix}:agg:{{{account}}}:{period}"))
            .query(&mut c)
            .unwrap_or_default();
        if h.get("currency") != Some(&want.currency)
            || dec(h.get("total:charge")) != Some(want.total_charge)
            || dec(h.get("total:amount")) != Some(want.total_amount)
        {
            return false;
        }
        for (meter, m) in &want.meters {
            let field = |f: &str| h.get(&format!("{meter}:{f}")).cloned();
            if dec(field("charge").as_ref()) != Some(m.charge)
                || dec(field("quantity").as_ref()) != Some(m.quantity)
                || field("events") != Some(m.events.to_string())
            {
                return false;
            }
        }
        let member: bool = redis::cmd("SISMEMBER")
            .arg(format!("{prefix}:accounts:{period}"))
            .arg(&account)
            .query(&mut c)
            .unwrap_or(false);
        if !member {
            return false;
        }
    }
    true
}

/// Polls (bounded) until Redis matches the daemon's totals.
async fn wait_for_redis(url: &str, prefix: &str, events: &[proto::UsageEvent]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !redis_matches(url, prefix, events).await {
        assert!(
            Instant::now() < deadline,
            "redis never caught up with the totals within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn send(d: &TestDaemon, events: &[proto::UsageEvent], first_id: u64) {
    let mut client = d.ingest().await;
    for b in batches(events, 200) {
        let ack = client
            .submit(proto::UsageBatch {
                batch_id: first_id + b.batch_id,
                events: b.events,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(ack.rejected, 0);
    }
}

fn redis_section(url: &str, prefix: &str) -> String {
    format!("[redis]\nurl = \"{url}\"\nprefix = \"{prefix}\"\nflush_interval_ms = 20\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projection_follows_the_documented_layout() {
    let dir = TempDir::new("redis-layout");
    let redis = RedisServer::start(free_port());
    let url = redis.url();
    let url = url.as_str();
    let prefix = "billing";
    let d = TestDaemon::start(&write_config(&dir.0, &redis_section(url, prefix))).await;
    let events = generate(2_000, 0.1, 51);
    send(&d, &events, 0).await;
    wait_for_redis(url, prefix, &events).await;
    let (account, period) = expected_totals(&events).keys().next().unwrap().clone();
    let h = hgetall(url, &format!("{prefix}:agg:{{{account}}}:{period}"));
    assert_eq!(h["status"], "open");
    assert_eq!(
        h["currency"],
        if plan_of(&account) == "saas-pro" { "USD" } else { "EUR" }
    );
    assert!(h["epoch"].parse::<u64>().unwrap() > 0);
    assert!(chrono::DateTime::parse_from_rfc3339(&h["updated_at"]).is_ok());
    let meta = hgetall(url, &format!("{prefix}:meta"));
    assert!(meta.contains_key("epoch"));
    // Every key ratingd wrote is under its prefix.
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
    assert!(!keys.is_empty());
    assert!(keys.iter().all(|k| k.starts_with("billing:")), "{keys:?}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_absent_during_ingest_catches_up_when_it_starts() {
    let dir = TempDir::new("redis-absent");
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let d = TestDaemon::start(&write_config(&dir.0, &redis_section(&url, "r"))).await;
    let events = generate(3_000, 0.1, 52);
    // Nothing listens on the port: ingest is not slowed or stopped.
    send(&d, &events, 0).await;
    assert_totals_match(&d.target, &events).await;
    let _redis = RedisServer::start(port);
    wait_for_redis(&url, "r", &events).await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_redis_is_resynced_from_sled() {
    let dir = TempDir::new("redis-wiped");
    let redis = RedisServer::start(free_port());
    let d = TestDaemon::start(&write_config(&dir.0, &redis_section(&redis.url(), "r"))).await;
    let events = generate(2_000, 0.1, 53);
    send(&d, &events, 0).await;
    wait_for_redis(&redis.url(), "r", &events).await;
    let mut c = redis::Client::open(redis.url()).unwrap().get_connection().unwrap();
    let _: () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
    // No new events arrive: only the resync (triggered by the missing meta key) can refill Redis.
    wait_for_redis(&redis.url(), "r", &events).await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_flush_converges_after_it_returns() {
    let dir = TempDir::new("redis-killed");
    let port = free_port();
    let mut redis = RedisServer::start(port);
    let d = TestDaemon::start(&write_config(&dir.0, &redis_section(&redis.url(), "r"))).await;
    let events = generate(6_000, 0.1, 54);
    let (first, second) = events.split_at(3_000);
    send(&d, first, 0).await;
    // Kill it while flushes are running (every 20 ms, with this ingest still arriving).
    let sender = {
        let target = d.target.clone();
        let second = second.to_vec();
        tokio::spawn(async move {
            let mut client = proto::ingest_client::IngestClient::new(common::channel(&target).await);
            for b in batches(&second, 100) {
                client
                    .submit(proto::UsageBatch {
                        batch_id: 1_000 + b.batch_id,
                        events: b.events,
                    })
                    .await
                    .unwrap();
            }
        })
    };
    redis.kill9();
    sender.await.unwrap();
    assert_totals_match(&d.target, &events).await;
    let redis = RedisServer::start(port);
    wait_for_redis(&redis.url(), "r", &events).await;
    d.stop().await;
}

/// The write of `meta` at the end of a flush checks that nothing was wiped since the flush
/// began (the race a busy machine hits: a `FLUSHALL` between a flush's check of `meta` and its
/// write would otherwise bring `meta` back over lost keys, and no flush would rewrite them).
#[test]
fn meta_is_written_only_over_an_intact_projection() {
    let redis = RedisServer::start(free_port());
    let mut c = redis::Client::open(redis.url()).unwrap().get_connection().unwrap();
    let write = |c: &mut redis::Connection, token: &str| -> i64 {
        redis::cmd("EVAL")
            .arg(ratingd::export::META_IF_INTACT)
            .arg(2)
            .arg("r:meta")
            .arg("r:resync")
            .arg(7)
            .arg("2026-12-01T00:00:00Z")
            .arg(token)
            .query(c)
            .unwrap()
    };
    let exists = |c: &mut redis::Connection, key: &str| -> bool { redis::cmd("EXISTS").arg(key).query(c).unwrap() };
    // A changed-keys flush after a wipe: meta stays missing (the next flush rewrites everything).
    assert_eq!(write(&mut c, ""), 0);
    assert!(!exists(&mut c, "r:meta"));
    // A full rewrite whose token was wiped meanwhile: not written either.
    assert_eq!(write(&mut c, "7:1"), 0);
    assert!(!exists(&mut c, "r:meta"));
    // A full rewrite that ran intact: meta written, its token gone.
    let _: () = redis::cmd("SET").arg("r:resync").arg("7:2").query(&mut c).unwrap();
    assert_eq!(write(&mut c, "7:1"), 0, "another rewrite's token");
    assert_eq!(write(&mut c, "7:2"), 1);
    assert!(exists(&mut c, "r:meta") && !exists(&mut c, "r:resync"));
    // A changed-keys flush over an intact projection.
    assert_eq!(write(&mut c, ""), 1);
    let epoch: String = redis::cmd("HGET").arg("r:meta").arg("epoch").query(&mut c).unwrap();
    assert_eq!(epoch, "7");
}
