//! ratectl against a daemon, as users and scripts read it: the text and `--json` output of every
//! command that talks to ratingd, line by line, for a small workload on the pinned clock.

mod common;

use std::process::Command;

use chrono::Duration;
use common::*;
use ratingd::wire::proto;

/// Runs ratectl (bounded) and gives (exit code, standard output, standard error).
async fn ratectl(args: Vec<String>) -> (Option<i32>, String, String) {
    ratectl_with(args, None).await
}

/// [`ratectl`] with `RATECTL_TARGET` set (or removed, so the one of the environment that runs the
/// suite cannot leak in).
async fn ratectl_with(args: Vec<String>, target_env: Option<String>) -> (Option<i32>, String, String) {
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ratectl"));
        match target_env {
            Some(target) => command.env("RATECTL_TARGET", target),
            None => command.env_remove("RATECTL_TARGET"),
        };
        let out = output_within(command.args(&args), 60);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

fn args(target: &str, list: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    out.push("--target".into());
    out.push(target.into());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_daemon_command_prints_what_users_read() {
    let dir = TempDir::new("ratectl");
    let d = TestDaemon::start(&write_config(&dir.0, "")).await;
    let t = d.target.clone();
    let at = test_now() - Duration::minutes(5);
    let ack = d
        .submit(
            1,
            vec![
                event(
                    "call-1",
                    "tel-0",
                    "voice.seconds",
                    61,
                    0,
                    at,
                    &[("destination", "+442071234567")],
                ),
                event("api-1", "saas-0", "api.requests", 1000, 0, at, &[]),
                event("bad-1", "saas-0", "fax.pages", 1, 0, at, &[]),
            ],
        )
        .await;
    assert_eq!((ack.accepted, ack.rejected), (2, 1));

    let (code, out, _) = ratectl(args(&t, &["totals", "--account", "tel-0", "--period", "2026-11"])).await;
    assert_eq!(code, Some(0));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "account tel-0 period 2026-11 plan telecom-standard (EUR)");
    assert_eq!(
        lines[1],
        "  voice.seconds        quantity               61  events        1  charge 0.030333333"
    );
    assert_eq!(lines[2], "total charge 0.030333333  invoice amount 0.03 EUR");
    assert!(
        lines[3].starts_with("status open, projected period-end charge "),
        "{out}"
    );
    // `--target` is global: before the command, or from RATECTL_TARGET, the same answer.
    let totals: Vec<String> = ["totals", "--account", "tel-0", "--period", "2026-11"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let first = [vec!["--target".to_string(), t.clone()], totals.clone()].concat();
    for (how, run) in [
        ("--target first", ratectl(first).await),
        ("RATECTL_TARGET", ratectl_with(totals.clone(), Some(t.clone())).await),
    ] {
        let (code, text, err) = run;
        assert_eq!(code, Some(0), "{how}: {err}");
        assert_eq!(text.lines().take(3).collect::<Vec<_>>(), lines[..3], "{how}");
    }

    let (_, out, _) = ratectl(args(
        &t,
        &["totals", "--account", "saas-0", "--period", "2026-11", "--json"],
    ))
    .await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["total_charge"], "0.900000000");
    assert_eq!(v["total_amount"], "0.90");
    assert_eq!(v["meters"]["api.requests"]["events"], 1);

    let (code, _, err) = ratectl(args(&t, &["totals", "--account", "nobody", "--period", "2026-11"])).await;
    assert_eq!(code, Some(1));
    assert_eq!(
        err.trim(),
        "ratectl: NotFound: no usage for account \"nobody\" in period \"2026-11\""
    );
    let (code, out, _) = ratectl(args(
        &t,
        &["totals", "--account", "nobody", "--period", "2026-11", "--json"],
    ))
    .await;
    assert_eq!(code, Some(1));
    assert_eq!(
        out.trim(),
        r#"{"error":"NotFound: no usage for account \"nobody\" in period \"2026-11\""}"#
    );

    let (_, out, _) = ratectl(args(&t, &["records", "--account", "tel-0"])).await;
    assert_eq!(
        out.trim(),
        "2026-11-18T11:55:00+00:00 call-1 voice.seconds 61 2026-11 -> 0.030333333 (telecom-standard v1)"
    );
    let (_, out, _) = ratectl(args(&t, &["explain", "--account", "tel-0", "--event-id", "call-1"])).await;
    assert!(
        out.contains("charge    0.030333333 EUR (rounded once, half-even, to 9 places)"),
        "{out}"
    );

    let (_, out, _) = ratectl(args(&t, &["statement", "--account", "saas-0", "--period", "2026-11"])).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "statement saas-0 2026-11 (saas-pro, USD, open)");
    let last = |label: &str| {
        lines
            .iter()
            .find(|l| l.trim_start().starts_with(label))
            .map(|l| l.split_whitespace().last().unwrap_or_default().to_string())
    };
    assert_eq!(last("subtotal").as_deref(), Some("1.000000000"));
    assert_eq!(last("discount").as_deref(), Some("-0.100000000"));
    assert_eq!(last("total (exact)").as_deref(), Some("0.900000000"));
    assert_eq!(last("amount due (USD)").as_deref(), Some("0.90"));

    let (_, out, _) = ratectl(args(
        &t,
        &[
            "subscriptions",
            "set",
            "--account",
            "newco",
            "--plan",
            "saas-pro",
            "--from",
            "2026-01-01T00:00:00Z",
            "--discount",
            "5",
        ],
    ))
    .await;
    assert_eq!(
        out.trim(),
        "newco -> saas-pro from 2026-01-01T00:00:00+00:00 to open-ended, 5% off"
    );
    let (_, out, _) = ratectl(args(&t, &["subscriptions", "get", "--account", "newco", "--json"])).await;
    assert_eq!(
        out.trim(),
        r#"{"subscriptions":[{"account":"newco","discount_percent":"5","from":"2026-01-01T00:00:00+00:00","plan":"saas-pro","prepaid":false,"to":""}]}"#
    );

    // Prepaid balances: a top-up (sent twice: applied once), the balance, the ledger.
    let topup = [
        "balance",
        "topup",
        "--account",
        "tel-1",
        "--amount",
        "12.50",
        "--currency",
        "EUR",
        "--id",
        "t1",
    ];
    let (_, out, _) = ratectl(args(&t, &topup)).await;
    assert_eq!(
        out.trim(),
        "top-up t1 applied: 12.50 EUR\ntel-1 EUR: available 12.500000000 reserved 0.000000000 credit limit 0.000000000"
    );
    let (_, out, _) = ratectl(args(&t, &topup)).await;
    assert!(out.starts_with("top-up t1 already applied"), "{out}");
    let (_, out, _) = ratectl(args(&t, &["balance", "get", "--account", "tel-1", "--json"])).await;
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["account"], "tel-1");
    assert_eq!(
        (&v["balances"]["EUR"]["available"], &v["balances"]["EUR"]["reserved"]),
        (&serde_json::json!("12.500000000"), &serde_json::json!("0.000000000"))
    );
    let (_, out, _) = ratectl(args(&t, &["balance", "ledger", "--account", "tel-1", "--json"])).await;
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let entries = v["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(
        (&entries[0]["kind"], &entries[0]["amount"], &entries[0]["id"]),
        (
            &serde_json::json!("topup"),
            &serde_json::json!("12.50"),
            &serde_json::json!("t1")
        )
    );

    let (_, out, _) = ratectl(args(&t, &["suspense", "list"])).await;
    let fields: Vec<&str> = out.trim().splitn(4, ' ').collect();
    assert_eq!(fields[1], "UNKNOWN_METER");
    assert_eq!(
        fields[3], "saas-0/bad-1: no tariff defines meter \"fax.pages\"",
        "{out}"
    );
    let (_, out, _) = ratectl(args(&t, &["suspense", "reprocess", "--reason", "UNKNOWN_METER"])).await;
    assert_eq!(out.trim(), "reprocessed 1: accepted 0, duplicate 0, still rejected 1");

    let (_, out, _) = ratectl(args(&t, &["tariffs", "upcoming"])).await;
    assert_eq!(out.trim(), "saas-pro version 2 effective 2027-01-01T00:00:00+00:00");
    let (_, out, _) = ratectl(args(&t, &["tariffs", "reload", "--json"])).await;
    assert_eq!(out.trim(), r#"{"mediation_rules":0,"meters":5,"plans":4,"versions":5}"#);

    // Nothing of this changed the totals.
    let mut q = proto::query_client::QueryClient::new(channel(&t).await);
    let totals = q
        .get_totals(proto::GetTotalsRequest {
            account_id: "tel-0".into(),
            period: "2026-11".into(),
            meter: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(totals.total_charge, "0.030333333");
    d.stop().await;
}

/// A CDR file with its own columns sent through a mapping (docs/mediation.md): semicolons,
/// Berlin wall-clock times, milliseconds scaled to seconds, a constant meter and attribute. Sent
/// twice: the second time every event is a duplicate. A mapping naming a column the file lacks
/// sends nothing and names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cdr_file_is_sent_through_a_mapping() {
    let dir = TempDir::new("ratectl-mapping");
    let d = TestDaemon::start(&write_config(&dir.0, "")).await;
    let mapping = dir.0.join("switch.toml");
    std::fs::write(
        &mapping,
        "event_id = \"call_ref\"\naccount = \"subscriber\"\nmeter_constant = \"voice.seconds\"\n\
         quantity = \"duration_ms\"\ntimestamp = \"start\"\ntimestamp_format = \"%d.%m.%Y %H:%M:%S\"\n\
         time_zone = \"Europe/Berlin\"\nquantity_multiply = \"0.001\"\ndelimiter = \";\"\n\
         [attributes]\ndestination = \"called\"\n[constants]\nsource = \"switch-7\"\n",
    )
    .unwrap();
    let cdrs = dir.0.join("cdrs-2026-11-18.txt");
    std::fs::write(
        &cdrs,
        "call_ref;subscriber;called;start;duration_ms\n\
         r-1;tel-5;+441632960000;18.11.2026 12:30:00;61500\n\
         r-2;tel-5;+12125550100;18.11.2026 12:40:00;30000\n",
    )
    .unwrap();
    let send = |mapping: &std::path::Path| {
        args(
            &d.target,
            &[
                "--json",
                "send",
                "--file",
                cdrs.to_str().unwrap(),
                "--format",
                "csv",
                "--mapping",
                mapping.to_str().unwrap(),
            ],
        )
    };
    let (code, out, err) = ratectl(send(&mapping)).await;
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (&v["sent"], &v["accepted"]),
        (&serde_json::json!(2), &serde_json::json!(2))
    );
    let (_, out, _) = ratectl(send(&mapping)).await;
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["duplicate"], serde_json::json!(2));
    // The record holds the scaled quantity, the instant in UTC and both attributes.
    let records = records_from(&d.target, "tel-5", None).await;
    let r1 = records.iter().find(|r| r.event_id == "r-1").unwrap();
    assert_eq!(r1.quantity, "61.5");
    assert_eq!(r1.timestamp, "2026-11-18T11:30:00+00:00");
    let attrs: Vec<(&str, &str)> = r1
        .attributes
        .iter()
        .map(|a| (a.key.as_str(), a.value.as_str()))
        .collect();
    assert_eq!(attrs, [("destination", "+441632960000"), ("source", "switch-7")]);

    let wrong = dir.0.join("wrong.toml");
    std::fs::write(
        &wrong,
        std::fs::read_to_string(&mapping)
            .unwrap()
            .replace("\"called\"", "\"b_number\""),
    )
    .unwrap();
    let (code, out, err) = ratectl(send(&wrong)).await;
    assert_eq!(code, Some(1));
    // With --json the failure is a JSON object on standard output.
    let said = format!("{out}{err}");
    assert!(
        said.contains("line 1: mapping attributes.destination: column \\\"b_number\\\" is not in the header"),
        "{said}"
    );
    d.stop().await;
}
