//! Replays every input kept in `fuzz/regressions/<target>/` (inputs that once broke an invariant,
//! and seeds) through the fuzz target bodies of `ratingd::fuzzing`, plus a few well-formed inputs,
//! so what the fuzzer found stays fixed in every CI run. docs/security.md records the runs.

use std::path::Path;

use prost::Message;
use ratingd::fuzzing;
use ratingd::wire::proto;

fn replay(target: &str, body: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|f| f.to_string_lossy().starts_with('.')) {
            continue;
        }
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| body(&data));
        assert!(outcome.is_ok(), "{target}: {} broke an invariant again", path.display());
        n += 1;
    }
    n
}

#[test]
fn ingest_batch_inputs() {
    assert!(replay("ingest_batch", fuzzing::ingest_batch) > 0);
    // A well-formed batch: valid, rejected and huge-quantity events.
    let event = |id: &str, meter: &str, units: i64| proto::UsageEvent {
        event_id: id.into(),
        account_id: "acme".into(),
        meter: meter.into(),
        quantity: Some(proto::Quantity { units, nanos: 5 }),
        timestamp_unix_nanos: 1_763_200_000_000_000_000 + 1_000_000_000 * 86_400 * 365,
        attributes: vec![proto::Attribute {
            key: "destination".into(),
            value: "+49301234".into(),
        }],
    };
    let batch = proto::UsageBatch {
        batch_id: 1,
        events: vec![
            event("a", "voice.seconds", 60),
            event("b", "api.requests", i64::MAX),
            event("", "sms.count", 1),
            event("d", "no.such.meter", 1),
        ],
    };
    fuzzing::ingest_batch(&batch.encode_to_vec());
}

#[test]
fn tariff_file_inputs() {
    assert!(replay("tariff_file", fuzzing::tariff_file) > 0);
    fuzzing::tariff_file(include_bytes!("../config/tariffs.toml"));
    fuzzing::tariff_file(include_bytes!("data/models.toml"));
}

#[test]
fn dedupe_cold_inputs() {
    assert!(replay("dedupe_cold", fuzzing::dedupe_cold) > 0);
    let mut many = vec![3u8];
    for i in 0..600u64 {
        many.extend_from_slice(&(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_le_bytes());
        many.extend_from_slice(&(i % 7).to_le_bytes()[..6]);
    }
    for data in [&b""[..], b"\x00", b"RDM1", b"RDC1\x01\x00\x00\x00", many.as_slice()] {
        fuzzing::dedupe_cold(data);
    }
}

#[test]
fn store_block_inputs() {
    assert!(replay("store_block", fuzzing::store_block) > 0);
    for data in [&b""[..], b"\x00", b"RTB1", b"\x07a|b|c", b"\xffsome event id|another"] {
        fuzzing::store_block(data);
    }
}
