//! Recurring fees end to end, on the shipped plans saas-team (platform 49.00 a month in advance,
//! API requests past 100,000 free at 0.0012) and the add-on support-plus (support 20.00 a month
//! in arrears, no meters): prorated by the second at a start, an end and a change, in advance
//! into the open period, in arrears shown as accruing and charged at the close, a subscription
//! changed later re-pricing the open period and never a closed one. Every figure is worked out by
//! hand. The daemon's clock is pinned to Wednesday 2026-11-18 12:00 UTC; November has 30 days.

mod common;

use chrono::{DateTime, TimeZone, Utc};
use common::*;
use ratingd::wire::proto::{self, admin_client::AdminClient, query_client::QueryClient};

fn utc(month: u32, day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, month, day, 0, 0, 0).unwrap()
}

fn subscription(account: &str, plan: &str, from: DateTime<Utc>, to: Option<DateTime<Utc>>) -> proto::Subscription {
    proto::Subscription {
        account_id: account.into(),
        plan_id: plan.into(),
        from: from.to_rfc3339(),
        to: to.map(|t| t.to_rfc3339()).unwrap_or_default(),
        ..Default::default()
    }
}

/// The November statement of an account.
async fn statement_of(target: &str, account: &str) -> proto::Statement {
    QueryClient::new(channel(target).await)
        .statement(proto::StatementRequest {
            account_id: account.into(),
            period: "2026-11".into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// The charge and record count of one meter in one plan's part of an account-period.
async fn charged(target: &str, account: &str, period: &str, plan: &str, meter: &str) -> Option<(String, u64)> {
    let t = totals_at(target, account, period).await?;
    let part = t.subscriptions.into_iter().find(|s| s.plan == plan)?;
    part.meters
        .into_iter()
        .find(|m| m.meter == meter)
        .map(|m| (m.charge, m.events))
}

async fn wait_for_charge(target: &str, account: &str, period: &str, plan: &str, meter: &str, want: (&str, u64)) {
    let what = format!("{account} {period} {plan} {meter} = {want:?}");
    wait_until(20, &what, || async {
        charged(target, account, period, plan, meter)
            .await
            .is_some_and(|(c, n)| c == want.0 && n == want.1)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recurring_fees_are_prorated_charged_in_advance_and_in_arrears_and_repriced() {
    let dir = TempDir::new("fees");
    let config = write_config(
        &dir.0,
        "[redis]\nurl = \"redis://127.0.0.1:1\"\nflush_interval_ms = 20\n",
    );
    let d = TestDaemon::start(&config).await;
    let t = d.target.clone();
    let mut admin = AdminClient::new(channel(&t).await);
    let list = vec![
        // From the 10th: 21 of 30 days: 49 x 21/30 = 34.3, in advance.
        subscription("team", "saas-team", utc(11, 10), None),
        // The add-on for the whole month: 20.00 in arrears, at the close.
        subscription("team", "support-plus", utc(11, 1), None),
        // The 1st to the 25th: 24 days: 49 x 24/30 = 39.2.
        subscription("team2", "saas-team", utc(11, 1), Some(utc(11, 25))),
        // Only the add-on: nothing is charged before the close.
        subscription("solo", "support-plus", utc(11, 1), None),
    ];
    admin
        .upsert_subscriptions(proto::Subscriptions { subscriptions: list })
        .await
        .unwrap();
    wait_for_charge(&t, "team", "2026-11", "saas-team", "@fee:platform", ("34.300000000", 1)).await;
    wait_for_charge(
        &t,
        "team2",
        "2026-11",
        "saas-team",
        "@fee:platform",
        ("39.200000000", 1),
    )
    .await;

    // 150,000 requests: the first 100,000 free, 50,000 x 0.0012 = 60.
    let usage = event("f-1", "team", "api.requests", 150_000, 0, utc(11, 12), &[]);
    assert_eq!(d.submit(1, vec![usage]).await.accepted, 1);
    let totals = d.totals("team", "2026-11").await.unwrap();
    assert_eq!(totals.total_charge, "94.300000000");

    // The statement: the fee with its proration; the fee in arrears accruing, not charged, in a
    // section of its own (support-plus has no usage yet).
    let statement = statement_of(&t, "team").await;
    let lines: Vec<(&str, &str, &str)> = statement
        .sections
        .iter()
        .flat_map(|s| {
            s.lines
                .iter()
                .map(move |l| (s.plan.as_str(), l.description.as_str(), l.amount.as_str()))
        })
        .collect();
    assert_eq!(
        lines,
        [
            (
                "saas-team",
                "api.requests: 1 events, quantity 150000, rated 150000",
                "60.000000000"
            ),
            ("saas-team", "  included allowance: 100000 units free", ""),
            (
                "saas-team",
                "fee platform (in advance): 49.00 x 21d / 30d",
                "34.300000000"
            ),
            (
                "support-plus",
                "fee support (in arrears, accruing; charged when the period closes): 20.00 for the whole period = \
                 20.000000000",
                ""
            ),
        ]
    );
    assert_eq!(
        statement.total_charge, "94.300000000",
        "accruing fees are not charged yet"
    );
    // An account with only the add-on has no totals yet, but a statement of what accrues.
    assert!(totals_at(&t, "solo", "2026-11").await.is_none());
    let solo = statement_of(&t, "solo").await;
    let solo_lines: Vec<(&str, &str)> = solo
        .sections
        .iter()
        .flat_map(|s| s.lines.iter().map(move |l| (s.plan.as_str(), l.description.as_str())))
        .collect();
    assert_eq!(
        solo_lines,
        [(
            "support-plus",
            "fee support (in arrears, accruing; charged when the period closes): 20.00 for the whole period = \
             20.000000000"
        )]
    );

    let explained = explain(&t, "team", "fee:saas-team:2026-11:platform:0").await;
    assert_eq!(
        explained.explanation_text,
        "recurring fee platform (in_advance): 34.300000000 charged, in period 2026-11 of plan \"saas-team\": \
         49.00 x 21d / 30d"
    );

    // team2's subscription now ends on the 20th: 19 days, 49 x 19/30 = 31.0333...; a second
    // record takes back 8.166666667.
    admin
        .upsert_subscription(subscription("team2", "saas-team", utc(11, 1), Some(utc(11, 20))))
        .await
        .unwrap();
    wait_for_charge(
        &t,
        "team2",
        "2026-11",
        "saas-team",
        "@fee:platform",
        ("31.033333333", 2),
    )
    .await;

    // Past the close of November (its end plus the 72 h grace): support is charged into it first.
    let clock = d.running.as_ref().unwrap().clock.clone();
    clock.advance(utc(12, 4) + chrono::Duration::minutes(1) - clock.now());
    wait_until(20, "November closed", || async {
        totals_at(&t, "team", "2026-11")
            .await
            .is_some_and(|x| x.status == "closed")
    })
    .await;
    let closed = d.totals("team", "2026-11").await.unwrap();
    let parts: Vec<(&str, &str, &str)> = closed
        .subscriptions
        .iter()
        .map(|s| (s.plan.as_str(), s.total_charge.as_str(), s.status.as_str()))
        .collect();
    assert_eq!(
        parts,
        [
            ("saas-team", "94.300000000", "closed"),
            ("support-plus", "20.000000000", "closed")
        ]
    );
    assert_eq!(
        (closed.total_charge.as_str(), closed.total_amount.as_str()),
        ("114.300000000", "114.30")
    );
    let solo = d.totals("solo", "2026-11").await.unwrap();
    assert_eq!(
        (solo.total_charge.as_str(), solo.status.as_str()),
        ("20.000000000", "closed")
    );

    // A change made after the close re-prices the open period only: team's saas-team ends on
    // 15 November after all, and team4 starts on 1 December (once its December fee is in, the
    // fees have been billed since the change).
    let list = vec![
        subscription("team", "saas-team", utc(11, 10), Some(utc(11, 15))),
        subscription("team4", "saas-team", utc(12, 1), None),
    ];
    admin
        .upsert_subscriptions(proto::Subscriptions { subscriptions: list })
        .await
        .unwrap();
    wait_for_charge(
        &t,
        "team4",
        "2026-12",
        "saas-team",
        "@fee:platform",
        ("49.000000000", 1),
    )
    .await;
    let after = d.totals("team", "2026-11").await.unwrap();
    assert_eq!(after.total_charge, "114.300000000", "a closed period never changes");
    let december = charged(&t, "team", "2026-12", "saas-team", "@fee:platform").await;
    assert!(
        december
            .as_ref()
            .is_none_or(|(c, _)| c.parse::<rust_decimal::Decimal>().unwrap().is_zero()),
        "team owes no December fee: {december:?}"
    );
    d.stop().await;
}

/// A plan with a minimum commitment of 100.00 a month (and API requests at 0.001).
const MINIMUM: &str = r#"
[[plans]]
id = "committed"
currency = "USD"
time_zone = "UTC"
rounding = { places = 2, mode = "half-even" }
[[plans.versions]]
effective_from = "2026-01-01T00:00:00Z"
minimum = "100.00"
[plans.versions.meters."api.requests"]
model = "per_unit"
price = "0.001"
"#;

/// The minimum commitment: projected on the open period's statement, trued up at the close,
/// prorated for a subscription that covers part of the period, nothing when usage exceeds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minimum_commitment_is_trued_up_at_the_close() {
    let dir = TempDir::new("fees-minimum");
    let catalogue = format!("{}{MINIMUM}", include_str!("../config/tariffs.toml"));
    let (config, _) = write_config_with_tariffs(
        &dir.0,
        "[redis]\nurl = \"redis://127.0.0.1:1\"\nflush_interval_ms = 20\n",
        &catalogue,
    );
    let d = TestDaemon::start(&config).await;
    let t = d.target.clone();
    let mut admin = AdminClient::new(channel(&t).await);
    let list = vec![
        // From the 10th: the minimum is 100.00 x 21/30 = 70; 10,000 requests = 10.00 of usage.
        subscription("low", "committed", utc(11, 10), None),
        // The whole month: 200,000 requests = 200.00, above the minimum.
        subscription("high", "committed", utc(11, 1), None),
    ];
    admin
        .upsert_subscriptions(proto::Subscriptions { subscriptions: list })
        .await
        .unwrap();
    let usage = vec![
        event("m-1", "low", "api.requests", 10_000, 0, utc(11, 12), &[]),
        event("m-2", "high", "api.requests", 200_000, 0, utc(11, 12), &[]),
    ];
    assert_eq!(d.submit(1, usage).await.accepted, 2);

    let statement = statement_of(&t, "low").await;
    let projected: Vec<&str> = statement.lines.iter().map(|l| l.description.as_str()).collect();
    assert!(
        projected.contains(
            &"minimum commitment 100.00 x 21d / 30d = 70.000000000; subtotal so far 10.000000000: true-up at the \
              close 60.000000000 unless more is charged"
        ),
        "{projected:?}"
    );
    assert_eq!(statement.total_charge, "10.000000000", "projected, not charged");

    let clock = d.running.as_ref().unwrap().clock.clone();
    clock.advance(utc(12, 4) + chrono::Duration::minutes(1) - clock.now());
    wait_until(20, "November closed", || async {
        totals_at(&t, "low", "2026-11")
            .await
            .is_some_and(|x| x.status == "closed")
    })
    .await;
    let low = d.totals("low", "2026-11").await.unwrap();
    assert_eq!(
        (low.total_charge.as_str(), low.total_amount.as_str()),
        ("70.000000000", "70.00")
    );
    let true_up = low.meters.iter().find(|m| m.meter == "@minimum").unwrap();
    assert_eq!((true_up.charge.as_str(), true_up.events), ("60.000000000", 1));
    let high = d.totals("high", "2026-11").await.unwrap();
    assert_eq!(high.total_charge, "200.000000000");
    assert!(
        high.meters.iter().all(|m| m.meter != "@minimum"),
        "above the minimum: no true-up"
    );
    let explained = explain(&t, "low", "fee:committed:2026-11:@minimum:0").await;
    assert!(
        explained
            .explanation_text
            .starts_with("minimum-commitment true-up of 60.000000000 written at the close"),
        "{}",
        explained.explanation_text
    );
    let statement = statement_of(&t, "low").await;
    let line = statement
        .lines
        .iter()
        .find(|l| l.description.starts_with("minimum commitment true-up"))
        .unwrap();
    assert_eq!(
        (line.description.as_str(), line.amount.as_str()),
        (
            "minimum commitment true-up: 100.00 x 21d / 30d = 70.000000000; subtotal 10.000000000",
            "60.000000000"
        )
    );
    d.stop().await;
}

/// A call that changes what is owed answers once its fee is committed (read-your-writes), and
/// the projection of a period with a fee and no usage is the fee (a fixed charge is not
/// extrapolated). The closer runs once an hour here, so only the call itself can have written
/// the fee. saas-team from the 5th: 26 of 30 days, 49 x 26/30 = 42.466666667.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_answers_with_its_fee_committed_and_a_fee_is_not_extrapolated() {
    let dir = TempDir::new("fees-now");
    let config = write_config(
        &dir.0,
        "[redis]\nurl = \"redis://127.0.0.1:1\"\nflush_interval_ms = 3600000\n",
    );
    let d = TestDaemon::start(&config).await;
    let t = d.target.clone();
    AdminClient::new(channel(&t).await)
        .upsert_subscription(subscription("fresh", "saas-team", utc(11, 5), None))
        .await
        .unwrap();
    let totals = totals_at(&t, "fresh", "2026-11")
        .await
        .expect("the fee is committed when the call answers");
    assert_eq!(totals.total_charge, "42.466666667");
    assert_eq!(
        totals.projected_charge, "42.466666667",
        "no usage: the projection is the fee, not the fee run-rated over the days so far"
    );
    // The subscription now ends on the 20th: 15 days, 49 x 15/30 = 24.5. The fee record that
    // takes the difference back is committed before the call answers.
    AdminClient::new(channel(&t).await)
        .upsert_subscription(subscription("fresh", "saas-team", utc(11, 5), Some(utc(11, 20))))
        .await
        .unwrap();
    let totals = totals_at(&t, "fresh", "2026-11").await.expect("totals");
    assert_eq!(totals.total_charge, "24.500000000");
    assert_eq!(totals.projected_charge, "24.500000000");
    d.stop().await;
}
