//! The charging metrics, in a test binary of their own (one metrics recorder per process, so the
//! counts are exactly this test's): reservations open, expired and denied, and ledger entries by
//! kind.

mod common;

use chrono::Duration;
use common::*;
use ratingd::wire::proto::{self, admin_client::AdminClient, charging_client::ChargingClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_open_expired_and_denied_are_counted() {
    let dir = TempDir::new("chg-metrics");
    let port = free_port();
    let tariffs = format!(
        "{}[[plans]]\nid = \"m-eur\"\ncurrency = \"EUR\"\ntime_zone = \"UTC\"\nrounding = {{ places = 2, mode = \"half-up\" }}\n\
         [[plans.versions]]\neffective_from = \"2026-01-01T00:00:00Z\"\n\
         [plans.versions.meters.\"m.voice\"]\nmodel = \"per_unit\"\nprice = \"0.01\"\n",
        include_str!("../config/tariffs.toml")
    );
    let extra = format!(
        "metrics_listen = \"127.0.0.1:{port}\"\nreservation_ttl_seconds = 30\n\
         [[subscriptions]]\naccount = \"m-1\"\nplan = \"m-eur\"\nfrom = \"2026-01-01T00:00:00Z\"\n"
    );
    let (config, _) = write_config_with_tariffs(&dir.0, &extra, &tariffs);
    let d = TestDaemon::start(&config).await;
    AdminClient::new(channel(&d.target).await)
        .top_up(proto::TopUpRequest {
            account_id: "m-1".into(),
            amount: "1.00".into(),
            currency: "EUR".into(),
            id: "t1".into(),
            expires_at: String::new(),
        })
        .await
        .unwrap();
    let mut c = ChargingClient::new(channel(&d.target).await);
    let ask = |id: &str, units| proto::AuthorizeRequest {
        session_id: id.into(),
        account_id: "m-1".into(),
        meter: "m.voice".into(),
        requested_units: Some(proto::Quantity { units, nanos: 0 }),
        ..Default::default()
    };
    // 60 units at 0.01 (0.60), then 40 (0.40): nothing left, so the third is denied.
    c.authorize(ask("a", 60)).await.unwrap();
    c.authorize(ask("b", 60)).await.unwrap();
    assert!(c.authorize(ask("c", 10)).await.is_err());
    let addr = format!("127.0.0.1:{port}");
    let m = scrape_metrics(&addr);
    assert_eq!(m["ratingd_reservations_open"], 2.0);
    assert_eq!(m["ratingd_reservations_denied_total"], 1.0);
    assert_eq!(m["ratingd_ledger_entries_total{kind=\"reservation\"}"], 2.0);

    // Both lapse; the sweep (or a read) releases them.
    d.running.as_ref().unwrap().clock.advance(Duration::seconds(31));
    wait_until(20, "both reservations to expire", || {
        let addr = addr.clone();
        async move { scrape_metrics(&addr).get("ratingd_reservations_expired_total") == Some(&2.0) }
    })
    .await;
    let m = scrape_metrics(&addr);
    assert_eq!(m["ratingd_reservations_open"], 0.0);
    assert_eq!(m["ratingd_ledger_entries_total{kind=\"release\"}"], 2.0);
    assert_eq!(m["ratingd_ledger_entries_total{kind=\"topup\"}"], 1.0);
    d.stop().await;
}
