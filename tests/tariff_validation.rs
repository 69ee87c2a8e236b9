//! Tariff file validation: every error of a file reported at once, each with its path; syntax
//! errors, unknown keys and floats refused with a clear message; never a panic.

use ratingd::domain::tariff_file::{TariffError, parse_catalogue};

fn errors(text: &str) -> Vec<TariffError> {
    match parse_catalogue(text) {
        Ok(_) => panic!("expected the file to be refused"),
        Err(e) => e.0,
    }
}

fn has(errors: &[TariffError], path: &str, needle: &str) -> bool {
    errors.iter().any(|e| e.path == path && e.message.contains(needle))
}

/// One file breaking every rule the issue names; all of them must be reported together.
const BROKEN: &str = r#"
[[plans]]
id = "a"
currency = "eur"
time_zone = "Europe/Berlln"
rounding = { places = 2, mode = "half-up" }

[[plans.versions]]
effective_from = "2026-02-01T00:00:00Z"
[plans.versions.meters."voice.seconds"]
model = "per_unit"
duration = true
increments = { first = 0, next = 1 }
prefix_attribute = "destination"
prefixes = { "+44" = "-0.02", "+1" = "0.01" }
price = "0.15"

[[plans.versions]]
effective_from = "2026-01-01T00:00:00Z"
[plans.versions.meters."data.mb"]
model = "graduated"
tiers = [{ up_to = 1024, price = "0.01" }, { up_to = 512, price = "0.005" }, { price = "0.002" }]

[[plans]]
id = "a"
currency = "USD"
time_zone = "UTC"
rounding = { places = 2, mode = "half-even" }

[[plans.versions]]
effective_from = "2026-01-01T00:00:00Z"
[plans.versions.meters."voice.seconds"]
model = "per_unit"
duration = true
price = "0.1"
[[plans.versions.meters."voice.seconds".bands]]
name = "peak"
factor = "1"
windows = [{ days = ["mon-fri"], from = "08:00", to = "20:00" }]
[[plans.versions.meters."voice.seconds".bands]]
name = "off-peak"
factor = "0.5"
windows = [{ days = ["mon-fri"], from = "19:00", to = "24:00" }, { days = ["sat-sun"], from = "00:00", to = "24:00" }]
"#;

#[test]
fn every_error_is_reported_at_once_with_its_path() {
    let e = errors(BROKEN);
    let listing = e.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
    let expected = [
        ("plans[0].currency", "3 uppercase letters"),
        ("plans[0].time_zone", "unknown IANA time zone"),
        (
            "plans[0].versions[0].meters.\"voice.seconds\".increments.first",
            "greater than 0",
        ),
        (
            "plans[0].versions[0].meters.\"voice.seconds\".prefixes.\"+44\"",
            "price must be >= 0",
        ),
        ("plans[0].versions[1].effective_from", "sorted by effective_from"),
        (
            "plans[0].versions[1].meters.\"data.mb\".tiers[1].up_to",
            "tiers must increase",
        ),
        ("plans[1].id", "duplicate plan id \"a\""),
        ("plans[1].versions[0].meters.\"voice.seconds\".bands", "overlap"),
        (
            "plans[1].versions[0].meters.\"voice.seconds\".bands",
            "mon 00:00 to mon 08:00 is not covered",
        ),
    ];
    for (path, needle) in expected {
        assert!(has(&e, path, needle), "missing {path}: {needle}\ngot:\n{listing}");
    }
    // The issue's own example path renders exactly so.
    assert!(
        listing.contains("plans[0].versions[0].meters.\"voice.seconds\".prefixes.\"+44\": price must be >= 0"),
        "{listing}"
    );
}

fn plan_with(meter: &str) -> String {
    format!(
        r#"
[[plans]]
id = "p"
currency = "EUR"
time_zone = "UTC"
rounding = {{ places = 2, mode = "half-up" }}
[[plans.versions]]
effective_from = "2026-01-01T00:00:00Z"
[plans.versions.meters.m]
{meter}
"#
    )
}

#[test]
fn a_float_price_is_refused_because_it_is_not_exact() {
    let e = errors(&plan_with("model = \"per_unit\"\nprice = 0.1"));
    assert_eq!(e.len(), 1);
    assert!(e[0].message.contains("TOML float"), "{}", e[0]);
    assert!(
        e[0].message.contains("line"),
        "syntax-level errors carry the line: {}",
        e[0]
    );
}

#[test]
fn unknown_keys_and_non_toml_are_clear_errors() {
    let e = errors(&plan_with("model = \"per_unit\"\nprice = \"1\"\ncolour = \"red\""));
    assert!(e[0].message.contains("unknown field `colour`"), "{}", e[0]);
    let e = errors("this is [not toml");
    assert_eq!(e.len(), 1);
    assert!(e[0].message.contains("line 1"), "{}", e[0]);
    let e = errors("");
    assert!(has(&e, "plans", "at least one plan"), "{e:?}");
}

#[test]
fn model_specific_rules() {
    let cases: &[(&str, &str, &str)] = &[
        ("model = \"per_unit\"", "plans[0].versions[0].meters.m", "needs a price"),
        (
            "model = \"per_unit\"\nprice = \"1\"\ntiers = [{ price = \"1\" }]",
            "plans[0].versions[0].meters.m.tiers",
            "not valid for model",
        ),
        (
            "model = \"per_unit\"\nprice = \"1\"\nincrements = { first = 60, next = 1 }",
            "plans[0].versions[0].meters.m.increments",
            "duration = true",
        ),
        (
            "model = \"per_unit\"\nduration = true\nprice = \"1\"\nincrements = { first = 60, next = 0 }",
            "plans[0].versions[0].meters.m.increments.next",
            "greater than 0",
        ),
        (
            "model = \"per_unit\"\nprice = \"1\"\nper = 0",
            "plans[0].versions[0].meters.m.per",
            "between 1",
        ),
        (
            "model = \"per_unit\"\nprice = \"0.0000000001\"",
            "plans[0].versions[0].meters.m.price",
            "more than 9 fractional digits",
        ),
        (
            "model = \"per_unit\"\nprice = \"1\"\nconnect_fee = \"-1\"",
            "plans[0].versions[0].meters.m.connect_fee",
            ">= 0",
        ),
        (
            "model = \"per_unit\"\nprefixes = { \"+1\" = \"1\" }",
            "plans[0].versions[0].meters.m.prefix_attribute",
            "need the attribute",
        ),
        (
            "model = \"per_unit\"\nmatch = [{ attributes = {}, price = \"1\" }]",
            "plans[0].versions[0].meters.m.match[0].attributes",
            "at least one",
        ),
        (
            "model = \"graduated\"",
            "plans[0].versions[0].meters.m.tiers",
            "is required",
        ),
        (
            "model = \"graduated\"\ntiers = [{ up_to = 10, price = \"1\" }]",
            "plans[0].versions[0].meters.m.tiers[0].up_to",
            "open-ended",
        ),
        (
            "model = \"volume\"\ntiers = [{ price = \"1\" }, { price = \"2\" }]",
            "plans[0].versions[0].meters.m.tiers[0].up_to",
            "required on every tier but the last",
        ),
        (
            "model = \"volume\"\ntiers = [{ up_to = 0, price = \"1\" }, { price = \"2\" }]",
            "plans[0].versions[0].meters.m.tiers[0].up_to",
            "tiers must increase",
        ),
        (
            "model = \"package\"\nblock_size = 0\nblock_price = \"1\"",
            "plans[0].versions[0].meters.m.block_size",
            "greater than 0",
        ),
        (
            "model = \"package\"\nblock_size = 10",
            "plans[0].versions[0].meters.m.block_price",
            "is required",
        ),
        (
            "model = \"stairs\"",
            "plans[0].versions[0].meters.m.model",
            "is not one of",
        ),
        (
            "model = \"per_unit\"\nprice = \"1\"\nbands = [{ name = \"b\", factor = \"1\", windows = [{ days = [\"mon-sun\"], from = \"00:00\", to = \"25:00\" }] }]",
            "plans[0].versions[0].meters.m.bands[0].windows[0].to",
            "not a time",
        ),
        (
            "model = \"per_unit\"\nprice = \"1\"\nbands = [{ name = \"b\", factor = \"1\", windows = [{ days = [\"fri-mon\"], from = \"00:00\", to = \"24:00\" }] }]",
            "plans[0].versions[0].meters.m.bands[0].windows[0].days[0]",
            "not a weekday",
        ),
    ];
    for (meter, path, needle) in cases {
        let e = errors(&plan_with(meter));
        assert!(has(&e, path, needle), "{meter}\nexpected {path}: {needle}\ngot {e:?}");
    }
}

#[test]
fn plan_level_rules() {
    let base = |plan: &str, version: &str| {
        format!(
            "[[plans]]\nid = \"p\"\n{plan}\n[[plans.versions]]\n{version}\n[plans.versions.meters.m]\nmodel = \"per_unit\"\nprice = \"1\"\n"
        )
    };
    let ok_plan = "currency = \"EUR\"\ntime_zone = \"UTC\"\nrounding = { places = 2, mode = \"half-up\" }";
    let ok_version = "effective_from = \"2026-01-01T00:00:00Z\"";
    let cases = [
        (
            base(&ok_plan.replace("half-up", "sideways"), ok_version),
            "",
            "unknown variant `sideways`",
        ),
        (
            base(&ok_plan.replace("places = 2", "places = 12"), ok_version),
            "plans[0].rounding.places",
            "at most 9",
        ),
        (
            base(ok_plan, "effective_from = \"2026-01-01\""),
            "plans[0].versions[0].effective_from",
            "RFC 3339",
        ),
        (
            base(ok_plan, &format!("{ok_version}\ndiscount_percent = \"150\"")),
            "plans[0].versions[0].discount_percent",
            "at most 100",
        ),
        (
            base(
                &format!("{ok_plan}\nbilling_period = {{ kind = \"month\", anchor_day = 32 }}"),
                ok_version,
            ),
            "plans[0].billing_period.anchor_day",
            "between 1 and 31",
        ),
        (
            base(
                &format!("{ok_plan}\nbilling_period = {{ kind = \"day\", week_start = \"sun\" }}"),
                ok_version,
            ),
            "plans[0].billing_period.week_start",
            "not valid for kind",
        ),
        (
            base(&ok_plan.replace("EUR", "EURO"), ok_version),
            "plans[0].currency",
            "3 uppercase letters",
        ),
        (
            base(&format!("{ok_plan}\ninsufficient_balance = \"borrow\""), ok_version),
            "plans[0].insufficient_balance",
            "must be \"reject\" or \"overdraft\"",
        ),
    ];
    for (text, path, needle) in cases {
        let e = errors(&text);
        assert!(
            e.iter().any(|x| x.path == path && x.message.contains(needle)),
            "expected {path}: {needle}\ngot {e:?}"
        );
    }
}

#[test]
fn the_shipped_catalogue_and_a_native_toml_datetime_are_valid() {
    let shipped = parse_catalogue(include_str!("../config/tariffs.toml")).expect("shipped catalogue");
    assert_eq!(shipped.plans().len(), 4);
    let ids: Vec<_> = shipped.plans().iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["telecom-standard", "saas-pro", "saas-team", "support-plus"]);
    let saas = shipped.plan("saas-pro").unwrap();
    let now = "2026-11-26T00:00:00Z".parse().unwrap();
    let upcoming: Vec<_> = saas.upcoming(now).map(|v| v.number).collect();
    assert_eq!(upcoming, [2], "version 2 is published in advance");
    parse_catalogue(include_str!("data/models.toml")).expect("the test catalogue uses a native TOML datetime");
}

mod never_panics {
    use proptest::prelude::*;
    use ratingd::domain::tariff_file::parse_catalogue;

    const SHIPPED: &str = include_str!("../config/tariffs.toml");

    /// The nearest char boundary at or below `i`.
    fn boundary(text: &str, mut i: usize) -> usize {
        i = i.min(text.len());
        while !text.is_char_boundary(i) {
            i -= 1;
        }
        i
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// A real catalogue with a random span replaced by random text: refused or accepted, never
        /// a panic, and every refusal has a message.
        #[test]
        fn edited_catalogues_never_panic(at in 0usize..SHIPPED.len(), cut in 0usize..40, insert in "[-+0-9a-z_.=\"\\[\\]{}:, \n]{0,24}") {
            let start = boundary(SHIPPED, at);
            let end = boundary(SHIPPED, start + cut);
            let text = format!("{}{insert}{}", &SHIPPED[..start], &SHIPPED[end..]);
            if let Err(errors) = parse_catalogue(&text) {
                prop_assert!(!errors.0.is_empty());
                prop_assert!(errors.0.iter().all(|e| !e.message.is_empty()));
            }
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = parse_catalogue(&text);
        }
    }
}

/// A one-plan file with this currency and rounding.
fn priced_in(currency: &str, rounding: &str) -> String {
    format!(
        "[[plans]]\nid = \"p\"\ncurrency = \"{currency}\"\ntime_zone = \"UTC\"\nrounding = {rounding}\n\n\
         [[plans.versions]]\neffective_from = \"2026-01-01T00:00:00Z\"\n\
         [plans.versions.meters.\"api.requests\"]\nmodel = \"per_unit\"\nprice = \"1\"\n"
    )
}

#[test]
fn currencies_come_from_iso_4217_with_their_minor_units() {
    let half_up = |places: u32| format!("{{ places = {places}, mode = \"half-up\" }}");
    // Three capitals that are no currency.
    let e = errors(&priced_in("XYZ", &half_up(2)));
    assert!(has(&e, "plans[0].currency", "not an ISO 4217 currency code"), "{e:?}");
    // Invoice places must be the currency's minor unit: JPY has none, KWD three.
    for (currency, places, unit) in [("JPY", 2, 0), ("KWD", 2, 3), ("EUR", 3, 2)] {
        let e = errors(&priced_in(currency, &half_up(places)));
        assert!(
            has(
                &e,
                "plans[0].rounding.places",
                &format!("minor unit of {currency} ({unit})")
            ),
            "{currency}: {e:?}"
        );
    }
    // Gold has no minor unit: only with an explicit override.
    let e = errors(&priced_in("XAU", &half_up(4)));
    assert!(has(&e, "plans[0].rounding.places", "no ISO 4217 minor unit"), "{e:?}");
    for ok in [
        priced_in("JPY", &half_up(0)),
        priced_in("KWD", &half_up(3)),
        priced_in("XAU", "{ places = 4, mode = \"half-up\", minor_unit_override = true }"),
        priced_in("EUR", "{ places = 4, mode = \"down\", minor_unit_override = true }"),
    ] {
        assert!(parse_catalogue(&ok).is_ok(), "{ok}");
    }
}

#[test]
fn fees_and_minimums_are_validated_with_their_paths() {
    let file = r#"
[[plans]]
id = "p"
currency = "USD"
time_zone = "UTC"
rounding = { places = 2, mode = "half-even" }
[[plans.versions]]
effective_from = "2026-01-01T00:00:00Z"
minimum = "-1"
fees = [
  { name = "platform", amount = "-49.00", billing = "in_advance" },
  { name = "support", amount = "20.00", billing = "monthly" },
  { name = "support", amount = "1.00", billing = "in_arrears" },
  { name = "@minimum", amount = "1.00", billing = "in_arrears" },
]
[[plans.versions]]
effective_from = "2026-02-01T00:00:00Z"
"#;
    let e = errors(file);
    let listing = e.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
    for (path, needle) in [
        ("plans[0].versions[0].minimum", "must be >= 0"),
        ("plans[0].versions[0].fees[0].amount", "must be >= 0"),
        (
            "plans[0].versions[0].fees[1].billing",
            "unknown billing mode \"monthly\": in_advance or in_arrears",
        ),
        ("plans[0].versions[0].fees[2].name", "fee \"support\" is named twice"),
        ("plans[0].versions[0].fees[3].name", "fee names cannot start with @"),
        ("plans[0].versions[1].meters", "at least one meter or fee is required"),
    ] {
        assert!(has(&e, path, needle), "{path}: {needle}\n{listing}");
    }
    // A version with a fee and no meters (an add-on such as support-plus) is valid.
    let fee_only = file
        .replace("minimum = \"-1\"\n", "")
        .replace("-49.00", "49.00")
        .replace("\"monthly\"", "\"in_arrears\"")
        .replace(
            "  { name = \"support\", amount = \"1.00\", billing = \"in_arrears\" },\n",
            "",
        )
        .replace(
            "  { name = \"@minimum\", amount = \"1.00\", billing = \"in_arrears\" },\n",
            "",
        )
        .replace("[[plans.versions]]\neffective_from = \"2026-02-01T00:00:00Z\"\n", "");
    assert!(parse_catalogue(&fee_only).is_ok(), "{fee_only}");
}

/// `supersedes` (docs/tariffs.md, "Correcting a version in force"): it must name an earlier
/// version that nothing supersedes yet, from that version's date; a valid one is in force in
/// place of the old one, which still exists under its number.
#[test]
fn supersedes_names_an_earlier_version_from_its_date() {
    let version = |from: &str, supersedes: Option<u32>, price: &str| {
        let line = supersedes.map(|n| format!("supersedes = {n}\n")).unwrap_or_default();
        format!(
            "[[plans.versions]]\neffective_from = \"{from}\"\n{line}[plans.versions.meters.m]\nmodel = \"per_unit\"\nprice = \"{price}\"\n"
        )
    };
    let plan = |versions: &[String]| {
        format!(
            "[[plans]]\nid = \"p\"\ncurrency = \"EUR\"\ntime_zone = \"UTC\"\nrounding = {{ places = 2, mode = \"half-up\" }}\n{}",
            versions.concat()
        )
    };
    let broken = plan(&[
        version("2026-01-01T00:00:00Z", None, "1"),
        version("2026-03-01T00:00:00Z", None, "2"),
        version("2026-02-01T00:00:00Z", Some(1), "3"),
        version("2026-01-01T00:00:00Z", Some(9), "4"),
        version("2026-01-01T00:00:00Z", Some(5), "5"),
    ]);
    let e = errors(&broken);
    assert!(
        has(
            &e,
            "plans[0].versions[2].effective_from",
            "must be that of the version it supersedes"
        ),
        "{e:?}"
    );
    assert!(has(&e, "plans[0].versions[3].supersedes", "names version 9"), "{e:?}");
    assert!(has(&e, "plans[0].versions[4].supersedes", "names version 5"), "{e:?}");
    let twice = plan(&[
        version("2026-01-01T00:00:00Z", None, "1"),
        version("2026-01-01T00:00:00Z", Some(1), "2"),
        version("2026-01-01T00:00:00Z", Some(1), "3"),
    ]);
    assert!(has(
        &errors(&twice),
        "plans[0].versions[2].supersedes",
        "already superseded"
    ));

    // A chain: 3 corrects 1, 4 corrects 3; 2 (from March) is untouched.
    let chain = plan(&[
        version("2026-01-01T00:00:00Z", None, "1"),
        version("2026-03-01T00:00:00Z", None, "2"),
        version("2026-01-01T00:00:00Z", Some(1), "3"),
        version("2026-01-01T00:00:00Z", Some(3), "4"),
    ]);
    let catalogue = parse_catalogue(&chain).unwrap();
    let p = catalogue.plan("p").unwrap();
    let at = |s: &str| s.parse::<chrono::DateTime<chrono::Utc>>().unwrap();
    assert_eq!(p.version_at(at("2025-12-31T23:59:59Z")).map(|v| v.number), None);
    assert_eq!(p.version_at(at("2026-01-15T00:00:00Z")).unwrap().number, 4);
    assert_eq!(p.version_at(at("2026-03-15T00:00:00Z")).unwrap().number, 2);
    assert_eq!(p.version(1).unwrap().supersedes, None);
    assert_eq!(p.version(3).unwrap().supersedes, Some(1));
}
