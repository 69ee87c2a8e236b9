//! The Query API: totals with amounts and projection, account listing and ranking, quotes.

mod common;

use chrono::Duration;
use common::*;
use ratingd::wire::proto::{self, query_client::QueryClient};
use rust_decimal::Decimal;

async fn query(target: &str) -> QueryClient<tonic::transport::Channel> {
    QueryClient::new(common::channel(target).await)
}

async fn send_all(d: &TestDaemon, events: &[proto::UsageEvent]) {
    let mut client = d.ingest().await;
    for b in batches(events, 500) {
        client.submit(b).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totals_listing_and_ranking() {
    let dir = TempDir::new("query");
    let d = TestDaemon::start(&write_config(&dir.0, "")).await;
    let events = generate(4_000, 0.1, 61);
    send_all(&d, &events).await;
    let expected = expected_totals(&events);
    let mut q = query(&d.target).await;

    // A meter filter, per-meter amounts, and the projection of an open period.
    let ((account, period), meters) = expected.iter().find(|(k, _)| k.0.starts_with("saas")).unwrap();
    let (meter, (charge, _)) = meters.iter().next().unwrap();
    let request = proto::GetTotalsRequest {
        account_id: account.clone(),
        period: period.clone(),
        meter: meter.clone(),
    };
    let t = q.get_totals(request).await.unwrap().into_inner();
    assert_eq!(t.meters.len(), 1);
    assert_eq!(t.meters[0].charge.parse::<Decimal>().unwrap(), *charge);
    assert_eq!(
        t.meters[0].amount,
        charge
            .round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointNearestEven)
            .to_string()
    );
    assert_eq!(t.status, "open");
    let projected: Decimal = t.projected_charge.parse().unwrap();
    assert!(
        projected >= t.total_charge.parse::<Decimal>().unwrap(),
        "an open period projects at least its charge so far"
    );
    assert!(!t.period_start.is_empty() && !t.period_end.is_empty());
    let missing = q
        .get_totals(proto::GetTotalsRequest {
            account_id: "nobody".into(),
            period: period.clone(),
            meter: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    // Every account of the period, three at a time.
    let mut want: Vec<String> = expected
        .keys()
        .filter(|(_, p)| p == period)
        .map(|(a, _)| a.clone())
        .collect();
    want.sort();
    let mut got = Vec::new();
    let mut token = String::new();
    loop {
        let page = q
            .list_accounts(proto::ListAccountsRequest {
                period: period.clone(),
                page_size: 3,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.accounts.len() <= 3);
        got.extend(page.accounts);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(got, want);
    let bad = q
        .list_accounts(proto::ListAccountsRequest {
            period: period.clone(),
            page_size: 3,
            page_token: "zz".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    // The top USD accounts, highest first.
    let top = q
        .top_accounts(proto::TopAccountsRequest {
            period: period.clone(),
            n: 3,
            currency: "USD".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut usd: Vec<(Decimal, String)> = expected
        .iter()
        .filter(|((a, p), _)| p == period && plan_of(a) == "saas-pro")
        .map(|((a, _), m)| (m.values().map(|v| v.0).sum(), a.clone()))
        .collect();
    usd.sort_by(|x, y| y.0.cmp(&x.0).then_with(|| x.1.cmp(&y.1)));
    let got: Vec<(Decimal, String)> = top
        .accounts
        .iter()
        .map(|r| (r.total_charge.parse().unwrap(), r.account_id.clone()))
        .collect();
    assert_eq!(got, usd.into_iter().take(3).collect::<Vec<_>>());
    assert!(top.accounts.iter().all(|r| r.currency == "USD"));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotes_price_without_recording() {
    let dir = TempDir::new("quote");
    let d = TestDaemon::start(&write_config(&dir.0, "")).await;
    let at = test_now() - Duration::minutes(30);
    let period = "2026-11".to_string();
    send_all(&d, &[event("q-0", "saas-1", "api.requests", 999_999, 0, at, &[])]).await;
    let mut q = query(&d.target).await;
    let crossing = vec![
        event("q-1", "", "api.requests", 2, 0, at, &[]),
        event("q-2", "", "fax.pages", 1, 0, at, &[]),
    ];
    let by_account = q
        .quote(proto::QuoteRequest {
            plan_id: String::new(),
            account_id: "saas-1".into(),
            events: crossing.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    // From the account's committed 999,999 requests: crossing 1,000,000 re-prices the month lower.
    assert_eq!(by_account.events[0].charge, "-179.998380000");
    assert_eq!(by_account.events[0].plan_id, "saas-pro");
    assert_eq!(by_account.events[0].period, period);
    let explanation: serde_json::Value = serde_json::from_str(&by_account.events[0].explanation_json).unwrap();
    assert_eq!(explanation["model"], "volume");
    assert_eq!(by_account.events[1].reason, proto::RejectReason::UnknownMeter as i32);
    // By plan: from zero usage.
    let by_plan = q
        .quote(proto::QuoteRequest {
            plan_id: "saas-pro".into(),
            account_id: String::new(),
            events: crossing,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_plan.events[0].charge, "0.001800000");
    // Nothing was recorded.
    let t = d.totals("saas-1", &period).await.unwrap();
    assert_eq!(t.meters[0].events, 1);
    let both = q
        .quote(proto::QuoteRequest {
            plan_id: "saas-pro".into(),
            account_id: "saas-1".into(),
            events: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(both.code(), tonic::Code::InvalidArgument);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rated_records_page_through_and_explain_themselves() {
    let dir = TempDir::new("records");
    let d = TestDaemon::start(&write_config(&dir.0, "")).await;
    let events = generate(3_000, 0.1, 62);
    let mut client = d.ingest().await;
    for b in batches(&events, 100) {
        client.submit(b).await.unwrap();
    }
    let expected = expected_totals(&events);
    let ((account, period), meters) = expected.iter().find(|(k, _)| k.0.starts_with("tel")).unwrap();
    let want_events: u64 = meters.values().map(|v| v.1).sum();
    let want_charge: Decimal = meters.values().map(|v| v.0).sum();
    let mut q = query(&d.target).await;
    let mut got = Vec::new();
    let mut token = String::new();
    loop {
        let request = proto::ListRatedRecordsRequest {
            account_id: account.clone(),
            from: String::new(),
            to: String::new(),
            page_size: 7,
            page_token: token,
        };
        let page = q.list_rated_records(request).await.unwrap().into_inner();
        assert!(page.records.len() <= 7);
        got.extend(page.records);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let in_period: Vec<_> = got.iter().filter(|r| &r.period == period).collect();
    assert_eq!(in_period.len() as u64, want_events);
    assert_eq!(
        in_period
            .iter()
            .map(|r| r.charge.parse::<Decimal>().unwrap())
            .sum::<Decimal>(),
        want_charge,
        "records sum to the totals"
    );
    let mut ids: Vec<&str> = got.iter().map(|r| r.event_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), got.len(), "each record once");

    // A time range keeps only the records inside it.
    let middle = &got[got.len() / 2].timestamp;
    let request = proto::ListRatedRecordsRequest {
        account_id: account.clone(),
        from: middle.clone(),
        to: String::new(),
        page_size: 1000,
        page_token: String::new(),
    };
    let later = q.list_rated_records(request).await.unwrap().into_inner().records;
    let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).unwrap();
    assert!(!later.is_empty() && later.iter().all(|r| parse(&r.timestamp) >= parse(middle)));
    assert!(later.len() < got.len());

    // Explain one: the stored charge, reproduced with its explanation.
    let voice = got.iter().find(|r| r.meter == "voice.seconds").expect("a call");
    let request = proto::ExplainRecordRequest {
        account_id: account.clone(),
        event_id: voice.event_id.clone(),
    };
    let e = q.explain_record(request).await.unwrap().into_inner();
    assert_eq!(e.record.unwrap().charge, voice.charge);
    let json: serde_json::Value = serde_json::from_str(&e.explanation_json).unwrap();
    assert_eq!(json["charge"], voice.charge);
    assert_eq!(json["increments"]["first"], "60");
    assert!(e.explanation_text.contains("charge    "), "{}", e.explanation_text);

    // Without the account: a full scan finds the same record.
    let request = proto::ExplainRecordRequest {
        account_id: String::new(),
        event_id: voice.event_id.clone(),
    };
    let by_id = q.explain_record(request).await.unwrap().into_inner();
    assert_eq!(by_id.record.unwrap().account_id, *account);
    let missing = q
        .explain_record(proto::ExplainRecordRequest {
            account_id: account.clone(),
            event_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let request = proto::ListRatedRecordsRequest {
        account_id: account.clone(),
        page_token: "abc".into(),
        ..Default::default()
    };
    assert_eq!(
        q.list_rated_records(request).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_add_up_to_the_totals() {
    let dir = TempDir::new("statement");
    let d = TestDaemon::start(&write_config(&dir.0, "")).await;
    let events = generate(3_000, 0.1, 63);
    send_all(&d, &events).await;
    let mut q = query(&d.target).await;
    for prefix in ["saas", "tel"] {
        let (account, period) = expected_totals(&events)
            .keys()
            .find(|k| k.0.starts_with(prefix))
            .unwrap()
            .clone();
        let s = q
            .statement(proto::StatementRequest {
                account_id: account.clone(),
                period: period.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        let t = d.totals(&account, &period).await.unwrap();
        let dec = |x: &str| x.parse::<Decimal>().unwrap();
        assert_eq!(s.total_charge, t.total_charge);
        assert_eq!(s.total_amount, t.total_amount);
        // Against the reference: the total and its amount, and the subtotal before discounts.
        let key = (account.clone(), period.clone());
        let want = &expected(&events).totals[&key];
        assert_eq!(dec(&s.total_charge), want.total_charge, "{key:?} statement total");
        assert_eq!(dec(&s.total_amount), want.total_amount, "{key:?} statement amount");
        let undiscounted = Reference::shipped().without_discounts().rate(&events).totals[&key].total_charge;
        assert_eq!(dec(&s.subtotal), undiscounted, "{key:?} subtotal before discounts");
        assert_eq!(
            dec(&s.subtotal) + dec(&s.discount),
            dec(&s.total_charge),
            "subtotal + discount = total"
        );
        let priced: Decimal = s
            .lines
            .iter()
            .filter(|l| !l.amount.is_empty())
            .map(|l| dec(&l.amount))
            .sum();
        assert_eq!(priced, dec(&s.total_charge), "the priced lines add up to the total");
        let text: Vec<&str> = s.lines.iter().map(|l| l.description.as_str()).collect();
        if prefix == "saas" {
            assert!(dec(&s.discount) < Decimal::ZERO, "saas-pro has 10% off: {text:?}");
            assert!(
                text.iter().any(|l| l.starts_with("discount 10% (plan version 1)")),
                "{text:?}"
            );
        } else {
            assert!(dec(&s.discount).is_zero());
            assert!(
                text.iter()
                    .any(|l| l.contains("band peak") || l.contains("band off-peak")),
                "{text:?}"
            );
            assert!(text.iter().any(|l| l.contains("connect fees")), "{text:?}");
        }
    }
    let missing = q
        .statement(proto::StatementRequest {
            account_id: "nobody".into(),
            period: "2026-11".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_writes_every_record_of_the_period() {
    let dir = TempDir::new("export");
    let d = TestDaemon::start(&write_config(&dir.0, "")).await;
    let events = generate(2_500, 0.1, 64);
    send_all(&d, &events).await;
    let expected = expected_totals(&events);
    let period = expected.keys().next().unwrap().1.clone();
    let (want_records, want_charge) = expected
        .iter()
        .filter(|((_, p), _)| *p == period)
        .flat_map(|(_, m)| m.values())
        .fold((0u64, Decimal::ZERO), |(n, c), v| (n + v.1, c + v.0));
    for format in ["csv", "jsonl"] {
        let out = dir.0.join(format!("export.{format}"));
        let run = output_within(
            std::process::Command::new(env!("CARGO_BIN_EXE_ratectl")).args([
                "export",
                "--period",
                &period,
                "--format",
                format,
                "--out",
                out.to_str().unwrap(),
                "--target",
                &d.target,
                "--json",
            ]),
            120,
        );
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        let summary: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
        assert_eq!(summary["records"], want_records);
        assert_eq!(
            summary["charge"].as_str().unwrap().parse::<Decimal>().unwrap(),
            want_charge
        );
        let text = std::fs::read_to_string(&out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        if format == "csv" {
            assert!(lines[0].starts_with("event_id,account,meter,quantity"));
            assert_eq!(lines.len() as u64, want_records + 1);
        } else {
            assert_eq!(lines.len() as u64, want_records);
            let first: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
            assert!(first["charge"].is_string() && first["plan"].is_string());
        }
    }
    d.stop().await;
}
