//! The pipeline's pieces, one at a time: dedupe insert and hit, one shard step (dedupe + rate +
//! aggregate) per event, block encode and decode per record, and a sled group commit (one
//! atomic batch and one fsync) of 1,000 and 10,000 records, and the keyed hashes of an event.
//! Run: `cargo bench --bench pipeline`.

use std::hint::black_box;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rust_decimal::Decimal;

use ratingd::domain::keyed::HashKey;
use ratingd::domain::record::RatedRecordRef;
use ratingd::domain::subscription::SubscriptionBook;
use ratingd::domain::tariff_file::parse_catalogue;
use ratingd::domain::usage::UsageEvent;
use ratingd::pipeline::dedupe::DedupeWindow;
use ratingd::pipeline::shard::ShardState;
use ratingd::pipeline::{Admitted, BatchTicket, RatingContext, ShardJob, ValidEvent};
use ratingd::store::codec;
use ratingd::store::compact::SegmentWriter;
use ratingd::store::{Commit, Store};

const KEY: HashKey = HashKey::new(0x5EED, 0x5EED);

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-20T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn context() -> RatingContext {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/tariffs.toml")).unwrap();
    let catalogue = parse_catalogue(&text).unwrap();
    RatingContext {
        catalogue,
        subscriptions: SubscriptionBook::new(&[], Some("saas-pro".into())),
        mediation: Default::default(),
    }
}

/// Event `n` of a realistic mix over 100,000 accounts (the SaaS plan's two meters).
fn event(n: u64) -> ValidEvent {
    let account = format!("acct-{:06}", n.wrapping_mul(7919) % 100_000);
    let event_id = format!("ev-{n}");
    let (meter, quantity) = if n % 10 < 7 {
        ("api.requests", 1 + n % 2000)
    } else {
        ("storage.gb_hours", n % 50)
    };
    ValidEvent {
        index: (n % 1000) as u32,
        fingerprint: KEY.fingerprint(&account, &event_id),
        content: n,
        event: UsageEvent {
            event_id,
            account_id: account,
            meter: meter.into(),
            quantity: Decimal::from(quantity),
            timestamp: now() - Duration::seconds((n % 3600) as i64),
            attributes: Vec::new(),
            origin: ratingd::domain::origin::Origin::Usage,
        },
        as_sent: None,
        part: None,
    }
}

fn ticket() -> Arc<BatchTicket> {
    let permits = Arc::new(tokio::sync::Semaphore::new(1));
    let permit = permits.try_acquire_owned().unwrap();
    BatchTicket::new(1, 1, Admitted::new(permit)).0.clone()
}

fn dedupe(c: &mut Criterion) {
    let mut group = c.benchmark_group("dedupe");
    group.throughput(Throughput::Elements(1));
    // A window of 1,000,000 ids (tables far larger than the CPU caches), then inserts of fresh
    // ids and lookups of random held ones; fingerprints are computed beforehand.
    let fingerprints: Vec<u128> = (0..3_000_000u64)
        .map(|i| KEY.fingerprint("acct", &i.to_string()))
        .collect();
    let mut window = DedupeWindow::default();
    for (i, fp) in fingerprints[..1_000_000].iter().enumerate() {
        window.insert(*fp, 1, i as u64);
    }
    let mut next = 1_000_000usize;
    group.bench_function("insert_into_1m", |b| {
        b.iter(|| {
            // Bound: 2,000,000 fresh ids cover every sample; past them ids repeat (an overwrite).
            let fp = fingerprints[1_000_000 + next % 2_000_000];
            next += 1;
            window.insert(black_box(fp), 1, next as u64)
        })
    });
    let mut at = 0u64;
    group.bench_function("hit_in_1m", |b| {
        b.iter(|| {
            at = at.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let i = (at >> 33) as usize % 1_000_000;
            black_box(window.check(fingerprints[i], i as u64))
        })
    });
    group.finish();
}

fn shard_step(c: &mut Criterion) {
    let ctx = context();
    let mut group = c.benchmark_group("shard");
    group.throughput(Throughput::Elements(1000));
    let mut state = ShardState::default();
    let mut n = 0u64;
    group.bench_function("step_1000_events", |b| {
        b.iter_batched(
            || {
                let events: Vec<ValidEvent> = (n..n + 1000).map(event).collect();
                n += 1000;
                ShardJob {
                    ticket: ticket(),
                    queued_at: std::time::Instant::now(),
                    received_at: now(),
                    events,
                    rejected: Vec::new(),
                }
            },
            |job| black_box(state.process(&ctx, job)),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn records(count: u64) -> Vec<u8> {
    let mut segment = SegmentWriter::default();
    segment.begin(Vec::new());
    for n in 0..count {
        let e = event(n);
        segment.push(&RatedRecordRef {
            content: e.content,
            event_id: &e.event.event_id,
            account_id: &e.event.account_id,
            meter: &e.event.meter,
            quantity: e.event.quantity,
            timestamp_unix_nanos: e.event.timestamp.timestamp_nanos_opt().unwrap(),
            attributes: &e.event.attributes,
            plan: "saas-pro",
            version: 0,
            period: "2026-11",
            period_usage_before: Decimal::from(n),
            subscription_discount: None,
            rated_quantity: e.event.quantity,
            charge: Decimal::new(123_456_789, 9),
            correction: None,
            as_sent: None,
        });
    }
    segment.finish()
}

/// Sealed parts of the records, as the committer cuts them.
fn parts(payload: &[u8]) -> Vec<Vec<u8>> {
    codec::seal_segments([payload])
}

fn blocks(c: &mut Criterion) {
    let mut group = c.benchmark_group("block");
    group.throughput(Throughput::Elements(1000));
    let one = event(1);
    group.bench_function("encode_1000_records", |b| {
        let mut segment = SegmentWriter::default();
        let mut payload = Vec::with_capacity(64 * 1000);
        b.iter(|| {
            segment.begin(std::mem::take(&mut payload));
            for n in 0..1000u64 {
                segment.push(&RatedRecordRef {
                    content: n,
                    event_id: &one.event.event_id,
                    account_id: &one.event.account_id,
                    meter: &one.event.meter,
                    quantity: one.event.quantity,
                    timestamp_unix_nanos: 1_790_000_000_000_000_000,
                    attributes: &one.event.attributes,
                    plan: "saas-pro",
                    version: 0,
                    period: "2026-11",
                    period_usage_before: Decimal::from(n),
                    subscription_discount: None,
                    rated_quantity: one.event.quantity,
                    charge: Decimal::new(123_456_789, 9),
                    correction: None,
                    as_sent: None,
                });
            }
            payload = segment.finish();
            black_box(parts(&payload))
        })
    });
    let sealed = parts(&records(1000));
    group.bench_function("decode_1000_records", |b| {
        b.iter(|| {
            let mut n = 0;
            for part in &sealed {
                let (_, payload) = codec::open_block(part).unwrap();
                for r in codec::records(payload) {
                    black_box(r.unwrap());
                    n += 1;
                }
            }
            assert_eq!(n, 1000);
        })
    });
    group.finish();
}

fn group_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("sled_group_commit");
    group.sample_size(20);
    let dir = std::env::temp_dir().join(format!("ratingd-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut store = Store::open(&dir).unwrap();
    for count in [1_000u64, 10_000] {
        let sealed = parts(&records(count));
        group.throughput(Throughput::Elements(count));
        group.bench_function(format!("{count}_records"), |b| {
            b.iter(|| {
                store
                    .commit(Commit {
                        parts: sealed.clone(),
                        accounts: Vec::new(),
                        ..Commit::default()
                    })
                    .unwrap()
            })
        });
    }
    group.finish();
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The keyed hashes of each event: its dedupe fingerprint and its account's shard (SipHash-1-3
/// under the data dir's key), beside the unkeyed xxh3-128 they replaced, in the same run.
fn keyed_hashes(c: &mut Criterion) {
    let mut group = c.benchmark_group("hash_per_event");
    let ids: Vec<(String, String)> = (0..1024u64)
        .map(|n| {
            (
                format!("acct-{:06}", n * 97 % 100_000),
                format!("evt-2026-11-20-{n:012}"),
            )
        })
        .collect();
    group.throughput(Throughput::Elements(ids.len() as u64));
    group.bench_function("siphash13_fingerprint_and_shard", |b| {
        b.iter(|| {
            for (account, id) in &ids {
                black_box(KEY.fingerprint(account, id));
                black_box(KEY.shard_of(account, 2));
            }
        })
    });
    group.bench_function("xxh3_fingerprint_and_shard_unkeyed", |b| {
        b.iter(|| {
            for (account, id) in &ids {
                let mut h = xxhash_rust::xxh3::Xxh3::with_seed(0x5EED);
                h.update(account.as_bytes());
                h.update(&[0xFF]);
                h.update(id.as_bytes());
                black_box(h.digest128());
                black_box(xxhash_rust::xxh3::xxh3_64(account.as_bytes()) % 2);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, dedupe, shard_step, blocks, group_commit, keyed_hashes);
criterion_main!(benches);
