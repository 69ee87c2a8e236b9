//! The real daemon in-process on 127.0.0.1:0 with a temp data dir: outcomes per event, dedupe
//! across batches and streams, concurrent resends, restart, limits.

mod common;

use chrono::Duration;
use common::*;
use ratingd::wire::proto::{self, Outcome, RejectReason};
use tokio_stream::StreamExt;

fn batch(batch_id: u64, events: Vec<proto::UsageEvent>) -> proto::UsageBatch {
    proto::UsageBatch { batch_id, events }
}

/// Sends batches on one stream and returns the acks (in the order they came).
async fn stream(d: &TestDaemon, batches: Vec<proto::UsageBatch>) -> Vec<proto::BatchAck> {
    let mut client = d.ingest().await;
    let n = batches.len();
    let acks = client.stream(tokio_stream::iter(batches)).await.unwrap().into_inner();
    let acks: Vec<proto::BatchAck> = within(60, "every ack of the stream", acks.map(|a| a.unwrap()).collect()).await;
    assert_eq!(acks.len(), n);
    acks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_gets_its_outcome() {
    let dir = TempDir::new("outcomes");
    let d = TestDaemon::start(&write_config(&dir.0, "")).await;
    // Wednesday 2026-11-18 12:55 in Berlin: peak.
    let now = test_now() - Duration::minutes(5);
    let uk = [("destination", "+442071234567")];
    let events = vec![
        event("ok-1", "tel-0", "voice.seconds", 61, 0, now, &uk), // 0 accepted
        event("ok-1", "tel-0", "voice.seconds", 61, 0, now, &uk), // 1 duplicate in the same batch
        event("ok-1", "tel-0", "voice.seconds", 62, 0, now, &uk), // 2 conflict
        event("", "tel-0", "sms.count", 1, 0, now, &[]),          // 3 empty id
        event("neg", "tel-0", "sms.count", -1, 0, now, &[]),      // 4 negative quantity
        event("nanos", "tel-0", "sms.count", 1, 1_000_000_000, now, &[]), // 5 nanos out of range
        event("fax", "tel-0", "fax.pages", 1, 0, now, &[]),       // 6 unknown meter
        event("old", "tel-0", "sms.count", 1, 0, test_now() - Duration::days(40), &[]), // 7 too old
        event(
            "future",
            "tel-0",
            "sms.count",
            1,
            0,
            test_now() + Duration::hours(1),
            &[],
        ), // 8 future
        event("who", "nobody", "sms.count", 1, 0, now, &[]),      // 9 no tariff
        event("api", "tel-0", "api.requests", 1, 0, now, &[]),    // 10 meter not in the plan
        event("ok-2", "saas-0", "api.requests", 1000, 0, now, &[]), // 11 accepted
    ];
    let mut client = d.ingest().await;
    let ack = client.submit(batch(7, events)).await.unwrap().into_inner();
    assert_eq!(ack.batch_id, 7);
    assert_eq!((ack.accepted, ack.duplicate, ack.rejected), (2, 1, 9));
    assert_eq!(
        ack.accepted + ack.duplicate + ack.rejected,
        12,
        "received = accepted + duplicate + rejected"
    );
    let got: Vec<(u32, i32, i32)> = ack.results.iter().map(|r| (r.index, r.outcome, r.reason)).collect();
    let rej = |i: u32, reason: RejectReason| (i, Outcome::Rejected as i32, reason as i32);
    assert_eq!(
        got,
        vec![
            (1, Outcome::Duplicate as i32, RejectReason::Unspecified as i32),
            rej(2, RejectReason::Conflict),
            rej(3, RejectReason::InvalidField),
            rej(4, RejectReason::InvalidField),
            rej(5, RejectReason::InvalidField),
            rej(6, RejectReason::UnknownMeter),
            rej(7, RejectReason::TooOld),
            rej(8, RejectReason::TooFarInFuture),
            rej(9, RejectReason::NoTariff),
            rej(10, RejectReason::NoTariff),
        ]
    );
    assert!(
        ack.results
            .iter()
            .filter(|r| r.outcome == Outcome::Rejected as i32)
            .all(|r| !r.detail.is_empty())
    );
    // Every rejection waits in suspense with the time the batch was received, whether the door
    // refused it (3-8) or a shard did (2, 9, 10).
    let waiting = suspended(&d.target, RejectReason::Unspecified).await;
    assert_eq!(waiting.len(), 9, "{waiting:?}");
    let times: std::collections::BTreeSet<&str> = waiting.iter().map(|e| e.received_at.as_str()).collect();
    assert_eq!(times.len(), 1, "one receipt time for the whole batch: {times:?}");
    // Committed totals: the one accepted call, 61 s to +44 at peak (0.0200 a minute) with 60/1
    // increments and the 0.0100 connect fee: (61 x 0.02 + 60 x 0.01) / 60 = 1.82 / 60, rounded
    // half-even to 9 places. And 1,000 API requests at 0.0010 less 10%.
    let t = d.totals("tel-0", "2026-11").await.expect("totals");
    assert_eq!(t.meters.len(), 1);
    assert_eq!(t.meters[0].events, 1);
    assert_eq!(t.currency, "EUR");
    assert_eq!(t.meters[0].charge, "0.030333333");
    assert_eq!(t.total_amount, "0.03");
    let t = d.totals("saas-0", "2026-11").await.expect("totals");
    assert_eq!(t.total_charge, "0.900000000");
    // The same from the reference pricer, for the accepted events in their order.
    let accepted: Vec<proto::UsageEvent> = vec![
        event("ok-1", "tel-0", "voice.seconds", 61, 0, now, &uk),
        event("ok-2", "saas-0", "api.requests", 1000, 0, now, &[]),
    ];
    assert_totals_match(&d.target, &accepted).await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_across_batches_and_streams_are_rated_once() {
    let dir = TempDir::new("dedupe");
    let d = TestDaemon::start(&write_config(&dir.0, "")).await;
    let events = generate(600, 0.0, 11);
    let first = stream(&d, batches(&events, 100)).await;
    assert_eq!(first.iter().map(|a| a.accepted).sum::<u32>(), 600);
    // The same events on another stream, with other batch ids: all duplicates.
    let renumbered = batches(&events, 100)
        .into_iter()
        .map(|b| batch(b.batch_id + 100, b.events))
        .collect();
    let second = stream(&d, renumbered).await;
    assert_eq!(second.iter().map(|a| a.accepted).sum::<u32>(), 0);
    assert_eq!(second.iter().map(|a| a.duplicate).sum::<u32>(), 600);
    assert_totals_match(&d.target, &events).await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_batch_resent_concurrently_on_two_streams_is_rated_once() {
    let dir = TempDir::new("concurrent");
    let d = TestDaemon::start(&write_config(&dir.0, "")).await;
    let events = generate(2000, 0.0, 12);
    let both = batches(&events, 200);
    let (a, b) = tokio::join!(stream(&d, both.clone()), stream(&d, both));
    let accepted: u32 = a.iter().chain(&b).map(|x| x.accepted).sum();
    let duplicate: u32 = a.iter().chain(&b).map(|x| x.duplicate).sum();
    assert_eq!((accepted, duplicate), (2000, 2000));
    assert_totals_match(&d.target, &events).await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_totals_and_dedupe_with_and_without_checkpoints() {
    let dir = TempDir::new("restart");
    // A checkpoint every 300 records: restarts load one and replay the blocks after it.
    let config = write_config(&dir.0, "checkpoint_every_records = 300");
    let events = generate(1500, 0.1, 13);
    let (head, tail) = events.split_at(1000);
    let d = TestDaemon::start(&config).await;
    stream(&d, batches(head, 100)).await;
    d.stop().await;
    let d = TestDaemon::start(&config).await;
    assert_totals_match(&d.target, head).await;
    let acks = stream(&d, batches(&events, 100)).await;
    let accepted: u32 = acks.iter().map(|a| a.accepted).sum();
    let distinct_new = expected_totals(&events)
        .values()
        .flat_map(|m| m.values())
        .map(|v| v.1)
        .sum::<u64>()
        - expected_totals(head)
            .values()
            .flat_map(|m| m.values())
            .map(|v| v.1)
            .sum::<u64>();
    assert_eq!(
        u64::from(accepted),
        distinct_new,
        "only the tail's new events are accepted"
    );
    assert!(!tail.is_empty());
    d.stop().await;
    let d = TestDaemon::start(&config).await;
    assert_totals_match(&d.target, &events).await;
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_batch_is_refused_whole_on_both_paths() {
    let dir = TempDir::new("limits");
    let d = TestDaemon::start(&write_config(&dir.0, "[limits]\nmax_batch_events = 10")).await;
    let events = generate(11, 0.0, 14);
    let mut client = d.ingest().await;
    let status = client.submit(batch(1, events.clone())).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    let mut acks = client
        .stream(tokio_stream::iter(vec![batch(2, events.clone())]))
        .await
        .unwrap()
        .into_inner();
    let status = within(20, "the refusal", acks.next()).await.unwrap().unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    // Nothing of it was written, and other requests keep working.
    let ok = client
        .submit(batch(3, events[..10].to_vec()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.accepted + ok.duplicate, 10);
    assert_eq!(ok.duplicate, 0);
    d.stop().await;
}

/// Sends raw bytes as the request message, so tests can send what no protobuf encoder would.
#[derive(Default, Clone)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        buf.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, buf: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        let mut out = vec![0; buf.remaining()];
        buf.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

async fn raw_client(target: &str) -> tonic::client::Grpc<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(target.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic::client::Grpc::new(channel).max_encoding_message_size(usize::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversize_messages_get_a_status_and_nothing_breaks() {
    let dir = TempDir::new("malformed");
    let d = TestDaemon::start(&write_config(&dir.0, "[limits]\nmax_message_bytes = 100000")).await;
    // Field 2 (events) as a length-delimited field claiming more bytes than there are.
    let garbage = vec![0x12, 0xFF, 0x01, 0x00];
    let submit = http::uri::PathAndQuery::from_static("/ratingd.v1.Ingest/Submit");
    let stream_path = http::uri::PathAndQuery::from_static("/ratingd.v1.Ingest/Stream");

    let mut raw = raw_client(&d.target).await;
    raw.ready().await.unwrap();
    let status = raw
        .unary(tonic::Request::new(garbage.clone()), submit.clone(), RawCodec)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");

    raw.ready().await.unwrap();
    let response = raw
        .streaming(
            tonic::Request::new(tokio_stream::iter(vec![garbage])),
            stream_path.clone(),
            RawCodec,
        )
        .await;
    let status = match response {
        Ok(r) => within(20, "the refusal", r.into_inner().message()).await.unwrap_err(),
        Err(s) => s,
    };
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");

    // Over max_message_bytes: RESOURCE_EXHAUSTED on the stream.
    let big = prost::Message::encode_to_vec(&batch(9, generate(2000, 0.0, 15)));
    assert!(big.len() > 100_000);
    raw.ready().await.unwrap();
    let response = raw
        .streaming(
            tonic::Request::new(tokio_stream::iter(vec![big])),
            stream_path,
            RawCodec,
        )
        .await;
    let status = match response {
        Ok(r) => within(20, "the refusal", r.into_inner().message()).await.unwrap_err(),
        Err(s) => s,
    };
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}");

    // The daemon keeps serving.
    let ack = d
        .ingest()
        .await
        .submit(batch(10, generate(50, 0.0, 16)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.accepted, 50);
    d.stop().await;
}

/// The outcome of each event of one acknowledged batch, by index: "accepted", "duplicate" or
/// the reject reason's name.
fn outcomes(ack: &proto::BatchAck, n: usize) -> Vec<String> {
    (0..n as u32)
        .map(|i| match ack.results.iter().find(|r| r.index == i) {
            None => "accepted".to_string(),
            Some(r) if r.outcome == Outcome::Duplicate as i32 => "duplicate".to_string(),
            Some(r) => RejectReason::try_from(r.reason)
                .unwrap()
                .as_str_name()
                .trim_start_matches("REJECT_REASON_")
                .to_string(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_resend_is_a_conflict_across_batches_streams_and_restarts() {
    let dir = TempDir::new("conflict");
    let config = write_config(&dir.0, "");
    // Pinned months before the real date: a restart that forgot claims by the system clock
    // instead of the daemon's (ids older than the window) would accept a changed resend.
    let now = chrono::DateTime::parse_from_rfc3339("2026-06-17T12:00:00Z")
        .unwrap()
        .to_utc();
    let start = |config: std::path::PathBuf| async move {
        let clock = std::sync::Arc::new(ratingd::pipeline::Clock::starting_at(now));
        let options = ratingd::app::StartOptions {
            clock: Some(clock),
            ..Default::default()
        };
        TestDaemon::start_with(&config, options).await
    };
    let at = now - Duration::minutes(5);
    let original = event("c-1", "tel-0", "sms.count", 150, 0, at, &[]);
    let changed = [
        event("c-1", "tel-0", "sms.count", 151, 0, at, &[]),
        event("c-1", "tel-0", "sms.count", 150, 0, at + Duration::seconds(1), &[]),
        event("c-1", "tel-0", "sms.count", 150, 0, at, &[("region", "eu")]),
        event("c-1", "tel-0", "data.mb", 150, 0, at, &[]),
    ];
    let d = start(config.clone()).await;
    let mut client = d.ingest().await;
    let first = client
        .submit(batch(1, vec![original.clone()]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.accepted, 1);
    // Another batch (another unary call): each change is a CONFLICT, the same content a DUPLICATE.
    let mut again = changed.to_vec();
    again.push(original.clone());
    let ack = client.submit(batch(2, again.clone())).await.unwrap().into_inner();
    assert_eq!(
        outcomes(&ack, again.len()),
        ["CONFLICT", "CONFLICT", "CONFLICT", "CONFLICT", "duplicate"]
    );
    // Another stream, on another connection.
    let acks = within(20, "a stream's acks", stream(&d, vec![batch(3, again.clone())])).await;
    assert_eq!(outcomes(&acks[0], again.len()), outcomes(&ack, again.len()));
    d.stop().await;
    // After a restart from the checkpoint, and after one that replays the blocks (checkpoints
    // removed): still conflicts, never re-rated, never overwritten.
    for replay in [false, true] {
        if replay {
            std::fs::remove_dir_all(dir.0.join("data/checkpoints")).unwrap();
        }
        let d = start(config.clone()).await;
        let ack = within(20, "an ack", d.ingest().await.submit(batch(4, again.clone())))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            outcomes(&ack, again.len()),
            ["CONFLICT", "CONFLICT", "CONFLICT", "CONFLICT", "duplicate"],
            "replay {replay}"
        );
        // The totals are the original's alone: 150 SMS, 100 free, 50 x 0.05 = 2.50.
        let t = d.totals("tel-0", "2026-06").await.unwrap();
        assert_eq!(t.total_charge, "2.500000000");
        assert_totals_match(&d.target, std::slice::from_ref(&original)).await;
        d.stop().await;
    }
}
