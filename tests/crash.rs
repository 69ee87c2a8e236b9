//! Crash test: the built binary is killed with SIGKILL at 20 random moments while a client
//! streams; after each restart the client resends every unacknowledged batch (same batch and event
//! ids). Subscriptions change in the mix: one account changes plan (and currency) inside the
//! period, and another gets its subscription through the Admin API halfway, after which its
//! events are sent; one-off charges are added before half of the kills. Some events are a day
//! older than the one hot hour of the dedupe window, so each restart moves their ids to its cold
//! tier on disk and the resends after it are checked there. Corrections are in the mix too
//! (docs/corrections.md): acknowledged events are voided and amended (each asked again after the
//! next restart, which must find it applied), and after a tariff fix (a version superseding
//! saas-pro's first) a re-rate of every saas-pro account runs while batches stream, so kills land
//! in it; it is called again with the same id after each restart until it answers. At the end
//! every total equals an independent computation from the corrected events under the fixed
//! tariff, and every charge and correction counts once.

mod common;

use std::collections::BTreeMap;

use common::*;
use ratingd::wire::proto;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const KILLS: usize = 20;
const IN_FLIGHT: usize = 8;
/// Before this kill's start the tariff file gets its fix; at this kill's start the re-rate begins.
const FIX_AT: usize = 4;
const RERATE_AT: usize = 7;

/// The shipped catalogue with saas-pro's first version superseded: storage blocks at 0.60
/// instead of 0.50 (a price entered wrong, docs/corrections.md).
fn fixed_catalogue() -> String {
    let shipped = include_str!("../config/tariffs.toml");
    let fix = "[[plans.versions]]\neffective_from = \"2026-01-01T00:00:00Z\"\nsupersedes = 1\n\
               discount_percent = \"10\"\n\
               [plans.versions.meters.\"api.requests\"]\nmodel = \"volume\"\n\
               tiers = [{ up_to = 1000000, price = \"0.0010\" }, { up_to = 10000000, price = \"0.0008\" }, { price = \"0.0005\" }]\n\
               [plans.versions.meters.\"storage.gb_hours\"]\nmodel = \"package\"\nblock_size = 100\nblock_price = \"0.60\"\n\n";
    // Versions belong to the plan above them: the fix goes right before the next plan.
    let at = shipped
        .find("[[plans]]\nid = \"saas-team\"")
        .expect("saas-team follows saas-pro");
    format!("{}{fix}{}", &shipped[..at], &shipped[at..])
}

/// A void or an amend of one acknowledged event, and what it does to the events sent.
struct Fix {
    account: String,
    event_id: String,
    /// `None`: void; else the new quantity's whole units.
    quantity: Option<i64>,
}

impl Fix {
    async fn apply(&self, target: &str) -> proto::CorrectionResponse {
        let mut admin = proto::admin_client::AdminClient::new(channel(target).await);
        let reason = "crash test".to_string();
        let answer = match self.quantity {
            None => {
                let request = proto::VoidEventRequest {
                    account_id: self.account.clone(),
                    event_id: self.event_id.clone(),
                    reason,
                    id: String::new(),
                };
                within(60, "a void", admin.void_event(request)).await
            }
            Some(units) => {
                let request = proto::AmendEventRequest {
                    account_id: self.account.clone(),
                    event_id: self.event_id.clone(),
                    quantity: Some(proto::Quantity { units, nanos: 0 }),
                    attributes: Vec::new(),
                    reason,
                    id: String::new(),
                };
                within(60, "an amend", admin.amend_event(request)).await
            }
        };
        answer
            .unwrap_or_else(|e| panic!("{} of {}: {e}", self.what(), self.event_id))
            .into_inner()
    }

    fn what(&self) -> &'static str {
        if self.quantity.is_some() { "amend" } else { "void" }
    }

    /// The events as they stand after it: every copy of the event voided or amended.
    fn on(&self, events: &mut Vec<proto::UsageEvent>) {
        let hit = |e: &proto::UsageEvent| e.account_id == self.account && e.event_id == self.event_id;
        match self.quantity {
            None => events.retain(|e| !hit(e)),
            Some(units) => {
                for e in events.iter_mut().filter(|e| hit(e)) {
                    e.quantity = Some(proto::Quantity { units, nanos: 0 });
                }
            }
        }
    }
}

/// The re-rate of every saas-pro account's period after the fix.
fn rerate(period: &str) -> proto::RerateRequest {
    proto::RerateRequest {
        id: "crash-storage-fix".into(),
        period: period.into(),
        all: true,
        plan: "saas-pro".into(),
        reason: "storage block price entered as 0.50 instead of 0.60".into(),
        ..Default::default()
    }
}

async fn call_rerate(target: String, period: String) -> Result<proto::CorrectionResponse, tonic::Status> {
    let mut admin = proto::admin_client::AdminClient::new(channel(&target).await);
    admin.rerate(rerate(&period)).await.map(|r| r.into_inner())
}

/// Streams pending batches with `IN_FLIGHT` outstanding until `stop_after` acks (or all) arrive.
/// Returns how many acks arrived; acknowledged batches leave `pending`. Every wait is bounded: a
/// daemon that does not answer an ack within 60 s fails the test.
async fn stream_some(target: &str, pending: &mut BTreeMap<u64, proto::UsageBatch>, stop_after: usize) -> usize {
    let connect = proto::ingest_client::IngestClient::connect(target.to_string());
    let Ok(mut client) = within(60, "a connection to ratingd", connect).await else {
        return 0;
    };
    let (tx, rx) = mpsc::channel(IN_FLIGHT);
    let ids: Vec<u64> = pending.keys().copied().collect();
    let mut next = 0;
    while next < ids.len().min(IN_FLIGHT) {
        tx.send(pending[&ids[next]].clone()).await.unwrap();
        next += 1;
    }
    let Ok(response) = within(60, "the stream to open", client.stream(ReceiverStream::new(rx))).await else {
        return 0;
    };
    let mut acks = response.into_inner();
    let mut received = 0;
    while received < stop_after && received < ids.len() {
        let Ok(Some(ack)) = within(60, "an ack", acks.message()).await else {
            break;
        };
        let batch = pending
            .remove(&ack.batch_id)
            .expect("each batch is acknowledged once per send");
        assert_eq!(
            (ack.accepted + ack.duplicate + ack.rejected) as usize,
            batch.events.len(),
            "received = accepted + duplicate + rejected"
        );
        assert_eq!(ack.rejected, 0, "generated events are all valid: {:?}", ack.results);
        received += 1;
        if next < ids.len() {
            let _ = tx.send(pending[&ids[next]].clone()).await;
            next += 1;
        }
    }
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_and_doubles_nothing() {
    let dir = TempDir::new("crash");
    // Small commits and frequent checkpoints, so kills land between blocks, mid-commit and
    // around checkpoints alike.
    // The binary runs on the real clock: events from safe_now(), in one open period per plan.
    let now = safe_now();
    // `chg-0` is on saas-pro (USD) until 12 hours before now, then on telecom-standard (EUR).
    let change = now - chrono::Duration::hours(12);
    let (config, tariffs) = write_config_with_tariffs(
        &dir.0,
        &format!(
            "commit_max_events = 300\ncheckpoint_every_records = 2500\ndedupe_hot_hours = 1\n\
             [[subscriptions]]\naccount = \"chg-0\"\nplan = \"saas-pro\"\nfrom = \"2020-01-01T00:00:00Z\"\nto = \"{0}\"\n\
             [[subscriptions]]\naccount = \"chg-0\"\nplan = \"telecom-standard\"\nfrom = \"{0}\"\n\
             [[subscriptions]]\naccount = \"fee-0\"\nplan = \"saas-pro\"\nfrom = \"2020-01-01T00:00:00Z\"\n",
            change.to_rfc3339()
        ),
        include_str!("../config/tariffs.toml"),
    );
    let mut events = generate_at(24_000, 0.1, 21, now);
    // Every 40th event gets a `chg-0` neighbour: API requests before the change, calls after it.
    let mut with_change = Vec::with_capacity(events.len() + events.len() / 40);
    for (i, e) in events.into_iter().enumerate() {
        if i % 25 == 0 {
            // A day older than the one hot hour: each restart moves these ids to the dedupe
            // window's cold tier, and the resends after it are answered from there.
            let n = i / 25;
            let mut old = e.clone();
            old.event_id = format!("old-{n}");
            let at = now - chrono::Duration::minutes(24 * 60 + 30) + chrono::Duration::seconds(n as i64);
            old.timestamp_unix_nanos = at.timestamp_nanos_opt().unwrap();
            with_change.push(old);
        }
        with_change.push(e);
        if i % 40 == 0 {
            let n = i / 40;
            let minutes = chrono::Duration::minutes((n % 600) as i64 + 1);
            with_change.push(if n % 2 == 0 {
                event(
                    &format!("chg-a{n}"),
                    "chg-0",
                    "api.requests",
                    1000 + n as i64,
                    0,
                    change - minutes,
                    &[],
                )
            } else {
                let dest = [("destination", "+442071234567")];
                event(
                    &format!("chg-v{n}"),
                    "chg-0",
                    "voice.seconds",
                    30 + (n % 90) as i64,
                    0,
                    change + minutes,
                    &dest,
                )
            });
        }
    }
    events = with_change;
    // `late-0` has no subscription (and there is no default plan) until the Admin API sets one
    // halfway through the kills; its events are sent only after that.
    let late: Vec<proto::UsageEvent> = (0..300)
        .map(|n| {
            let at = now - chrono::Duration::minutes(n + 5);
            event(&format!("late-{n}"), "late-0", "api.requests", 10_000, 0, at, &[])
        })
        .collect();
    let mut pending = pending_batches(&events, 100);
    let batches_sent = pending.clone();
    let period = (now - chrono::Duration::hours(1)).format("%Y-%m").to_string();
    // The voids and amends applied, and the one to ask again after the next restart.
    let mut fixes: Vec<Fix> = Vec::new();
    let mut ask_again: Option<usize> = None;
    let mut rerate_task: Option<tokio::task::JoinHandle<Result<proto::CorrectionResponse, tonic::Status>>> = None;
    let mut rerate_done: Option<proto::CorrectionResponse> = None;
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    for kill in 0..KILLS {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        if kill == FIX_AT {
            std::fs::write(&tariffs, fixed_catalogue()).unwrap();
        }
        let daemon = DaemonProcess::spawn(&config);
        // A re-rate a kill interrupted is called again with the same id until it answers.
        if let Some(task) = rerate_task.take() {
            match task.await.unwrap() {
                Ok(answer) => rerate_done = Some(answer),
                Err(_) => {
                    let answer = within(
                        60,
                        "the re-rate again",
                        call_rerate(daemon.target.clone(), period.clone()),
                    );
                    rerate_done = Some(answer.await.expect("the re-rate answers after a restart"));
                }
            }
        }
        if kill == RERATE_AT {
            // Runs while batches stream: the kill below may land in it.
            rerate_task = Some(tokio::spawn(call_rerate(daemon.target.clone(), period.clone())));
        }
        // The correction of the previous round again: found applied, nothing written.
        if let Some(i) = ask_again.take() {
            let again = fixes[i].apply(&daemon.target).await;
            assert!(
                again.outcomes.iter().all(|o| o.already_applied),
                "{} of {} asked again after a restart: {again:?}",
                fixes[i].what(),
                fixes[i].event_id
            );
        }
        if kill % 3 == 1 {
            // An acknowledged saas or tel event not corrected yet: voided or amended.
            let acked = batches_sent
                .iter()
                .filter(|(id, _)| !pending.contains_key(id))
                .flat_map(|(_, b)| &b.events)
                .find(|e| {
                    (e.account_id.starts_with("saas-") || e.account_id.starts_with("tel-"))
                        && !fixes
                            .iter()
                            .any(|f| f.account == e.account_id && f.event_id == e.event_id)
                });
            if let Some(e) = acked {
                let units = e.quantity.map_or(0, |q| q.units);
                let fix = Fix {
                    account: e.account_id.clone(),
                    event_id: e.event_id.clone(),
                    quantity: (fixes.len() % 2 == 1).then_some(units + 7),
                };
                let answer = fix.apply(&daemon.target).await;
                assert!(answer.records_changed >= 1, "{answer:?}");
                ask_again = Some(fixes.len());
                fixes.push(fix);
            }
        }
        if kill % 2 == 0 {
            // Acknowledged after its fsync: it must survive every later kill, exactly once.
            let mut admin = proto::admin_client::AdminClient::new(channel(&daemon.target).await);
            within(60, "a one-off charge", admin.add_charge(one_off(kill, now)))
                .await
                .unwrap();
        }
        if kill == KILLS / 2 {
            let mut admin = proto::admin_client::AdminClient::new(channel(&daemon.target).await);
            let subscription = proto::Subscription {
                account_id: "late-0".into(),
                plan_id: "saas-pro".into(),
                from: "2020-01-01T00:00:00Z".into(),
                ..Default::default()
            };
            within(60, "the subscription", admin.upsert_subscription(subscription))
                .await
                .unwrap();
            // Acknowledged: durable, so every later restart rates late-0 (a rejection fails
            // stream_some).
            for (i, mut b) in batches(&late, 50).into_iter().enumerate() {
                b.batch_id = 1_000_000 + i as u64;
                pending.insert(b.batch_id, b);
            }
        }
        // Kill after a random number of acks: other batches are then in flight, some committed
        // and not yet acknowledged, some not yet committed.
        if kill == RERATE_AT {
            // The re-rate writes one commit per shard: a kill a few milliseconds after it was
            // asked lands before, between or after them (it is timing, not synchronisation).
            tokio::time::sleep(std::time::Duration::from_micros(500 + rng % 2_000)).await;
            daemon.kill9();
            continue;
        }
        let stop_after = 1 + (rng % 9) as usize;
        stream_some(&daemon.target, &mut pending, stop_after).await;
        daemon.kill9();
    }
    assert!(
        !pending.is_empty(),
        "the kills happened while batches were still pending"
    );
    let daemon = DaemonProcess::spawn(&config);
    // Bounded: a daemon that stops taking batches fails the test within a minute.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !pending.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} batches still unacknowledged after 60 s",
            pending.len()
        );
        stream_some(&daemon.target, &mut pending, usize::MAX).await;
    }
    if let Some(task) = rerate_task.take() {
        rerate_done = task.await.unwrap().ok();
    }
    let rerated = match rerate_done {
        Some(answer) => answer,
        None => call_rerate(daemon.target.clone(), period.clone()).await.unwrap(),
    };
    assert!(!rerated.outcomes.is_empty(), "the re-rate changed saas-pro accounts");
    // Once more: every account found corrected, nothing written.
    let again = call_rerate(daemon.target.clone(), period.clone()).await.unwrap();
    assert!(again.outcomes.iter().all(|o| o.already_applied), "{again:?}");
    assert!(fixes.len() >= 5, "voids and amends in the mix: {}", fixes.len());
    let mut all: Vec<proto::UsageEvent> = events.iter().chain(&late).cloned().collect();
    for fix in &fixes {
        fix.on(&mut all);
    }
    assert_changed_totals_match(&daemon.target, &all, change).await;
    // Every charge once: sent again, each is a duplicate; the total is 1 + 3 + ... + 19.
    let mut admin = proto::admin_client::AdminClient::new(channel(&daemon.target).await);
    for kill in (0..KILLS).step_by(2) {
        let again = admin.add_charge(one_off(kill, now)).await.unwrap().into_inner();
        assert!(again.duplicate, "charge {kill} was added before");
    }
    let label = (now - chrono::Duration::hours(1)).format("%Y-%m").to_string();
    let fees = totals_at(&daemon.target, "fee-0", &label).await;
    let fees = fees.unwrap_or_else(|| panic!("no totals for fee-0"));
    assert_eq!(fees.total_charge, "100.000000000");
    daemon.kill9();
    // And once more after a last crash: recovery alone gives the same totals.
    let daemon = DaemonProcess::spawn(&config);
    assert_changed_totals_match(&daemon.target, &all, change).await;
    // The old ids went to the cold tier along the way (each restart spills them).
    let runs: usize = std::fs::read_dir(dir.0.join("data/dedupe"))
        .expect("the cold tier exists")
        .flatten()
        .flat_map(|shard| std::fs::read_dir(shard.path()).expect("a shard dir").flatten())
        .filter(|f| f.path().extension().is_some_and(|e| e == "cold"))
        .count();
    assert!(runs > 0, "runs in the cold tier");
}

/// The one-off charge added before kill `kill`: `kill + 1` USD on `fee-0`.
fn one_off(kill: usize, now: chrono::DateTime<chrono::Utc>) -> proto::AddChargeRequest {
    proto::AddChargeRequest {
        account_id: "fee-0".into(),
        charge_id: format!("crash-{kill}"),
        amount: format!("{}.00", kill + 1),
        currency: "USD".into(),
        description: format!("charge before kill {kill}"),
        time: (now - chrono::Duration::hours(1)).to_rfc3339(),
    }
}

/// The test accounts' totals, and each plan's part of `chg-0` (USD before the change, EUR
/// after) and `late-0`, against the reference pricer.
async fn assert_changed_totals_match(
    target: &str,
    events: &[proto::UsageEvent],
    change: chrono::DateTime<chrono::Utc>,
) {
    let fixed = fixed_catalogue();
    assert_totals_match_with(target, &Reference::accounts_on(&fixed), events).await;
    let mut reference = Reference::accounts_on(&fixed);
    let epoch = chrono::DateTime::<chrono::Utc>::from_timestamp(1_577_836_800, 0).unwrap();
    reference.subscribe("chg-0", "saas-pro", epoch, Some(change), rust_decimal::Decimal::ZERO);
    reference.subscribe("chg-0", "telecom-standard", change, None, rust_decimal::Decimal::ZERO);
    reference.subscribe("late-0", "saas-pro", epoch, None, rust_decimal::Decimal::ZERO);
    let want = reference.rate(events);
    let mut checked = 0;
    for ((account, period, plan), part) in want.parts.iter().filter(|(k, _)| k.0 == "chg-0" || k.0 == "late-0") {
        let got = totals_at(target, account, period)
            .await
            .unwrap_or_else(|| panic!("no totals for {account} {period}"));
        let sub = got
            .subscriptions
            .iter()
            .find(|s| &s.plan == plan)
            .unwrap_or_else(|| panic!("{account} {period}: no {plan} in {:?}", got.subscriptions));
        assert_part_equal(&reference, &format!("{account} {period}"), sub, part);
        checked += 1;
    }
    assert!(checked >= 3, "chg-0 under two plans and late-0: {checked}");
}

/// One JSONL line per event, as `ratectl send` reads them.
fn jsonl(events: &[proto::UsageEvent]) -> String {
    let mut out = String::new();
    for e in events {
        let q = e.quantity.unwrap();
        let quantity = format!("{}.{:09}", q.units, q.nanos);
        let at = chrono::DateTime::<chrono::Utc>::from_timestamp_nanos(e.timestamp_unix_nanos)
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let attributes: serde_json::Map<String, serde_json::Value> = e
            .attributes
            .iter()
            .map(|a| (a.key.clone(), a.value.clone().into()))
            .collect();
        let line = serde_json::json!({
            "event_id": e.event_id, "account": e.account_id, "meter": e.meter,
            "quantity": quantity, "timestamp": at, "attributes": attributes,
        });
        out.push_str(&line.to_string());
        out.push('\n');
    }
    out
}

fn ratectl_send(file: &std::path::Path, target: &str) -> serde_json::Value {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ratectl"));
    command.args(["send", "--file", file.to_str().unwrap(), "--target", target, "--json"]);
    let out = output_within(&mut command, 300);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The acceptance run: `ratectl send` of 100,000 events with 10% duplicates, kill -9, a
/// restart, and the same file sent again: the totals are those of the first file alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_sent_twice_across_a_kill_9_counts_once() {
    let dir = TempDir::new("send-twice");
    let config = write_config(&dir.0, "");
    let events = generate_at(100_000, 0.1, 31, safe_now());
    let distinct: u64 = expected_totals(&events)
        .values()
        .flat_map(|m| m.values())
        .map(|v| v.1)
        .sum();
    let file = dir.0.join("usage.jsonl");
    std::fs::write(&file, jsonl(&events)).unwrap();
    let daemon = DaemonProcess::spawn(&config);
    let first = ratectl_send(&file, &daemon.target);
    assert_eq!(first["sent"], 100_000);
    assert_eq!(first["accepted"], distinct);
    assert_eq!(first["duplicate"], 100_000 - distinct);
    assert_eq!(first["rejected"], serde_json::json!({}));
    daemon.kill9();
    let daemon = DaemonProcess::spawn(&config);
    let second = ratectl_send(&file, &daemon.target);
    assert_eq!(second["accepted"], 0);
    assert_eq!(second["duplicate"], 100_000);
    assert_totals_match(&daemon.target, &events).await;
}

/// SIGTERM drains and exits 0; a restart with another shard count (checkpoints unusable, every
/// block replayed) serves the same totals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_a_new_shard_count_recovers_the_same_totals() {
    let dir = TempDir::new("sigterm");
    let config = write_config(&dir.0, "");
    let events = generate_at(3_000, 0.1, 41, safe_now());
    let mut pending = pending_batches(&events, 100);
    let mut daemon = DaemonProcess::spawn(&config);
    stream_some(&daemon.target, &mut pending, usize::MAX).await;
    assert!(pending.is_empty());
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(), Some(0), "a graceful stop exits 0");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("shards = 2", "shards = 3");
    std::fs::write(&config, text).unwrap();
    let daemon = DaemonProcess::spawn(&config);
    assert_totals_match(&daemon.target, &events).await;
}

/// A commit without a block (suspense only) still takes a sequence number for good: after a
/// restart the next commit gets a new one, so suspense entries are never overwritten, and a crash
/// after a graceful restart loses nothing from the replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_numbers_are_never_reused_across_restarts() {
    let dir = TempDir::new("stop-start-kill");
    let config = write_config(&dir.0, "");
    let events = generate_at(2_000, 0.0, 43, safe_now());
    let (first, second) = events.split_at(1_000);
    let unknown_meter = |id: &str| {
        let mut batch = proto::UsageBatch {
            batch_id: 1,
            events: vec![first[0].clone()],
        };
        batch.events[0].event_id = id.to_string();
        batch.events[0].meter = "no.such.meter".to_string();
        batch
    };
    let suspended = |target: String| async move {
        let mut admin = proto::admin_client::AdminClient::new(common::channel(&target).await);
        let request = proto::ListSuspenseRequest {
            page_size: 1000,
            ..Default::default()
        };
        let page = admin.list_suspense(request).await.unwrap().into_inner();
        let mut ids: Vec<String> = page.events.into_iter().map(|e| e.event.unwrap().event_id).collect();
        ids.sort();
        ids
    };
    let mut daemon = DaemonProcess::spawn(&config);
    let mut pending = pending_batches(first, 100);
    stream_some(&daemon.target, &mut pending, usize::MAX).await;
    let mut ingest = proto::ingest_client::IngestClient::new(common::channel(&daemon.target.clone()).await);
    ingest.submit(unknown_meter("bad-1")).await.unwrap();
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(), Some(0));
    assert!(
        dir.0.join("data/checkpoints/shard-0.ckpt").exists(),
        "a graceful stop writes checkpoints"
    );
    let daemon = DaemonProcess::spawn(&config);
    let mut ingest = proto::ingest_client::IngestClient::new(common::channel(&daemon.target.clone()).await);
    ingest.submit(unknown_meter("bad-2")).await.unwrap();
    assert_eq!(suspended(daemon.target.clone()).await, ["bad-1", "bad-2"]);
    let mut pending = pending_batches(second, 100);
    stream_some(&daemon.target, &mut pending, usize::MAX).await;
    daemon.kill9();
    let daemon = DaemonProcess::spawn(&config);
    assert_totals_match(&daemon.target, &events).await;
    assert_eq!(suspended(daemon.target.clone()).await, ["bad-1", "bad-2"]);
}
