//! Money end to end, computed by hand: a EUR telecom workload (band splits, prefixes, 60/1
//! increments, connect fees, the SMS allowance, graduated data tiers, half-up invoice rounding)
//! and a USD SaaS workload (volume tiers down and up, packages, the version and a subscription
//! discount, half-even rounding) go through the daemon, and every figure it shows (Query totals,
//! per-record charges, the Redis hash, the statement and the close announcement) is compared with
//! the hand computation written here and with the reference pricer (tests/common/reference.rs).
//! The daemon's clock is pinned to Wednesday 2026-11-18 12:00 UTC; Berlin is on CET (UTC+1).

mod common;

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, TimeZone, Utc};
use common::*;
use ratingd::wire::proto;
use rust_decimal::Decimal;

fn dec(text: &str) -> Decimal {
    text.parse().unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

/// A Berlin wall-clock time in November 2026 (CET, UTC+1).
fn berlin(day: u32, h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, day, h, m, s).unwrap() - chrono::Duration::hours(1)
}

/// One event and its charge computed by hand.
struct Case {
    event: proto::UsageEvent,
    charge: &'static str,
}

fn case(
    id: &str,
    account: &str,
    meter: &str,
    quantity: (i64, i32),
    at: DateTime<Utc>,
    dest: Option<&str>,
    charge: &'static str,
) -> Case {
    let attrs: Vec<(&str, &str)> = dest.map(|d| ("destination", d)).into_iter().collect();
    Case {
        event: event(id, account, meter, quantity.0, quantity.1, at, &attrs),
        charge,
    }
}

/// The EUR telecom workload (telecom-standard: prices a minute, 60/1 increments, a 0.0100
/// connect fee; peak mon-fri 08:00-20:00 at factor 1, off-peak otherwise at 0.5).
fn telecom() -> Vec<Case> {
    vec![
        // 61 s to +44 (0.0200) from Wed 07:59:30: 30 s off-peak + 31 s peak.
        // (30 x 0.02 x 0.5 + 31 x 0.02 + 60 x 0.01) / 60 = 1.52 / 60 = 0.0253333... -> 0.025333333
        case(
            "v-1",
            "tel-0",
            "voice.seconds",
            (61, 0),
            berlin(18, 7, 59, 30),
            Some("+442071234567"),
            "0.025333333",
        ),
        // 30 s to +447 (0.0900, the longer prefix) on Saturday: raised to the first 60 s, off-peak.
        // (60 x 0.09 x 0.5 + 0.6) / 60 = 3.3 / 60 = 0.055
        case(
            "v-2",
            "tel-0",
            "voice.seconds",
            (30, 0),
            berlin(14, 15, 0, 0),
            Some("+447911123456"),
            "0.055000000",
        ),
        // 125 s to +1 (0.0100) from Tue 19:59:00: 60 s peak + 65 s off-peak.
        // (60 x 0.01 + 65 x 0.01 x 0.5 + 0.6) / 60 = 1.525 / 60 = 0.02541666... -> 0.025416667
        case(
            "v-3",
            "tel-0",
            "voice.seconds",
            (125, 0),
            berlin(17, 19, 59, 0),
            Some("+12125550100"),
            "0.025416667",
        ),
        // A 0 s call to an unlisted destination (default 0.1500): the connect fee alone. 0.6 / 60
        case(
            "v-4",
            "tel-0",
            "voice.seconds",
            (0, 0),
            berlin(16, 10, 0, 0),
            Some("+33142000000"),
            "0.010000000",
        ),
        // 61.5 s at peak, default price: 60/1 rounds up to 62 s. (62 x 0.15 + 0.6) / 60 = 0.165
        case(
            "v-5",
            "tel-0",
            "voice.seconds",
            (61, 500_000_000),
            berlin(12, 12, 0, 0),
            Some("+33142000000"),
            "0.165000000",
        ),
        // SMS at 0.0500 with 100 free a month: 98 free; 5 cross the allowance (3 paid); 2 paid.
        case(
            "s-1",
            "tel-0",
            "sms.count",
            (98, 0),
            berlin(10, 9, 0, 0),
            None,
            "0.000000000",
        ),
        case(
            "s-2",
            "tel-0",
            "sms.count",
            (5, 0),
            berlin(11, 9, 0, 0),
            None,
            "0.150000000",
        ),
        case(
            "s-3",
            "tel-0",
            "sms.count",
            (2, 0),
            berlin(11, 10, 0, 0),
            None,
            "0.100000000",
        ),
        // Data, graduated: 0.0100 to 1,024 MB, 0.0050 to 10,240 MB, 0.0020 above.
        // 1,000 MB: 10.00. Then 100.5 MB: 24 x 0.01 + 76.5 x 0.005 = 0.6225.
        // Then 10,000 MB from 1,100.5: 9,139.5 x 0.005 + 860.5 x 0.002 = 47.4185.
        case(
            "d-1",
            "tel-0",
            "data.mb",
            (1000, 0),
            berlin(3, 8, 0, 0),
            None,
            "10.000000000",
        ),
        case(
            "d-2",
            "tel-0",
            "data.mb",
            (100, 500_000_000),
            berlin(4, 8, 0, 0),
            None,
            "0.622500000",
        ),
        case(
            "d-3",
            "tel-0",
            "data.mb",
            (10_000, 0),
            berlin(5, 8, 0, 0),
            None,
            "47.418500000",
        ),
        // Half a megabyte: 0.005 EUR, whose invoice amount rounds half-up to 0.01.
        case(
            "d-4",
            "tel-1",
            "data.mb",
            (0, 500_000_000),
            berlin(5, 9, 0, 0),
            None,
            "0.005000000",
        ),
    ]
}

/// The USD SaaS workload (saas-pro version 1, 10% off everything; api.requests on volume tiers
/// 0.0010 to 1M, 0.0008 to 10M, 0.0005 above; storage in blocks of 100 GB-h at 0.50).
fn saas() -> Vec<Case> {
    let at = |day: u32| Utc.with_ymd_and_hms(2026, 11, day, 12, 0, 0).unwrap();
    vec![
        // 600,000 requests: 600 x 0.9 = 540.
        case(
            "a-1",
            "saas-0",
            "api.requests",
            (600_000, 0),
            at(2),
            None,
            "540.000000000",
        ),
        // To 1.1M: the whole month at 0.0008: 880 x 0.9 = 792, so this one adds 252.
        case(
            "a-2",
            "saas-0",
            "api.requests",
            (500_000, 0),
            at(3),
            None,
            "252.000000000",
        ),
        // To exactly 10M, still the 0.0008 tier: 8,000 x 0.9 = 7,200, this one 6,408.
        case(
            "a-3",
            "saas-0",
            "api.requests",
            (8_900_000, 0),
            at(4),
            None,
            "6408.000000000",
        ),
        // One more: the whole month at 0.0005: 5,000.0005 x 0.9 = 4,500.00045, so -2,699.99955.
        case("a-4", "saas-0", "api.requests", (1, 0), at(5), None, "-2699.999550000"),
        // Storage: 150.5 GB-h is 2 blocks (0.9); 49.5 more stays at 2 (0); 0.1 more starts a third.
        case(
            "st-1",
            "saas-0",
            "storage.gb_hours",
            (150, 500_000_000),
            at(6),
            None,
            "0.900000000",
        ),
        case(
            "st-2",
            "saas-0",
            "storage.gb_hours",
            (49, 500_000_000),
            at(7),
            None,
            "0.000000000",
        ),
        case(
            "st-3",
            "saas-0",
            "storage.gb_hours",
            (0, 100_000_000),
            at(8),
            None,
            "0.450000000",
        ),
        // 1,250 requests: 1.25 x 0.9 = 1.125, an invoice amount that rounds half-even to 1.12.
        case("a-5", "saas-1", "api.requests", (1_250, 0), at(9), None, "1.125000000"),
        // The same with a 50% subscription discount on top: 1.125 x 0.5 = 0.5625.
        case("a-6", "vip", "api.requests", (1_250, 0), at(9), None, "0.562500000"),
    ]
}

/// (account, total charge, invoice amount, currency), by hand from the cases above.
const TOTALS: [(&str, &str, &str, &str); 5] = [
    // 0.28075 voice + 0.25 SMS + 58.041 data
    ("tel-0", "58.571750000", "58.57", "EUR"),
    ("tel-1", "0.005000000", "0.01", "EUR"),
    // 4,500.00045 requests + 1.35 storage
    ("saas-0", "4501.350450000", "4501.35", "USD"),
    ("saas-1", "1.125000000", "1.12", "USD"),
    ("vip", "0.562500000", "0.56", "USD"),
];

/// Per meter (account, meter, charge, quantity, events), by hand.
const METERS: [(&str, &str, &str, &str, u64); 7] = [
    ("tel-0", "voice.seconds", "0.28075", "277.5", 5),
    ("tel-0", "sms.count", "0.25", "105", 3),
    ("tel-0", "data.mb", "58.041", "11100.5", 3),
    ("tel-1", "data.mb", "0.005", "0.5", 1),
    ("saas-0", "api.requests", "4500.00045", "10000001", 4),
    ("saas-0", "storage.gb_hours", "1.35", "200.1", 3),
    ("saas-1", "api.requests", "1.125", "1250", 1),
];

fn reference() -> Reference {
    let mut r = Reference::shipped();
    let since = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    r.subscribe("vip", "saas-pro", since, None, Decimal::from(50));
    r
}

async fn records_of(target: &str, account: &str) -> Vec<proto::RatedRecord> {
    let mut q = proto::query_client::QueryClient::new(common::channel(target).await);
    let request = proto::ListRatedRecordsRequest {
        account_id: account.into(),
        page_size: 1000,
        ..Default::default()
    };
    q.list_rated_records(request).await.unwrap().into_inner().records
}

fn hgetall(url: &str, key: &str) -> HashMap<String, String> {
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    redis::cmd("HGETALL").arg(key).query(&mut c).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_figure_matches_the_hand_computation_and_the_reference() {
    let dir = TempDir::new("money");
    let redis = RedisServer::start(free_port());
    let config = write_config(
        &dir.0,
        &format!(
            "[redis]\nurl = \"{}\"\nprefix = \"m\"\nflush_interval_ms = 20\n",
            redis.url()
        ),
    );
    let d = TestDaemon::start(&config).await;
    let mut admin = proto::admin_client::AdminClient::new(common::channel(&d.target.clone()).await);
    admin
        .upsert_subscription(proto::Subscription {
            account_id: "vip".into(),
            plan_id: "saas-pro".into(),
            from: "2026-01-01T00:00:00Z".into(),
            discount_percent: "50".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let cases: Vec<Case> = telecom().into_iter().chain(saas()).collect();
    let events: Vec<proto::UsageEvent> = cases.iter().map(|c| c.event.clone()).collect();
    // One batch: each account's events are rated in the order given, as the reference rates them.
    let ack = d
        .ingest()
        .await
        .submit(proto::UsageBatch {
            batch_id: 1,
            events: events.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((ack.accepted, ack.rejected), (events.len() as u32, 0), "{ack:?}");

    let reference = reference();
    let want = reference.rate(&events);
    let period = "2026-11".to_string();

    // The reference agrees with the hand computation, record by record and in total.
    for (c, r) in cases.iter().zip(&want.records) {
        assert_eq!(r.event_id, c.event.event_id);
        assert_eq!(r.charge, dec(c.charge), "reference, {}", c.event.event_id);
    }
    for (account, charge, amount, currency) in TOTALS {
        let w = &want.totals[&(account.to_string(), period.clone())];
        assert_eq!(
            (w.total_charge, w.total_amount),
            (dec(charge), dec(amount)),
            "reference, {account}"
        );
        assert_eq!(w.currency, currency);
    }

    // Query: totals per account and meter.
    for (account, charge, amount, currency) in TOTALS {
        let t = d.totals(account, &period).await.unwrap();
        assert_eq!(t.total_charge, charge, "{account} total");
        assert_eq!(t.total_amount, amount, "{account} amount");
        assert_eq!(t.currency, currency);
        assert_totals_equal(
            &reference,
            account,
            &period,
            &t,
            &want.totals[&(account.to_string(), period.clone())],
        );
    }
    for (account, meter, charge, quantity, events) in METERS {
        let t = d.totals(account, &period).await.unwrap();
        let m = t.meters.iter().find(|m| m.meter == meter).unwrap();
        assert_eq!(
            (dec(&m.charge), dec(&m.quantity), m.events),
            (dec(charge), dec(quantity), events),
            "{account} {meter}"
        );
    }

    // Every record's own charge.
    let by_hand: BTreeMap<&str, &str> = cases.iter().map(|c| (c.event.event_id.as_str(), c.charge)).collect();
    for (account, ..) in TOTALS {
        let records = records_of(&d.target, account).await;
        assert!(!records.is_empty());
        for r in records {
            assert_eq!(r.charge, by_hand[r.event_id.as_str()], "{account} {}", r.event_id);
        }
    }

    // Redis: the documented hash holds the same figures.
    let url = redis.url();
    wait_until(20, "the projection of every account", || {
        let url = url.clone();
        async move {
            TOTALS.iter().all(|(account, charge, ..)| {
                hgetall(&url, &format!("m:agg:{{{account}}}:2026-11"))
                    .get("total:charge")
                    .map(String::as_str)
                    == Some(*charge)
            })
        }
    })
    .await;
    for (account, charge, amount, currency) in TOTALS {
        let h = hgetall(&url, &format!("m:agg:{{{account}}}:2026-11"));
        assert_eq!(
            (h["total:charge"].as_str(), h["total:amount"].as_str()),
            (charge, amount),
            "{account}"
        );
        assert_eq!(h["currency"], currency);
        assert_eq!(h["status"], "open");
    }
    for (account, meter, charge, quantity, events) in METERS {
        let h = hgetall(&url, &format!("m:agg:{{{account}}}:2026-11"));
        assert_eq!(dec(&h[&format!("{meter}:charge")]), dec(charge), "{account} {meter}");
        assert_eq!(
            dec(&h[&format!("{meter}:quantity")]),
            dec(quantity),
            "{account} {meter}"
        );
        assert_eq!(h[&format!("{meter}:events")], events.to_string(), "{account} {meter}");
    }

    // Statements: the same totals; the subtotal is the undiscounted price, the discount the rest.
    let mut q = proto::query_client::QueryClient::new(common::channel(&d.target.clone()).await);
    let undiscounted = reference.without_discounts().rate(&events).totals;
    for (account, charge, amount, _) in TOTALS {
        let s = q
            .statement(proto::StatementRequest {
                account_id: account.into(),
                period: period.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (s.total_charge.as_str(), s.total_amount.as_str()),
            (charge, amount),
            "{account}"
        );
        let subtotal = undiscounted[&(account.to_string(), period.clone())].total_charge;
        assert_eq!(dec(&s.subtotal), subtotal, "{account} subtotal");
        assert_eq!(dec(&s.discount), dec(charge) - subtotal, "{account} discount");
    }
    // By hand: saas-0 before its 10% off is 10,000,001 requests at 0.0005 (5,000.0005) + 3 blocks (1.5).
    let s0 = &undiscounted[&("saas-0".to_string(), period.clone())];
    assert_eq!(s0.total_charge, dec("5000.0005") + dec("1.5"));
    // vip: 1.25 before both discounts.
    assert_eq!(
        undiscounted[&("vip".to_string(), period.clone())].total_charge,
        dec("1.25")
    );

    // The close: past November's end plus the 72 h grace, each account's final totals announced.
    let clock = d.running.as_ref().unwrap().clock.clone();
    let end = reference.plan("telecom-standard").period_end(&period);
    assert_eq!(
        end,
        Utc.with_ymd_and_hms(2026, 11, 30, 23, 0, 0).unwrap(),
        "Berlin's December starts at 23:00 UTC"
    );
    let usd_end = reference.plan("saas-pro").period_end(&period);
    clock.advance(end.max(usd_end) + chrono::Duration::hours(73) - clock.now());
    wait_until(20, "five close announcements", || {
        let url = url.clone();
        async move { xrange(&url, "m:periods:closed").len() >= TOTALS.len() }
    })
    .await;
    let closed = xrange(&url, "m:periods:closed");
    assert_eq!(closed.len(), TOTALS.len());
    for (account, charge, amount, currency) in TOTALS {
        let entry = closed.iter().find(|e| e["account"] == account).unwrap();
        assert_eq!(
            (entry["total_charge"].as_str(), entry["total_amount"].as_str()),
            (charge, amount),
            "{account}"
        );
        assert_eq!(entry["currency"], currency);
        let w = &want.totals[&(account.to_string(), period.clone())];
        let meters: serde_json::Value = serde_json::from_str(&entry["meters"]).unwrap();
        for (meter, m) in &w.meters {
            assert_eq!(
                dec(meters[meter]["charge"].as_str().unwrap()),
                m.charge,
                "{account} {meter}"
            );
            assert_eq!(meters[meter]["events"], m.events, "{account} {meter}");
        }
    }
    d.stop().await;
}
