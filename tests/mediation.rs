//! Normalization rules through the running daemon (docs/mediation.md): a national number
//! rewritten to E.164 is charged as the E.164 number is, bytes scaled to MB are charged as MB,
//! test traffic is dropped and answered DROPPED, a SIM number is looked up into its account (and a
//! SIM missing from the table waits in suspense as sent, until the table names it); the record
//! keeps the event as sent and ExplainRecord names the rules; a change of rules never makes a
//! resend new; a refused rules file leaves the rules in force. The daemon's clock is pinned to
//! Wednesday 2026-11-18 12:00 UTC.

mod common;

use chrono::Duration;
use common::*;
use ratingd::wire::proto::{self, admin_client::AdminClient};

/// The rules of these tests: each kind that reaches the pipeline (the unit tests in
/// `domain::mediation` take every kind by hand).
const RULES: &str = r#"
[[rule]]
name = "b-number-is-destination"
rename = { from = "b_number", to = "destination" }

[[rule]]
name = "destination-digits-only"
when = { meter = ["voice.seconds"], attributes = { destination = '[\s\-]' } }
rewrite = { field = "destination", pattern = '[\s\-]', replacement = "" }

[[rule]]
name = "national-to-e164"
when = { meter = ["voice.seconds"], attributes = { destination = '^0[1-9]' } }
rewrite = { field = "destination", pattern = '^0', replacement = "+49" }

[[rule]]
name = "data-bytes-to-mb"
when = { meter = ["data.bytes"] }
scale = { divide = "1000000" }

[[rule]]
name = "data-bytes-meter"
when = { meter = ["data.bytes"] }
set_meter = "data.mb"

[[rule]]
name = "drop-test-traffic"
when = { attributes = { traffic = '^test$' } }
drop = true

[[rule]]
name = "sim-to-account"
when = { attributes = { imsi = '^\d{15}$' } }
lookup = { from = "imsi", to = "account_id", table = "sims" }

[tables.sims]
"262011234567890" = "tel-3"
"#;

/// A config with the rules above in `dir/mediation.toml`: its path and the rules file's.
fn config(dir: &TempDir, rules: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let file = dir.0.join("mediation.toml");
    std::fs::write(&file, rules).unwrap();
    let extra = format!("[mediation]\nrules = {:?}\n", file.display().to_string());
    (write_config(&dir.0, &extra), file)
}

fn record<'a>(records: &'a [proto::RatedRecord], id: &str) -> &'a proto::RatedRecord {
    records
        .iter()
        .find(|r| r.event_id == id)
        .unwrap_or_else(|| panic!("no record of {id} in {records:#?}"))
}

fn attribute<'a>(attributes: &'a [proto::Attribute], key: &str) -> Option<&'a str> {
    attributes.iter().find(|a| a.key == key).map(|a| a.value.as_str())
}

#[tokio::test]
async fn dirty_usage_is_rated_as_its_clean_form_and_keeps_what_was_sent() {
    let dir = TempDir::new("mediation-rules");
    let (config, _) = config(&dir, RULES);
    let d = TestDaemon::start(&config).await;
    let at = d.now() - Duration::hours(1);
    let ack = d
        .submit(
            1,
            vec![
                // A national number with separators, under the switch's own attribute name ...
                event(
                    "v-1",
                    "tel-1",
                    "voice.seconds",
                    61,
                    0,
                    at,
                    &[("b_number", "030 123-4567")],
                ),
                // ... and the same call as the tariffs expect it.
                event(
                    "v-2",
                    "tel-2",
                    "voice.seconds",
                    61,
                    0,
                    at,
                    &[("destination", "+49301234567")],
                ),
                // 2.5 MB in bytes, and in MB.
                event("d-1", "tel-4", "data.bytes", 2_500_000, 0, at, &[]),
                event("d-2", "tel-5", "data.mb", 2, 500_000_000, at, &[]),
                // A probe.
                event("t-1", "tel-6", "sms.count", 1, 0, at, &[("traffic", "test")]),
            ],
        )
        .await;
    assert_eq!(
        (ack.accepted, ack.duplicate, ack.rejected, ack.dropped),
        (4, 0, 0, 1),
        "{ack:?}"
    );
    let dropped = &ack.results[0];
    assert_eq!((dropped.index, dropped.outcome), (4, proto::Outcome::Dropped as i32));
    assert_eq!(dropped.detail, "dropped by rule \"drop-test-traffic\"");

    let (v1, v2) = (
        records_from(&d.target, "tel-1", None).await,
        records_from(&d.target, "tel-2", None).await,
    );
    let (v1, v2) = (record(&v1, "v-1"), record(&v2, "v-2"));
    assert_eq!(attribute(&v1.attributes, "destination"), Some("+49301234567"));
    assert_eq!(attribute(&v1.attributes, "b_number"), None);
    assert_eq!(v1.charge, v2.charge, "the clean form is charged as the clean event");
    let sent = v1.as_sent.as_ref().expect("the event as sent is kept");
    assert_eq!(
        (sent.account_id.as_str(), sent.meter.as_str(), sent.quantity.as_str()),
        ("tel-1", "voice.seconds", "61")
    );
    assert_eq!(attribute(&sent.attributes, "b_number"), Some("030 123-4567"));
    assert_eq!(
        sent.rules,
        ["b-number-is-destination", "destination-digits-only", "national-to-e164"]
    );
    assert!(v2.as_sent.is_none(), "an event no rule changed keeps no copy");

    let (d1, d2) = (
        records_from(&d.target, "tel-4", None).await,
        records_from(&d.target, "tel-5", None).await,
    );
    let (d1, d2) = (record(&d1, "d-1"), record(&d2, "d-2"));
    assert_eq!((d1.meter.as_str(), d1.quantity.as_str()), ("data.mb", "2.5"));
    assert_eq!(d1.charge, d2.charge);
    assert_eq!(d1.as_sent.as_ref().unwrap().quantity, "2500000");
    assert!(
        records_from(&d.target, "tel-6", None).await.is_empty(),
        "a dropped event is not kept"
    );

    let explained = explain(&d.target, "tel-1", "v-1").await;
    assert!(
        explained.explanation_text.starts_with(
            "normalized by rules b-number-is-destination, destination-digits-only, national-to-e164; as sent: \
             account \"tel-1\", meter \"voice.seconds\", quantity 61, attributes {b_number=\"030 123-4567\"}\n"
        ),
        "{}",
        explained.explanation_text
    );
    assert_eq!(explained.record.unwrap().as_sent.unwrap().rules.len(), 3);
    d.stop().await;
}

#[tokio::test]
async fn a_sim_missing_from_the_table_waits_in_suspense_until_the_table_names_it() {
    let dir = TempDir::new("mediation-sim");
    let (config, rules_file) = config(&dir, RULES);
    let d = TestDaemon::start(&config).await;
    let at = d.now() - Duration::hours(1);
    let ack = d
        .submit(
            1,
            vec![
                event("s-1", "radius", "data.mb", 10, 0, at, &[("imsi", "262011234567890")]),
                event("s-2", "radius", "data.mb", 20, 0, at, &[("imsi", "262019999999999")]),
            ],
        )
        .await;
    assert_eq!((ack.accepted, ack.rejected), (1, 1), "{ack:?}");
    assert_eq!(ack.results[0].reason, proto::RejectReason::InvalidField as i32);
    assert_eq!(
        ack.results[0].detail,
        "rule \"sim-to-account\": imsi \"262019999999999\" is not in table \"sims\""
    );
    let s1 = records_from(&d.target, "tel-3", None).await;
    assert_eq!(record(&s1, "s-1").as_sent.as_ref().unwrap().account_id, "radius");

    let waiting = suspended(&d.target, proto::RejectReason::InvalidField).await;
    let mut admin = AdminClient::new(channel(&d.target).await);
    assert_eq!(waiting.len(), 1);
    let e = waiting[0].event.as_ref().unwrap();
    assert_eq!(
        (e.event_id.as_str(), e.account_id.as_str()),
        ("s-2", "radius"),
        "kept as sent"
    );

    // The table learns the SIM; the reload puts the rules in force and the reprocess rates it.
    std::fs::write(&rules_file, format!("{RULES}\"262019999999999\" = \"tel-7\"\n")).unwrap();
    let reloaded = admin
        .reload_tariffs(proto::ReloadTariffsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reloaded.mediation_rules, 7);
    let r = admin
        .reprocess_suspense(proto::ReprocessSuspenseRequest {
            reason: proto::RejectReason::InvalidField as i32,
            ids: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.reprocessed, r.accepted, r.rejected), (1, 1, 0));
    let s2 = records_from(&d.target, "tel-7", None).await;
    assert_eq!(record(&s2, "s-2").quantity, "20");
    d.stop().await;
}

#[tokio::test]
async fn a_change_of_rules_never_makes_a_resend_a_new_charge() {
    let dir = TempDir::new("mediation-resend");
    let (config, rules_file) = config(&dir, RULES);
    let d = TestDaemon::start(&config).await;
    let at = d.now() - Duration::hours(1);
    let sent = vec![
        event(
            "v-1",
            "tel-1",
            "voice.seconds",
            61,
            0,
            at,
            &[("destination", "030 1234567")],
        ),
        event("s-1", "radius", "data.mb", 10, 0, at, &[("imsi", "262011234567890")]),
    ];
    assert_eq!(d.submit(1, sent.clone()).await.accepted, 2);
    let totals = |d: &TestDaemon, account: &'static str| {
        let target = d.target.clone();
        async move { totals_at(&target, account, "2026-11").await.unwrap().total_charge }
    };
    let (tel1, tel3) = (totals(&d, "tel-1").await, totals(&d, "tel-3").await);

    // The national rule goes, and the SIM moves to another account: the same events, resent,
    // normalize to something else, and are still the events already rated.
    let changed = RULES
        .replace("name = \"national-to-e164\"", "name = \"national-kept\"")
        .replace("replacement = \"+49\"", "replacement = \"0049\"")
        .replace("= \"tel-3\"", "= \"tel-8\"");
    std::fs::write(&rules_file, &changed).unwrap();
    let mut admin = AdminClient::new(channel(&d.target).await);
    admin.reload_tariffs(proto::ReloadTariffsRequest {}).await.unwrap();
    let ack = d.submit(2, sent.clone()).await;
    assert_eq!((ack.accepted, ack.duplicate), (0, 2), "{ack:?}");

    // A refused file keeps the rules in force: the resend is still a duplicate, and a new call
    // is normalized by the rules of the last good file.
    std::fs::write(
        &rules_file,
        "[[rule]]\nname = \"bad\"\nrewrite = { field = \"a\", pattern = '(', replacement = \"\" }\n",
    )
    .unwrap();
    let refused = admin
        .reload_tariffs(proto::ReloadTariffsRequest {})
        .await
        .expect_err("an invalid regular expression is refused");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused
            .message()
            .contains("rule[0].rewrite.pattern: invalid regular expression"),
        "{}",
        refused.message()
    );
    let ack = d
        .submit(
            3,
            vec![event(
                "v-2",
                "tel-1",
                "voice.seconds",
                61,
                0,
                at,
                &[("destination", "030 7654321")],
            )],
        )
        .await;
    assert_eq!(ack.accepted, 1);
    let v2 = records_from(&d.target, "tel-1", None).await;
    assert_eq!(
        record(&v2, "v-2").as_sent.as_ref().unwrap().rules,
        ["destination-digits-only", "national-kept"]
    );
    assert_eq!(
        attribute(&record(&v2, "v-2").attributes, "destination"),
        Some("0049307654321")
    );
    d.stop().await;

    // After a restart too (the window is rebuilt from the records, keyed on the event as sent;
    // a start with the refused file would not start at all).
    std::fs::write(&rules_file, &changed).unwrap();
    let d = TestDaemon::start(&config).await;
    let ack = d.submit(4, sent).await;
    assert_eq!((ack.accepted, ack.duplicate), (0, 2), "{ack:?}");
    assert_eq!(totals(&d, "tel-3").await, tel3);
    assert!(totals_at(&d.target, "tel-8", "2026-11").await.is_none());
    assert_ne!(totals(&d, "tel-1").await, tel1, "v-2 was added");
    d.stop().await;
}

#[test]
fn a_config_whose_rules_file_is_refused_names_the_file_and_every_error() {
    let dir = TempDir::new("mediation-config");
    let (config, _) = config(
        &dir,
        "[[rule]]\nname = \"x\"\nscale = { multiply = \"-1\" }\n\n[[rule]]\nname = \"x\"\nset_meter = \"{event_id}\"\n",
    );
    let errors = ratingd::config::Config::load(&config).expect_err("refused").0;
    let file = dir.0.join("mediation.toml").display().to_string();
    assert_eq!(
        errors,
        [
            format!("{file}: rule[0].scale.multiply: \"-1\" is not a decimal above 0"),
            format!("{file}: rule[1].name: \"x\" is also the name of rule[0]"),
            format!(
                "{file}: rule[1].set_meter: event_id is the event's identity (what dedupe keys on): rules never change it"
            ),
        ]
    );
}

#[test]
fn the_shipped_config_loads_the_shipped_rules() {
    // Tests run in the package root, where the shipped config's relative paths point.
    let config = ratingd::config::Config::load(&repo().join("config/ratingd.toml")).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = config.mediation_rules.names().map(|n| &**n).collect();
    assert_eq!(names.len(), 8);
    assert_eq!(names[0], "b-number-is-destination");
}

#[tokio::test]
async fn rules_never_move_a_scoped_agents_event_outside_its_scope() {
    let dir = TempDir::new("mediation-scope");
    let file = dir.0.join("mediation.toml");
    // The table maps one SIM into the agent's scope and one outside it.
    std::fs::write(&file, format!("{RULES}\"262011234567891\" = \"saas-1\"\n")).unwrap();
    let agent = "agent-token-for-tel-accounts-0001";
    let extra = format!(
        "[mediation]\nrules = {:?}\n[[tokens]]\nname = \"agent\"\nsha256 = \"{}\"\nrole = \"ingest\"\naccount_prefix = \"tel-\"\n",
        file.display().to_string(),
        ratingd::security::auth::hash_hex(agent)
    );
    let d = TestDaemon::start(&write_config(&dir.0, &extra)).await;
    let access = ratingd::client::connect::Access {
        target: d.target.clone(),
        token: Some(agent.into()),
        ..Default::default()
    };
    let mut ingest = proto::ingest_client::IngestClient::new(access.authed().await.unwrap());
    let at = d.now() - Duration::hours(1);
    let ack = ingest
        .submit(proto::UsageBatch {
            batch_id: 1,
            events: vec![
                event("s-1", "tel-radius", "data.mb", 1, 0, at, &[("imsi", "262011234567890")]),
                event("s-2", "tel-radius", "data.mb", 1, 0, at, &[("imsi", "262011234567891")]),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((ack.accepted, ack.rejected), (1, 1), "{ack:?}");
    assert_eq!(ack.results[0].reason, proto::RejectReason::InvalidField as i32);
    assert_eq!(
        ack.results[0].detail,
        "rules sim-to-account moved the event to account \"saas-1\", outside the caller's scope \"tel-\""
    );
    d.stop().await;
}
