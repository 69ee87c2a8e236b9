//! The bodies of the fuzz targets (`fuzz/`, `cargo fuzz`), kept in the library so that the inputs
//! that once failed are replayed by an ordinary test (`tests/fuzz_regressions.rs`) in every CI
//! run, and so that the targets build with the rest of the crate. Each function takes arbitrary
//! bytes and panics only when an invariant is broken: that panic is what the fuzzer reports.

use chrono::{DateTime, Utc};
use prost::Message;

use crate::config::Limits;
use crate::domain::mediation::{Outcome, Rules, parse_rules};
use crate::domain::tariff::Catalogue;
use crate::domain::tariff_file::parse_catalogue;
use crate::pipeline::intake::{EventLimits, Window, accept, check};
use crate::rating::{RatingInput, rate};
use crate::store::codec;
use crate::wire::convert::raw_event;
use crate::wire::proto;

/// A fixed "now" for the time checks, so a failing input fails again.
const NOW: &str = "2026-11-15T12:00:00Z";

fn shipped_rules() -> &'static Rules {
    static RULES: std::sync::OnceLock<Rules> = std::sync::OnceLock::new();
    RULES.get_or_init(|| parse_rules(include_str!("../config/mediation.toml")).expect("shipped rules parse"))
}

fn shipped_catalogue() -> &'static Catalogue {
    static CATALOGUE: std::sync::OnceLock<Catalogue> = std::sync::OnceLock::new();
    CATALOGUE.get_or_init(|| parse_catalogue(include_str!("../config/tariffs.toml")).expect("shipped tariffs parse"))
}

/// Protobuf bytes -> `UsageBatch` -> per-event validation -> rating: whatever the bytes, no panic;
/// every event that passes validation is within the limits and the window, and rates to a charge
/// or a reason, never a panic or an overflow. Each event is also checked "steered" (see `steer`),
/// so that random bytes reach the rating engine and not only the first checks.
pub fn ingest_batch(data: &[u8]) {
    let Ok(batch) = proto::UsageBatch::decode(data) else {
        return;
    };
    let now: DateTime<Utc> = NOW.parse().expect("fixed time");
    let window = Window::at(now, 35, 300);
    let catalogue = shipped_catalogue();
    let meters: Vec<&str> = catalogue.meters().collect();
    for event in batch.events {
        let steered = steer(event.clone(), &window, &meters);
        check_event(event, &window, catalogue);
        check_event(steered, &window, catalogue);
    }
}

/// The event with what the first checks refuse mended: its time folded into the window, a known
/// meter, ids present and short enough, a non-negative quantity, at most 16 attributes. What is
/// left (the quantity, the attributes, the exact time, the ids) is the fuzzer's.
fn steer(mut e: proto::UsageEvent, window: &Window, meters: &[&str]) -> proto::UsageEvent {
    let span = window.newest_nanos - window.oldest_nanos;
    e.timestamp_unix_nanos = window.oldest_nanos + e.timestamp_unix_nanos.rem_euclid(span);
    e.meter = meters[e.meter.len() % meters.len()].to_string();
    for (id, fallback) in [(&mut e.event_id, "event"), (&mut e.account_id, "account")] {
        if id.is_empty() || id.len() > 128 {
            *id = fallback.to_string();
        }
    }
    let q = e.quantity.get_or_insert(proto::Quantity { units: 1, nanos: 0 });
    q.units = q.units.checked_abs().unwrap_or(i64::MAX);
    q.nanos = q.nanos.rem_euclid(1_000_000_000);
    e.attributes.truncate(16);
    e
}

fn check_event(event: proto::UsageEvent, window: &Window, catalogue: &Catalogue) {
    let defaults = Limits::default();
    let limits = EventLimits {
        max_id_bytes: defaults.max_id_bytes,
        max_attributes: defaults.max_attributes,
        max_attribute_bytes: defaults.max_attribute_bytes,
    };
    let raw = raw_event(event);
    // The shipped normalization rules on any event: an outcome, never a panic; a normalized event
    // keeps its id and time (rules never change them).
    if let Outcome::Normalized { event, rules } = shipped_rules().apply(&raw) {
        assert!(!rules.is_empty());
        assert_eq!(
            (&event.event_id, event.timestamp_unix_nanos),
            (&raw.event_id, raw.timestamp_unix_nanos)
        );
    }
    match check(&raw, &limits, Some(window), catalogue) {
        Ok(quantity) => {
            let e = &accept(raw, quantity);
            assert!(!e.event_id.is_empty() && e.event_id.len() <= limits.max_id_bytes);
            assert!(!e.account_id.is_empty() && e.account_id.len() <= limits.max_id_bytes);
            assert!(e.attributes.len() <= limits.max_attributes);
            assert!(!e.quantity.is_sign_negative() || e.quantity.is_zero());
            let nanos = e.timestamp.timestamp_nanos_opt().expect("in range");
            assert!(nanos >= window.oldest_nanos && nanos <= window.newest_nanos);
            for plan in catalogue.plans() {
                let input = RatingInput {
                    meter: &e.meter,
                    quantity: e.quantity,
                    at: e.timestamp,
                    attributes: &e.attributes,
                    period_usage: e.quantity,
                    subscription_discount: None,
                };
                // A charge or a reason; `rate` must not panic on any valid event.
                let _ = rate(plan, &input);
            }
        }
        Err((_, detail)) => assert!(!detail.is_empty(), "every rejection has a reason"),
    }
}

/// Text -> tariff catalogue, and -> normalization rules: no panic; what parses parses the same
/// way again.
pub fn tariff_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_catalogue(text) {
        Ok(catalogue) => {
            let again = parse_catalogue(text).expect("a catalogue that parsed parses again");
            assert_eq!(catalogue.plans().len(), again.plans().len());
        }
        Err(errors) => assert!(!errors.0.is_empty(), "a refused file says why"),
    }
    // The same text as a normalization rules file (docs/mediation.md): the same two promises.
    match parse_rules(text) {
        Ok(rules) => assert_eq!(rules.len(), parse_rules(text).expect("parses again").len()),
        Err(errors) => assert!(!errors.0.is_empty(), "a refused rules file says why"),
    }
}

/// Stored bytes -> block, records, suspense entry: no panic on any bytes; and a block made of
/// records from the input, with one byte changed, is never opened as valid.
pub fn store_block(data: &[u8]) {
    if let Ok((_, payload)) = codec::open_block(data) {
        // Every item but a final error consumes 4 bytes at least (a first-layout length, or a
        // compact record's kind, flags, prefix and content hash), so a payload of n bytes yields at
        // most n / 4 + 1 items: the iteration ends whatever the bytes say (the bound taken is one
        // more, so a decoder that stopped consuming would fail here).
        let most = payload.len() / 4 + 1;
        let decoded = codec::records(payload).take(most + 1).count();
        assert!(decoded <= most, "{decoded} items from {} bytes", payload.len());
    }
    let _ = codec::decode_suspense(data);
    let _ = codec::decode_record(data);
    // A well-formed block of up to 3 records whose fields come from the input (the second a
    // correction record, booked into another period when the input is long enough).
    let Some((&flip, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let mut segment = crate::store::compact::SegmentWriter::default();
    segment.begin(Vec::new());
    let mut written = Vec::new();
    for (i, part) in text.split('|').take(3).enumerate() {
        use crate::domain::correction::{Action, Booking, Correction, Role};
        let correction = (i == 1).then(|| Correction {
            role: if part.len() % 2 == 0 {
                Role::Reversal
            } else {
                Role::Replacement
            },
            action: [Action::Rerate, Action::Void, Action::Amend][part.len() % 3],
            id: part.to_string(),
            reason: part.chars().rev().collect(),
            requested_by: "fuzz".into(),
            at_unix_nanos: -(part.len() as i64),
            booked: (part.len() > 4).then(|| Booking {
                plan: part.to_string(),
                period: "2026-12".into(),
            }),
        });
        let record = crate::domain::record::RatedRecord {
            content: 7,
            event_id: part.to_string(),
            account_id: format!("acct-{i}"),
            meter: "sms.count".into(),
            quantity: rust_decimal::Decimal::new(i as i64 + 1, 0),
            timestamp_unix_nanos: 1_700_000_000_000_000_000,
            attributes: vec![("k".into(), part.chars().rev().collect())],
            plan: "telecom-standard".into(),
            version: 1,
            period: "2026-11".into(),
            period_usage_before: rust_decimal::Decimal::ZERO,
            subscription_discount: None,
            rated_quantity: rust_decimal::Decimal::ONE,
            charge: rust_decimal::Decimal::new(5, 2),
            correction,
            // Every third record carries the event as sent (normalization rules changed it).
            as_sent: (i % 3 == 0).then(|| {
                Box::new(crate::domain::record::AsSent {
                    account_id: format!("sent-{i}"),
                    meter: part.to_string(),
                    quantity: rust_decimal::Decimal::new(i as i64, 3),
                    attributes: vec![(part.to_string(), "v".into())],
                    rules: vec!["r1".into(), part.to_string()],
                })
            }),
        };
        segment.push(&record.as_ref());
        written.push(record);
    }
    let mut sealed = codec::seal_segments([segment.finish().as_slice()]).remove(0);
    let (count, payload) = codec::open_block(&sealed).expect("a sealed block opens");
    let read: Vec<_> = codec::records(payload).filter_map(Result::ok).collect();
    assert_eq!(read.len(), count as usize);
    assert_eq!(read, written, "records read back as written");
    let at = usize::from(flip) % sealed.len();
    let mask = rest.first().copied().unwrap_or(1).max(1);
    sealed[at] ^= mask;
    assert!(
        codec::open_block(&sealed).is_err(),
        "a block with byte {at} changed (xor {mask:#04x}) was opened as valid"
    );
}

/// Bytes as a dedupe cold-tier manifest and as a run file -> `ColdDir::open` (and lookups when it
/// opens): no panic whatever the bytes. And a run built from the input's entries opens with every
/// entry found, and with any one byte changed it never opens as valid (header and page checksums).
pub fn dedupe_cold(data: &[u8]) {
    use crate::store::cold::{ColdDir, ENTRY, Manifest, RunInfo};
    let root = std::env::temp_dir().join(format!("ratingd-fuzz-cold-{}", std::process::id()));
    let dir = ColdDir::new(&root, 0, 1);
    let _ = dir.wipe();
    std::fs::create_dir_all(dir.path()).expect("temp dir");
    // 1. The input as the manifest, then as the run a valid manifest names.
    std::fs::write(dir.path().join("manifest"), data).expect("write");
    let _ = dir.open();
    let info = RunInfo {
        id: 1,
        oldest_day: 5,
        newest_day: 6,
        count: (data.len() / ENTRY) as u64,
        level: 0,
    };
    let manifest = Manifest {
        next_id: 2,
        runs: vec![info],
    };
    dir.write_manifest(&manifest).expect("manifest");
    std::fs::write(dir.path().join("run-0000000000000001.cold"), data).expect("write");
    if let Ok((_, runs)) = dir.open() {
        for run in &runs {
            let _ = run.lookup(u128::from(data.len() as u64));
        }
    }
    // 2. A well-formed run of the input's entries.
    let Some((&flip, rest)) = data.split_first() else {
        let _ = dir.wipe();
        return;
    };
    let mut entries: Vec<(u64, u64)> = rest
        .chunks_exact(ENTRY)
        .map(|c| {
            let mut k = [0u8; 8];
            k.copy_from_slice(&c[..8]);
            let mut v = [0u8; 8];
            v[..6].copy_from_slice(&c[8..]);
            (u64::from_le_bytes(k), u64::from_le_bytes(v))
        })
        .collect();
    entries.sort_unstable();
    // One value per id (as the window stores them): the same 64-bit key and 24 fingerprint bits.
    entries.dedup_by_key(|e| (e.0, e.1 >> 24));
    let _ = dir.wipe();
    let run = dir.write_run(3, 5, 6, &entries).expect("a run is written");
    dir.write_manifest(&Manifest {
        next_id: 4,
        runs: vec![run.info],
    })
    .expect("manifest");
    let (_, runs) = dir.open().expect("a written run opens");
    for &(k, v) in &entries {
        let fingerprint = (u128::from(v >> 24) << 64) | u128::from(k);
        assert_eq!(runs[0].lookup(fingerprint).expect("readable"), Some(v), "entry {k:x}");
    }
    let path = run.path().to_path_buf();
    let mut bytes = std::fs::read(&path).expect("read");
    let at = usize::from(flip) * 7919 % bytes.len();
    bytes[at] ^= 1 << (flip % 8);
    std::fs::write(&path, &bytes).expect("write");
    assert!(dir.open().is_err(), "a run with byte {at} changed opened as valid");
    let _ = dir.wipe();
}
