//! Worked examples computed by hand, one per row, covering every charge model, boundaries,
//! daylight-saving days and the two shipped example plans. The arithmetic of each row is in its
//! comment; the expected charge is the exact value rounded once to 9 places, half-even.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use ratingd::domain::tariff::Catalogue;
use ratingd::domain::tariff_file::parse_catalogue;
use ratingd::rating::{RatingInput, quote};

const SHIPPED: &str = include_str!("../config/tariffs.toml");
const MODELS: &str = include_str!("data/models.toml");

struct Case {
    /// What the row checks and how the figure was computed by hand.
    name: &'static str,
    models: bool,
    plan: &'static str,
    meter: &'static str,
    quantity: &'static str,
    at: &'static str,
    attrs: &'static [(&'static str, &'static str)],
    usage: &'static str,
    charge: &'static str,
    period: &'static str,
    version: u32,
}

const T: &str = "telecom-standard";
const S: &str = "saas-pro";
const UK: &[(&str, &str)] = &[("destination", "+442071234567")];
const UK_MOBILE: &[(&str, &str)] = &[("destination", "+447911123456")];
const US: &[(&str, &str)] = &[("destination", "+12125550100")];
const FR: &[(&str, &str)] = &[("destination", "+33142000000")];
const NONE: &[(&str, &str)] = &[];

#[allow(clippy::too_many_arguments)] // one positional argument per table column
const fn shipped(
    name: &'static str,
    plan: &'static str,
    meter: &'static str,
    quantity: &'static str,
    at: &'static str,
    attrs: &'static [(&'static str, &'static str)],
    usage: &'static str,
    charge: &'static str,
    period: &'static str,
    version: u32,
) -> Case {
    Case {
        name,
        models: false,
        plan,
        meter,
        quantity,
        at,
        attrs,
        usage,
        charge,
        period,
        version,
    }
}

#[allow(clippy::too_many_arguments)] // one positional argument per table column
const fn models(
    name: &'static str,
    plan: &'static str,
    meter: &'static str,
    quantity: &'static str,
    at: &'static str,
    attrs: &'static [(&'static str, &'static str)],
    usage: &'static str,
    charge: &'static str,
    period: &'static str,
) -> Case {
    Case {
        name,
        models: true,
        plan,
        meter,
        quantity,
        at,
        attrs,
        usage,
        charge,
        period,
        version: 1,
    }
}

#[rustfmt::skip]
const CASES: &[Case] = &[
    // telecom-standard voice: per 60 s, increments 60/1, connect fee 0.01, peak Mon-Fri 08-20 Berlin.
    shipped("issue example: 61 s to +44 peak = (61x0.02 + 0.6)/60", T, "voice.seconds", "61", "2026-11-25T10:00:00+01:00", UK, "0", "0.030333333", "2026-11", 1),
    shipped("issue example: 30 s to +447 billed 60 = (60x0.09 + 0.6)/60", T, "voice.seconds", "30", "2026-11-25T10:00:00+01:00", UK_MOBILE, "0", "0.100000000", "2026-11", 1),
    shipped("60 s to +1 peak = 0.01 + 0.01", T, "voice.seconds", "60", "2026-11-25T10:00:00+01:00", US, "0", "0.020000000", "2026-11", 1),
    shipped("0 s call: no minutes, connect fee only", T, "voice.seconds", "0", "2026-11-25T10:00:00+01:00", UK, "0", "0.010000000", "2026-11", 1),
    shipped("61 s to +44 off-peak at 21:00 = (61x0.01 + 0.6)/60", T, "voice.seconds", "61", "2026-11-25T21:00:00+01:00", UK, "0", "0.020166667", "2026-11", 1),
    shipped("120 s elsewhere on Saturday (off-peak) = 2x0.075 + 0.01", T, "voice.seconds", "120", "2026-11-28T12:00:00+01:00", FR, "0", "0.160000000", "2026-11", 1),
    shipped("Fri 19:59:30 90 s to +44: 30 s peak + 60 s off-peak = (0.6 + 0.6 + 0.6)/60", T, "voice.seconds", "90", "2026-11-27T19:59:30+01:00", UK, "0", "0.030000000", "2026-11", 1),
    shipped("Mon 07:59 121 s to +1: 60 s off-peak + 61 s peak = (0.3 + 0.61 + 0.6)/60", T, "voice.seconds", "121", "2026-11-30T07:59:00+01:00", US, "0", "0.025166667", "2026-11", 1),
    shipped("59.5 s rounds up to the first increment of 60", T, "voice.seconds", "59.5", "2026-11-25T10:00:00+01:00", UK, "0", "0.030000000", "2026-11", 1),
    shipped("60.2 s -> 60 + one started second = 61", T, "voice.seconds", "60.2", "2026-11-25T10:00:00+01:00", UK, "0", "0.030333333", "2026-11", 1),
    shipped("DST spring Sunday 01:30 CET 3600 s elsewhere, all off-peak = 60x0.075 + 0.01", T, "voice.seconds", "3600", "2026-03-29T00:30:00Z", FR, "0", "4.510000000", "2026-03", 1),
    shipped("Mon 19:00 7200 s to +447: 3600 s peak + 3600 s off = (324 + 162 + 0.6)/60", T, "voice.seconds", "7200", "2026-11-30T19:00:00+01:00", UK_MOBILE, "0", "8.110000000", "2026-11", 1),
    shipped("summer 06:30Z is 08:30 CEST: peak", T, "voice.seconds", "60", "2026-07-15T06:30:00Z", UK, "0", "0.030000000", "2026-07", 1),
    shipped("winter 06:30Z is 07:30 CET: off-peak", T, "voice.seconds", "60", "2026-11-25T06:30:00Z", UK, "0", "0.020000000", "2026-11", 1),
    shipped("no destination attribute: default 0.15", T, "voice.seconds", "60", "2026-11-25T10:00:00+01:00", NONE, "0", "0.160000000", "2026-11", 1),
    shipped("23:30Z on Oct 31 is Nov 1 in Berlin", T, "voice.seconds", "60", "2026-10-31T23:30:00Z", UK, "0", "0.020000000", "2026-11", 1),
    // telecom-standard SMS: 0.05 each, first 100 of the period free.
    shipped("first SMS of the period is free", T, "sms.count", "1", "2026-11-25T10:00:00Z", NONE, "0", "0.000000000", "2026-11", 1),
    shipped("99 used, 2 more: 1 free + 1 at 0.05", T, "sms.count", "2", "2026-11-25T10:00:00Z", NONE, "99", "0.050000000", "2026-11", 1),
    shipped("allowance used up: 10 x 0.05", T, "sms.count", "10", "2026-11-25T10:00:00Z", NONE, "100", "0.500000000", "2026-11", 1),
    shipped("well past the allowance: 0.05", T, "sms.count", "1", "2026-11-25T10:00:00Z", NONE, "150", "0.050000000", "2026-11", 1),
    // telecom-standard data: graduated 1024 @ 0.01, 10240 @ 0.005, above @ 0.002.
    shipped("100 MB in tier 1", T, "data.mb", "100", "2026-11-25T10:00:00Z", NONE, "0", "1.000000000", "2026-11", 1),
    shipped("1000 -> 1050 MB: 24 x 0.01 + 26 x 0.005", T, "data.mb", "50", "2026-11-25T10:00:00Z", NONE, "1000", "0.370000000", "2026-11", 1),
    shipped("10000 -> 10500 MB: 240 x 0.005 + 260 x 0.002", T, "data.mb", "500", "2026-11-25T10:00:00Z", NONE, "10000", "1.720000000", "2026-11", 1),
    shipped("0 -> 20000 MB: 10.24 + 46.08 + 19.52", T, "data.mb", "20000", "2026-11-25T10:00:00Z", NONE, "0", "75.840000000", "2026-11", 1),
    shipped("exactly at the tier bound 1024 then 0.5 MB more at 0.005", T, "data.mb", "0.5", "2026-11-25T10:00:00Z", NONE, "1024", "0.002500000", "2026-11", 1),
    shipped("1 nano-MB costs 1e-11, rounds to 0", T, "data.mb", "0.000000001", "2026-11-25T10:00:00Z", NONE, "0", "0.000000000", "2026-11", 1),
    // saas-pro api.requests: volume tiers, 10% off: charge = R(after) - R(before), R(u) = 0.9 x P(u).
    shipped("1000 requests: 1000 x 0.001 x 0.9", S, "api.requests", "1000", "2026-11-25T10:00:00Z", NONE, "0", "0.900000000", "2026-11", 1),
    shipped("up to exactly 1,000,000 stays in tier 1: 900 - 899.1", S, "api.requests", "1000", "2026-11-25T10:00:00Z", NONE, "999000", "0.900000000", "2026-11", 1),
    shipped("crossing 1,000,000 re-prices everything: 720.00072 - 899.9991", S, "api.requests", "2", "2026-11-25T10:00:00Z", NONE, "999999", "-179.998380000", "2026-11", 1),
    shipped("crossing 10,000,000: 4500.00045 - 7200", S, "api.requests", "1", "2026-11-25T10:00:00Z", NONE, "10000000", "-2699.999550000", "2026-11", 1),
    shipped("inside tier 2: 500 x 0.0008 x 0.9", S, "api.requests", "500", "2026-11-25T10:00:00Z", NONE, "2000000", "0.360000000", "2026-11", 1),
    shipped("last second of version 1", S, "api.requests", "1000", "2026-12-31T23:59:59Z", NONE, "0", "0.900000000", "2026-12", 1),
    shipped("first second of version 2: tier 1 at 0.0009 -> 0.81", S, "api.requests", "1000", "2027-01-01T00:00:00Z", NONE, "0", "0.810000000", "2027-01", 2),
    shipped("version 2 mid-month", S, "api.requests", "1000", "2027-01-15T12:00:00Z", NONE, "0", "0.810000000", "2027-01", 2),
    // saas-pro storage: 0.50 per started block of 100, 10% off.
    shipped("first unit starts a block: 0.5 x 0.9", S, "storage.gb_hours", "1", "2026-11-25T10:00:00Z", NONE, "0", "0.450000000", "2026-11", 1),
    shipped("filling the started block costs nothing", S, "storage.gb_hours", "99", "2026-11-25T10:00:00Z", NONE, "1", "0.000000000", "2026-11", 1),
    shipped("100 -> 100.5 starts block 2", S, "storage.gb_hours", "0.5", "2026-11-25T10:00:00Z", NONE, "100", "0.450000000", "2026-11", 1),
    shipped("50 -> 300: blocks 1 -> 3", S, "storage.gb_hours", "250", "2026-11-25T10:00:00Z", NONE, "50", "0.900000000", "2026-11", 1),
    shipped("saas-pro is UTC: 23:30Z on Oct 31 is October", S, "storage.gb_hours", "1", "2026-10-31T23:30:00Z", NONE, "0", "0.450000000", "2026-10", 1),
    // Test catalogue: increments 30/6, match rules, minimum charge (weekly periods from Sunday).
    models("30/6: 31 s -> 36 s x 0.06/60 = 0.036, raised to the 0.05 minimum", "calls", "voice.eu", "31", "2026-11-26T12:00:00Z", &[("region", "eu")], "0", "0.050000000", "2026-11-22"),
    models("no match: default 0.12, 36 s -> 0.072", "calls", "voice.eu", "31", "2026-11-26T12:00:00Z", &[("region", "us")], "0", "0.072000000", "2026-11-22"),
    models("30/6: 125 s -> 30 + 16x6 = 126 s x 0.06/60", "calls", "voice.eu", "125", "2026-11-26T12:00:00Z", &[("region", "eu")], "0", "0.126000000", "2026-11-22"),
    models("10 s -> first increment 30 s x 0.12/60 = 0.06 (over the minimum)", "calls", "voice.eu", "10", "2026-11-26T12:00:00Z", NONE, "0", "0.060000000", "2026-11-22"),
    models("60/60: 61 s -> 120 s", "calls", "voice.flat", "61", "2026-11-26T12:00:00Z", NONE, "0", "0.200000000", "2026-11-22"),
    models("60/60: 60 s -> 60 s, in the last second (Sat 23:59:59 CET) of the week", "calls", "voice.flat", "60", "2026-11-28T22:59:59Z", NONE, "0", "0.100000000", "2026-11-22"),
    models("week starts Sunday local midnight: Sat 23:30Z is Sun 00:30 CET", "calls", "voice.flat", "60", "2026-11-28T23:30:00Z", NONE, "0", "0.100000000", "2026-11-29"),
    // Bands across daylight-saving transitions (night = Sun 00:00-02:30 local at x2).
    models("DST autumn: 02:15 CEST +3600 s: night 900 + day 1800 + night again 900 (02:00-02:15 CET) = (1800x0.12 + 1800x0.06)/60", "calls", "voice.night", "3600", "2026-10-25T00:15:00Z", NONE, "0", "5.400000000", "2026-10-25"),
    models("DST spring: 01:45 CET +1800 s: night 900, clocks jump to 03:00, day 900 = (108 + 54)/60", "calls", "voice.night", "1800", "2026-03-29T00:45:00Z", NONE, "0", "2.700000000", "2026-03-29"),
    models("Sunday afternoon is day", "calls", "voice.night", "60", "2026-11-29T12:00:00Z", NONE, "0", "0.060000000", "2026-11-29"),
    // Bands on a non-duration meter: the event's timestamp picks the band.
    models("Wed 10:00 CET is peak: 1000 x 0.002 x 1.5", "calls", "api.peak", "1000", "2026-11-25T09:00:00Z", NONE, "0", "3.000000000", "2026-11-22"),
    models("Wed 18:00 CET is rest: 1000 x 0.002", "calls", "api.peak", "1000", "2026-11-25T17:00:00Z", NONE, "0", "2.000000000", "2026-11-22"),
    models("Wed 08:59:59 CET, the last second before peak: rest", "calls", "api.peak", "1000", "2026-11-25T07:59:59Z", NONE, "0", "2.000000000", "2026-11-22"),
    models("Wed 09:00:00 CET, the first second of peak", "calls", "api.peak", "1000", "2026-11-25T08:00:00Z", NONE, "0", "3.000000000", "2026-11-22"),
    models("Wed 16:59:59 CET, the last second of peak", "calls", "api.peak", "1000", "2026-11-25T15:59:59Z", NONE, "0", "3.000000000", "2026-11-22"),
    models("Wed 17:00:00 CET, the first second after peak: rest", "calls", "api.peak", "1000", "2026-11-25T16:00:00Z", NONE, "0", "2.000000000", "2026-11-22"),
    // Cumulative models with allowance and 25% discount (daily UTC periods).
    models("graduated with 10 included: 0 -> 15 = 5 billable x 0.10 x 0.75", "tiers", "gb", "15", "2026-11-26T23:59:59Z", NONE, "0", "0.375000000", "2026-11-26"),
    models("graduated across the bound: billable 95 -> 105: 7.6875 - 7.125", "tiers", "gb", "10", "2026-11-26T00:00:00Z", NONE, "105", "0.562500000", "2026-11-26"),
    models("volume 10 -> 11 seats: 11x4x0.75 - 10x5x0.75 = 33 - 37.5", "tiers", "seats", "1", "2026-11-26T12:00:00Z", NONE, "10", "-4.500000000", "2026-11-26"),
    models("volume exactly at the bound 50 stays in tier 2: 150 - 30", "tiers", "seats", "40", "2026-11-26T12:00:00Z", NONE, "10", "112.500000000", "2026-11-26"),
    models("package with 1 included: 1.2 -> billable 0.2 -> 1 block of 0.5 at 1.25 x 0.75", "tiers", "blocks", "1.2", "2026-11-26T12:00:00Z", NONE, "0", "0.937500000", "2026-11-26"),
    models("package: billable 0.2 -> 0.6 starts block 2", "tiers", "blocks", "0.4", "2026-11-26T12:00:00Z", NONE, "1.2", "0.937500000", "2026-11-26"),
    // Month anchors and leap years.
    models("anchor 15: Nov 10 belongs to the period from Oct 15", "anchored", "x", "1", "2026-11-10T12:00:00Z", NONE, "0", "1.000000000", "2026-10-15"),
    models("anchor 15: Nov 15 00:00 starts a period", "anchored", "x", "1", "2026-11-15T00:00:00Z", NONE, "0", "1.000000000", "2026-11-15"),
    models("anchor 31 in February 2027 falls on the 28th", "month-end", "x", "1", "2027-02-28T12:00:00Z", NONE, "0", "1.000000000", "2027-02-28"),
    models("anchor 31 in a leap February falls on the 29th", "month-end", "x", "1", "2028-02-29T00:00:00Z", NONE, "0", "1.000000000", "2028-02-29"),
    models("the day before belongs to the period from Jan 31", "month-end", "x", "2.5", "2028-02-28T23:59:59Z", NONE, "0", "2.500000000", "2028-01-31"),
];

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("case time")
        .with_timezone(&Utc)
}

fn dec(text: &str) -> Decimal {
    text.parse().expect("case decimal")
}

#[test]
fn every_worked_example_matches_the_hand_computation() {
    let shipped: Catalogue = parse_catalogue(SHIPPED).expect("shipped catalogue is valid");
    let models: Catalogue = parse_catalogue(MODELS).expect("test catalogue is valid");
    assert!(CASES.len() >= 40, "the issue asks for at least 40 worked examples");
    let mut failures = Vec::new();
    for case in CASES {
        let catalogue = if case.models { &models } else { &shipped };
        let attributes: Vec<(String, String)> =
            case.attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let input = RatingInput {
            meter: case.meter,
            quantity: dec(case.quantity),
            at: at(case.at),
            attributes: &attributes,
            period_usage: dec(case.usage),
            subscription_discount: None,
        };
        match quote(catalogue, case.plan, &input) {
            Ok(q) => {
                let got = (
                    q.rated.charge.to_string(),
                    q.period.label.clone(),
                    q.rated.explanation.version,
                );
                let want = (case.charge.to_string(), case.period.to_string(), case.version);
                if got != want {
                    failures.push(format!("{}: got {got:?}, want {want:?}", case.name));
                }
            }
            Err(e) => failures.push(format!("{}: error {e}", case.name)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

#[test]
fn invoice_amounts_round_the_exact_total_with_the_plan_mode() {
    let shipped = parse_catalogue(SHIPPED).unwrap();
    let models = parse_catalogue(MODELS).unwrap();
    // telecom-standard: 2 places half-up; saas-pro: 2 places half-even.
    let telecom = shipped.plan(T).unwrap().rounding;
    let saas = shipped.plan(S).unwrap().rounding;
    assert_eq!(
        telecom
            .apply(dec("0.030333333") + dec("0.100000000") + dec("0.014666667"))
            .to_string(),
        "0.15"
    );
    assert_eq!(telecom.apply(dec("0.125000000")).to_string(), "0.13");
    assert_eq!(saas.apply(dec("0.125000000")).to_string(), "0.12");
    assert_eq!(saas.apply(dec("0.135000000")).to_string(), "0.14");
    // tiers: 2 places down; anchored: JPY 0 places up.
    assert_eq!(
        models
            .plan("tiers")
            .unwrap()
            .rounding
            .apply(dec("0.937500000"))
            .to_string(),
        "0.93"
    );
    assert_eq!(
        models
            .plan("anchored")
            .unwrap()
            .rounding
            .apply(dec("1.000000001"))
            .to_string(),
        "2"
    );
}
