//! The Query API: totals with amounts and projection, account listing and ranking, quotes.

mod common;

use chrono::{Duration, Utc};
use common::*;
use ratingd::ingest::proto::{self, query_client::QueryClient};
use rust_decimal::Decimal;

async fn query(target: &str) -> QueryClient<tonic::transport::Channel> {
    QueryClient::connect(target.to_string()).await.unwrap()
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
    let at = Utc::now() - Duration::minutes(30);
    let period = at.format("%Y-%m").to_string();
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
