//! Each rule kind by a hand example, and the file's refusals.

use super::*;

fn event(meter: &str, quantity: (i64, i32), attributes: &[(&str, &str)]) -> RawEvent {
    RawEvent {
        event_id: "e-1".into(),
        account_id: "acct-1".into(),
        meter: meter.into(),
        quantity: Some(quantity),
        timestamp_unix_nanos: 1_763_467_200_000_000_000,
        attributes: attributes.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    }
}

fn rules(text: &str) -> Rules {
    parse_rules(text).unwrap_or_else(|e| panic!("rules refused:\n{e}"))
}

fn normalized(outcome: Outcome) -> (RawEvent, Vec<String>) {
    match outcome {
        Outcome::Normalized { event, rules } => (event, rules.iter().map(|r| r.to_string()).collect()),
        other => panic!("expected a normalized event, got {other:?}"),
    }
}

fn errors(text: &str) -> Vec<String> {
    match parse_rules(text) {
        Ok(_) => panic!("rules accepted:\n{text}"),
        Err(e) => e.0,
    }
}

#[test]
fn a_national_number_is_rewritten_to_e164() {
    let r = rules(
        r#"
        [[rule]]
        name = "strip-spaces"
        when = { meter = ["voice.seconds"] }
        rewrite = { field = "destination", pattern = '\s+', replacement = "" }

        [[rule]]
        name = "national-to-e164"
        when = { meter = ["voice.seconds"], attributes = { destination = '^0[1-9]' } }
        rewrite = { field = "destination", pattern = '^0', replacement = "+49" }
        "#,
    );
    let (e, fired) = normalized(r.apply(&event("voice.seconds", (61, 0), &[("destination", "030 1234567")])));
    assert_eq!(
        e.attributes,
        vec![("destination".to_string(), "+49301234567".to_string())]
    );
    assert_eq!(fired, ["strip-spaces", "national-to-e164"]);
    // Already E.164: the second rule's condition fails, the first finds nothing to strip.
    assert_eq!(
        r.apply(&event("voice.seconds", (61, 0), &[("destination", "+4930")])),
        Outcome::Unchanged
    );
    // Another meter: no rule applies.
    assert_eq!(
        r.apply(&event("sms", (1, 0), &[("destination", "030 1")])),
        Outcome::Unchanged
    );
}

#[test]
fn a_rewrite_uses_the_patterns_groups() {
    let r = rules(
        r#"
        [[rule]]
        name = "swap"
        rewrite = { field = "cell", pattern = '^(?P<lac>\d+)-(\d+)$', replacement = "${2}/$lac" }
        "#,
    );
    let (e, _) = normalized(r.apply(&event("data", (1, 0), &[("cell", "262-17")])));
    assert_eq!(e.attributes[0].1, "17/262");
}

#[test]
fn an_attribute_is_renamed_or_copied() {
    let r = rules(
        r#"
        [[rule]]
        name = "b-number"
        rename = { from = "b_number", to = "destination" }

        [[rule]]
        name = "keep-original-destination"
        copy = { from = "destination", to = "dialled" }
        "#,
    );
    let (e, fired) = normalized(r.apply(&event(
        "voice.seconds",
        (1, 0),
        &[("b_number", "+441632960000"), ("x", "1")],
    )));
    assert_eq!(
        e.attributes,
        vec![
            ("x".to_string(), "1".to_string()),
            ("destination".to_string(), "+441632960000".to_string()),
            ("dialled".to_string(), "+441632960000".to_string()),
        ]
    );
    assert_eq!(fired, ["b-number", "keep-original-destination"]);
}

#[test]
fn the_meter_is_set_from_attributes() {
    let r = rules(
        r#"
        [[rule]]
        name = "meter-by-service"
        when = { meter = ["usage"] }
        set_meter = "{service}.{unit}"
        "#,
    );
    let (e, _) = normalized(r.apply(&event("usage", (5, 0), &[("service", "voice"), ("unit", "seconds")])));
    assert_eq!(e.meter, "voice.seconds");
    match r.apply(&event("usage", (5, 0), &[("service", "voice")])) {
        Outcome::Refused { rule, detail } => {
            assert_eq!(&*rule, "meter-by-service");
            assert!(detail.contains("\"unit\""), "{detail}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bytes_are_scaled_to_megabytes_exactly() {
    let r = rules(
        r#"
        [[rule]]
        name = "bytes-to-mb"
        when = { meter = ["data.mb"], attributes = { unit = '^bytes$' } }
        scale = { divide = "1000000" }
        "#,
    );
    // 1,234,567 bytes = 1.234567 MB, exactly.
    let (e, _) = normalized(r.apply(&event("data.mb", (1_234_567, 0), &[("unit", "bytes")])));
    assert_eq!(e.quantity, Some((1, 234_567_000)));
    // 1.5 bytes = 0.0000015 MB: still within 9 places.
    let (e, _) = normalized(r.apply(&event("data.mb", (1, 500_000_000), &[("unit", "bytes")])));
    assert_eq!(e.quantity, Some((0, 1_500)));
}

#[test]
fn a_scale_that_is_not_exact_needs_a_rounding() {
    let exact = rules(
        r#"
        [[rule]]
        name = "bytes-to-mib"
        scale = { divide = "1048576" }
        "#,
    );
    // 1 byte / 2^20 = 0.00000095367431640625: more than 9 places.
    assert!(matches!(
        exact.apply(&event("data", (1, 0), &[])),
        Outcome::Refused { ref detail, .. } if detail.contains("9 decimal places")
    ));
    let up = rules(
        r#"
        [[rule]]
        name = "bytes-to-mib"
        scale = { divide = "1048576", rounding = "up" }
        "#,
    );
    // Up to 9 places: 0.000000954.
    assert_eq!(
        normalized(up.apply(&event("data", (1, 0), &[]))).0.quantity,
        Some((0, 954))
    );
    let half_even = rules(
        r#"
        [[rule]]
        name = "millis"
        scale = { multiply = "0.001", rounding = "half-even" }
        "#,
    );
    // 0.0000025 * 0.001 = 2.5e-9 rounds to the even 2e-9; 3.5e-9 to 4e-9.
    assert_eq!(
        normalized(half_even.apply(&event("data", (0, 2_500), &[]))).0.quantity,
        Some((0, 2))
    );
    assert_eq!(
        normalized(half_even.apply(&event("data", (0, 3_500), &[]))).0.quantity,
        Some((0, 4))
    );
    let divide_half_up = rules(
        r#"
        [[rule]]
        name = "thirds"
        scale = { divide = "3", rounding = "half-up" }
        "#,
    );
    // 2 / 3 = 0.666666666|6... -> 0.666666667.
    assert_eq!(
        normalized(divide_half_up.apply(&event("data", (2, 0), &[]))).0.quantity,
        Some((0, 666_666_667))
    );
}

#[test]
fn a_sim_number_is_looked_up_into_the_account() {
    let r = rules(
        r#"
        [[rule]]
        name = "sim-to-account"
        lookup = { from = "imsi", to = "account_id", table = "sims" }

        [[rule]]
        name = "tariff-zone"
        lookup = { from = "cell", to = "zone", table = "zones", missing = "keep" }

        [tables.sims]
        "262011234567890" = "acct-42"

        [tables.zones]
        "262-17" = "home"
        "#,
    );
    let (e, fired) = normalized(r.apply(&event("data", (1, 0), &[("imsi", "262011234567890"), ("cell", "1-1")])));
    assert_eq!(e.account_id, "acct-42");
    assert_eq!(fired, ["sim-to-account"]);
    match r.apply(&event("data", (1, 0), &[("imsi", "999")])) {
        Outcome::Refused { rule, detail } => {
            assert_eq!(&*rule, "sim-to-account");
            assert_eq!(detail, "imsi \"999\" is not in table \"sims\"");
        }
        other => panic!("{other:?}"),
    }
    let (e, _) = normalized(r.apply(&event(
        "data",
        (1, 0),
        &[("imsi", "262011234567890"), ("cell", "262-17")],
    )));
    assert_eq!(e.attributes.last(), Some(&("zone".to_string(), "home".to_string())));
}

#[test]
fn test_traffic_is_dropped_by_a_named_rule() {
    let r = rules(
        r#"
        [[rule]]
        name = "drop-test-numbers"
        when = { account = '^test-', attributes = { destination = '^\+491555' } }
        drop = true
        "#,
    );
    let mut e = event("voice.seconds", (1, 0), &[("destination", "+4915550001")]);
    assert_eq!(r.apply(&e), Outcome::Unchanged);
    e.account_id = "test-7".into();
    assert_eq!(
        r.apply(&e),
        Outcome::Dropped {
            rule: Arc::from("drop-test-numbers")
        }
    );
}

#[test]
fn later_rules_see_what_earlier_rules_did() {
    let r = rules(
        r#"
        [[rule]]
        name = "rename"
        rename = { from = "svc", to = "service" }

        [[rule]]
        name = "only-after-rename"
        when = { attributes = { service = '^voice$' } }
        set_meter = "voice.seconds"
        "#,
    );
    let (e, fired) = normalized(r.apply(&event("raw", (1, 0), &[("svc", "voice")])));
    assert_eq!(e.meter, "voice.seconds");
    assert_eq!(fired, ["rename", "only-after-rename"]);
}

#[test]
fn no_rules_change_nothing() {
    let r = rules("");
    assert!(r.is_empty());
    assert_eq!(r.apply(&event("voice.seconds", (1, 0), &[])), Outcome::Unchanged);
}

#[test]
fn an_invalid_regular_expression_is_refused_with_its_path() {
    let e = errors(
        r#"
        [[rule]]
        name = "ok"
        drop = true

        [[rule]]
        name = "bad"
        rewrite = { field = "destination", pattern = '^(0', replacement = "" }
        "#,
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("rule[1].rewrite.pattern: invalid regular expression"),
        "{e:?}"
    );
}

#[test]
fn every_error_is_reported_with_its_path() {
    let e = errors(
        r#"
        [[rule]]
        name = "one"
        rewrite = { field = "event_id", pattern = 'x', replacement = "$2" }

        [[rule]]
        name = "one"
        scale = { multiply = "0" }

        [[rule]]
        name = "two actions"
        drop = true
        set_meter = "x"

        [[rule]]
        name = "lookup"
        lookup = { from = "imsi", to = "quantity", table = "nope" }

        [[rule]]
        name = "template"
        set_meter = "voice.{dir"

        [[rule]]
        name = "group"
        rewrite = { field = "a", pattern = '(\d+)', replacement = "$1x" }

        [[rule]]
        name = "nothing"
        "#,
    );
    let expect = [
        "rule[0].rewrite.field: event_id is the event's identity",
        "rule[0].rewrite.replacement: $2 is not a group of the pattern",
        "rule[1].name: \"one\" is also the name of rule[0]",
        "rule[1].scale.multiply: \"0\" is not a decimal above 0",
        "rule[2].name: \"two actions\" must be",
        "rule[3].lookup.to: the quantity changes by a scale rule only",
        "rule[3].lookup.table: no table \"nope\" in [tables] (it has: none)",
        "rule[4].set_meter: \"voice.{dir\" has an unbalanced brace",
        "rule[5].rewrite.replacement: $1x is not a group of the pattern",
        "rule[6]: a rule does exactly one of",
    ];
    for (want, got) in expect.iter().zip(&e) {
        assert!(got.starts_with(want), "want {want:?}, got {got:?}\nall: {e:#?}");
    }
    assert_eq!(e.len(), expect.len(), "{e:#?}");
}

#[test]
fn unknown_keys_are_refused() {
    let e = errors(
        r#"
        [[rule]]
        name = "typo"
        rewrite = { field = "a", patern = "x", replacement = "" }
        "#,
    );
    assert!(e[0].contains("unknown field `patern`"), "{e:?}");
    let e = errors("[[rules]]\nname = \"x\"\ndrop = true\n");
    assert!(e[0].contains("unknown field `rules`"), "{e:?}");
}

#[test]
fn a_cycle_of_fields_is_refused() {
    let e = errors(
        r#"
        [[rule]]
        name = "a-to-b"
        copy = { from = "a", to = "b" }

        [[rule]]
        name = "b-to-c"
        lookup = { from = "b", to = "c", table = "t" }

        [[rule]]
        name = "c-to-a"
        rename = { from = "c", to = "a" }

        [tables.t]
        "1" = "2"
        "#,
    );
    assert_eq!(
        e,
        [
            "rule: fields a -> b -> c -> a form a cycle through rules a-to-b, b-to-c, c-to-a: a value flows back into its own field"
        ]
    );
    // A chain without a way back is fine, and so is a lookup in place.
    rules(
        r#"
        [[rule]]
        name = "a-to-b"
        copy = { from = "a", to = "b" }

        [[rule]]
        name = "b-in-place"
        lookup = { from = "b", to = "b", table = "t", missing = "keep" }

        [[rule]]
        name = "b-to-meter"
        set_meter = "{b}"

        [tables.t]
        "1" = "2"
        "#,
    );
}
