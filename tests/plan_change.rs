//! A plan change inside a billing period, end to end: each plan keeps its own totals in the period
//! (its tiers and allowances count from zero at the change), and no figure the daemon shows
//! (GetTotals, the statement, the Redis hash, the close announcements) ever adds two currencies.
//! Every figure is worked out by hand in a comment and compared with the reference pricer. The
//! daemon's clock is pinned to Wednesday 2026-11-18 12:00 UTC.

mod common;

use std::collections::HashMap;

use chrono::{DateTime, TimeZone, Utc};
use common::*;
use ratingd::wire::proto;
use rust_decimal::Decimal;

fn dec(text: &str) -> Decimal {
    text.parse().unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

fn utc(day: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, day, h, 0, 0).unwrap()
}

/// One subscription window: plan, from, to.
type Window<'a> = (&'a str, DateTime<Utc>, Option<DateTime<Utc>>);

/// `[[subscriptions]]` entries of one account.
fn subscriptions(account: &str, list: &[Window]) -> String {
    list.iter()
        .map(|(plan, from, to)| {
            let to = to.map(|t| format!("to = \"{}\"\n", t.to_rfc3339())).unwrap_or_default();
            format!(
                "[[subscriptions]]\naccount = \"{account}\"\nplan = \"{plan}\"\nfrom = \"{}\"\n{to}",
                from.to_rfc3339()
            )
        })
        .collect()
}

fn hash(url: &str, key: &str) -> HashMap<String, String> {
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    redis::cmd("HGETALL").arg(key).query(&mut c).unwrap()
}

/// Account `sw` is on saas-pro (USD, UTC) until the 10th, then on telecom-standard (EUR, Berlin):
/// one API event before the change, one call after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_from_usd_to_eur_keeps_two_currencies_apart() {
    let dir = TempDir::new("plan-change");
    let redis = RedisServer::start(free_port());
    let change = utc(10, 0);
    let extra = format!(
        "[redis]\nurl = \"{}\"\nprefix = \"pc\"\nflush_interval_ms = 20\n{}",
        redis.url(),
        subscriptions(
            "sw",
            &[
                ("saas-pro", utc(1, 0), Some(change)),
                ("telecom-standard", change, None)
            ]
        )
    );
    let d = TestDaemon::start(&write_config(&dir.0, &extra)).await;
    let mut reference = Reference::shipped();
    reference.subscribe("sw", "saas-pro", utc(1, 0), Some(change), Decimal::ZERO);
    reference.subscribe("sw", "telecom-standard", change, None, Decimal::ZERO);

    // 1000 requests on the 5th: volume tier 1 at 0.0010, 10% off: 1000 x 0.0010 x 0.9 = 0.9 USD.
    let api = event("sw-1", "sw", "api.requests", 1000, 0, utc(5, 10), &[]);
    assert_eq!(d.submit(1, vec![api.clone()]).await.accepted, 1);
    let url = redis.url();
    let key = "pc:agg:{sw}:2026-11";
    wait_until(20, "the USD total in Redis", || {
        let url = url.clone();
        async move { hash(&url, key).get("total:charge").map(String::as_str) == Some("0.900000000") }
    })
    .await;
    assert_eq!(hash(&url, key).get("currency").map(String::as_str), Some("USD"));

    // 61 s to +44 (0.0200 a minute) on Thursday the 12th 10:00 Berlin (peak), 60/1 increments and
    // a 0.0100 connect fee: (61 x 0.02 + 60 x 0.01) / 60 = 1.82 / 60 = 0.030333333 EUR.
    let call = event(
        "sw-2",
        "sw",
        "voice.seconds",
        61,
        0,
        utc(12, 9),
        &[("destination", "+442071234567")],
    );
    assert_eq!(d.submit(2, vec![call.clone()]).await.accepted, 1);
    // Before every subscription of the account: NO_TARIFF, naming its windows.
    let before = event(
        "sw-0",
        "sw",
        "api.requests",
        1,
        0,
        Utc.with_ymd_and_hms(2026, 10, 25, 0, 0, 0).unwrap(),
        &[],
    );
    let ack = d.submit(3, vec![before]).await;
    assert_eq!(ack.results[0].reason, proto::RejectReason::NoTariff as i32);
    assert_eq!(
        ack.results[0].detail,
        "account \"sw\" has no subscription in force at 2026-10-25T00:00:00+00:00 and there is no default \
         plan; its subscriptions: saas-pro from 2026-11-01T00:00:00+00:00 to 2026-11-10T00:00:00+00:00, \
         telecom-standard from 2026-11-10T00:00:00+00:00 open-ended"
    );
    let events = vec![api, call];
    let want = reference.rate(&events);
    assert!(want.totals.is_empty(), "two plans in the period: no single total");

    let t = d.totals("sw", "2026-11").await.unwrap();
    // Two currencies: no top-level sum, never 0.93 "USD".
    assert_eq!((t.currency.as_str(), t.total_charge.as_str()), ("", ""));
    assert!(t.meters.is_empty() && t.projected_charge.is_empty());
    let by_currency: Vec<(&str, &str, &str)> = t
        .by_currency
        .iter()
        .map(|c| (c.currency.as_str(), c.total_charge.as_str(), c.total_amount.as_str()))
        .collect();
    // EUR rounds half-up to 0.03; USD half-even to 0.90.
    assert_eq!(
        by_currency,
        [("EUR", "0.030333333", "0.03"), ("USD", "0.900000000", "0.90")]
    );
    let parts: Vec<(&str, &str, &str, &str)> = t
        .subscriptions
        .iter()
        .map(|s| (s.plan.as_str(), s.currency.as_str(), s.from.as_str(), s.to.as_str()))
        .collect();
    assert_eq!(
        parts,
        [
            (
                "saas-pro",
                "USD",
                "2026-11-01T00:00:00+00:00",
                "2026-11-10T00:00:00+00:00"
            ),
            // telecom-standard's November ends at Berlin midnight, 23:00 UTC.
            (
                "telecom-standard",
                "EUR",
                "2026-11-10T00:00:00+00:00",
                "2026-11-30T23:00:00+00:00"
            ),
        ]
    );
    for s in &t.subscriptions {
        let key = ("sw".to_string(), "2026-11".to_string(), s.plan.clone());
        assert_part_equal(&reference, "sw 2026-11", s, &want.parts[&key]);
    }

    // The statement: one section per plan, each adding up within its currency.
    let statement = proto::query_client::QueryClient::new(channel(&d.target).await)
        .statement(proto::StatementRequest {
            account_id: "sw".into(),
            period: "2026-11".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(statement.currency, "");
    let sections: Vec<(&str, &str, &str, &str, &str)> = statement
        .sections
        .iter()
        .map(|s| {
            (
                s.plan.as_str(),
                s.currency.as_str(),
                s.subtotal.as_str(),
                s.total_charge.as_str(),
                s.total_amount.as_str(),
            )
        })
        .collect();
    // saas-pro: 1.0 before the 10% version discount of -0.1.
    assert_eq!(
        sections,
        [
            ("saas-pro", "USD", "1.000000000", "0.900000000", "0.90"),
            ("telecom-standard", "EUR", "0.030333333", "0.030333333", "0.03"),
        ]
    );
    assert_eq!(statement.by_currency, t.by_currency);

    // Redis: per-currency and per-plan figures; the single-currency fields written before the
    // change are gone rather than stale.
    wait_until(20, "both currencies in Redis", || {
        let url = url.clone();
        async move { hash(&url, key).get("currencies").map(String::as_str) == Some("EUR,USD") }
    })
    .await;
    let h = hash(&url, key);
    let field = |f: &str| h.get(f).map(String::as_str);
    assert_eq!(field("layout"), Some("2"));
    assert_eq!(field("plans"), Some("saas-pro,telecom-standard"));
    assert_eq!(field("total:USD:charge"), Some("0.900000000"));
    assert_eq!(field("total:USD:amount"), Some("0.90"));
    assert_eq!(field("total:EUR:charge"), Some("0.030333333"));
    assert_eq!(field("total:EUR:amount"), Some("0.03"));
    assert_eq!(field("plan:telecom-standard:currency"), Some("EUR"));
    assert_eq!(field("plan:saas-pro:api.requests:charge"), Some("0.900000000"));
    assert_eq!(field("api.requests:quantity"), Some("1000"));
    for gone in [
        "currency",
        "plan",
        "total:charge",
        "total:amount",
        "api.requests:charge",
    ] {
        assert_eq!(field(gone), None, "{gone} mixes currencies");
    }

    // Both plans close (Berlin first, then UTC): one announcement per plan, each in its currency.
    let clock = d.running.as_ref().unwrap().clock.clone();
    clock.advance(utc(30, 0) + chrono::Duration::days(1) + chrono::Duration::hours(73) - clock.now());
    wait_until(20, "both announcements", || {
        let url = url.clone();
        async move { xrange(&url, "pc:periods:closed").len() >= 2 }
    })
    .await;
    let mut entries: Vec<(String, String, String)> = xrange(&url, "pc:periods:closed")
        .into_iter()
        .map(|e| (e["close_id"].clone(), e["currency"].clone(), e["total_charge"].clone()))
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        [
            (
                "sw|2026-11|saas-pro".to_string(),
                "USD".to_string(),
                "0.900000000".to_string()
            ),
            (
                "sw|2026-11|telecom-standard".to_string(),
                "EUR".to_string(),
                "0.030333333".to_string()
            ),
        ]
    );
    d.stop().await;
}

/// A change between two USD plans with volume tiers: the new plan's tiers start from zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_plans_tiers_start_from_zero_at_the_change() {
    let dir = TempDir::new("plan-change-usd");
    let lite = r#"
[[plans]]
id = "saas-lite"
currency = "USD"
time_zone = "UTC"
rounding = { places = 2, mode = "half-even" }
billing_period = { kind = "month", anchor_day = 1 }

[[plans.versions]]
effective_from = "2026-01-01T00:00:00Z"

[plans.versions.meters."api.requests"]
model = "volume"
tiers = [{ up_to = 1000000, price = "0.0010" }, { price = "0.0008" }]
"#;
    let catalogue = format!("{}{lite}", include_str!("../config/tariffs.toml"));
    let change = utc(10, 0);
    let (config, _) = write_config_with_tariffs(
        &dir.0,
        &subscriptions(
            "u2",
            &[("saas-pro", utc(1, 0), Some(change)), ("saas-lite", change, None)],
        ),
        &catalogue,
    );
    let d = TestDaemon::start(&config).await;
    let mut reference = Reference::new(&catalogue);
    reference.subscribe("u2", "saas-pro", utc(1, 0), Some(change), Decimal::ZERO);
    reference.subscribe("u2", "saas-lite", change, None, Decimal::ZERO);

    let events = vec![
        // saas-pro: 1,500,000 reach volume tier 2: 1,500,000 x 0.0008 x 0.9 = 1080.
        event("u-1", "u2", "api.requests", 1_500_000, 0, utc(5, 10), &[]),
        // saas-lite from zero: 500,000 stay in tier 1: 500,000 x 0.0010 = 500 (continuing from
        // 1.5M it would be tier 2 at 0.0008: 400).
        event("u-2", "u2", "api.requests", 500_000, 0, utc(12, 10), &[]),
    ];
    assert_eq!(d.submit(1, events.clone()).await.accepted, 2);
    let want = reference.rate(&events);
    let t = d.totals("u2", "2026-11").await.unwrap();
    let charges: Vec<(&str, Decimal)> = t
        .subscriptions
        .iter()
        .map(|s| (s.plan.as_str(), dec(&s.total_charge)))
        .collect();
    assert_eq!(charges, [("saas-pro", dec("1080")), ("saas-lite", dec("500"))]);
    for s in &t.subscriptions {
        let key = ("u2".to_string(), "2026-11".to_string(), s.plan.clone());
        assert_part_equal(&reference, "u2 2026-11", s, &want.parts[&key]);
    }
    // One currency: the top-level figures stay, the exact sum of both plans, and the amount is
    // the sum of each plan's rounded amount (1080.00 + 500.00).
    assert_eq!(t.currency, "USD");
    assert_eq!(t.plan, "saas-lite", "the plan in force last");
    assert_eq!(dec(&t.total_charge), dec("1580"));
    assert_eq!(t.total_amount, "1580.00");
    let [m] = t.meters.as_slice() else {
        panic!("one meter: {:?}", t.meters)
    };
    assert_eq!((m.quantity.as_str(), m.events), ("2000000", 2));
    assert_eq!(dec(&m.charge), dec("1580"));
    d.stop().await;
}

/// Two add-on plans beside the shipped ones: `backup-plus` prices a meter no base plan prices;
/// `api-boost` prices one that saas-pro prices.
const ADDONS: &str = r#"
[[plans]]
id = "backup-plus"
addon = true
currency = "USD"
time_zone = "UTC"
rounding = { places = 2, mode = "half-even" }
[[plans.versions]]
effective_from = "2026-01-01T00:00:00Z"
[plans.versions.meters."backup.gb"]
model = "per_unit"
price = "0.10"

[[plans]]
id = "api-boost"
addon = true
currency = "USD"
time_zone = "UTC"
rounding = { places = 2, mode = "half-even" }
[[plans.versions]]
effective_from = "2026-01-01T00:00:00Z"
[plans.versions.meters."api.requests"]
model = "per_unit"
price = "0.0001"
"#;

fn subscription(account: &str, plan: &str, from: DateTime<Utc>) -> proto::Subscription {
    proto::Subscription {
        account_id: account.into(),
        plan_id: plan.into(),
        from: from.to_rfc3339(),
        ..Default::default()
    }
}

/// An account holds one base subscription and add-ons beside it; an add-on prices its own
/// meters, and a meter priced by two subscriptions in force at once is refused when set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_ons_price_their_own_meters_beside_the_base_plan() {
    let dir = TempDir::new("addons");
    let catalogue = format!("{}{ADDONS}", include_str!("../config/tariffs.toml"));
    let (config, tariffs) = write_config_with_tariffs(&dir.0, "", &catalogue);
    let d = TestDaemon::start(&config).await;
    let mut admin = proto::admin_client::AdminClient::new(channel(&d.target).await);
    // The base plan and an add-on from the same instant: both kept.
    for plan in ["saas-pro", "backup-plus"] {
        admin
            .upsert_subscription(subscription("ad", plan, utc(1, 0)))
            .await
            .unwrap();
    }
    // A second base plan in force at the same time, and an add-on pricing a meter saas-pro
    // prices: refused with the reason, nothing changed.
    let refused = admin
        .upsert_subscription(subscription("ad", "telecom-standard", utc(5, 0)))
        .await
        .unwrap_err();
    assert!(
        refused
            .message()
            .contains("overlaps the subscription to \"saas-pro\" from 2026-11-01T00:00:00+00:00"),
        "{}",
        refused.message()
    );
    let refused = admin
        .upsert_subscription(subscription("ad", "api-boost", utc(5, 0)))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains(
            "meter \"api.requests\" is also priced by the subscription to \"saas-pro\" from \
             2026-11-01T00:00:00+00:00, in force at the same time"
        ),
        "{}",
        refused.message()
    );
    let held = |list: Vec<proto::Subscription>| -> Vec<String> { list.into_iter().map(|s| s.plan_id).collect() };
    let get = proto::GetSubscriptionsRequest {
        account_id: "ad".into(),
    };
    let list = admin
        .get_subscriptions(get.clone())
        .await
        .unwrap()
        .into_inner()
        .subscriptions;
    assert_eq!(held(list), ["backup-plus", "saas-pro"]);

    // 1000 requests under saas-pro: 1000 x 0.0010 x 0.9 = 0.9; 5 GB under backup-plus:
    // 5 x 0.10 = 0.5.
    let events = vec![
        event("ad-1", "ad", "api.requests", 1000, 0, utc(12, 10), &[]),
        event("ad-2", "ad", "backup.gb", 5, 0, utc(12, 11), &[]),
    ];
    assert_eq!(d.submit(1, events.clone()).await.accepted, 2);
    let mut reference = Reference::new(&catalogue);
    reference.subscribe("ad", "saas-pro", utc(1, 0), None, Decimal::ZERO);
    reference.subscribe("ad", "backup-plus", utc(1, 0), None, Decimal::ZERO);
    let want = reference.rate(&events);
    let t = d.totals("ad", "2026-11").await.unwrap();
    let charges: Vec<(&str, &str)> = t
        .subscriptions
        .iter()
        .map(|s| (s.plan.as_str(), s.total_charge.as_str()))
        .collect();
    assert_eq!(charges, [("saas-pro", "0.900000000"), ("backup-plus", "0.500000000")]);
    for s in &t.subscriptions {
        let key = ("ad".to_string(), "2026-11".to_string(), s.plan.clone());
        assert_part_equal(&reference, "ad 2026-11", s, &want.parts[&key]);
    }
    assert_eq!(
        (t.total_charge.as_str(), t.total_amount.as_str()),
        ("1.400000000", "1.40")
    );

    // A reload that makes the add-on price a meter of the base plan is refused.
    let clashing = catalogue.replace(
        "[plans.versions.meters.\"backup.gb\"]",
        "[plans.versions.meters.\"storage.gb_hours\"]\nmodel = \"per_unit\"\nprice = \"1\"\n\n\
         [plans.versions.meters.\"backup.gb\"]",
    );
    std::fs::write(&tariffs, &clashing).unwrap();
    let refused = admin.reload_tariffs(proto::ReloadTariffsRequest {}).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("subscriptions in force clash")
            && refused.message().contains("meter \"storage.gb_hours\" is also priced"),
        "{}",
        refused.message()
    );
    std::fs::write(&tariffs, &catalogue).unwrap();
    d.stop().await;

    // Both subscriptions starting at the same instant are stored apart: both back after a restart.
    let d = TestDaemon::start(&config).await;
    let mut admin = proto::admin_client::AdminClient::new(channel(&d.target).await);
    let list = admin.get_subscriptions(get).await.unwrap().into_inner().subscriptions;
    assert_eq!(held(list), ["backup-plus", "saas-pro"]);
    d.stop().await;
}

/// A generated property, over 16 seeded scenarios in one daemon: an account changes between the
/// USD and the EUR plan at a random instant (or holds one plan), with random API requests, SMS
/// and calls on both sides. For every currency, GetTotals' figure equals the sum of the records
/// (ListRatedRecords) of the plans in that currency, and the sum of the statement's sections in
/// it; each plan's part equals the reference pricer's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_currency_totals_equal_the_sum_of_their_lines() {
    let dir = TempDir::new("plan-change-property");
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut extra = String::new();
    let mut reference = Reference::shipped();
    let mut scenarios = Vec::new();
    for k in 0..16 {
        let account = format!("prop-{k}");
        let plans = if next(2) == 0 {
            ["saas-pro", "telecom-standard"]
        } else {
            ["telecom-standard", "saas-pro"]
        };
        // A change on day 2..=16 at a random second, or (one scenario in four) none.
        let change = (next(4) != 0).then(|| utc(2, 0) + chrono::Duration::seconds(next(14 * 86_400) as i64));
        let windows: Vec<Window> = match change {
            Some(c) => vec![(plans[0], utc(1, 0), Some(c)), (plans[1], c, None)],
            None => vec![(plans[0], utc(1, 0), None)],
        };
        extra.push_str(&subscriptions(&account, &windows));
        for (plan, from, to) in &windows {
            reference.subscribe(&account, plan, *from, *to, Decimal::ZERO);
        }
        let events: Vec<proto::UsageEvent> = (0..30)
            .map(|n| {
                let at = utc(1, 1) + chrono::Duration::seconds(next(16 * 86_400) as i64);
                let id = format!("{account}-{n}");
                match next(3) {
                    0 => event(&id, &account, "api.requests", next(3_000_000) as i64, 0, at, &[]),
                    1 => event(&id, &account, "sms.count", next(20) as i64 + 1, 0, at, &[]),
                    _ => {
                        let dest = [(
                            "destination",
                            ["+442071234567", "+447911123456", "+15551234567"][next(3) as usize],
                        )];
                        event(&id, &account, "voice.seconds", next(600) as i64 + 1, 0, at, &dest)
                    }
                }
            })
            .collect();
        scenarios.push((account, events));
    }
    let d = TestDaemon::start(&write_config(&dir.0, &extra)).await;
    let currency_of = |plan: &str| if plan == "saas-pro" { "USD" } else { "EUR" };
    let mut query = proto::query_client::QueryClient::new(channel(&d.target).await);
    for (batch, (account, events)) in scenarios.iter().enumerate() {
        // Events a plan cannot price (SMS under saas-pro, API requests under telecom-standard)
        // are rejected and count nowhere.
        d.submit(batch as u64, events.clone()).await;
        let want = reference.rate(events);
        let t = d.totals(account, "2026-11").await.unwrap();
        for s in &t.subscriptions {
            let key = (account.clone(), "2026-11".to_string(), s.plan.clone());
            assert_part_equal(&reference, account, s, &want.parts[&key]);
        }
        let records = query
            .list_rated_records(proto::ListRatedRecordsRequest {
                account_id: account.clone(),
                page_size: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .records;
        let statement = query
            .statement(proto::StatementRequest {
                account_id: account.clone(),
                period: "2026-11".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(statement.by_currency, t.by_currency, "{account}");
        for c in &t.by_currency {
            let of_records: Decimal = records
                .iter()
                .filter(|r| currency_of(&r.plan_id) == c.currency)
                .map(|r| dec(&r.charge))
                .sum();
            let sections: Vec<&proto::StatementSection> =
                statement.sections.iter().filter(|x| x.currency == c.currency).collect();
            let of_sections: Decimal = sections.iter().map(|x| dec(&x.total_charge)).sum();
            let amounts: Decimal = sections.iter().map(|x| dec(&x.total_amount)).sum();
            assert_eq!(dec(&c.total_charge), of_records, "{account} {}: records", c.currency);
            assert_eq!(dec(&c.total_charge), of_sections, "{account} {}: sections", c.currency);
            assert_eq!(dec(&c.total_amount), amounts, "{account} {}: amounts", c.currency);
            for x in &sections {
                assert_eq!(
                    dec(&x.subtotal) + dec(&x.discount),
                    dec(&x.total_charge),
                    "{account} {}: subtotal + discount",
                    x.plan
                );
            }
        }
        let currencies: std::collections::BTreeSet<&str> =
            t.subscriptions.iter().map(|s| s.currency.as_str()).collect();
        assert_eq!(t.by_currency.len(), currencies.len(), "{account}");
        assert_eq!(
            t.currency.is_empty(),
            currencies.len() > 1,
            "{account}: top-level currency"
        );
    }
    d.stop().await;
}
