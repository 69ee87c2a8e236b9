//! One-off charges and credits (`Admin.AddCharge`, `ratectl charges add`): exactly once like an
//! event (a resend is a duplicate, other content a conflict, across a restart too), into the
//! period of the subscription that bills in their currency, on the statement with their
//! description, explained, and refused with a reason when they cannot be billed. The daemon's
//! clock is pinned to Wednesday 2026-11-18 12:00 UTC.

mod common;

use std::process::Command;

use chrono::Duration;
use common::*;
use ratingd::wire::proto::{self, admin_client::AdminClient, query_client::QueryClient};

fn charge(account: &str, id: &str, amount: &str, currency: &str, description: &str) -> proto::AddChargeRequest {
    proto::AddChargeRequest {
        account_id: account.into(),
        charge_id: id.into(),
        amount: amount.into(),
        currency: currency.into(),
        description: description.into(),
        time: (test_now() - Duration::hours(1)).to_rfc3339(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_off_charge_is_added_exactly_once_and_shown_with_its_description() {
    let dir = TempDir::new("charges");
    let config = write_config(&dir.0, "");
    let d = TestDaemon::start(&config).await;
    let mut admin = AdminClient::new(channel(&d.target).await);
    // 1000 requests on saas-pro: 1000 x 0.0010 x 0.9 = 0.9 USD.
    let usage = event(
        "c-1",
        "saas-0",
        "api.requests",
        1000,
        0,
        test_now() - Duration::hours(2),
        &[],
    );
    assert_eq!(d.submit(1, vec![usage]).await.accepted, 1);

    let setup = charge("saas-0", "setup", "25.00", "USD", "Setup fee");
    let added = admin.add_charge(setup.clone()).await.unwrap().into_inner();
    assert_eq!(
        (added.duplicate, added.plan.as_str(), added.period.as_str()),
        (false, "saas-pro", "2026-11")
    );
    // The same id and content again: a duplicate, nothing changes.
    assert!(admin.add_charge(setup.clone()).await.unwrap().into_inner().duplicate);
    // The same id with another amount: refused.
    let other = admin
        .add_charge(charge("saas-0", "setup", "30.00", "USD", "Setup fee"))
        .await
        .unwrap_err();
    assert_eq!(other.code(), tonic::Code::AlreadyExists, "{}", other.message());
    // A credit needs a description.
    let bare = admin
        .add_charge(charge("saas-0", "goodwill", "-5.00", "USD", ""))
        .await
        .unwrap_err();
    assert_eq!(bare.code(), tonic::Code::InvalidArgument);
    assert!(bare.message().contains("needs a description"), "{}", bare.message());
    admin
        .add_charge(charge("saas-0", "goodwill", "-5.00", "USD", "Goodwill, ticket 4711"))
        .await
        .unwrap();

    // 0.9 + 25.00 - 5.00 = 20.9 USD; the charges are the meter @charge.
    let t = d.totals("saas-0", "2026-11").await.unwrap();
    assert_eq!(
        (t.total_charge.as_str(), t.total_amount.as_str()),
        ("20.900000000", "20.90")
    );
    let one_off = t.meters.iter().find(|m| m.meter == "@charge").unwrap();
    assert_eq!((one_off.charge.as_str(), one_off.events), ("20.000000000", 2));

    // The statement: each charge on its own line with its description, never discounted.
    let mut query = QueryClient::new(channel(&d.target).await);
    let statement = query
        .statement(proto::StatementRequest {
            account_id: "saas-0".into(),
            period: "2026-11".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let lines: Vec<(&str, &str)> = statement
        .lines
        .iter()
        .filter(|l| !l.amount.is_empty())
        .map(|l| (l.description.as_str(), l.amount.as_str()))
        .collect();
    assert_eq!(
        lines,
        [
            ("api.requests: 1 events, quantity 1000, rated 1000", "1.000000000"),
            ("one-off charge setup: Setup fee", "25.000000000"),
            ("credit goodwill: Goodwill, ticket 4711", "-5.000000000"),
            ("discount 10% (plan version 1)", "-0.100000000"),
        ]
    );
    assert_eq!(
        (statement.subtotal.as_str(), statement.total_charge.as_str()),
        ("21.000000000", "20.900000000")
    );
    let explained = explain(&d.target, "saas-0", "charge:setup").await;
    assert!(
        explained
            .explanation_text
            .contains("one-off charge of 25.000000000 USD added through Admin.AddCharge")
            && explained.explanation_text.contains("Setup fee"),
        "{}",
        explained.explanation_text
    );

    // Refused with the reason, nothing added: a currency no subscription in force bills in, a
    // code that is no currency, more places than the currency has, a closed period, a usage
    // event using the charges' id space.
    let cases = [
        (
            charge("saas-0", "x1", "3.00", "EUR", "fee"),
            tonic::Code::FailedPrecondition,
            "bills in EUR",
        ),
        (
            charge("saas-0", "x2", "3.00", "XYZ", "fee"),
            tonic::Code::InvalidArgument,
            "ISO 4217",
        ),
        (
            charge("saas-0", "x3", "1.234", "USD", "fee"),
            tonic::Code::InvalidArgument,
            "more places than USD",
        ),
        (
            proto::AddChargeRequest {
                time: "2026-10-20T00:00:00Z".into(),
                ..charge("saas-0", "x4", "3.00", "USD", "fee")
            },
            tonic::Code::FailedPrecondition,
            "billing period 2026-10 of plan \"saas-pro\" is closed",
        ),
    ];
    for (request, code, needle) in cases {
        let refused = admin.add_charge(request).await.unwrap_err();
        assert_eq!(refused.code(), code, "{}", refused.message());
        assert!(refused.message().contains(needle), "{needle}: {}", refused.message());
    }
    let sneaky = event("charge:x5", "saas-0", "api.requests", 1, 0, test_now(), &[]);
    let ack = d.submit(2, vec![sneaky]).await;
    assert_eq!(ack.results[0].reason, proto::RejectReason::InvalidField as i32);
    assert_eq!(
        d.totals("saas-0", "2026-11").await.unwrap().total_charge,
        "20.900000000"
    );

    // ratectl, and the claim survives a restart: the resend is a duplicate.
    let out = output_within(
        Command::new(env!("CARGO_BIN_EXE_ratectl")).args([
            "charges",
            "add",
            "--account",
            "tel-0",
            "--id",
            "install",
            "--amount",
            "49.90",
            "--currency",
            "EUR",
            "--description",
            "Installation",
            "--at",
            &(test_now() - Duration::hours(1)).to_rfc3339(),
            "--target",
            &d.target,
            "--json",
        ]),
        60,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["duplicate"], false);
    assert_eq!(printed["plan"], "telecom-standard");
    d.stop().await;
    let d = TestDaemon::start(&config).await;
    let mut admin = AdminClient::new(channel(&d.target).await);
    assert!(admin.add_charge(setup).await.unwrap().into_inner().duplicate);
    assert_eq!(
        d.totals("saas-0", "2026-11").await.unwrap().total_charge,
        "20.900000000"
    );
    assert_eq!(d.totals("tel-0", "2026-11").await.unwrap().total_charge, "49.900000000");
    d.stop().await;
}
