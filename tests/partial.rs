//! Partial records through the daemon (docs/mediation.md, "Partial records"): a long call in
//! three parts is charged as the whole call on the shipped telecom plan (one connect fee, 60/1
//! increments, the peak/off-peak boundary at 20:00 Berlin inside the call); parts shuffled and
//! duplicated give the same charge; a part with other content, a part after the merge and a part
//! beyond the bounds go to suspense; a session without its final part is rated incomplete at its
//! timeout (on the moved clock); open sessions survive a restart and SIGKILL, and are charged
//! once. The in-process daemon's clock is pinned to Wednesday 2026-11-18 12:00 UTC.

mod common;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::*;
use ratingd::wire::proto;

/// The call: Tuesday 2026-11-17 19:50 Berlin (18:50 UTC), 1,387 s to a UK number: 600 s of peak
/// before 20:00, 787 s of off-peak after.
fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 17, 18, 50, 0).unwrap()
}

const TO: (&str, &str) = ("destination", "+441632960000");

/// Part `seq` of session `session`: the parts of the call are 600 s from 19:50, 600 s from
/// 20:00 and the final 187 s from 20:10 (Berlin).
fn part(account: &str, session: &str, seq: u32, at: DateTime<Utc>) -> proto::UsageEvent {
    let (offset, seconds, last) = match seq {
        1 => (0, 600, "false"),
        2 => (600, 600, "false"),
        _ => (1_200, 187, "true"),
    };
    let seq_text = seq.to_string();
    event(
        &format!("{session}-{seq}"),
        account,
        "voice.seconds",
        seconds,
        0,
        at + Duration::seconds(offset),
        &[
            TO,
            ("partial_session", session),
            ("partial_seq", &seq_text),
            ("partial_final", last),
        ],
    )
}

fn config(dir: &TempDir, extra: &str) -> std::path::PathBuf {
    write_config(
        &dir.0,
        &format!("[mediation.partial]\ntimeout_seconds = 600\nmax_parts = 4\n{extra}"),
    )
}

async fn record_of(target: &str, account: &str, id: &str) -> Option<proto::RatedRecord> {
    records_from(target, account, None)
        .await
        .into_iter()
        .find(|r| r.event_id == id)
}

fn attribute<'a>(r: &'a proto::RatedRecord, key: &str) -> Option<&'a str> {
    r.attributes.iter().find(|a| a.key == key).map(|a| a.value.as_str())
}

#[tokio::test]
async fn a_long_call_in_three_parts_is_charged_as_the_whole_call() {
    let dir = TempDir::new("partial-three");
    let d = TestDaemon::start(&config(&dir, "")).await;
    let whole = event("whole", "tel-1", "voice.seconds", 1_387, 0, start(), &[TO]);
    assert_eq!(d.submit(1, vec![whole]).await.accepted, 1);
    let whole = record_of(&d.target, "tel-1", "whole").await.unwrap();
    // By hand: a 0.01 connect fee; 600 s of peak at 0.02 a minute = 0.20; 787 s of off-peak at
    // half (0.01 a minute) = 0.131166666(6), to 9 places 0.131166667. 1,387 s is past the first
    // 60 s and whole seconds after, so the increments change nothing.
    assert_eq!(whole.charge, "0.341166667");

    // Parts 1 and 2 are held: accepted, durable, no record and no totals yet.
    let ack = d
        .submit(
            2,
            vec![part("tel-2", "c-1", 1, start()), part("tel-2", "c-1", 2, start())],
        )
        .await;
    assert_eq!((ack.accepted, ack.duplicate, ack.rejected), (2, 0, 0), "{ack:?}");
    assert!(records_from(&d.target, "tel-2", None).await.is_empty());
    // The final part completes the session: one record, the whole call's charge.
    let ack = d.submit(3, vec![part("tel-2", "c-1", 3, start())]).await;
    assert_eq!((ack.accepted, ack.duplicate, ack.rejected), (1, 0, 0), "{ack:?}");
    let merged = record_of(&d.target, "tel-2", "partial:c-1").await.unwrap();
    assert_eq!(
        (merged.quantity.as_str(), merged.charge.as_str()),
        ("1387", whole.charge.as_str())
    );
    assert_eq!(merged.timestamp, start().to_rfc3339());
    assert_eq!(attribute(&merged, "partial_parts"), Some("3"));
    assert_eq!(attribute(&merged, "partial_incomplete"), None);
    assert_eq!(records_from(&d.target, "tel-2", None).await.len(), 1);
    let explained = explain(&d.target, "tel-2", "partial:c-1").await;
    assert!(
        explained.explanation_text.contains("off-peak"),
        "{}",
        explained.explanation_text
    );
    d.stop().await;
}

#[tokio::test]
async fn parts_shuffled_and_duplicated_give_the_same_charge() {
    let dir = TempDir::new("partial-shuffled");
    let d = TestDaemon::start(&config(&dir, "")).await;
    let p = |seq| part("tel-3", "c-2", seq, start());
    let ack = d.submit(1, vec![p(3), p(1), p(3)]).await;
    assert_eq!((ack.accepted, ack.duplicate), (2, 1), "{ack:?}");
    let ack = d.submit(2, vec![p(1), p(2)]).await;
    assert_eq!((ack.accepted, ack.duplicate), (1, 1), "{ack:?}");
    let merged = record_of(&d.target, "tel-3", "partial:c-2").await.unwrap();
    assert_eq!(
        (merged.quantity.as_str(), merged.charge.as_str()),
        ("1387", "0.341166667")
    );
    // A part resent after the merge (its ack was lost): a DUPLICATE. A part the session never
    // had, after the merge: suspense, as a part of a merged session.
    let ack = d.submit(3, vec![p(2)]).await;
    assert_eq!((ack.duplicate, ack.rejected), (1, 0), "{ack:?}");
    let mut late = p(2);
    late.event_id = "c-2-late".into();
    let ack = d.submit(4, vec![late]).await;
    assert_eq!(ack.rejected, 1);
    assert_eq!(ack.results[0].reason, proto::RejectReason::Conflict as i32);
    assert_eq!(
        ack.results[0].detail,
        "session \"c-2\" was merged and rated already (event \"partial:c-2\"): part 2 came after the merge"
    );
    let t = d.totals("tel-3", "2026-11").await.unwrap();
    assert_eq!(t.total_charge, "0.341166667", "charged once");
    d.stop().await;
}

#[tokio::test]
async fn a_contradicting_part_and_a_part_past_the_bounds_go_to_suspense() {
    let dir = TempDir::new("partial-bad");
    let d = TestDaemon::start(&config(&dir, "")).await;
    // Part 1 again under another id and with other content: the session's conflict.
    let mut other = part("tel-4", "c-3", 1, start());
    other.event_id = "c-3-1b".into();
    other.quantity = Some(proto::Quantity { units: 601, nanos: 0 });
    let extra = |seq: u32| {
        let mut e = part("tel-4", "c-3", 2, start());
        e.event_id = format!("c-3-{seq}");
        for a in &mut e.attributes {
            if a.key == "partial_seq" {
                a.value = seq.to_string();
            }
        }
        e
    };
    let ack = d
        .submit(
            1,
            vec![
                part("tel-4", "c-3", 1, start()),
                other,
                extra(2),
                extra(3),
                extra(4),
                extra(5),
            ],
        )
        .await;
    assert_eq!((ack.accepted, ack.rejected), (4, 2), "{ack:?}");
    assert_eq!(ack.results[0].reason, proto::RejectReason::Conflict as i32);
    assert_eq!(
        ack.results[0].detail,
        "part 1 of session \"c-3\" was received before with other content"
    );
    assert_eq!(ack.results[1].reason, proto::RejectReason::InvalidField as i32);
    assert!(
        ack.results[1].detail.contains("already holds 4 parts"),
        "{}",
        ack.results[1].detail
    );
    // Part 1's own id with other content: the id's conflict.
    let mut same_id = part("tel-4", "c-3", 1, start());
    same_id.quantity = Some(proto::Quantity { units: 1, nanos: 0 });
    let ack = d.submit(3, vec![same_id]).await;
    assert_eq!(
        ack.results[0].detail,
        "event_id \"c-3-1\" was received before with other content (part 1 of session \"c-3\")"
    );
    // A malformed part is refused at the door.
    let mut bad = part("tel-4", "c-4", 1, start());
    bad.attributes.retain(|a| a.key != "partial_seq");
    let ack = d.submit(2, vec![bad]).await;
    assert_eq!(ack.results[0].detail, "a part needs partial_seq, a whole number from 1");
    d.stop().await;
}

#[tokio::test]
async fn a_session_without_its_final_part_is_rated_incomplete_at_its_timeout() {
    let dir = TempDir::new("partial-timeout");
    let d = TestDaemon::start(&config(&dir, "")).await;
    let ack = d
        .submit(
            1,
            vec![part("tel-5", "c-5", 1, start()), part("tel-5", "c-5", 3, start())],
        )
        .await;
    assert_eq!(ack.accepted, 2);
    // Before the timeout nothing is rated, also across a restart (the parts are on disk).
    d.running.as_ref().unwrap().clock.advance(Duration::seconds(300));
    d.stop().await;
    let d = TestDaemon::start(&config(&dir, "")).await;
    assert!(records_from(&d.target, "tel-5", None).await.is_empty());
    // 600 s after the last part (the clock is pinned again at start: moved past it).
    d.running.as_ref().unwrap().clock.advance(Duration::seconds(601));
    let target = d.target.clone();
    wait_until(20, "the session to time out", || {
        let target = target.clone();
        async move { record_of(&target, "tel-5", "partial:c-5").await.is_some() }
    })
    .await;
    let merged = record_of(&d.target, "tel-5", "partial:c-5").await.unwrap();
    assert_eq!(merged.quantity, "787");
    assert_eq!(attribute(&merged, "partial_incomplete"), Some("true"));
    assert_eq!(attribute(&merged, "partial_missing"), Some("2"));
    assert_eq!(attribute(&merged, "partial_parts"), Some("2"));
    d.stop().await;
}

#[test]
fn sigkill_with_open_sessions_loses_no_part_and_charges_once() {
    let dir = TempDir::new("partial-kill");
    let config = config(&dir, "");
    // The built binary runs on the system clock: the call is an hour before now, and the
    // charge is compared with the same call sent whole.
    let at = safe_now() - Duration::hours(1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let submit = |target: &str, id: u64, events: Vec<proto::UsageEvent>| {
        rt.block_on(async {
            let mut c = proto::ingest_client::IngestClient::new(channel(target).await);
            within(20, "an ack", c.submit(proto::UsageBatch { batch_id: id, events }))
                .await
                .unwrap()
                .into_inner()
        })
    };
    let d = DaemonProcess::spawn(&config);
    let whole = event("whole", "tel-6", "voice.seconds", 1_387, 0, at, &[TO]);
    assert_eq!(submit(&d.target, 1, vec![whole]).accepted, 1);
    let ack = submit(
        &d.target,
        2,
        vec![part("tel-7", "k-1", 2, at), part("tel-7", "k-1", 3, at)],
    );
    assert_eq!(ack.accepted, 2);
    d.kill9();
    let d = DaemonProcess::spawn(&config);
    // The agent resends what it is unsure of, and the first part.
    let ack = submit(
        &d.target,
        2,
        vec![part("tel-7", "k-1", 2, at), part("tel-7", "k-1", 1, at)],
    );
    assert_eq!((ack.accepted, ack.duplicate), (1, 1), "{ack:?}");
    d.kill9();
    let d = DaemonProcess::spawn(&config);
    // Merged before the kill; the part's claim was not in a checkpoint yet: a resend of it goes
    // to suspense as a part after the merge (never charged again).
    let ack = submit(&d.target, 3, vec![part("tel-7", "k-1", 3, at)]);
    assert_eq!(ack.duplicate + ack.rejected, 1, "{ack:?}");
    let (whole, merged) = rt.block_on(async {
        (
            records_from(&d.target, "tel-6", None).await,
            records_from(&d.target, "tel-7", None).await,
        )
    });
    assert_eq!(merged.len(), 1, "{merged:?}");
    assert_eq!(
        (merged[0].event_id.as_str(), merged[0].charge.as_str()),
        ("partial:k-1", whole[0].charge.as_str())
    );
    d.kill9();
}

#[test]
fn bad_partial_bounds_are_refused_with_their_path() {
    let dir = TempDir::new("partial-config");
    let config = write_config(
        &dir.0,
        "[mediation.partial]\ntimeout_seconds = 0\nmax_parts = 0\nmax_quantity = \"-5\"\n",
    );
    let errors = ratingd::config::Config::load(&config).expect_err("refused").0;
    assert_eq!(
        errors,
        [
            "mediation.partial.timeout_seconds: must be at least 1",
            "mediation.partial.max_parts: must be 1..=10000",
            "mediation.partial.max_quantity: \"-5\" is not a decimal above 0",
        ]
    );
}
