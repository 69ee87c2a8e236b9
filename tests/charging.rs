//! Prepaid balances and online charging (docs/charging.md): grants computed by hand at a tariff
//! with a connect fee and 60/1 increments, stopped by a band change and by a tier boundary;
//! concurrent sessions on one balance; reservations that expire; prepaid ingest that debits or
//! rejects INSUFFICIENT_BALANCE (and is reprocessed after a top-up); every bad input with its
//! status; the balance equal to its ledger's sum, also after a restart, and a tampered balance
//! refused at start. The daemon's clock is pinned to Wednesday 2026-11-18 12:00 UTC.

mod common;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::*;
use ratingd::wire::proto::{
    self, admin_client::AdminClient, charging_client::ChargingClient, query_client::QueryClient,
};
use rust_decimal::Decimal;
use tonic::Code;

/// `pre-eur`: voice at 0.60 a minute (0.01 a second), half from 18:00, a 0.05 connect fee and
/// 60/1 increments; data graduated, 0.01 a MB for the first 100 MB of the period, then 0.05.
/// `pre-od` prices the same and lets prepaid usage overdraw.
const PLANS: &str = include_str!("data/prepaid-plans.toml");

fn catalogue() -> String {
    format!("{}{PLANS}", include_str!("../config/tariffs.toml"))
}

/// Accounts `pp-*` on pre-eur (prepaid when listed in `prepaid`), `od-*` on pre-od, prepaid.
fn config(dir: &TempDir, extra: &str, accounts: &[&str], prepaid: &[&str]) -> std::path::PathBuf {
    let mut subs = String::new();
    for a in accounts {
        let plan = if a.starts_with("od-") { "pre-od" } else { "pre-eur" };
        subs.push_str(&format!(
            "[[subscriptions]]\naccount = \"{a}\"\nplan = \"{plan}\"\nfrom = \"2026-01-01T00:00:00Z\"\nprepaid = {}\n",
            prepaid.contains(a)
        ));
    }
    write_config_with_tariffs(&dir.0, &format!("{extra}{subs}"), &catalogue()).0
}

fn utc(h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 18, h, m, s).unwrap()
}

fn q(units: i64) -> Option<proto::Quantity> {
    Some(proto::Quantity { units, nanos: 0 })
}

/// sled on a data dir this process just closed (its lock can outlive the last handle briefly).
fn open_sled(path: &std::path::Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(e) if std::time::Instant::now() < deadline => {
                assert!(e.to_string().contains("lock"), "{e}");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

async fn admin(d: &TestDaemon) -> AdminClient<tonic::transport::Channel> {
    AdminClient::new(channel(&d.target).await)
}

async fn charging(d: &TestDaemon) -> ChargingClient<tonic::transport::Channel> {
    ChargingClient::new(channel(&d.target).await)
}

async fn top_up(
    d: &TestDaemon,
    account: &str,
    amount: &str,
    id: &str,
) -> Result<proto::BalanceResponse, tonic::Status> {
    let request = proto::TopUpRequest {
        account_id: account.into(),
        amount: amount.into(),
        currency: "EUR".into(),
        id: id.into(),
        expires_at: String::new(),
    };
    admin(d).await.top_up(request).await.map(|r| r.into_inner())
}

/// (available, reserved) in EUR, both normalized.
async fn balance(d: &TestDaemon, account: &str) -> (Decimal, Decimal) {
    let r = QueryClient::new(channel(&d.target).await)
        .get_balance(proto::GetBalanceRequest {
            account_id: account.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let eur = r.balances.iter().find(|b| b.currency == "EUR").expect("a EUR balance");
    (dec(&eur.available).normalize(), dec(&eur.reserved).normalize())
}

async fn ledger(d: &TestDaemon, account: &str) -> Vec<proto::LedgerEntry> {
    ledger_of(&d.target, account).await
}

/// The ledger's sum (its effect on the available balance), checked against the balance.
async fn assert_ledger_sums_to_balance(d: &TestDaemon, account: &str) {
    let entries = ledger(d, account).await;
    let mut sum = Decimal::ZERO;
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.number, i as u64 + 1, "entries are numbered without gaps");
        let amount = dec(&e.amount);
        sum += match e.kind.as_str() {
            "topup" | "release" | "adjustment" => amount,
            "reservation" | "commit" | "expiry" => -amount,
            other => panic!("unknown kind {other}"),
        };
        assert_eq!(
            dec(&e.available_after),
            sum,
            "entry {} leaves what the sum says",
            e.number
        );
    }
    assert_eq!(
        balance(d, account).await.0,
        sum.normalize(),
        "balance = the ledger's sum"
    );
}

fn authorize(session: &str, account: &str, meter: &str, units: i64, started: DateTime<Utc>) -> proto::AuthorizeRequest {
    proto::AuthorizeRequest {
        session_id: session.into(),
        account_id: account.into(),
        meter: meter.into(),
        attributes: Vec::new(),
        requested_units: q(units),
        started_at: started.to_rfc3339(),
    }
}

/// A call at 0.05 + 0.01 a second (the first minute whole) is granted 187 s on 1.92 EUR; an
/// update re-grants within the same money; the end is rated once and debits exactly its charge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_is_granted_the_seconds_the_balance_pays() {
    let dir = TempDir::new("chg-call");
    let d = TestDaemon::start(&config(&dir, "", &["pp-1"], &[])).await;
    let topped = top_up(&d, "pp-1", "1.92", "t1").await.unwrap();
    assert!(!topped.already_applied);
    assert_eq!(balance(&d, "pp-1").await, (dec("1.92"), dec("0")));
    let mut c = charging(&d).await;

    // 0.05 + 0.01 x 187 = 1.92; 188 s would cost 1.93.
    let g = c
        .authorize(authorize("s1", "pp-1", "pre.voice", 600, utc(12, 0, 0)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((g.granted_units.as_str(), dec(&g.reserved)), ("187", dec("1.92")));
    assert_eq!(balance(&d, "pp-1").await, (dec("0"), dec("1.92")));

    // Nothing left for a second call.
    let refused = c
        .authorize(authorize("s2", "pp-1", "pre.voice", 60, utc(12, 0, 0)))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("first unit"), "{}", refused.message());

    // 120 s used, 100 more wanted: the whole call may cost 1.92, so 67 more (187 in all).
    let u = c
        .update(proto::UpdateRequest {
            session_id: "s1".into(),
            used_units: q(120),
            requested_units: q(100),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (u.granted_units.as_str(), u.total_granted_units.as_str()),
        ("67", "187")
    );

    // Ended at 150 s: 0.05 + 1.50 = 1.55 debited, the reservation released.
    let end = proto::TerminateRequest {
        session_id: "s1".into(),
        used_units: q(150),
    };
    let t = c.terminate(end.clone()).await.unwrap().into_inner();
    assert_eq!((dec(&t.charge), dec(&t.released)), (dec("1.55"), dec("1.92")));
    assert_eq!(
        (t.overdraft.as_str(), t.beyond_grant_units.as_str(), t.rejected),
        ("0.000000000", "0", 0)
    );
    assert_eq!(balance(&d, "pp-1").await, (dec("0.37"), dec("0")));
    // A resend answers the same and debits nothing more.
    assert_eq!(c.terminate(end).await.unwrap().into_inner(), t);
    assert_eq!(balance(&d, "pp-1").await, (dec("0.37"), dec("0")));

    // The session is one record of the normal path: totals and an explanation.
    let totals = d.totals("pp-1", "2026-11").await.unwrap();
    assert_eq!(totals.total_charge, "1.550000000");
    let explained = explain(&d.target, "pp-1", "s1").await;
    assert!(
        explained.explanation_text.contains("connect"),
        "{}",
        explained.explanation_text
    );

    let kinds: Vec<String> = ledger(&d, "pp-1").await.into_iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        ["topup", "reservation", "release", "reservation", "release", "commit"]
    );
    assert_ledger_sums_to_balance(&d, "pp-1").await;
    d.stop().await;
}

/// A grant stops where the money does: at 18:00 the voice price halves, so 2.00 EUR from 17:58
/// buys 120 s at 0.01 and 150 s at 0.005; 0.22 EUR of data at 80 MB into the period buys the 20 MB
/// left at 0.01 and none at 0.05.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_stops_at_a_band_change_and_at_a_tier_boundary() {
    let dir = TempDir::new("chg-bands");
    let d = TestDaemon::start(&config(&dir, "", &["pp-2", "pp-3"], &[])).await;
    top_up(&d, "pp-2", "2.00", "t1").await.unwrap();
    let mut c = charging(&d).await;
    // The call began at 17:58 and is authorized a minute later.
    d.running.as_ref().unwrap().clock.advance(utc(17, 59, 0) - d.now());
    // 0.05 + 1.20 (120 s of day) + 0.005 x 150 (evening) = 2.00.
    let g = c
        .authorize(authorize("band", "pp-2", "pre.voice", 3600, utc(17, 58, 0)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((g.granted_units.as_str(), dec(&g.reserved)), ("270", dec("2.00")));

    // 80 MB rated before (postpaid subscription, so not paid from the balance).
    let ack = d
        .submit(1, vec![event("e1", "pp-3", "pre.data", 80, 0, utc(11, 0, 0), &[])])
        .await;
    assert_eq!(ack.accepted, 1);
    top_up(&d, "pp-3", "0.22", "t1").await.unwrap();
    let g = c
        .authorize(authorize("data", "pp-3", "pre.data", 500, utc(12, 0, 0)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((g.granted_units.as_str(), dec(&g.reserved)), ("20", dec("0.20")));
    assert_eq!(balance(&d, "pp-3").await, (dec("0.02"), dec("0.20")));
    d.stop().await;
}

/// Twenty sessions asking at once for 120 s (1.25 EUR each) on 10.00 EUR: eight are granted in
/// full, the rest denied; nothing more is reserved than the balance holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sessions_never_get_more_than_the_balance_holds() {
    let dir = TempDir::new("chg-concurrent");
    let d = TestDaemon::start(&config(&dir, "", &["pp-4"], &[])).await;
    top_up(&d, "pp-4", "10.00", "t1").await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let target = d.target.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = ChargingClient::new(channel(&target).await);
            c.authorize(authorize(&format!("c{i}"), "pp-4", "pre.voice", 120, utc(12, 0, 0)))
                .await
                .map(|r| r.into_inner())
        }));
    }
    let mut reserved = Decimal::ZERO;
    let (mut granted, mut denied) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(g) => {
                granted += 1;
                reserved += dec(&g.reserved);
            }
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                denied += 1;
            }
        }
    }
    assert_eq!((granted, denied, reserved), (8, 12, dec("10.00")));
    assert_eq!(balance(&d, "pp-4").await, (dec("0"), dec("10")));
    assert_ledger_sums_to_balance(&d, "pp-4").await;
    d.stop().await;
}

/// A reservation not renewed within the TTL gives its money back; the session's late end is
/// still rated and debited. Credit topped up with an expiry is spent first and its rest expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_expires_and_a_late_terminate_still_rates() {
    let dir = TempDir::new("chg-expiry");
    let d = TestDaemon::start(&config(&dir, "reservation_ttl_seconds = 60\n", &["pp-5"], &["pp-5"])).await;
    top_up(&d, "pp-5", "5.00", "t1").await.unwrap();
    let mut c = charging(&d).await;
    let g = c
        .authorize(authorize("x1", "pp-5", "pre.voice", 300, utc(12, 0, 0)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dec(&g.reserved), dec("3.05"));
    assert_eq!(balance(&d, "pp-5").await, (dec("1.95"), dec("3.05")));
    d.running.as_ref().unwrap().clock.advance(Duration::seconds(61));
    // The read sweeps the account first: the money is back.
    assert_eq!(balance(&d, "pp-5").await, (dec("5.00"), dec("0")));
    let entries = ledger(&d, "pp-5").await;
    let last = entries.last().unwrap();
    assert_eq!(
        (last.kind.as_str(), last.detail.as_str()),
        ("release", "the reservation of session x1 expired")
    );
    // 100 s used: 0.05 + 1.00, debited although nothing was held any more.
    let t = c
        .terminate(proto::TerminateRequest {
            session_id: "x1".into(),
            used_units: q(100),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((dec(&t.charge), dec(&t.released)), (dec("1.05"), dec("0")));
    assert_eq!(balance(&d, "pp-5").await, (dec("3.95"), dec("0")));

    // Credit with an expiry is spent first; what is left of it then expires.
    let promo = proto::TopUpRequest {
        account_id: "pp-5".into(),
        amount: "2.00".into(),
        currency: "EUR".into(),
        id: "promo".into(),
        expires_at: (d.now() + Duration::hours(1)).to_rfc3339(),
    };
    admin(&d).await.top_up(promo.clone()).await.unwrap();
    let ack = d
        .submit(1, vec![event("v1", "pp-5", "pre.voice", 60, 0, utc(11, 0, 0), &[])])
        .await;
    assert_eq!(ack.accepted, 1);
    assert_eq!(balance(&d, "pp-5").await, (dec("5.30"), dec("0")));
    d.running.as_ref().unwrap().clock.advance(Duration::hours(1));
    // 2.00 - 0.65 of the promotion expired: 3.95 left, all of it the first top-up's.
    assert_eq!(balance(&d, "pp-5").await, (dec("3.95"), dec("0")));
    let last = ledger(&d, "pp-5").await.pop().unwrap();
    assert_eq!(
        (last.kind.as_str(), last.amount.as_str(), last.id.as_str()),
        ("expiry", "1.350000000", "promo")
    );
    // Sent again after its expiry: the same top-up, nothing changes; a new one expiring in the
    // past is refused.
    assert!(
        admin(&d)
            .await
            .top_up(promo)
            .await
            .unwrap()
            .into_inner()
            .already_applied
    );
    let stale = proto::TopUpRequest {
        account_id: "pp-5".into(),
        amount: "2.00".into(),
        currency: "EUR".into(),
        id: "stale".into(),
        expires_at: (d.now() - Duration::minutes(1)).to_rfc3339(),
    };
    assert_eq!(
        admin(&d).await.top_up(stale).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_ledger_sums_to_balance(&d, "pp-5").await;
    d.stop().await;
}

/// A prepaid subscription's records are paid in their commit; one the balance cannot pay is
/// rejected INSUFFICIENT_BALANCE into suspense and rated after a top-up; a plan that allows
/// overdraft rates it and records the overdraft. A resend is a duplicate and pays nothing; a void
/// gives the charge back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepaid_ingest_debits_or_rejects_until_a_top_up() {
    let dir = TempDir::new("chg-prepaid");
    let d = TestDaemon::start(&config(&dir, "", &["pp-6", "od-1"], &["pp-6", "od-1"])).await;
    top_up(&d, "pp-6", "1.00", "t1").await.unwrap();
    // 60 s: 0.05 + 0.60 = 0.65 each.
    let calls = vec![
        event("v1", "pp-6", "pre.voice", 60, 0, utc(10, 0, 0), &[]),
        event("v2", "pp-6", "pre.voice", 60, 0, utc(10, 5, 0), &[]),
    ];
    let ack = d.submit(1, calls.clone()).await;
    assert_eq!((ack.accepted, ack.rejected), (1, 1));
    let rejected = &ack.results[0];
    assert_eq!(rejected.reason, proto::RejectReason::InsufficientBalance as i32);
    assert!(rejected.detail.contains("pays 0.35"), "{}", rejected.detail);
    assert_eq!(balance(&d, "pp-6").await, (dec("0.35"), dec("0")));
    assert_eq!(d.submit(2, calls[..1].to_vec()).await.duplicate, 1);
    assert_eq!(balance(&d, "pp-6").await, (dec("0.35"), dec("0")));

    top_up(&d, "pp-6", "1.00", "t2").await.unwrap();
    let done = admin(&d)
        .await
        .reprocess_suspense(proto::ReprocessSuspenseRequest {
            reason: proto::RejectReason::InsufficientBalance as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((done.reprocessed, done.accepted), (1, 1));
    assert_eq!(balance(&d, "pp-6").await, (dec("0.70"), dec("0")));
    assert_eq!(d.totals("pp-6", "2026-11").await.unwrap().total_charge, "1.300000000");
    assert_ledger_sums_to_balance(&d, "pp-6").await;

    // A void of a paid record gives its charge back, under the correction's id; again: nothing.
    let void = proto::VoidEventRequest {
        account_id: "pp-6".into(),
        event_id: "v1".into(),
        reason: "test call".into(),
        id: "void-v1".into(),
    };
    admin(&d).await.void_event(void.clone()).await.unwrap();
    admin(&d).await.void_event(void).await.unwrap();
    assert_eq!(balance(&d, "pp-6").await, (dec("1.35"), dec("0")));
    let last = ledger(&d, "pp-6").await.pop().unwrap();
    assert_eq!(
        (last.kind.as_str(), last.amount.as_str(), last.id.as_str()),
        ("adjustment", "0.650000000", "void-v1")
    );
    assert_ledger_sums_to_balance(&d, "pp-6").await;

    // Overdraft allowed: rated, the balance below zero, the overdraft said in the ledger.
    let ack = d
        .submit(3, vec![event("o1", "od-1", "pre.voice", 60, 0, utc(10, 0, 0), &[])])
        .await;
    assert_eq!(ack.accepted, 1);
    assert_eq!(balance(&d, "od-1").await, (dec("-0.65"), dec("0")));
    let entries = ledger(&d, "od-1").await;
    assert!(entries[0].detail.contains("overdraft 0.65"), "{:?}", entries[0]);
    d.stop().await;
}

/// Every bad input has its status, and nothing of it is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_status() {
    let dir = TempDir::new("chg-bad");
    let d = TestDaemon::start(&config(&dir, "", &["pp-7", "pp-8"], &[])).await;
    let code = |r: Result<proto::BalanceResponse, tonic::Status>| r.unwrap_err().code();
    assert_eq!(code(top_up(&d, "pp-7", "0", "t0").await), Code::InvalidArgument);
    assert_eq!(code(top_up(&d, "pp-7", "-5", "t0").await), Code::InvalidArgument);
    assert_eq!(code(top_up(&d, "pp-7", "1.001", "t0").await), Code::InvalidArgument);
    let usd = admin(&d)
        .await
        .top_up(proto::TopUpRequest {
            account_id: "pp-7".into(),
            amount: "5".into(),
            currency: "USD".into(),
            id: "t0".into(),
            expires_at: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(usd.code(), Code::InvalidArgument);
    assert!(usd.message().contains("billed in no plan in USD"), "{}", usd.message());
    top_up(&d, "pp-7", "5", "t1").await.unwrap();
    assert!(top_up(&d, "pp-7", "5", "t1").await.unwrap().already_applied);
    assert_eq!(code(top_up(&d, "pp-7", "6", "t1").await), Code::AlreadyExists);
    assert_eq!(balance(&d, "pp-7").await, (dec("5"), dec("0")));

    let mut c = charging(&d).await;
    let status = |r: Result<tonic::Response<proto::GrantResponse>, tonic::Status>| r.unwrap_err().code();
    assert_eq!(
        status(
            c.authorize(authorize("b1", "pp-7", "no.such.meter", 60, utc(12, 0, 0)))
                .await
        ),
        Code::InvalidArgument
    );
    // pp-8 never topped up and has no credit limit.
    assert_eq!(
        status(
            c.authorize(authorize("b1", "pp-8", "pre.voice", 60, utc(12, 0, 0)))
                .await
        ),
        Code::NotFound
    );
    assert_eq!(
        status(
            c.authorize(authorize(
                "b1",
                "pp-7",
                "pre.voice",
                60,
                utc(12, 0, 0) - Duration::days(400)
            ))
            .await
        ),
        Code::InvalidArgument
    );
    let update = |id: &str| proto::UpdateRequest {
        session_id: id.into(),
        used_units: q(10),
        requested_units: q(10),
    };
    assert_eq!(status(c.update(update("nope")).await), Code::NotFound);
    let end = |id: &str, used| proto::TerminateRequest {
        session_id: id.into(),
        used_units: q(used),
    };
    assert_eq!(c.terminate(end("nope", 1)).await.unwrap_err().code(), Code::NotFound);

    // Granted 60 s (0.65), used 500: rated in full (0.05 + 5.00), past the balance by 0.70.
    let g = c
        .authorize(authorize("b2", "pp-7", "pre.voice", 60, utc(12, 0, 0)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g.granted_units, "60");
    assert_eq!(
        status(
            c.authorize(authorize("b2", "pp-8", "pre.voice", 60, utc(12, 0, 0)))
                .await
        ),
        Code::AlreadyExists
    );
    let t = c.terminate(end("b2", 500)).await.unwrap().into_inner();
    assert_eq!(
        (dec(&t.charge), dec(&t.overdraft), t.beyond_grant_units.as_str()),
        (dec("5.05"), dec("0.05"), "440")
    );
    assert_eq!(balance(&d, "pp-7").await, (dec("-0.05"), dec("0")));
    // Ended: an update is refused, a resent end answers the same.
    assert_eq!(status(c.update(update("b2")).await), Code::FailedPrecondition);
    assert_eq!(c.terminate(end("b2", 999)).await.unwrap().into_inner(), t);
    assert_ledger_sums_to_balance(&d, "pp-7").await;
    d.stop().await;
}

/// Balances, open sessions and the ledger survive a restart (the start rebuilds each balance from
/// its ledger, checking every entry); an account whose ledger was edited on disk is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balances_survive_a_restart_and_a_tampered_one_is_refused() {
    let dir = TempDir::new("chg-restart");
    let path = config(&dir, "", &["pp-9", "pp-10"], &[]);
    let d = TestDaemon::start(&path).await;
    top_up(&d, "pp-9", "3.00", "t1").await.unwrap();
    top_up(&d, "pp-10", "3.00", "t1").await.unwrap();
    let mut c = charging(&d).await;
    c.authorize(authorize("r1", "pp-9", "pre.voice", 60, utc(12, 0, 0)))
        .await
        .unwrap();
    // A prepaid subscription through the Admin API keeps its flag across the restart.
    let prepaid = proto::Subscription {
        account_id: "pp-12".into(),
        plan_id: "pre-eur".into(),
        from: "2026-01-01T00:00:00Z".into(),
        prepaid: true,
        ..Default::default()
    };
    admin(&d).await.upsert_subscription(prepaid).await.unwrap();
    d.stop().await;

    let d = TestDaemon::start(&path).await;
    let got = admin(&d)
        .await
        .get_subscriptions(proto::GetSubscriptionsRequest {
            account_id: "pp-12".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.subscriptions[0].prepaid);
    // So its usage is paid from a balance it does not have: refused.
    let ack = d
        .submit(1, vec![event("p1", "pp-12", "pre.voice", 60, 0, utc(10, 0, 0), &[])])
        .await;
    assert_eq!(ack.results[0].reason, proto::RejectReason::InsufficientBalance as i32);
    assert_eq!(balance(&d, "pp-9").await, (dec("2.35"), dec("0.65")));
    let t = charging(&d)
        .await
        .terminate(proto::TerminateRequest {
            session_id: "r1".into(),
            used_units: q(30),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dec(&t.charge), dec("0.65"));
    assert_eq!(balance(&d, "pp-9").await, (dec("2.35"), dec("0")));
    assert_ledger_sums_to_balance(&d, "pp-9").await;
    d.stop().await;

    // Someone edits pp-10's top-up on disk to 6.00: it no longer leaves the 3.00 it says.
    {
        use ratingd::store::balance::{decode_entry, encode_entry};
        let db = open_sled(&dir.0.join("data"));
        let (key, mut entry) = db
            .scan_prefix(b"l/")
            .map(|item| item.unwrap())
            .map(|(k, v)| (k, decode_entry(&v).unwrap()))
            .find(|(_, e)| e.account == "pp-10")
            .expect("pp-10's top-up");
        entry.amount = dec("6.00");
        db.insert(key, encode_entry(&entry)).unwrap();
        db.flush().unwrap();
    }
    let d = TestDaemon::start(&path).await;
    let refused = QueryClient::new(channel(&d.target).await)
        .get_balance(proto::GetBalanceRequest {
            account_id: "pp-10".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::DataLoss, "{refused:?}");
    assert!(
        refused.message().contains("does not match its ledger"),
        "{}",
        refused.message()
    );
    assert_eq!(balance(&d, "pp-9").await, (dec("2.35"), dec("0")));
    d.stop().await;
}

/// The projection: the balance hash follows the committed balance; crossing a low-balance
/// threshold and reaching zero raise one alert each on `<prefix>:alerts`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balances_and_their_alerts_reach_redis() {
    let dir = TempDir::new("chg-redis");
    let redis = RedisServer::start(free_port());
    let extra = format!(
        "[redis]\nurl = \"{}\"\nprefix = \"r\"\nflush_interval_ms = 20\n",
        redis.url()
    );
    let d = TestDaemon::start(&config(&dir, &extra, &["pp-11"], &["pp-11"])).await;
    let limits = proto::SetBalanceLimitsRequest {
        account_id: "pp-11".into(),
        currency: "EUR".into(),
        credit_limit: String::new(),
        low_balance_thresholds: vec!["1.00".into()],
        set_low_balance_thresholds: true,
    };
    admin(&d).await.set_balance_limits(limits).await.unwrap();
    top_up(&d, "pp-11", "2.00", "t1").await.unwrap();
    // Two calls of 0.65: 1.35 left, then 0.70 (below 1.00: low balance).
    for (i, at) in [utc(10, 0, 0), utc(10, 5, 0)].into_iter().enumerate() {
        let ack = d
            .submit(
                i as u64,
                vec![event(&format!("v{i}"), "pp-11", "pre.voice", 60, 0, at, &[])],
            )
            .await;
        assert_eq!(ack.accepted, 1);
    }
    // 65 s (0.05 + 0.65) takes the rest: nothing left to spend.
    let g = charging(&d)
        .await
        .authorize(authorize("s1", "pp-11", "pre.voice", 600, utc(12, 0, 0)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g.granted_units, "65");

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let alerts = loop {
        let alerts = xrange(&redis.url(), "r:alerts");
        if alerts.len() >= 2 {
            break alerts;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "two balance alerts, have {alerts:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let kinds: Vec<&str> = alerts.iter().map(|a| a["kind"].as_str()).collect();
    assert_eq!(kinds, ["low_balance", "balance_exhausted"]);
    assert_eq!(
        (alerts[0]["threshold"].as_str(), dec(&alerts[0]["available"])),
        ("1", dec("0.70"))
    );
    assert_eq!(alerts[0]["alert_id"], "pp-11|balance:EUR|low_balance:1|3");
    assert_eq!(dec(&alerts[1]["available"]), Decimal::ZERO);

    wait_for_flushes(&redis.url(), "r", 2).await;
    let mut c = redis::Client::open(redis.url()).unwrap().get_connection().unwrap();
    let hash: std::collections::HashMap<String, String> =
        redis::cmd("HGETALL").arg("r:balance:{pp-11}").query(&mut c).unwrap();
    assert_eq!(dec(&hash["EUR:available"]), Decimal::ZERO);
    assert_eq!(dec(&hash["EUR:reserved"]), dec("0.70"));
    assert_eq!(dec(&hash["EUR:credit_limit"]), Decimal::ZERO);
    assert_eq!(xrange(&redis.url(), "r:alerts").len(), 2, "each alert once");
    d.stop().await;
    // Announced alerts leave sled: the outbox holds only what is still to announce.
    assert_eq!(open_sled(&dir.0.join("data")).scan_prefix(b"e/").count(), 0);
}

/// The worked call flow of docs/charging.md, on the shipped telecom-standard plan: a call to +44
/// at a peak hour (0.02 a minute, a 0.01 connect fee, 60/1 increments) on 0.10 EUR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worked_call_flow_of_the_docs() {
    let dir = TempDir::new("chg-docs");
    let path = write_config(&dir.0, "");
    let d = TestDaemon::start(&path).await;
    top_up(&d, "tel-3", "0.10", "2026-11-18-card-1").await.unwrap();
    let mut c = charging(&d).await;
    let mut ask = authorize("call-0001", "tel-3", "voice.seconds", 600, utc(12, 0, 0));
    ask.attributes = vec![proto::Attribute {
        key: "destination".into(),
        value: "+441632960000".into(),
    }];
    let g = c.authorize(ask).await.unwrap().into_inner();
    assert_eq!((g.granted_units.as_str(), g.reserved.as_str()), ("270", "0.100000000"));
    let u = c
        .update(proto::UpdateRequest {
            session_id: "call-0001".into(),
            used_units: q(200),
            requested_units: q(300),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (u.granted_units.as_str(), u.total_granted_units.as_str()),
        ("70", "270")
    );
    let t = c
        .terminate(proto::TerminateRequest {
            session_id: "call-0001".into(),
            used_units: q(250),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((t.charge.as_str(), t.released.as_str()), ("0.093333333", "0.100000000"));
    assert_eq!(balance(&d, "tel-3").await, (dec("0.006666667"), dec("0")));
    let rows: Vec<(String, String, String)> = ledger(&d, "tel-3")
        .await
        .into_iter()
        .map(|e| (e.kind, e.amount, e.available_after))
        .collect();
    let want = [
        ("topup", "0.10", "0.100000000"),
        ("reservation", "0.100000000", "0.000000000"),
        ("release", "0.100000000", "0.100000000"),
        ("reservation", "0.100000000", "0.000000000"),
        ("release", "0.100000000", "0.100000000"),
        ("commit", "0.093333333", "0.006666667"),
    ];
    let want: Vec<(String, String, String)> = want
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    assert_eq!(rows, want);
    d.stop().await;
}
