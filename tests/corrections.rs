//! Corrections (docs/corrections.md): a tariff fixed by a version that `supersedes` the wrong
//! one and `Admin.Rerate` (dry run, exactly once by id, refused with another selector), a void
//! that moves an account back below a volume tier, an amend across a time-of-day band, a closed
//! period corrected in the open one, the chain in ListRatedRecords and ExplainRecord, and the
//! totals after a restart. Every figure is computed by hand in the comments. The daemon's clock is
//! pinned to Wednesday 2026-11-18 12:00 UTC.

mod common;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::*;
use ratingd::wire::proto::{self, admin_client::AdminClient, query_client::QueryClient};

/// The meters of every version of the test plan: a volume meter (10 a unit up to 100 units, 8 a
/// unit for all of them from 100) and a per-minute voice meter (0.60 a minute, half from 18:00,
/// a 0.05 connect fee, 60/1 increments).
const OTHER_METERS: &str = r#"
[plans.versions.meters."fix.storage"]
model = "volume"
tiers = [{ up_to = 100, price = "10" }, { price = "8" }]
[plans.versions.meters."fix.voice"]
model = "per_unit"
per = 60
price = "0.60"
duration = true
increments = { first = 60, next = 1 }
connect_fee = "0.05"
[[plans.versions.meters."fix.voice".bands]]
name = "day"
factor = "1"
windows = [{ days = ["mon-sun"], from = "00:00", to = "18:00" }]
[[plans.versions.meters."fix.voice".bands]]
name = "evening"
factor = "0.5"
windows = [{ days = ["mon-sun"], from = "18:00", to = "24:00" }]
"#;

/// A version of the test plan from 2026-01-01 with this API price (and `extra` keys).
fn fix_version(extra: &str, api_price: &str) -> String {
    format!(
        "[[plans.versions]]\neffective_from = \"2026-01-01T00:00:00Z\"\n{extra}[plans.versions.meters.\"fix.api\"]\nmodel = \"per_unit\"\nprice = \"{api_price}\"\n{OTHER_METERS}"
    )
}

/// The shipped tariffs and the test plan `fix-eur`, whose API price was entered as 0.10 instead
/// of 0.01; with version 2 fixing it from the same date when `fixed`.
fn catalogue(fixed: bool) -> String {
    let fix = if fixed {
        fix_version("supersedes = 1\n", "0.01")
    } else {
        String::new()
    };
    format!(
        "{}[[plans]]\nid = \"fix-eur\"\ncurrency = \"EUR\"\ntime_zone = \"UTC\"\nrounding = {{ places = 2, mode = \"half-up\" }}\n{}{fix}",
        include_str!("../config/tariffs.toml"),
        fix_version("", "0.10")
    )
}

fn utc(day: u32, h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, day, h, m, 0).unwrap()
}

fn subscribed(accounts: &[&str]) -> String {
    accounts
        .iter()
        .map(|a| format!("[[subscriptions]]\naccount = \"{a}\"\nplan = \"fix-eur\"\nfrom = \"2026-01-01T00:00:00Z\"\n"))
        .collect()
}

fn start_config(dir: &TempDir, accounts: &[&str]) -> (std::path::PathBuf, std::path::PathBuf) {
    write_config_with_tariffs(&dir.0, &subscribed(accounts), &catalogue(false))
}

async fn charge_of(d: &TestDaemon, account: &str, period: &str) -> String {
    d.totals(account, period).await.unwrap().total_charge
}

fn rerate(id: &str, selector: (&str, &str, bool), dry_run: bool) -> proto::RerateRequest {
    proto::RerateRequest {
        id: id.into(),
        period: "2026-11".into(),
        account: selector.0.into(),
        account_prefix: selector.1.into(),
        all: selector.2,
        reason: "API price entered as 0.10 instead of 0.01".into(),
        dry_run,
        ..Default::default()
    }
}

fn differences(r: &proto::CorrectionResponse) -> Vec<(String, String)> {
    r.differences
        .iter()
        .map(|d| (d.currency.clone(), d.difference.clone()))
        .collect()
}

/// A per-unit price fix: the superseding version re-rates the period, dry run first, exactly
/// once by id; later events are priced by the new version; the old records still explain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_price_fix_rerates_the_period_exactly_once() {
    let dir = TempDir::new("corr-rerate");
    let (config, tariffs) = start_config(&dir, &["fx-1", "fx-2", "other-1"]);
    let d = TestDaemon::start(&config).await;
    let events = vec![
        // fx-1: 1000 + 500 calls at 0.10 = 150.00; fx-2: 200 at 0.10 = 20.00.
        event("e1", "fx-1", "fix.api", 1000, 0, utc(17, 10, 0), &[]),
        event("e2", "fx-1", "fix.api", 500, 0, utc(17, 11, 0), &[]),
        event("e3", "fx-2", "fix.api", 200, 0, utc(17, 12, 0), &[]),
        event("e4", "other-1", "fix.api", 100, 0, utc(17, 12, 0), &[]),
    ];
    assert_eq!(d.submit(1, events).await.accepted, 4);
    assert_eq!(charge_of(&d, "fx-1", "2026-11").await, "150.000000000");

    // Fix the tariff: version 2 supersedes version 1 from the same date.
    std::fs::write(&tariffs, catalogue(true)).unwrap();
    let mut admin = AdminClient::new(channel(&d.target).await);
    admin.reload_tariffs(proto::ReloadTariffsRequest {}).await.unwrap();

    // Dry run over the fx- accounts: fx-1 150 -> 15 (-135), fx-2 20 -> 2 (-18); nothing written.
    let dry = admin
        .rerate(rerate("fix-api-price", ("", "fx-", false), true))
        .await
        .unwrap()
        .into_inner();
    assert!(dry.dry_run);
    assert_eq!(dry.records_changed, 3);
    assert_eq!(differences(&dry), [("EUR".to_string(), "-153.000000000".to_string())]);
    assert_eq!(charge_of(&d, "fx-1", "2026-11").await, "150.000000000");

    let done = admin
        .rerate(rerate("fix-api-price", ("", "fx-", false), false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.records_changed, 3);
    assert_eq!(differences(&done), differences(&dry));
    assert_eq!(charge_of(&d, "fx-1", "2026-11").await, "15.000000000");
    assert_eq!(charge_of(&d, "fx-2", "2026-11").await, "2.000000000");
    // Not selected: unchanged.
    assert_eq!(charge_of(&d, "other-1", "2026-11").await, "10.000000000");
    let t = d.totals("fx-1", "2026-11").await.unwrap();
    let api = t.meters.iter().find(|m| m.meter == "fix.api").unwrap();
    assert_eq!(
        (api.quantity.as_str(), api.events),
        ("1500", 2),
        "two events, each counted once"
    );

    // Called again with the same id: already applied, nothing written.
    let again = admin
        .rerate(rerate("fix-api-price", ("", "fx-", false), false))
        .await
        .unwrap()
        .into_inner();
    assert!(again.outcomes.iter().all(|o| o.already_applied));
    assert_eq!(differences(&again), differences(&done));
    assert_eq!(charge_of(&d, "fx-1", "2026-11").await, "15.000000000");
    // The same id with another selector: refused.
    let conflict = admin
        .rerate(rerate("fix-api-price", ("fx-1", "", false), false))
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), tonic::Code::AlreadyExists, "{}", conflict.message());

    // A new event is priced by version 2.
    assert_eq!(
        d.submit(2, vec![event("e5", "fx-1", "fix.api", 100, 0, utc(18, 9, 0), &[])])
            .await
            .accepted,
        1
    );
    assert_eq!(charge_of(&d, "fx-1", "2026-11").await, "16.000000000");

    // The chain of e1: the original (version 1), its reversal, its replacement (version 2).
    let mut query = QueryClient::new(channel(&d.target).await);
    let listed = query
        .list_rated_records(proto::ListRatedRecordsRequest {
            account_id: "fx-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .records;
    let e1: Vec<(String, u32, String)> = listed
        .iter()
        .filter(|r| r.event_id == "e1")
        .map(|r| {
            let role = r.correction.as_ref().map_or("original".to_string(), |c| c.role.clone());
            (role, r.version, r.charge.clone())
        })
        .collect();
    assert_eq!(
        e1,
        [
            ("original".to_string(), 1, "100.000000000".to_string()),
            ("reversal".to_string(), 1, "-100.000000000".to_string()),
            ("replacement".to_string(), 2, "10.000000000".to_string()),
        ]
    );
    let explained = explain(&d.target, "fx-1", "e1").await;
    assert_eq!(explained.chain.len(), 3);
    assert_eq!(explained.record.as_ref().unwrap().version, 2);
    let text = &explained.explanation_text;
    assert!(
        text.contains("reversal (rerate \"fix-api-price\"")
            && text.contains("API price entered as 0.10 instead of 0.01")
            && text.contains("3. replacement"),
        "{text}"
    );

    // After a restart the totals are rebuilt from the records, corrections included.
    d.stop().await;
    let d = TestDaemon::start(&config).await;
    assert_eq!(charge_of(&d, "fx-1", "2026-11").await, "16.000000000");
    let t = d.totals("fx-1", "2026-11").await.unwrap();
    let api = t.meters.iter().find(|m| m.meter == "fix.api").unwrap();
    assert_eq!((api.quantity.as_str(), api.events), ("1600", 3));
    // A resend of the original event is still a duplicate.
    let ack = d
        .submit(3, vec![event("e1", "fx-1", "fix.api", 1000, 0, utc(17, 10, 0), &[])])
        .await;
    assert_eq!((ack.accepted, ack.duplicate), (0, 1));
    d.stop().await;
}

/// Volume: 60 + 60 units reach the 8 tier (120 x 8 = 960.00; the second record's marginal charge
/// is 960 - 600 = 360). Voiding the first leaves 60 units at 10 = 600.00: the second record is
/// re-priced from 360 to 600. Amending a 60 s call at 17:58 to 300 s runs 120 s by day and
/// 180 s in the evening: 0.05 + 2 x 0.60 + 3 x 0.30 = 2.15 (it was 0.05 + 0.60 = 0.65).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_void_and_an_amend_reprice_what_they_touch() {
    let dir = TempDir::new("corr-void");
    let (config, _) = start_config(&dir, &["fv-1"]);
    let d = TestDaemon::start(&config).await;
    let events = vec![
        event("s1", "fv-1", "fix.storage", 60, 0, utc(10, 10, 0), &[]),
        event("s2", "fv-1", "fix.storage", 60, 0, utc(11, 10, 0), &[]),
        event("c1", "fv-1", "fix.voice", 60, 0, utc(12, 17, 58), &[]),
    ];
    assert_eq!(d.submit(1, events).await.accepted, 3);
    assert_eq!(charge_of(&d, "fv-1", "2026-11").await, "960.650000000");
    let mut admin = AdminClient::new(channel(&d.target).await);

    let void = proto::VoidEventRequest {
        account_id: "fv-1".into(),
        event_id: "s1".into(),
        reason: "meter fed twice by a broken agent".into(),
        id: String::new(),
    };
    let voided = admin.void_event(void.clone()).await.unwrap().into_inner();
    // s1 reversed (-600); s2 reversed (-360) and replaced (600): -360 in all.
    assert_eq!(voided.records_changed, 2);
    assert_eq!(
        differences(&voided),
        [("EUR".to_string(), "-360.000000000".to_string())]
    );
    assert_eq!(charge_of(&d, "fv-1", "2026-11").await, "600.650000000");
    // Voided again: the first void's answer, nothing written.
    let again = admin.void_event(void).await.unwrap().into_inner();
    assert!(again.outcomes[0].already_applied);
    assert_eq!(charge_of(&d, "fv-1", "2026-11").await, "600.650000000");
    // The event id stays claimed: a resend of the original is a duplicate, not a new charge.
    let ack = d
        .submit(2, vec![event("s1", "fv-1", "fix.storage", 60, 0, utc(10, 10, 0), &[])])
        .await;
    assert_eq!((ack.accepted, ack.duplicate), (0, 1));

    let amend = proto::AmendEventRequest {
        account_id: "fv-1".into(),
        event_id: "c1".into(),
        quantity: Some(proto::Quantity { units: 300, nanos: 0 }),
        attributes: Vec::new(),
        reason: "switch reported the first 60 s only".into(),
        id: String::new(),
    };
    let amended = admin.amend_event(amend.clone()).await.unwrap().into_inner();
    assert_eq!(differences(&amended), [("EUR".to_string(), "1.500000000".to_string())]);
    assert_eq!(charge_of(&d, "fv-1", "2026-11").await, "602.150000000");
    let replacement = amended.outcomes[0].records.last().unwrap();
    assert_eq!(
        (replacement.quantity.as_str(), replacement.charge.as_str()),
        ("300", "2.150000000")
    );

    // Bad input, nothing written: an unknown event, a voided one, an amendment that changes
    // nothing, an id reused for another request, no reason.
    let unknown = admin
        .void_event(proto::VoidEventRequest {
            account_id: "fv-1".into(),
            event_id: "nope".into(),
            reason: "r".into(),
            id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{}", unknown.message());
    let voided_amend = admin
        .amend_event(proto::AmendEventRequest {
            event_id: "s1".into(),
            ..amend.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(voided_amend.code(), tonic::Code::NotFound, "{}", voided_amend.message());
    assert!(voided_amend.message().contains("voided"), "{}", voided_amend.message());
    let same = admin
        .amend_event(proto::AmendEventRequest {
            id: "amend-again".into(),
            ..amend.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(same.code(), tonic::Code::InvalidArgument, "{}", same.message());
    // The id of the void, used for an amendment: refused. (The refused amendment above took no
    // id: it wrote nothing.)
    let reused = admin
        .amend_event(proto::AmendEventRequest {
            id: "void:fv-1:s1".into(),
            quantity: Some(proto::Quantity { units: 400, nanos: 0 }),
            ..amend.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(reused.code(), tonic::Code::AlreadyExists, "{}", reused.message());
    let no_reason = admin
        .amend_event(proto::AmendEventRequest {
            reason: String::new(),
            ..amend
        })
        .await
        .unwrap_err();
    assert_eq!(no_reason.code(), tonic::Code::InvalidArgument);
    assert_eq!(charge_of(&d, "fv-1", "2026-11").await, "602.150000000");
    // The statement shows the events as they stand, then what corrected them and why.
    let lines = statement_lines(&d, "fv-1", "2026-11").await;
    let amounts: Vec<(&str, &str)> = lines
        .iter()
        .filter(|(_, a)| !a.is_empty())
        .map(|(d, a)| (d.as_str(), a.as_str()))
        .collect();
    assert_eq!(
        amounts,
        [
            ("fix.storage: 1 events, quantity 60, rated 60", "600.000000000"),
            ("fix.voice: 1 events, quantity 300, rated 300", "2.150000000"),
        ]
    );
    let at = lines
        .iter()
        .position(|(d, _)| d == "corrections (included above):")
        .unwrap();
    let corrections: Vec<&str> = lines[at + 1..].iter().map(|(d, _)| d.as_str()).collect();
    assert_eq!(corrections.len(), 2, "{corrections:?}");
    assert!(
        corrections[0].starts_with("  void void:fv-1:s1 (2026-11-18 12:00 UTC): 2 events changed, -360.000000000 in all: meter fed twice by a broken agent"),
        "{corrections:?}"
    );
    assert!(
        corrections[1].contains("1 events changed, 1.500000000 in all: switch reported the first 60 s only"),
        "{corrections:?}"
    );
    d.stop().await;
}

/// The statement's lines: (description, amount).
async fn statement_lines(d: &TestDaemon, account: &str, period: &str) -> Vec<(String, String)> {
    let mut query = QueryClient::new(channel(&d.target).await);
    query
        .statement(proto::StatementRequest {
            account_id: account.into(),
            period: period.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .lines
        .into_iter()
        .map(|l| (l.description, l.amount))
        .collect()
}

/// A closed period is never rewritten: its correction is booked into the open period as an
/// adjustment (meter @adjustment, tagged with the period it corrects), and the closed totals
/// stay as they were announced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_periods_correction_lands_in_the_open_period() {
    let dir = TempDir::new("corr-closed");
    let redis = RedisServer::start(free_port());
    let extra = format!(
        "{}[redis]\nurl = \"{}\"\nprefix = \"cc\"\nflush_interval_ms = 20\n",
        subscribed(&["fc-1"]),
        redis.url()
    );
    let (config, tariffs) = write_config_with_tariffs(&dir.0, &extra, &catalogue(false));
    let d = TestDaemon::start(&config).await;
    // 1000 calls at 0.10 = 100.00 in November.
    assert_eq!(
        d.submit(1, vec![event("n1", "fc-1", "fix.api", 1000, 0, utc(17, 10, 0), &[])])
            .await
            .accepted,
        1
    );
    // Past November's end and its 72 h grace: November closes.
    let clock = d.running.as_ref().unwrap().clock.clone();
    let december = Utc.with_ymd_and_hms(2026, 12, 4, 0, 1, 0).unwrap();
    clock.advance(december - clock.now());
    let target = d.target.clone();
    wait_until(20, "the close of November", || {
        let target = target.clone();
        async move {
            totals_at(&target, "fc-1", "2026-11")
                .await
                .is_some_and(|t| t.status == "closed")
        }
    })
    .await;
    std::fs::write(&tariffs, catalogue(true)).unwrap();
    let mut admin = AdminClient::new(channel(&d.target).await);
    admin.reload_tariffs(proto::ReloadTariffsRequest {}).await.unwrap();
    let done = admin
        .rerate(rerate("fix-november", ("fc-1", "", false), false))
        .await
        .unwrap()
        .into_inner();
    let outcome = &done.outcomes[0];
    assert_eq!(
        (
            outcome.period.as_str(),
            outcome.booked_plan.as_str(),
            outcome.booked_period.as_str()
        ),
        ("2026-11", "fix-eur", "2026-12")
    );
    assert_eq!(outcome.difference, "-90.000000000");
    // November stays as closed; December carries the adjustment.
    assert_eq!(charge_of(&d, "fc-1", "2026-11").await, "100.000000000");
    let open = d.totals("fc-1", "2026-12").await.unwrap();
    assert_eq!(open.total_charge, "-90.000000000");
    let adjustment = open.meters.iter().find(|m| m.meter == "@adjustment").unwrap();
    assert_eq!((adjustment.charge.as_str(), adjustment.events), ("-90.000000000", 2));
    // Announced on the adjustments stream, so invoicing can issue a credit note; the open
    // period's figures in Redis carry it.
    let url = redis.url();
    wait_until(20, "the adjustment announced", || {
        let url = url.clone();
        async move { !xrange(&url, "cc:adjustments").is_empty() }
    })
    .await;
    let entries = xrange(&url, "cc:adjustments");
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    let field = |k: &str| e.get(k).map(String::as_str).unwrap_or("");
    assert_eq!(
        (
            field("adjustment_id"),
            field("account"),
            field("corrected_period"),
            field("booked_period"),
            field("amount"),
            field("currency"),
            field("action"),
        ),
        (
            "fix-november|fc-1|2026-11|fix-eur",
            "fc-1",
            "2026-11",
            "2026-12",
            "-90.000000000",
            "EUR",
            "rerate"
        )
    );
    assert_eq!(field("reason"), "API price entered as 0.10 instead of 0.01");
    wait_until(20, "the open period in redis", || {
        let url = url.clone();
        async move {
            let mut c = redis::Client::open(url.as_str()).unwrap().get_connection().unwrap();
            let total: Option<String> = redis::cmd("HGET")
                .arg("cc:agg:{fc-1}:2026-12")
                .arg("total:charge")
                .query(&mut c)
                .unwrap();
            total.as_deref() == Some("-90.000000000")
        }
    })
    .await;
    // Across a restart too.
    d.stop().await;
    let d = TestDaemon::start_with(
        &config,
        ratingd::app::StartOptions {
            clock: Some(std::sync::Arc::new(ratingd::pipeline::Clock::starting_at(
                december + Duration::hours(1),
            ))),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(charge_of(&d, "fc-1", "2026-11").await, "100.000000000");
    assert_eq!(charge_of(&d, "fc-1", "2026-12").await, "-90.000000000");
    // Announced once: a restart does not repeat it, nor does the same correction again.
    let mut admin = AdminClient::new(channel(&d.target).await);
    let again = admin
        .rerate(rerate("fix-november", ("fc-1", "", false), false))
        .await
        .unwrap()
        .into_inner();
    assert!(again.outcomes[0].already_applied);
    // November's statement is as it was closed; December's carries the adjustment.
    let november = statement_lines(&d, "fc-1", "2026-11").await;
    assert_eq!(
        november,
        [(
            "fix.api: 1 events, quantity 1000, rated 1000".to_string(),
            "100.000000000".to_string()
        )]
    );
    let december = statement_lines(&d, "fc-1", "2026-12").await;
    assert_eq!(
        december,
        [(
            "adjustment of period 2026-11 (rerate fix-november, 2026-12-04): API price entered as 0.10 instead of 0.01"
                .to_string(),
            "-90.000000000".to_string()
        )]
    );
    d.stop().await;
    assert_eq!(xrange(&url, "cc:adjustments").len(), 1);
}

/// Runs ratectl against `target` (bounded): (exit code, standard output, standard error).
async fn ratectl(target: &str, list: &[&str]) -> (Option<i32>, String, String) {
    let mut args: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    args.extend(["--target".to_string(), target.to_string()]);
    tokio::task::spawn_blocking(move || {
        let out = output_within(
            std::process::Command::new(env!("CARGO_BIN_EXE_ratectl")).args(&args),
            60,
        );
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// `ratectl rerate`, `void` and `amend`: the records changed and the difference per currency,
/// as text and as JSON; a refusal exits 1 with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ratectl_prints_what_a_correction_changed() {
    let dir = TempDir::new("corr-ratectl");
    let (config, tariffs) = start_config(&dir, &["fr-1"]);
    let d = TestDaemon::start(&config).await;
    let events = vec![
        event("a1", "fr-1", "fix.api", 1000, 0, utc(17, 10, 0), &[]),
        event(
            "c1",
            "fr-1",
            "fix.voice",
            60,
            0,
            utc(17, 10, 0),
            &[("destination", "+4930")],
        ),
        event("c2", "fr-1", "fix.voice", 120, 0, utc(17, 11, 0), &[]),
    ];
    assert_eq!(d.submit(1, events).await.accepted, 3);
    std::fs::write(&tariffs, catalogue(true)).unwrap();
    let t = d.target.clone();
    assert_eq!(ratectl(&t, &["tariffs", "reload"]).await.0, Some(0));

    let rerate = [
        "rerate",
        "--period",
        "2026-11",
        "--account",
        "fr-1",
        "--meter",
        "fix.api",
        "--reason",
        "price fix",
    ];
    let (code, out, err) = ratectl(&t, &[&rerate[..], &["--dry-run"]].concat()).await;
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("correction rerate:2026-11:account=fr-1:fix.api::"),
        "{out}"
    );
    assert!(
        lines[0].ends_with(": would change 1 records in 1 account periods"),
        "{out}"
    );
    assert_eq!(lines[1], "  difference -90.000000000 EUR");
    assert_eq!(lines[2], "  fr-1 2026-11 fix-eur: -90.000000000 EUR");
    let (code, out, _) = ratectl(&t, &[&rerate[..], &["--json"]].concat()).await;
    assert_eq!(code, Some(0));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (json["records_changed"].as_u64(), json["differences"]["EUR"].as_str()),
        (Some(1), Some("-90.000000000"))
    );
    // 10.00 + c1 (0.05 + 0.60) + c2 (0.05 + 1.20).
    assert_eq!(charge_of(&d, "fr-1", "2026-11").await, "11.900000000");

    // The attribute is set, the quantity kept: c1 is rated again at the same price (the plan
    // does not price by destination), so the difference is zero but the chain records it.
    let (code, out, err) = ratectl(
        &t,
        &[
            "amend",
            "--account",
            "fr-1",
            "--event-id",
            "c1",
            "--attr",
            "destination=+4940",
            "--reason",
            "typo",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["differences"]["EUR"].as_str(), Some("0.000000000"));
    let explained = explain(&d.target, "fr-1", "c1").await;
    let attributes = &explained.record.unwrap().attributes;
    assert_eq!(
        (attributes[0].key.as_str(), attributes[0].value.as_str()),
        ("destination", "+4940")
    );

    // c2: 120 s by day = 0.05 + 1.20 = 1.25, voided.
    let (code, out, _) = ratectl(
        &t,
        &["void", "--account", "fr-1", "--event-id", "c2", "--reason", "test call"],
    )
    .await;
    assert_eq!(code, Some(0));
    assert_eq!(out.lines().nth(1), Some("  difference -1.250000000 EUR"), "{out}");
    let (code, _, err) = ratectl(&t, &["void", "--account", "fr-1", "--event-id", "zz", "--reason", "x"]).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("has no rated record of event \"zz\""), "{err}");
    let (code, _, err) = ratectl(
        &t,
        &[
            "amend",
            "--account",
            "fr-1",
            "--event-id",
            "c1",
            "--quantity",
            "-5",
            "--reason",
            "x",
        ],
    )
    .await;
    assert_eq!(code, Some(1));
    assert!(err.contains("--quantity"), "{err}");
    d.stop().await;
}

/// Bad input is refused with the reason and writes nothing: a re-rate of a period without
/// records, of an unknown plan or meter, without a selector or with two; and a closed period's
/// correction when no plan of the account bills in its currency now (the account moved to a
/// USD plan after November).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_corrections_are_refused_and_write_nothing() {
    let dir = TempDir::new("corr-bad");
    let moved = "[[subscriptions]]\naccount = \"fm-1\"\nplan = \"fix-eur\"\nfrom = \"2026-01-01T00:00:00Z\"\nto = \"2026-12-01T00:00:00Z\"\n\
                 [[subscriptions]]\naccount = \"fm-1\"\nplan = \"saas-pro\"\nfrom = \"2026-12-01T00:00:00Z\"\n";
    let (config, _) = write_config_with_tariffs(&dir.0, moved, &catalogue(false));
    let d = TestDaemon::start(&config).await;
    assert_eq!(
        d.submit(1, vec![event("m1", "fm-1", "fix.api", 100, 0, utc(17, 10, 0), &[])])
            .await
            .accepted,
        1
    );
    let mut admin = AdminClient::new(channel(&d.target).await);
    let refused = |r: Result<tonic::Response<proto::CorrectionResponse>, tonic::Status>| r.unwrap_err();

    // A period without records, an unknown plan, an unknown meter.
    let base = || rerate("bad-1", ("fm-1", "", false), false);
    let bad_requests = [
        (
            proto::RerateRequest {
                period: "2026-07".into(),
                ..base()
            },
            tonic::Code::NotFound,
        ),
        (
            proto::RerateRequest {
                plan: "gold".into(),
                ..base()
            },
            tonic::Code::InvalidArgument,
        ),
        (
            proto::RerateRequest {
                meter: "fax.pages".into(),
                ..base()
            },
            tonic::Code::InvalidArgument,
        ),
    ];
    for (request, code) in bad_requests {
        let e = refused(admin.rerate(request).await);
        assert_eq!(e.code(), code, "{}", e.message());
    }
    for selector in [("", "", false), ("fm-1", "", true)] {
        let e = refused(admin.rerate(rerate("bad-4", selector, false)).await);
        assert!(
            e.message().contains("exactly one of account, account_prefix and all"),
            "{}",
            e.message()
        );
    }
    // An amendment to a negative quantity, or nanos out of range.
    for (units, nanos) in [(-1, 0), (1, 1_000_000_000)] {
        let bad = refused(
            admin
                .amend_event(proto::AmendEventRequest {
                    account_id: "fm-1".into(),
                    event_id: "m1".into(),
                    quantity: Some(proto::Quantity { units, nanos }),
                    attributes: Vec::new(),
                    reason: "test".into(),
                    id: String::new(),
                })
                .await,
        );
        assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{}", bad.message());
        assert!(bad.message().contains("quantity must be >= 0"), "{}", bad.message());
    }
    // The refused ids were not taken: the same id works for a valid request.
    admin.rerate(rerate("bad-1", ("fm-1", "", false), false)).await.unwrap();

    // Past November's close: fm-1 is on a USD plan now, so the EUR correction has nowhere to go.
    let clock = d.running.as_ref().unwrap().clock.clone();
    clock.advance(Utc.with_ymd_and_hms(2026, 12, 4, 0, 1, 0).unwrap() - clock.now());
    let target = d.target.clone();
    wait_until(20, "the close of November", || {
        let target = target.clone();
        async move {
            totals_at(&target, "fm-1", "2026-11")
                .await
                .is_some_and(|t| t.status == "closed")
        }
    })
    .await;
    // Refused before anything was written, so the id is free again: the same void with another
    // reason is refused for the same cause, not as ALREADY_EXISTS.
    for reason in ["test", "test, second try"] {
        let void = refused(
            admin
                .void_event(proto::VoidEventRequest {
                    account_id: "fm-1".into(),
                    event_id: "m1".into(),
                    reason: reason.into(),
                    id: String::new(),
                })
                .await,
        );
        assert_eq!(void.code(), tonic::Code::FailedPrecondition, "{}", void.message());
        assert!(
            void.message().contains("no plan billing in EUR now"),
            "{}",
            void.message()
        );
    }
    assert_eq!(charge_of(&d, "fm-1", "2026-11").await, "10.000000000");
    assert!(
        totals_at(&d.target, "fm-1", "2026-12").await.is_none(),
        "nothing booked"
    );
    let explained = explain(&d.target, "fm-1", "m1").await;
    assert_eq!(explained.chain.len(), 1, "no correction record");
    d.stop().await;
}

/// A re-rate of more accounts than one job takes (4,096 per shard): 8,300 accounts on two shards
/// put more than 4,096 on one of them, so they go in rounds, and every one is corrected once:
/// 1,000 calls each, 100.00 -> 10.00.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerate_of_many_accounts_goes_in_rounds() {
    let dir = TempDir::new("corr-many");
    let (config, tariffs) = write_config_with_tariffs(&dir.0, "default_plan = \"fix-eur\"\n", &catalogue(false));
    let d = TestDaemon::start(&config).await;
    let accounts: Vec<String> = (0..8_300).map(|n| format!("fa-{n:05}")).collect();
    let events: Vec<proto::UsageEvent> = accounts
        .iter()
        .map(|a| event("m1", a, "fix.api", 1000, 0, utc(17, 10, 0), &[]))
        .collect();
    for (i, chunk) in events.chunks(1000).enumerate() {
        assert_eq!(d.submit(i as u64, chunk.to_vec()).await.accepted as usize, chunk.len());
    }
    std::fs::write(&tariffs, catalogue(true)).unwrap();
    let mut admin = AdminClient::new(channel(&d.target).await);
    admin.reload_tariffs(proto::ReloadTariffsRequest {}).await.unwrap();
    let done = admin
        .rerate(rerate("fix-many", ("", "fa-", false), false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((done.outcomes.len(), done.records_changed), (8_300, 8_300));
    assert_eq!(
        differences(&done),
        [("EUR".to_string(), "-747000.000000000".to_string())]
    );
    for a in ["fa-00000", "fa-04150", "fa-08299"] {
        assert_eq!(charge_of(&d, a, "2026-11").await, "10.000000000");
    }
    d.stop().await;
}

/// With tokens, every correction record names the admin token that asked for it, and
/// ExplainRecord says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correction_names_the_token_that_asked() {
    use ratingd::client::connect::Access;
    const OPS: &str = "ops-admin-token-for-corrections-01";
    let dir = TempDir::new("corr-token");
    let tokens = format!(
        "[[tokens]]\nname = \"ops-alice\"\nsha256 = \"{}\"\nrole = \"admin\"\n{}",
        ratingd::security::auth::hash_hex(OPS),
        subscribed(&["ft-1"])
    );
    let (config, _) = write_config_with_tariffs(&dir.0, &tokens, &catalogue(false));
    let d = TestDaemon::start(&config).await;
    let access = Access {
        target: d.target.clone(),
        token: Some(OPS.into()),
        ca_cert: None,
        client_cert: None,
        client_key: None,
    };
    let mut ingest = proto::ingest_client::IngestClient::new(access.authed().await.unwrap());
    let batch = proto::UsageBatch {
        batch_id: 1,
        events: vec![event("t1", "ft-1", "fix.api", 10, 0, utc(17, 10, 0), &[])],
    };
    assert_eq!(ingest.submit(batch).await.unwrap().into_inner().accepted, 1);
    let mut admin = AdminClient::new(access.authed().await.unwrap());
    let voided = admin
        .void_event(proto::VoidEventRequest {
            account_id: "ft-1".into(),
            event_id: "t1".into(),
            reason: "duplicate meter reading".into(),
            id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let by = voided.outcomes[0].records[0]
        .correction
        .as_ref()
        .unwrap()
        .requested_by
        .clone();
    assert_eq!(by, "ops-alice");
    let mut query = QueryClient::new(access.authed().await.unwrap());
    let explained = query
        .explain_record(proto::ExplainRecordRequest {
            account_id: "ft-1".into(),
            event_id: "t1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        explained
            .explanation_text
            .contains(" by ops-alice: \"duplicate meter reading\""),
        "{}",
        explained.explanation_text
    );
    d.stop().await;
}
