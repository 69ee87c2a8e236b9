//! Charging requests see what ingest sees (docs/charging.md): an Authorize goes through the
//! normalization rules of the door, so the grant and the charge of one call are of the event its
//! record keeps (the SIM looked up into its account, the national number in E.164), with what
//! was sent beside it; the rules never move a scoped caller's session outside its scope, and a
//! rule that scales units is refused for a session. A caller learns nothing of a session outside
//! its scope: it is answered as one that does not exist. The daemon's clock is pinned to
//! Wednesday 2026-11-18 12:00 UTC.

mod common;

use chrono::Duration;
use common::*;
use ratingd::client::connect::Access;
use ratingd::security::auth::hash_hex;
use ratingd::wire::proto::{
    self, admin_client::AdminClient, charging_client::ChargingClient, ingest_client::IngestClient,
    query_client::QueryClient,
};
use tonic::Code;

const ADMIN: &str = "admin-token-for-operators-000001";
/// The network's charging client, for every account.
const NETWORK: &str = "charging-token-for-every-account-01";
/// A charging client of a switch limited to Radius accounts (`radius-*`).
const SWITCH: &str = "charging-token-for-radius-00001";
/// A charging client limited to the `tel-` accounts.
const TEL: &str = "charging-token-for-tel-only-00001";

/// The rules of the shipped file that matter here: the SIM lookup, national numbers to E.164,
/// and bytes scaled to MB.
const RULES: &str = r#"
[[rule]]
name = "national-to-e164"
when = { meter = ["voice.seconds"], attributes = { destination = '^0[1-9]' } }
rewrite = { field = "destination", pattern = '^0', replacement = "+44" }

[[rule]]
name = "data-bytes-to-mb"
when = { meter = ["data.bytes"] }
scale = { divide = "1000000" }

[[rule]]
name = "sim-to-account"
when = { attributes = { imsi = '^\d{15}$' } }
lookup = { from = "imsi", to = "account_id", table = "sims" }

[tables.sims]
"262011234567890" = "tel-3"
"262011234567891" = "tel-4"
"#;

fn token(name: &str, secret: &str, role: &str, extra: &str) -> String {
    format!(
        "[[tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\nrole = \"{role}\"\n{extra}\n",
        hash_hex(secret)
    )
}

async fn start(dir: &TempDir) -> TestDaemon {
    let file = dir.0.join("mediation.toml");
    std::fs::write(&file, RULES).unwrap();
    let extra = format!(
        "[mediation]\nrules = {:?}\n{}{}{}{}",
        file.display().to_string(),
        token("admin", ADMIN, "admin", ""),
        token("network", NETWORK, "charging", ""),
        token("switch", SWITCH, "charging", "account_prefix = \"radius-\""),
        token("tel", TEL, "charging", "account_prefix = \"tel-\""),
    );
    TestDaemon::start(&write_config(&dir.0, &extra)).await
}

async fn authed(d: &TestDaemon, secret: &str) -> ratingd::client::connect::Authed {
    let access = Access {
        target: d.target.clone(),
        token: Some(secret.into()),
        ..Access::default()
    };
    access.authed().await.expect("a channel")
}

fn units(n: i64) -> Option<proto::Quantity> {
    Some(proto::Quantity { units: n, nanos: 0 })
}

fn attributes(list: &[(&str, &str)]) -> Vec<proto::Attribute> {
    list.iter()
        .map(|(k, v)| proto::Attribute {
            key: k.to_string(),
            value: v.to_string(),
        })
        .collect()
}

async fn explain_as_admin(d: &TestDaemon, account: &str, event_id: &str) -> proto::ExplainRecordResponse {
    QueryClient::new(authed(d, ADMIN).await)
        .explain_record(proto::ExplainRecordRequest {
            account_id: account.into(),
            event_id: event_id.into(),
        })
        .await
        .expect("a record")
        .into_inner()
}

async fn top_up(d: &TestDaemon, account: &str) {
    AdminClient::new(authed(d, ADMIN).await)
        .top_up(proto::TopUpRequest {
            account_id: account.into(),
            currency: "EUR".into(),
            amount: "10".into(),
            id: format!("t-{account}"),
            ..Default::default()
        })
        .await
        .expect("a top-up");
}

/// A call authorized as the switch sends it (a Radius account, the SIM, a national number) is
/// granted, charged and recorded as the normalized event: the same charge ingest gives the same
/// event sent by another SIM, and the record keeps what was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_goes_through_the_normalization_rules_of_the_door() {
    let dir = TempDir::new("charging-rules");
    let d = start(&dir).await;
    top_up(&d, "tel-3").await;
    let started = test_now() - Duration::minutes(10);
    let sent = [("imsi", "262011234567890"), ("destination", "02071234567")];
    let mut switch = ChargingClient::new(authed(&d, NETWORK).await);
    let call = proto::AuthorizeRequest {
        session_id: "call-1".into(),
        account_id: "radius-77".into(),
        meter: "voice.seconds".into(),
        attributes: attributes(&sent),
        requested_units: units(120),
        started_at: started.to_rfc3339(),
    };
    let grant = switch
        .authorize(call.clone())
        .await
        .expect("granted to the account the SIM names")
        .into_inner();
    assert_eq!(grant.granted_units, "120");
    assert_eq!(grant.currency, "EUR");
    // A resent Authorize is normalized the same way, and answers the session as it stands.
    let again = switch.authorize(call).await.expect("the same session").into_inner();
    assert_eq!(again, grant);
    let ended = switch
        .terminate(proto::TerminateRequest {
            session_id: "call-1".into(),
            used_units: units(61),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ended.rejected_detail.is_empty(), "{ended:?}");
    // The same call through ingest, from the SIM of tel-4: the same rules, the same charge.
    let call_2 = event(
        "call-2",
        "radius-78",
        "voice.seconds",
        61,
        0,
        started,
        &[("imsi", "262011234567891"), ("destination", "02071234567")],
    );
    let ack = IngestClient::new(authed(&d, ADMIN).await)
        .submit(proto::UsageBatch {
            batch_id: 1,
            events: vec![call_2],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.accepted, 1);
    let via_ingest = explain_as_admin(&d, "tel-4", "call-2").await;
    let via_charging = explain_as_admin(&d, "tel-3", "call-1").await;
    let record = via_charging.record.as_ref().expect("the session's record");
    assert_eq!(ended.charge, record.charge);
    assert_eq!(record.charge, via_ingest.record.as_ref().unwrap().charge);
    assert_eq!(record.account_id, "tel-3");
    let destination = record.attributes.iter().find(|a| a.key == "destination").unwrap();
    assert_eq!(destination.value, "+442071234567", "priced as E.164");
    let as_sent = record.as_sent.as_ref().expect("the event as sent is kept");
    assert_eq!(as_sent.account_id, "radius-77");
    assert!(
        as_sent
            .attributes
            .iter()
            .any(|a| a.key == "destination" && a.value == "02071234567"),
        "{as_sent:?}"
    );
    assert_eq!(as_sent.rules, ["national-to-e164", "sim-to-account"]);
    assert!(
        via_charging
            .explanation_text
            .contains("normalized by rules national-to-e164, sim-to-account"),
        "{}",
        via_charging.explanation_text
    );
    d.stop().await;
}

/// What the door refuses, a session is refused too: moved out of the caller's scope by the
/// rules, or with its units scaled by a rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_never_move_a_session_out_of_scope_nor_scale_its_units() {
    let dir = TempDir::new("charging-rules-refused");
    let d = start(&dir).await;
    top_up(&d, "tel-3").await;
    let mut tel = ChargingClient::new(authed(&d, TEL).await);
    // tel-0 is within the token's scope as sent; the SIM moves it to tel-3, also within it.
    let fine = tel
        .authorize(proto::AuthorizeRequest {
            session_id: "in-scope".into(),
            account_id: "tel-0".into(),
            meter: "voice.seconds".into(),
            attributes: attributes(&[("imsi", "262011234567890"), ("destination", "+441")]),
            requested_units: units(60),
            ..Default::default()
        })
        .await;
    assert!(fine.is_ok(), "{fine:?}");
    // The switch may touch radius-* only: a SIM that moves the session to tel-3 is refused.
    let moved = ChargingClient::new(authed(&d, SWITCH).await)
        .authorize(proto::AuthorizeRequest {
            session_id: "moved".into(),
            account_id: "radius-1".into(),
            meter: "voice.seconds".into(),
            attributes: attributes(&[("imsi", "262011234567890"), ("destination", "+441")]),
            requested_units: units(60),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(moved.code(), Code::InvalidArgument);
    assert!(moved.message().contains("outside the caller's scope"), "{moved:?}");
    let scaled = tel
        .authorize(proto::AuthorizeRequest {
            session_id: "bytes".into(),
            account_id: "tel-3".into(),
            meter: "data.bytes".into(),
            requested_units: units(5_000_000),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(scaled.code(), Code::InvalidArgument);
    assert!(scaled.message().contains("data-bytes-to-mb"), "{scaled:?}");
    d.stop().await;
}

/// A session of an account outside the token's scope is one it cannot see: NOT_FOUND, and the
/// answer does not say whose it is (the caller sent only an id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_session_is_not_found_and_not_named() {
    let dir = TempDir::new("charging-scope");
    let d = start(&dir).await;
    top_up(&d, "tel-3").await;
    ChargingClient::new(authed(&d, ADMIN).await)
        .authorize(proto::AuthorizeRequest {
            session_id: "theirs".into(),
            account_id: "tel-3".into(),
            meter: "voice.seconds".into(),
            attributes: attributes(&[("destination", "+441")]),
            requested_units: units(60),
            ..Default::default()
        })
        .await
        .expect("a session of tel-3");
    let mut switch = ChargingClient::new(authed(&d, SWITCH).await);
    let update = switch
        .update(proto::UpdateRequest {
            session_id: "theirs".into(),
            used_units: units(1),
            requested_units: units(1),
        })
        .await
        .unwrap_err();
    let terminate = switch
        .terminate(proto::TerminateRequest {
            session_id: "theirs".into(),
            used_units: units(1),
        })
        .await
        .unwrap_err();
    let unknown = switch
        .update(proto::UpdateRequest {
            session_id: "nobody".into(),
            used_units: units(1),
            requested_units: units(1),
        })
        .await
        .unwrap_err();
    for (call, status) in [("update", &update), ("terminate", &terminate)] {
        assert_eq!(status.code(), Code::NotFound, "{call}: {status:?}");
        assert!(
            !status.message().contains("tel-3"),
            "{call} names the owner: {status:?}"
        );
        assert_eq!(
            status.message().replace("theirs", "nobody"),
            unknown.message(),
            "{call} answers as for a session that does not exist"
        );
    }
    d.stop().await;
}
