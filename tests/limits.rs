//! One test per limit of `[limits]`: attributes per event, attribute size and HTTP/2 streams per
//! connection here; batches in flight over all streams in tests/admission.rs and on one stream in
//! tests/backpressure.rs (each alone in its test binary, as they read process-wide metrics);
//! message size, batch size and id length in tests/security.rs and tests/daemon.rs.

mod common;

use std::time::Duration;

use common::*;
use ratingd::wire::proto::{self, Outcome, RejectReason};
use tokio_stream::StreamExt;

fn at() -> chrono::DateTime<chrono::Utc> {
    test_now() - chrono::Duration::minutes(5)
}

fn with_attributes(id: &str, attributes: &[(&str, &str)]) -> proto::UsageEvent {
    event(id, "tel-0", "sms.count", 1, 0, at(), attributes)
}

fn rejected(ack: &proto::BatchAck) -> Vec<(u32, i32, String)> {
    ack.results
        .iter()
        .filter(|r| r.outcome == Outcome::Rejected as i32)
        .map(|r| (r.index, r.reason, r.detail.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_attributes_than_max_attributes_is_invalid_field() {
    let dir = TempDir::new("max-attributes");
    let d = TestDaemon::start(&write_config(&dir.0, "[limits]\nmax_attributes = 2")).await;
    let ack = d
        .submit(
            1,
            vec![
                with_attributes("two", &[("a", "1"), ("b", "2")]),
                with_attributes("three", &[("a", "1"), ("b", "2"), ("c", "3")]),
            ],
        )
        .await;
    assert_eq!((ack.accepted, ack.rejected), (1, 1));
    assert_eq!(
        rejected(&ack),
        [(
            1,
            RejectReason::InvalidField as i32,
            "more than 2 attributes".to_string()
        )]
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attribute_longer_than_max_attribute_bytes_is_invalid_field() {
    let dir = TempDir::new("max-attribute-bytes");
    let d = TestDaemon::start(&write_config(&dir.0, "[limits]\nmax_attribute_bytes = 8")).await;
    let ack = d
        .submit(
            1,
            vec![
                with_attributes("fits", &[("12345678", "abcdefgh")]),
                with_attributes("long-key", &[("123456789", "a")]),
                with_attributes("long-value", &[("k", "abcdefghi")]),
            ],
        )
        .await;
    assert_eq!((ack.accepted, ack.rejected), (1, 2));
    let why = "attribute keys must be 1..=8 bytes and values at most 8".to_string();
    assert_eq!(
        rejected(&ack),
        [
            (1, RejectReason::InvalidField as i32, why.clone()),
            (2, RejectReason::InvalidField as i32, why)
        ]
    );
    d.stop().await;
}

/// The value of SETTINGS_MAX_CONCURRENT_STREAMS in the server's first SETTINGS frame.
fn advertised_max_streams(addr: &str) -> Option<u32> {
    use std::io::{Read, Write};
    let mut socket = std::net::TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    socket.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    socket.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap();
    // Frames: 3-byte length, type, flags, 4-byte stream id, payload.
    let mut header = [0u8; 9];
    loop {
        socket.read_exact(&mut header).expect("a frame within 10 s");
        let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let mut payload = vec![0; len];
        socket.read_exact(&mut payload).unwrap();
        // SETTINGS (type 4) without the ACK flag: 6-byte (id, value) pairs.
        if header[3] == 4 && header[4] & 1 == 0 {
            return payload
                .chunks(6)
                .find(|s| u16::from_be_bytes([s[0], s[1]]) == 3)
                .map(|s| u32::from_be_bytes([s[2], s[3], s[4], s[5]]));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_streams_holds_a_third_stream_on_one_connection() {
    let dir = TempDir::new("max-streams");
    let d = TestDaemon::start(&write_config(&dir.0, "[limits]\nmax_concurrent_streams = 2")).await;
    let addr = d.target.trim_start_matches("http://").to_string();
    let advertised = tokio::task::spawn_blocking(move || advertised_max_streams(&addr))
        .await
        .unwrap();
    assert_eq!(advertised, Some(2), "the server's SETTINGS");
    // Two open streams on one connection take both slots.
    let client = d.ingest().await;
    let mut open = Vec::new();
    for i in 0..2u64 {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let mut acks = within(
            20,
            "a stream to open",
            client.clone().stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
        )
        .await
        .unwrap()
        .into_inner();
        tx.send(proto::UsageBatch {
            batch_id: i,
            events: vec![with_attributes(&format!("s-{i}"), &[])],
        })
        .await
        .unwrap();
        assert_eq!(within(20, "an ack", acks.next()).await.unwrap().unwrap().accepted, 1);
        open.push((tx, acks));
    }
    // A third on the same connection waits for a slot (the client holds it, as HTTP/2 says)...
    let mut third_client = client.clone();
    let mut third = tokio::spawn(async move {
        third_client
            .submit(proto::UsageBatch {
                batch_id: 9,
                events: vec![with_attributes("third", &[])],
            })
            .await
    });
    let early = tokio::time::timeout(Duration::from_millis(300), &mut third).await;
    assert!(early.is_err(), "a third stream ran beside two open ones: {early:?}");
    // ...while another connection is served at once...
    assert_eq!(d.submit(10, vec![with_attributes("other", &[])]).await.accepted, 1);
    // ...and it runs as soon as one of the two ends.
    drop(open.pop());
    let ack = within(20, "the third stream after a slot freed", third)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ack.into_inner().accepted, 1);
    drop(open);
    d.stop().await;
}
