//! The Admin API: subscriptions in force for later events and persisted across restarts, refused
//! changes write nothing, tariff reload over gRPC and on SIGHUP, upcoming versions.

mod common;

use chrono::{Duration, TimeZone, Utc};
use common::*;
use ratingd::wire::proto::{self, admin_client::AdminClient};
use rust_decimal::Decimal;

async fn admin(target: &str) -> AdminClient<tonic::transport::Channel> {
    AdminClient::new(common::channel(target).await)
}

fn subscription(account: &str, plan: &str, from: &str, to: &str) -> proto::Subscription {
    proto::Subscription {
        account_id: account.into(),
        plan_id: plan.into(),
        from: from.into(),
        to: to.into(),
        discount_percent: String::new(),
        alert_thresholds: Vec::new(),
        prepaid: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_applies_to_later_events_and_survives_a_restart() {
    let dir = TempDir::new("admin-subs");
    let config = write_config(&dir.0, "");
    let d = TestDaemon::start(&config).await;
    let at = test_now() - Duration::minutes(10);
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
    let t = d.totals("newco", "2026-11").await.unwrap();
    // 1500 requests at 0.0010, 10% version discount, then 50% subscription discount.
    assert_eq!(t.total_charge, "0.675000000");
    let mut reference = Reference::shipped();
    let since_2020 = Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap();
    reference.subscribe("newco", "saas-pro", since_2020, None, Decimal::from(50));
    let want = reference.rate(&events).totals;
    assert_totals_equal(
        &reference,
        "newco",
        "2026-11",
        &t,
        &want[&("newco".into(), "2026-11".into())],
    );
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

/// A test config whose tariff file is a copy the test may rewrite: (config, tariff file, its text).
fn config_with_own_tariffs(dir: &TempDir) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let tariffs = dir.0.join("tariffs.toml");
    let shipped = std::fs::read_to_string(repo().join("config/tariffs.toml")).unwrap();
    std::fs::write(&tariffs, &shipped).unwrap();
    let config = write_config(&dir.0, "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &repo().join("config/tariffs.toml").display().to_string(),
        &tariffs.display().to_string(),
    );
    std::fs::write(&config, text).unwrap();
    (config, tariffs, shipped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tariff_reload_takes_a_valid_file_and_keeps_the_old_tariffs_on_an_invalid_one() {
    let dir = TempDir::new("admin-reload");
    let (config, tariffs, shipped) = config_with_own_tariffs(&dir);
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
    assert_eq!(r.plans, 5, "the 4 shipped plans and the extra one");
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
    let at = test_now() - Duration::minutes(1);
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
    let (config, tariffs, shipped) = config_with_own_tariffs(&dir);
    let daemon = DaemonProcess::spawn(&config);
    let mut a = admin(&daemon.target).await;
    // Before the reload the plan does not exist.
    let unknown = a
        .upsert_subscription(subscription("swiss", "extra", "2020-01-01T00:00:00Z", ""))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::InvalidArgument, "{unknown:?}");
    assert!(unknown.message().contains("unknown plan \"extra\""), "{unknown:?}");
    std::fs::write(&tariffs, format!("{shipped}{EXTRA_PLAN}")).unwrap();
    daemon.signal("HUP");
    // The reload runs asynchronously after the signal: poll (bounded) until the plan is known.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match a
            .upsert_subscription(subscription("swiss", "extra", "2020-01-01T00:00:00Z", ""))
            .await
        {
            Ok(_) => break,
            Err(status) => assert!(
                status.code() == tonic::Code::InvalidArgument && status.message().contains("unknown plan"),
                "only the unknown plan may refuse it: {status:?}"
            ),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not reload the tariffs within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn suspense(
    a: &mut AdminClient<tonic::transport::Channel>,
    reason: proto::RejectReason,
) -> Vec<proto::SuspendedEvent> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let request = proto::ListSuspenseRequest {
            reason: reason as i32,
            page_size: 2,
            page_token: token,
        };
        let page = a.list_suspense(request).await.unwrap().into_inner();
        all.extend(page.events);
        if page.next_page_token.is_empty() {
            return all;
        }
        token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspense_lists_and_reprocesses_rejected_events() {
    let dir = TempDir::new("admin-suspense");
    let d = TestDaemon::start(&write_config(&dir.0, "")).await;
    let at = test_now() - Duration::minutes(10);
    let events = vec![
        event("l-1", "later", "api.requests", 10, 0, at, &[]),
        event("l-2", "later", "api.requests", 20, 0, at, &[]),
        event("l-3", "later", "storage.gb_hours", 150, 0, at, &[]),
        event("f-1", "saas-0", "fax.pages", 1, 0, at, &[]),
        event("", "saas-0", "api.requests", 1, 0, at, &[]),
    ];
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
    assert_eq!(ack.rejected, 5);
    let mut a = admin(&d.target).await;
    assert_eq!(
        suspense(&mut a, proto::RejectReason::Unspecified).await.len(),
        5,
        "every rejection waits in suspense"
    );
    let no_tariff = suspense(&mut a, proto::RejectReason::NoTariff).await;
    assert_eq!(no_tariff.len(), 3);
    assert_eq!(no_tariff[0].event.as_ref().unwrap().event_id, "l-1", "oldest first");
    assert!(no_tariff.iter().all(|e| e.detail.contains("no subscription")));

    // Still no plan: the events stay in suspense (once each) with their reason.
    let by_reason = proto::ReprocessSuspenseRequest {
        reason: proto::RejectReason::NoTariff as i32,
        ids: vec![],
    };
    let r = a.reprocess_suspense(by_reason.clone()).await.unwrap().into_inner();
    assert_eq!((r.reprocessed, r.accepted, r.rejected), (3, 0, 3));
    assert_eq!(suspense(&mut a, proto::RejectReason::NoTariff).await.len(), 3);

    // Once the account has a plan they are rated and leave suspense.
    a.upsert_subscription(subscription("later", "saas-pro", "2020-01-01T00:00:00Z", ""))
        .await
        .unwrap();
    let r = a.reprocess_suspense(by_reason).await.unwrap().into_inner();
    assert_eq!((r.reprocessed, r.accepted, r.rejected), (3, 3, 0));
    assert!(suspense(&mut a, proto::RejectReason::NoTariff).await.is_empty());
    let t = d.totals("later", "2026-11").await.unwrap();
    assert_eq!(t.meters.iter().map(|m| m.events).sum::<u64>(), 3);
    // Priced as if they had arrived once the plan existed: 30 requests and 2 storage blocks, 10% off.
    let mut reference = Reference::shipped();
    let since_2020 = Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap();
    reference.subscribe("later", "saas-pro", since_2020, None, Decimal::ZERO);
    let want = reference.rate(&events[..3]).totals;
    assert_eq!(t.total_charge, "0.927000000");
    assert_totals_equal(
        &reference,
        "later",
        "2026-11",
        &t,
        &want[&("later".into(), "2026-11".into())],
    );

    // By id: an unknown meter is still unknown.
    let fax = suspense(&mut a, proto::RejectReason::UnknownMeter).await;
    let r = a
        .reprocess_suspense(proto::ReprocessSuspenseRequest {
            reason: 0,
            ids: vec![fax[0].id.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.reprocessed, r.rejected), (1, 1));
    assert_eq!(suspense(&mut a, proto::RejectReason::UnknownMeter).await.len(), 1);

    let bad = a
        .list_suspense(proto::ListSuspenseRequest {
            reason: 0,
            page_size: 2,
            page_token: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    let nothing = a
        .reprocess_suspense(proto::ReprocessSuspenseRequest { reason: 0, ids: vec![] })
        .await
        .unwrap_err();
    assert_eq!(nothing.code(), tonic::Code::InvalidArgument);
    d.stop().await;
}

/// A reload that edits a version in force is refused, naming the plan, the version and what
/// changed; earlier records keep their explanation and new events their price. A version not yet
/// in force may change. The check survives a restart: a start with the edited file is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_in_force_is_never_edited() {
    let dir = TempDir::new("admin-edit");
    let (config, tariffs, shipped) = config_with_own_tariffs(&dir);
    let d = TestDaemon::start(&config).await;
    let at = test_now() - Duration::minutes(1);
    // 1000 requests at volume tier 1 (0.0010), 10% off: 0.9.
    let e1 = event("e-1", "saas-0", "api.requests", 1000, 0, at, &[]);
    assert_eq!(d.submit(1, vec![e1]).await.accepted, 1);
    let mut a = admin(&d.target).await;

    // saas-pro version 1 has been in force since 2026-01-01: its first tier may not change.
    let edited = shipped.replacen(
        "{ up_to = 1000000, price = \"0.0010\" }",
        "{ up_to = 1000000, price = \"0.0020\" }",
        1,
    );
    assert_ne!(edited, shipped);
    std::fs::write(&tariffs, &edited).unwrap();
    let status = a.reload_tariffs(proto::ReloadTariffsRequest {}).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(
        status.message().contains(
            "plan \"saas-pro\" version 1 (in force since 2026-01-01T00:00:00+00:00) was edited: \
             meters.\"api.requests\".tiers[0].price: 0.001 -> 0.002"
        ),
        "{}",
        status.message()
    );
    // The tariffs in force stay: the next 1000 requests are priced as before.
    let e2 = event("e-2", "saas-0", "api.requests", 1000, 0, at, &[]);
    assert_eq!(d.submit(2, vec![e2]).await.accepted, 1);
    let t = d.totals("saas-0", "2026-11").await.unwrap();
    assert_eq!(t.total_charge, "1.800000000");
    let explained = proto::query_client::QueryClient::new(channel(&d.target).await)
        .explain_record(proto::ExplainRecordRequest {
            account_id: "saas-0".into(),
            event_id: "e-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(explained.record.unwrap().charge, "0.900000000");

    // Version 2 takes effect in 2027: editing it now is allowed.
    let upcoming = shipped.replacen(
        "{ up_to = 1000000, price = \"0.0009\" }",
        "{ up_to = 1000000, price = \"0.00085\" }",
        1,
    );
    assert_ne!(upcoming, shipped);
    std::fs::write(&tariffs, &upcoming).unwrap();
    a.reload_tariffs(proto::ReloadTariffsRequest {}).await.unwrap();
    d.stop().await;

    // Edited while the daemon was down: the start is refused, with the same reason.
    std::fs::write(&tariffs, &edited).unwrap();
    let options = ratingd::app::StartOptions {
        clock: Some(std::sync::Arc::new(ratingd::pipeline::Clock::starting_at(test_now()))),
        ..Default::default()
    };
    let error = ratingd::app::start_with(&load(&config), options)
        .await
        .err()
        .expect("a start with an edited version in force is refused")
        .to_string();
    assert!(
        error.contains("plan \"saas-pro\" version 1") && error.contains("tiers[0].price: 0.001 -> 0.002"),
        "{error}"
    );
}
