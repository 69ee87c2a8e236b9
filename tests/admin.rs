//! The Admin API: subscriptions in force for later events and persisted across restarts, refused
//! changes write nothing, tariff reload over gRPC and on SIGHUP, upcoming versions.

mod common;

use chrono::{Duration, Utc};
use common::*;
use ratingd::ingest::proto::{self, admin_client::AdminClient};

async fn admin(target: &str) -> AdminClient<tonic::transport::Channel> {
    AdminClient::connect(target.to_string()).await.unwrap()
}

fn subscription(account: &str, plan: &str, from: &str, to: &str) -> proto::Subscription {
    proto::Subscription {
        account_id: account.into(),
        plan_id: plan.into(),
        from: from.into(),
        to: to.into(),
        discount_percent: String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_applies_to_later_events_and_survives_a_restart() {
    let dir = TempDir::new("admin-subs");
    let config = write_config(&dir.0, "");
    let d = TestDaemon::start(&config).await;
    let at = Utc::now() - Duration::minutes(10);
    let events = vec![
        event("n-1", "newco", "api.requests", 1000, 0, at, &[]),
        event("n-2", "newco", "api.requests", 500, 0, at, &[]),
    ];
    let batch = |id| proto::UsageBatch {
        batch_id: id,
        events: events.clone(),
    };
    let ack = d.ingest().await.submit(batch(1)).await.unwrap().into_inner();
    assert_eq!(ack.rejected, 2, "no subscription yet: NO_TARIFF");
    assert!(
        ack.results
            .iter()
            .all(|r| r.reason == proto::RejectReason::NoTariff as i32)
    );

    let mut a = admin(&d.target).await;
    let refused = [
        subscription("newco", "gold", "2020-01-01T00:00:00Z", ""),
        subscription("newco", "saas-pro", "2026-02-01T00:00:00Z", "2026-01-01T00:00:00Z"),
        subscription("newco", "saas-pro", "yesterday", ""),
        subscription("", "saas-pro", "2020-01-01T00:00:00Z", ""),
    ];
    for s in refused {
        let status = a.upsert_subscription(s.clone()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{s:?}");
    }
    let status = a
        .get_subscriptions(proto::GetSubscriptionsRequest {
            account_id: "newco".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        tonic::Code::NotFound,
        "nothing was written by the refused calls"
    );

    let mut discounted = subscription("newco", "saas-pro", "2020-01-01T00:00:00Z", "");
    discounted.discount_percent = "50".into();
    a.upsert_subscription(discounted).await.unwrap();
    // An overlapping second subscription is refused.
    let overlap = a
        .upsert_subscription(subscription("newco", "telecom-standard", "2021-01-01T00:00:00Z", ""))
        .await
        .unwrap_err();
    assert_eq!(overlap.code(), tonic::Code::InvalidArgument);

    let ack = d.ingest().await.submit(batch(2)).await.unwrap().into_inner();
    assert_eq!(
        ack.accepted, 2,
        "the rejected events are rated once the subscription exists"
    );
    let period = at.format("%Y-%m").to_string();
    let t = d.totals("newco", &period).await.unwrap();
    // 1500 requests at 0.0010, 10% version discount, then 50% subscription discount.
    assert_eq!(t.total_charge, "0.675000000");
    d.stop().await;

    let d = TestDaemon::start(&config).await;
    let list = admin(&d.target)
        .await
        .get_subscriptions(proto::GetSubscriptionsRequest {
            account_id: "newco".into(),
        })
        .await
        .unwrap();
    let list = list.into_inner().subscriptions;
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].plan_id.as_str(), list[0].discount_percent.as_str()),
        ("saas-pro", "50")
    );
    let more = vec![event("n-3", "newco", "api.requests", 100, 0, at, &[])];
    let ack = d
        .ingest()
        .await
        .submit(proto::UsageBatch {
            batch_id: 3,
            events: more,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.accepted, 1, "the stored subscription is in force after a restart");
    d.stop().await;
}

const EXTRA_PLAN: &str = r#"
[[plans]]
id = "extra"
currency = "CHF"
time_zone = "Europe/Zurich"
rounding = { places = 2, mode = "half-up" }
[[plans.versions]]
effective_from = "2026-01-01T00:00:00Z"
[plans.versions.meters."api.requests"]
model = "per_unit"
price = "0.01"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tariff_reload_takes_a_valid_file_and_keeps_the_old_tariffs_on_an_invalid_one() {
    let dir = TempDir::new("admin-reload");
    let tariffs = dir.0.join("tariffs.toml");
    let shipped = std::fs::read_to_string(repo().join("config/tariffs.toml")).unwrap();
    std::fs::write(&tariffs, &shipped).unwrap();
    let config = write_config(&dir.0, "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &repo().join("config/tariffs.toml").display().to_string(),
        &tariffs.display().to_string(),
    );
    std::fs::write(&config, text).unwrap();
    let d = TestDaemon::start(&config).await;
    let mut a = admin(&d.target).await;
    let upcoming = a
        .list_upcoming_versions(proto::ListUpcomingVersionsRequest {})
        .await
        .unwrap()
        .into_inner()
        .versions;
    assert!(
        upcoming.iter().any(|v| v.plan_id == "saas-pro" && v.version == 2),
        "{upcoming:?}"
    );

    std::fs::write(&tariffs, format!("{shipped}{EXTRA_PLAN}")).unwrap();
    let r = a
        .reload_tariffs(proto::ReloadTariffsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.plans, 3);
    a.upsert_subscription(subscription("swiss", "extra", "2020-01-01T00:00:00Z", ""))
        .await
        .unwrap();

    // A broken file, and one that drops a plan in use: refused, the tariffs in force stay.
    std::fs::write(
        &tariffs,
        format!("{shipped}{}", EXTRA_PLAN.replace("\"0.01\"", "\"-0.01\"")),
    )
    .unwrap();
    let status = a.reload_tariffs(proto::ReloadTariffsRequest {}).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("price must be >= 0"), "{}", status.message());
    std::fs::write(&tariffs, &shipped).unwrap();
    let status = a.reload_tariffs(proto::ReloadTariffsRequest {}).await.unwrap_err();
    assert!(status.message().contains("extra"), "{}", status.message());
    let at = Utc::now() - Duration::minutes(1);
    let ack = d
        .ingest()
        .await
        .submit(proto::UsageBatch {
            batch_id: 1,
            events: vec![event("s-1", "swiss", "api.requests", 3, 0, at, &[])],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.accepted, 1, "the extra plan is still in force");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_tariffs() {
    let dir = TempDir::new("admin-sighup");
    let tariffs = dir.0.join("tariffs.toml");
    let shipped = std::fs::read_to_string(repo().join("config/tariffs.toml")).unwrap();
    std::fs::write(&tariffs, &shipped).unwrap();
    let config = write_config(&dir.0, "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &repo().join("config/tariffs.toml").display().to_string(),
        &tariffs.display().to_string(),
    );
    std::fs::write(&config, text).unwrap();
    let daemon = DaemonProcess::spawn(&config);
    let mut a = admin(&daemon.target).await;
    assert!(
        a.upsert_subscription(subscription("swiss", "extra", "2020-01-01T00:00:00Z", ""))
            .await
            .is_err()
    );
    std::fs::write(&tariffs, format!("{shipped}{EXTRA_PLAN}")).unwrap();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &daemon.child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    // The reload runs asynchronously after the signal: poll (bounded) until the plan is known.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while a
        .upsert_subscription(subscription("swiss", "extra", "2020-01-01T00:00:00Z", ""))
        .await
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not reload the tariffs"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
