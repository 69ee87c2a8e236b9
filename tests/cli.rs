//! The command-line tools as a user runs them: `ratectl tariffs check|quote` and `ratingd`'s
//! configuration check, through the built binaries.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::{output_within, repo};

fn ratectl(args: &[&str]) -> Output {
    output_within(
        Command::new(env!("CARGO_BIN_EXE_ratectl"))
            .current_dir(repo())
            .args(args),
        60,
    )
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A scratch file that removes itself.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("ratingd-cli-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

const QUOTE: [&str; 4] = ["tariffs", "quote", "--tariffs", "config/tariffs.toml"];

fn quote(extra: &[&str]) -> Output {
    let args: Vec<&str> = QUOTE.iter().chain(extra).copied().collect();
    ratectl(&args)
}

#[test]
fn check_accepts_the_shipped_catalogue_with_a_one_line_summary() {
    let out = ratectl(&["tariffs", "check", "config/tariffs.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("valid: 4 plans, 5 versions, 5 meters"), "{text}");
    let out = ratectl(&["tariffs", "check", "config/tariffs.toml", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["plans"], 4);
}

#[test]
fn check_reports_every_error_with_its_path_and_exits_1() {
    let file = TempFile::new(
        "bad.toml",
        "[[plans]]\nid = \"p\"\ncurrency = \"eur\"\ntime_zone = \"Mars/Olympus\"\nrounding = { places = 2, mode = \"half-up\" }\n\
         [[plans.versions]]\neffective_from = \"2026-01-01T00:00:00Z\"\n[plans.versions.meters.m]\nmodel = \"per_unit\"\nprice = \"-1\"\n",
    );
    let out = ratectl(&["tariffs", "check", file.path()]);
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(text.contains("3 error(s)"), "{text}");
    assert!(
        text.contains("plans[0].currency: currency must be 3 uppercase letters"),
        "{text}"
    );
    assert!(
        text.contains("plans[0].time_zone: unknown IANA time zone \"Mars/Olympus\""),
        "{text}"
    );
    assert!(
        text.contains("plans[0].versions[0].meters.m.price: price must be >= 0"),
        "{text}"
    );
    let out = ratectl(&["tariffs", "check", file.path(), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"].as_array().unwrap().len(), 3);
    assert_eq!(v["errors"][0]["path"], "plans[0].currency");
}

#[test]
fn check_of_a_missing_or_non_toml_file_is_one_clear_error() {
    let out = ratectl(&["tariffs", "check", "no/such/file.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("cannot read no/such/file.toml"),
        "{}",
        stderr(&out)
    );
    let file = TempFile::new("garbage.toml", "\u{0}\u{1} not = = toml");
    let out = ratectl(&["tariffs", "check", file.path()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("TOML parse error"), "{}", stderr(&out));
}

#[test]
fn quote_matches_the_issue_examples_as_json() {
    let out = quote(&[
        "--plan",
        "telecom-standard",
        "--meter",
        "voice.seconds",
        "--quantity",
        "61",
        "--at",
        "2026-11-25T10:00:00+01:00",
        "--attr",
        "destination=+442071234567",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["charge"], "0.030333333");
    assert_eq!(v["currency"], "EUR");
    assert_eq!(v["plan"], "telecom-standard");
    assert_eq!(v["version"], 1);
    assert_eq!(v["period"], "2026-11");
    assert_eq!(v["explain"]["rate"]["source"], "prefix");
    assert_eq!(v["explain"]["parts"][0]["band"], "peak");
    assert_eq!(v["explain"]["increments"]["first"], "60");

    let out = quote(&[
        "--plan",
        "telecom-standard",
        "--meter",
        "voice.seconds",
        "--quantity",
        "30",
        "--at",
        "2026-11-25T10:00:00+01:00",
        "--attr",
        "destination=+447911123456",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["charge"], "0.100000000");
    assert_eq!(v["rated_quantity"], "60");
}

#[test]
fn quote_with_period_usage_and_text_explanation() {
    let out = quote(&[
        "--plan",
        "saas-pro",
        "--meter",
        "api.requests",
        "--quantity",
        "2",
        "--at",
        "2026-11-25T10:00:00Z",
        "--period-usage",
        "999999",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("charge    -179.998380000 USD"), "{text}");
    assert!(text.contains("discount  10% (version)"), "{text}");
    assert!(text.contains("tier 1"), "{text}");
    assert!(text.contains("after: 1000001 billable units reach tier 2"), "{text}");
    assert!(text.contains("this record's charge is negative"), "{text}");
}

#[test]
fn bad_quotes_exit_1_with_one_clear_line() {
    // (arguments after `tariffs quote --tariffs config/tariffs.toml`, message, JSON reason)
    #[rustfmt::skip]
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("--plan nope --meter sms.count --quantity 1 --at 2026-11-25T10:00:00Z", "unknown plan \"nope\"", Some("NO_TARIFF")),
        ("--plan telecom-standard --meter fax.pages --quantity 1 --at 2026-11-25T10:00:00Z", "unknown meter \"fax.pages\"", Some("UNKNOWN_METER")),
        ("--plan telecom-standard --meter api.requests --quantity 1 --at 2026-11-25T10:00:00Z", "not priced by plan", Some("NO_TARIFF")),
        ("--plan telecom-standard --meter sms.count --quantity 1 --at 2025-06-01T00:00:00Z", "no version in force", Some("NO_TARIFF")),
        ("--plan telecom-standard --meter sms.count --quantity -1 --at 2026-11-25T10:00:00Z", "--quantity: must be >= 0", None),
        ("--plan telecom-standard --meter sms.count --quantity 1e3 --at 2026-11-25T10:00:00Z", "--quantity: \"1e3\" is not a plain decimal", None),
        ("--plan telecom-standard --meter sms.count --quantity 0.0000000001 --at 2026-11-25T10:00:00Z", "more than 9 fractional digits", None),
        ("--plan telecom-standard --meter data.mb --period-usage 1 --quantity 79228162514264337593543950335 --at 2026-11-25T10:00:00Z", "exceeds exact decimal precision", Some("INVALID_FIELD")),
        ("--plan telecom-standard --meter voice.seconds --quantity 2700000 --at 2026-11-25T10:00:00Z", "banded duration may be at most", Some("INVALID_FIELD")),
        ("--plan telecom-standard --meter sms.count --quantity 1 --at yesterday", "--at: \"yesterday\" is not an RFC 3339", None),
        ("--plan telecom-standard --meter sms.count --quantity 1 --at 2026-11-25T10:00:00Z --attr novalue", "--attr: \"novalue\" is not KEY=VALUE", None),
    ];
    for (line, message, reason) in cases {
        let args: Vec<&str> = line.split_whitespace().collect();
        let out = quote(&args);
        assert_eq!(out.status.code(), Some(1), "{line}");
        let text = stderr(&out);
        assert_eq!(text.lines().count(), 1, "{line}: {text}");
        assert!(text.contains(message), "{line}: {text}");
        let json_args: Vec<&str> = args.iter().copied().chain(["--json"]).collect();
        let out = quote(&json_args);
        assert_eq!(out.status.code(), Some(1));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(v["error"].as_str().unwrap().contains(message), "{v}");
        if let Some(reason) = reason {
            assert_eq!(v["reason"], *reason);
        }
    }
}

#[test]
fn ratingd_validates_its_config_and_exits_64_on_errors() {
    let ok = output_within(
        Command::new(env!("CARGO_BIN_EXE_ratingd"))
            .current_dir(repo())
            .arg("--check"),
        60,
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(
        stdout(&ok).contains("4 plans, 5 meters, 2 subscriptions"),
        "{}",
        stdout(&ok)
    );
    let bad = TempFile::new(
        "ratingd.toml",
        "tariffs = \"config/tariffs.toml\"\ndefault_plan = \"gold\"\n\
         [[subscriptions]]\naccount = \"a\"\nplan = \"silver\"\nfrom = \"2026-01-01T00:00:00Z\"\n\
         [[subscriptions]]\naccount = \"b\"\nplan = \"saas-pro\"\nfrom = \"2026-02-01T00:00:00Z\"\nto = \"2026-01-01T00:00:00Z\"\n",
    );
    let out = output_within(
        Command::new(env!("CARGO_BIN_EXE_ratingd"))
            .current_dir(repo())
            .args(["--check", "--config", bad.path()]),
        60,
    );
    assert_eq!(out.status.code(), Some(64));
    let text = stderr(&out);
    assert!(text.contains("default_plan: unknown plan \"gold\""), "{text}");
    assert!(
        text.contains("subscriptions[0].plan: unknown plan \"silver\""),
        "{text}"
    );
    assert!(text.contains("subscriptions[1].to: must be after from"), "{text}");
}

/// Every help text of ratectl, as users and scripts have known it: `tests/data/ratectl-help.txt`
/// (made with the loop in its own first lines' order: `ratectl <command> --help` for each). A
/// change to a command's arguments or wording is a deliberate edit of that file.
#[test]
fn every_help_text_is_as_recorded() {
    let recorded = std::fs::read_to_string(repo().join("tests/data/ratectl-help.txt")).unwrap();
    let mut now = String::new();
    for header in recorded.lines().filter(|l| l.starts_with("=== ratectl ")) {
        let args: Vec<&str> = header.trim_start_matches("=== ratectl ").split_whitespace().collect();
        let out = ratectl(&args);
        assert!(out.status.success(), "{header}: {}", stderr(&out));
        now.push_str(header);
        now.push('\n');
        now.push_str(&stdout(&out));
    }
    assert!(now.matches("=== ratectl").count() >= 20);
    assert_eq!(now, recorded, "a help text changed");
}

/// `ratectl mediation check` and `try`: the shipped rules file, a refused one, and what the rules
/// make of an event (normalized, dropped, refused), offline.
#[test]
fn mediation_rules_are_checked_and_tried_offline() {
    let out = ratectl(&["mediation", "check", "config/mediation.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "config/mediation.toml: valid: 8 rules");

    let file = TempFile::new(
        "bad-rules.toml",
        "[[rule]]\nname = \"a\"\nrewrite = { field = \"x\", pattern = \"(\", replacement = \"\" }\n\n\
         [[rule]]\nname = \"b\"\nlookup = { from = \"imsi\", to = \"account_id\", table = \"sims\" }\n",
    );
    let out = ratectl(&["mediation", "check", file.path(), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{v}");
    assert!(
        errors[0]
            .as_str()
            .unwrap()
            .starts_with("rule[0].rewrite.pattern: invalid regular expression")
    );
    assert_eq!(
        errors[1],
        "rule[1].lookup.table: no table \"sims\" in [tables] (it has: none)"
    );

    let try_rules = |args: &[&str]| {
        let mut all = vec!["mediation", "try", "--rules", "config/mediation.toml"];
        all.extend_from_slice(args);
        ratectl(&all)
    };
    let out = try_rules(&[
        "--account",
        "tel-1",
        "--meter",
        "voice.seconds",
        "--quantity",
        "61",
        "--attr",
        "b_number=030 123-4567",
    ]);
    assert_eq!(
        stdout(&out),
        "normalized by rules b-number-is-destination, destination-digits-only, national-to-e164\n  account tel-1\n  \
         meter voice.seconds\n  quantity 61\n  attributes destination=+49301234567\n"
    );
    let out = try_rules(&[
        "--account",
        "radius",
        "--meter",
        "data.bytes",
        "--quantity",
        "2500000",
        "--attr",
        "imsi=262011234567890",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["account"].as_str(), v["meter"].as_str(), v["quantity"].as_str()),
        (Some("telco-0001"), Some("data.mb"), Some("2.5"))
    );
    let out = try_rules(&["--account", "x", "--meter", "sms.count", "--attr", "traffic=test"]);
    assert_eq!(stdout(&out).trim(), "dropped by rule drop-test-traffic");
    let out = try_rules(&[
        "--account",
        "radius",
        "--meter",
        "data.mb",
        "--attr",
        "imsi=262019999999999",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "refused (INVALID_FIELD) by rule sim-to-account: imsi \"262019999999999\" is not in table \"sims\""
        )
    );
}
