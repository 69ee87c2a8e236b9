//! ns per rated event for each charge model (the target: under 500 ns for the per-unit and
//! telecom models). Run: `cargo bench --bench rating`.

use std::hint::black_box;

use chrono::{DateTime, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use rust_decimal::Decimal;

use ratingd::domain::tariff::Catalogue;
use ratingd::domain::tariff_file::parse_catalogue;
use ratingd::rating::{RatingInput, Report, rate};

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

struct Case {
    name: &'static str,
    models: bool,
    plan: &'static str,
    meter: &'static str,
    quantity: Decimal,
    at: &'static str,
    attrs: Vec<(String, String)>,
    usage: Decimal,
}

fn attrs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn cases() -> Vec<Case> {
    let uk = attrs(&[("destination", "+442071234567")]);
    let case = |name, models, plan, meter, quantity: i64, at, attrs, usage: i64| Case {
        name,
        models,
        plan,
        meter,
        quantity: Decimal::from(quantity),
        at,
        attrs,
        usage: Decimal::from(usage),
    };
    vec![
        case(
            "per_unit/flat",
            true,
            "anchored",
            "x",
            3,
            "2026-11-25T10:00:00Z",
            vec![],
            0,
        ),
        case(
            "per_unit/allowance_sms",
            false,
            "telecom-standard",
            "sms.count",
            1,
            "2026-11-25T10:00:00Z",
            vec![],
            150,
        ),
        case(
            "per_unit/match_increments_minimum",
            true,
            "calls",
            "voice.eu",
            31,
            "2026-11-25T10:00:00Z",
            attrs(&[("region", "eu")]),
            0,
        ),
        case(
            "per_unit/bands_at_timestamp",
            true,
            "calls",
            "api.peak",
            1000,
            "2026-11-25T09:00:00Z",
            vec![],
            0,
        ),
        case(
            "telecom/voice_one_band",
            false,
            "telecom-standard",
            "voice.seconds",
            61,
            "2026-11-25T09:00:00Z",
            uk.clone(),
            0,
        ),
        case(
            "telecom/voice_split_two_bands",
            false,
            "telecom-standard",
            "voice.seconds",
            90,
            "2026-11-27T18:59:30Z",
            uk,
            0,
        ),
        case(
            "graduated/data_two_tiers",
            false,
            "telecom-standard",
            "data.mb",
            50,
            "2026-11-25T10:00:00Z",
            vec![],
            1000,
        ),
        case(
            "volume/api_crossing",
            false,
            "saas-pro",
            "api.requests",
            2,
            "2026-11-25T10:00:00Z",
            vec![],
            999_999,
        ),
        case(
            "volume/api_inside",
            false,
            "saas-pro",
            "api.requests",
            500,
            "2026-11-25T10:00:00Z",
            vec![],
            2_000_000,
        ),
        case(
            "package/storage",
            false,
            "saas-pro",
            "storage.gb_hours",
            250,
            "2026-11-25T10:00:00Z",
            vec![],
            50,
        ),
    ]
}

fn catalogues() -> (Catalogue, Catalogue) {
    let shipped = parse_catalogue(include_str!("../config/tariffs.toml")).unwrap();
    let models = parse_catalogue(include_str!("../tests/data/models.toml")).unwrap();
    (shipped, models)
}

fn rating(c: &mut Criterion) {
    let (shipped, models) = catalogues();
    let mut group = c.benchmark_group("rate");
    for case in cases() {
        let catalogue = if case.models { &models } else { &shipped };
        let plan = catalogue.plan(case.plan).unwrap();
        let input = RatingInput {
            meter: case.meter,
            quantity: case.quantity,
            at: at(case.at),
            attributes: &case.attrs,
            period_usage: case.usage,
            subscription_discount: None,
        };
        group.bench_function(case.name, |b| {
            b.iter(|| rate(black_box(plan), black_box(&input)).unwrap())
        });
    }
    group.finish();
}

fn periods_and_reports(c: &mut Criterion) {
    let (shipped, _) = catalogues();
    let plan = shipped.plan("telecom-standard").unwrap();
    let when = at("2026-11-25T10:00:00Z");
    c.bench_function("period/month_berlin", |b| {
        b.iter(|| plan.period.period_of(plan.time_zone, black_box(when)))
    });
    let attributes = attrs(&[("destination", "+442071234567")]);
    let input = RatingInput {
        meter: "voice.seconds",
        quantity: Decimal::from(61),
        at: when,
        attributes: &attributes,
        period_usage: Decimal::ZERO,
        subscription_discount: None,
    };
    let rated = rate(plan, &input).unwrap();
    c.bench_function("explain/report_json", |b| {
        b.iter(|| {
            serde_json::to_string(&Report::new(
                plan,
                "voice.seconds",
                &attributes,
                black_box(&rated.explanation),
            ))
        })
    });
}

criterion_group!(benches, rating, periods_and_reports);
criterion_main!(benches);
