//! `loadtest run`: K bidirectional streams (one connection each) with up to F batches in flight,
//! every acknowledgement checked against what the batch was meant to get.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes};
use hdrhistogram::Histogram;
use ratingd::wire::proto::{self, admin_client::AdminClient};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::generate::{Accounts, Generator, Kind, Rng, account_name, begin_batch, plan_of};
use crate::procstat;

/// What `loadtest run` was asked to do.
#[derive(Debug, Clone)]
pub struct Plan {
    pub target: String,
    pub events: Option<u64>,
    pub duration: Option<Duration>,
    pub rate: Option<f64>,
    pub batch: usize,
    pub streams: u32,
    pub in_flight: usize,
    pub accounts: u64,
    pub zipf: Option<f64>,
    pub dup_ratio: f64,
    pub invalid_ratio: f64,
    /// Event times are spread over this many hours before the start.
    pub spread_hours: u32,
    pub seed: u64,
    pub connect_timeout: Duration,
    pub daemon_pid: Option<u32>,
    /// Prepaid subscriptions, each account topped up before the run.
    pub prepaid: bool,
}

/// Accounts per UpsertSubscriptions call.
const SUBSCRIBE_CHUNK: usize = 10_000;
/// Accepted events each stream remembers for resending.
const RESEND_RING: usize = 1 << 16;

/// Sends pre-encoded `UsageBatch` bytes as they are; decodes `BatchAck`s with prost.
#[derive(Clone, Copy, Default)]
struct RawCodec;

struct RawEncoder;
struct AckDecoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for AckDecoder {
    type Item = proto::BatchAck;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<proto::BatchAck>, Status> {
        prost::Message::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("malformed BatchAck: {e}")))
    }
}

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = proto::BatchAck;
    type Encoder = RawEncoder;
    type Decoder = AckDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> AckDecoder {
        AckDecoder
    }
}

/// A batch sent and not yet acknowledged.
struct Pending {
    /// Latency counts from here: the send time, or with `--rate` the intended send time.
    since: Instant,
    events: u32,
    /// Sequence numbers of the fresh valid events (resend candidates once accepted).
    fresh: Vec<u64>,
    /// (index, what the event should get) for every event that should not be ACCEPTED.
    expected: Vec<(u32, Kind)>,
}

/// What one stream saw.
pub struct StreamStats {
    latency_us: Histogram<u64>,
    batches: u64,
    acked_events: u64,
    accepted: u64,
    duplicate: u64,
    rejected: u64,
    by_reason: [u64; 8],
    mismatches: u64,
    first_mismatch: Option<String>,
    /// Time a batch was ready to go but the transport would not take it (HTTP/2 flow control).
    send_blocked: Duration,
    /// Time every in-flight slot was taken (waiting for acknowledgements).
    window_full: Duration,
    /// With `--rate`: batches sent more than 2 ms after their intended time.
    late_batches: u64,
}

impl StreamStats {
    fn new() -> StreamStats {
        StreamStats {
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds"),
            batches: 0,
            acked_events: 0,
            accepted: 0,
            duplicate: 0,
            rejected: 0,
            by_reason: [0; 8],
            mismatches: 0,
            first_mismatch: None,
            send_blocked: Duration::ZERO,
            window_full: Duration::ZERO,
            late_batches: 0,
        }
    }

    fn merge(&mut self, o: StreamStats) {
        self.latency_us.add(&o.latency_us).expect("same histogram bounds");
        self.batches += o.batches;
        self.acked_events += o.acked_events;
        self.accepted += o.accepted;
        self.duplicate += o.duplicate;
        self.rejected += o.rejected;
        for (a, b) in self.by_reason.iter_mut().zip(o.by_reason) {
            *a += b;
        }
        self.mismatches += o.mismatches;
        if self.first_mismatch.is_none() {
            self.first_mismatch = o.first_mismatch;
        }
        self.send_blocked += o.send_blocked;
        self.window_full += o.window_full;
        self.late_batches += o.late_batches;
    }
}

/// Connects within the timeout, or says why not.
async fn connect(plan: &Plan) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(plan.target.clone())
        .map_err(|e| format!("bad target {:?}: {e}", plan.target))?
        .connect_timeout(plan.connect_timeout)
        .tcp_nodelay(true);
    match tokio::time::timeout(plan.connect_timeout, endpoint.connect()).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) => Err(format!(
            "cannot connect to {}: {}",
            plan.target,
            ratingd::client::connect::error_chain(&e)
        )),
        Err(_) => Err(format!(
            "cannot connect to {}: no answer within {:?}",
            plan.target, plan.connect_timeout
        )),
    }
}

/// Tops every account up with a billion of its plan's currency, 64 top-ups at a time (each is a
/// commit of its own; concurrent ones share group commits).
async fn top_up(channel: Channel, accounts: u64) -> Result<(), String> {
    const AT_ONCE: u64 = 64;
    let tasks: Vec<_> = (0..AT_ONCE)
        .map(|lane| {
            let mut admin = AdminClient::new(channel.clone());
            tokio::spawn(async move {
                for n in (lane..accounts).step_by(AT_ONCE as usize) {
                    let currency = if plan_of(n) == "telecom-standard" { "EUR" } else { "USD" };
                    let request = proto::TopUpRequest {
                        account_id: account_name(n),
                        amount: "1000000000".into(),
                        currency: currency.into(),
                        id: "loadtest".into(),
                        expires_at: String::new(),
                    };
                    admin
                        .top_up(request)
                        .await
                        .map_err(|s| format!("topping up {}: {}", account_name(n), s.message()))?;
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// Subscribes the accounts (half to each example plan). `Ok(false)` when the target has no Admin
/// service (a sink).
async fn subscribe(channel: Channel, accounts: u64, prepaid: bool) -> Result<bool, String> {
    let mut admin = AdminClient::new(channel).max_encoding_message_size(64 << 20);
    let all: Vec<u64> = (0..accounts).collect();
    for chunk in all.chunks(SUBSCRIBE_CHUNK) {
        let subscriptions = chunk
            .iter()
            .map(|&n| proto::Subscription {
                account_id: account_name(n),
                plan_id: plan_of(n).to_string(),
                from: "2000-01-01T00:00:00Z".to_string(),
                prepaid,
                ..proto::Subscription::default()
            })
            .collect();
        match admin.upsert_subscriptions(proto::Subscriptions { subscriptions }).await {
            Ok(_) => {}
            Err(s) if s.code() == Code::Unimplemented => return Ok(false),
            Err(s) => {
                return Err(format!(
                    "subscribing the accounts failed: {}: {}",
                    s.code(),
                    s.message()
                ));
            }
        }
    }
    Ok(true)
}

struct Shared {
    plan: Plan,
    generator: Generator,
    /// False against a sink: it acknowledges everything as accepted.
    check: bool,
    started: Instant,
}

/// One stream: sends its share, checks every ack, ends when everything it sent is acknowledged.
async fn drive(shared: Arc<Shared>, channel: Channel, stream: u32, quota: Option<u64>) -> Result<StreamStats, String> {
    let plan = &shared.plan;
    let mut stats = StreamStats::new();
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(64 << 20);
    grpc.ready().await.map_err(|e| format!("stream {stream}: {e}"))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/ratingd.v1.Ingest/Stream");
    let response = grpc
        .streaming(tonic::Request::new(ReceiverStream::new(rx)), path, RawCodec)
        .await
        .map_err(|s| format!("stream {stream}: {}: {}", s.code(), s.message()))?;
    let mut acks = response.into_inner();
    let mut tx = Some(tx);
    let mut pending: HashMap<u64, Pending> = HashMap::new();
    let mut ring: Vec<u64> = Vec::new();
    let mut rng = Rng::new(plan.seed.rotate_left(17) ^ u64::from(stream));
    let mut next_seq = 0u64;
    let mut sent_events = 0u64;
    let mut next_batch_id = 1u64;
    // With --rate: this stream's share of the offered load, one batch every `interval`.
    let interval = plan
        .rate
        .map(|r| Duration::from_secs_f64(plan.batch as f64 * f64::from(plan.streams) / r));
    let mut due = shared.started;
    let deadline = plan.duration.map(|d| shared.started + d);
    let mut buf = Vec::with_capacity(plan.batch * 96 + 16);
    let mut scratch = Vec::with_capacity(256);
    loop {
        // With --rate every batch due before the deadline is sent, late or not (the offered load
        // is fixed); without it, sending stops at the deadline.
        let more = quota.is_none_or(|q| sent_events < q)
            && deadline.is_none_or(|d| {
                if interval.is_some() {
                    due < d
                } else {
                    Instant::now() < d
                }
            });
        if !more && pending.is_empty() {
            // Everything sent is acknowledged: close our side, then read the server's end.
            tx = None;
        }
        let can_send = more && pending.len() < plan.in_flight && tx.is_some();
        let waited = Instant::now();
        tokio::select! {
            biased;
            message = acks.message() => {
                if can_send {
                    // Waiting for a batch's scheduled time (with --rate) is not backpressure.
                    let from = if interval.is_some() { waited.max(due) } else { waited };
                    stats.send_blocked += Instant::now().saturating_duration_since(from);
                } else if more {
                    stats.window_full += waited.elapsed();
                }
                match message {
                    Ok(Some(ack)) => handle_ack(&shared, &mut stats, &mut pending, &mut ring, &mut rng, ack),
                    Ok(None) => {
                        if pending.is_empty() && tx.is_none() {
                            return Ok(stats);
                        }
                        return Err(format!("stream {stream}: the server ended the stream with {} batches unacknowledged", pending.len()));
                    }
                    Err(s) => return Err(format!("stream {stream}: {}: {}", s.code(), s.message())),
                }
            }
            permit = async {
                if interval.is_some() {
                    tokio::time::sleep_until(due.into()).await;
                }
                match &tx {
                    Some(tx) => tx.reserve().await.ok(),
                    None => None,
                }
            }, if can_send => {
                let Some(permit) = permit else {
                    return Err(format!("stream {stream}: the request stream closed"));
                };
                let now = Instant::now();
                let since = match interval {
                    Some(step) => {
                        let intended = due;
                        due += step;
                        // The timer's granularity is 1 ms; later than 2 ms is a stall.
                        if now > intended + Duration::from_millis(2) {
                            stats.late_batches += 1;
                        }
                        intended
                    }
                    None => now,
                };
                let count = quota.map_or(plan.batch as u64, |q| (q - sent_events).min(plan.batch as u64)) as u32;
                let batch_id = next_batch_id;
                next_batch_id += 1;
                begin_batch(&mut buf, batch_id);
                let mut p = Pending { since, events: count, fresh: Vec::with_capacity(count as usize), expected: Vec::new() };
                for index in 0..count {
                    if !ring.is_empty() && rng.chance(plan.dup_ratio) {
                        let seq = ring[rng.below(ring.len() as u64) as usize];
                        shared.generator.encode_event(stream, seq, &mut buf, &mut scratch);
                        p.expected.push((index, Kind::Fresh));
                    } else {
                        let seq = next_seq;
                        next_seq += 1;
                        match shared.generator.encode_event(stream, seq, &mut buf, &mut scratch) {
                            Kind::Fresh => p.fresh.push(seq),
                            Kind::Invalid => p.expected.push((index, Kind::Invalid)),
                        }
                    }
                }
                sent_events += u64::from(count);
                pending.insert(batch_id, p);
                permit.send(Bytes::copy_from_slice(&buf));
            }
        }
    }
}

/// Checks one acknowledgement against what its batch should get. In `expected`, `Kind::Fresh`
/// marks a resend (DUPLICATE) and `Kind::Invalid` a deliberately bad event (REJECTED).
fn handle_ack(
    shared: &Shared,
    stats: &mut StreamStats,
    pending: &mut HashMap<u64, Pending>,
    ring: &mut Vec<u64>,
    rng: &mut Rng,
    ack: proto::BatchAck,
) {
    let Some(p) = pending.remove(&ack.batch_id) else {
        stats.mismatches += 1;
        stats
            .first_mismatch
            .get_or_insert_with(|| format!("an ack for unknown batch {}", ack.batch_id));
        return;
    };
    let micros = p.since.elapsed().as_micros().max(1) as u64;
    let _ = stats.latency_us.record(micros.min(3_600_000_000));
    stats.batches += 1;
    let total = ack.accepted + ack.duplicate + ack.rejected;
    stats.acked_events += u64::from(total);
    stats.accepted += u64::from(ack.accepted);
    stats.duplicate += u64::from(ack.duplicate);
    stats.rejected += u64::from(ack.rejected);
    for r in &ack.results {
        if r.outcome == proto::Outcome::Rejected as i32 {
            stats.by_reason[(r.reason.clamp(0, 7)) as usize] += 1;
        }
    }
    let problem = if total != p.events {
        Some(format!(
            "batch {}: ack counts {total} events, {} were sent",
            ack.batch_id, p.events
        ))
    } else if shared.check {
        let want_dup = p.expected.iter().filter(|(_, k)| *k == Kind::Fresh).count() as u32;
        let want_rej = p.expected.len() as u32 - want_dup;
        let results_match = ack.results.len() == p.expected.len()
            && ack.results.iter().zip(&p.expected).all(|(r, (index, kind))| {
                let outcome = match kind {
                    Kind::Fresh => proto::Outcome::Duplicate,
                    Kind::Invalid => proto::Outcome::Rejected,
                };
                r.index == *index && r.outcome == outcome as i32
            });
        if ack.duplicate != want_dup || ack.rejected != want_rej || !results_match {
            let first = ack
                .results
                .iter()
                .find(|r| !p.expected.iter().any(|(i, _)| *i == r.index))
                .map(|r| format!("; e.g. event {} got reason {} ({})", r.index, r.reason, r.detail))
                .unwrap_or_default();
            Some(format!(
                "batch {}: {} accepted / {} duplicate / {} rejected, expected {} / {want_dup} / {want_rej}{first}",
                ack.batch_id,
                ack.accepted,
                ack.duplicate,
                ack.rejected,
                p.events - want_dup - want_rej
            ))
        } else {
            None
        }
    } else {
        None
    };
    if let Some(problem) = problem {
        stats.mismatches += 1;
        stats.first_mismatch.get_or_insert(problem);
        return;
    }
    for seq in p.fresh {
        if ring.len() < RESEND_RING {
            ring.push(seq);
        } else {
            let slot = rng.below(RESEND_RING as u64) as usize;
            ring[slot] = seq;
        }
    }
}

/// The outcome of a run, ready to print.
pub struct Report {
    pub summary: serde_json::Value,
    pub ok: bool,
}

const REASONS: [&str; 8] = [
    "UNSPECIFIED",
    "INVALID_FIELD",
    "UNKNOWN_METER",
    "NO_TARIFF",
    "TOO_OLD",
    "TOO_FAR_IN_FUTURE",
    "PERIOD_CLOSED",
    "CONFLICT",
];

pub async fn run(plan: Plan) -> Result<Report, String> {
    let first = connect(&plan).await?;
    let check = subscribe(first.clone(), plan.accounts, plan.prepaid).await?;
    if check && plan.prepaid {
        top_up(first.clone(), plan.accounts).await?;
    }
    let target_addr = target_socket(&plan.target).await;
    let daemon_pid = plan.daemon_pid.or_else(|| target_addr.and_then(procstat::listener_pid));
    let mut channels = vec![first];
    for _ in 1..plan.streams {
        channels.push(connect(&plan).await?);
    }
    let now_nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let shared = Arc::new(Shared {
        generator: Generator {
            seed: plan.seed,
            tag: format!("{:x}", now_nanos / 1_000_000),
            accounts: Accounts::new(plan.accounts.max(1), plan.zipf),
            invalid_ratio: plan.invalid_ratio,
            now_nanos,
            spread_nanos: u64::from(plan.spread_hours.max(1)) * 3_600 * 1_000_000_000,
        },
        plan: plan.clone(),
        check,
        started: Instant::now(),
    });
    let daemon_cpu_before = daemon_pid.and_then(procstat::cpu_seconds);
    let own_cpu_before = procstat::cpu_seconds(std::process::id());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (k, channel) in channels.into_iter().enumerate() {
        let quota = plan.events.map(|n| {
            let k = k as u64;
            let streams = u64::from(plan.streams);
            n / streams + u64::from(k < n % streams)
        });
        tasks.push(tokio::spawn(drive(shared.clone(), channel, k as u32, quota)));
    }
    let mut total = StreamStats::new();
    let mut errors = Vec::new();
    for task in tasks {
        match task.await {
            Ok(Ok(stats)) => total.merge(stats),
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(format!("a stream task failed: {e}")),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(e) = errors.first() {
        return Err(format!("{e} ({} of {} streams failed)", errors.len(), plan.streams));
    }
    let daemon_cpu = daemon_pid
        .and_then(procstat::cpu_seconds)
        .zip(daemon_cpu_before)
        .map(|(a, b)| a - b);
    let own_cpu = procstat::cpu_seconds(std::process::id())
        .zip(own_cpu_before)
        .map(|(a, b)| a - b);
    let ms = |q: f64| total.latency_us.value_at_quantile(q) as f64 / 1000.0;
    let by_reason: serde_json::Map<String, serde_json::Value> = REASONS
        .iter()
        .zip(total.by_reason)
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| (r.to_string(), n.into()))
        .collect();
    let summary = serde_json::json!({
        "target": plan.target,
        "mode": if check { "ratingd" } else { "sink" },
        "events_per_sec": (total.acked_events as f64 / elapsed).round(),
        "acked_events": total.acked_events,
        "accepted": total.accepted,
        "duplicate": total.duplicate,
        "rejected": total.rejected,
        "rejected_by_reason": by_reason,
        "batches": total.batches,
        "mismatched_acks": total.mismatches,
        "first_mismatch": total.first_mismatch,
        "elapsed_s": (elapsed * 1000.0).round() / 1000.0,
        "p50_ms": ms(0.5),
        "p99_ms": ms(0.99),
        "p999_ms": ms(0.999),
        "max_ms": total.latency_us.max() as f64 / 1000.0,
        "mean_ms": (total.latency_us.mean() / 10.0).round() / 100.0,
        "offered_rate": plan.rate,
        "late_batches": total.late_batches,
        "backpressure": {
            "send_blocked_s": (total.send_blocked.as_secs_f64() * 1000.0).round() / 1000.0,
            "window_full_s": (total.window_full.as_secs_f64() * 1000.0).round() / 1000.0,
        },
        "batch": plan.batch,
        "streams": plan.streams,
        "in_flight": plan.in_flight,
        "accounts": plan.accounts,
        "dup_ratio": plan.dup_ratio,
        "invalid_ratio": plan.invalid_ratio,
        "spread_hours": plan.spread_hours,
        "seed": plan.seed,
        "daemon": daemon_pid.map(|pid| serde_json::json!({
            "pid": pid,
            "cpu_s": daemon_cpu.map(|c| (c * 100.0).round() / 100.0),
            "cpu_cores": daemon_cpu.map(|c| (c / elapsed * 100.0).round() / 100.0),
            "peak_rss_mib": procstat::status_mib(pid, "VmHWM").map(f64::round),
            "rss_mib": procstat::status_mib(pid, "VmRSS").map(f64::round),
        })),
        "loadtest_cpu_s": own_cpu.map(|c| (c * 100.0).round() / 100.0),
    });
    Ok(Report {
        ok: total.mismatches == 0,
        summary,
    })
}

/// The target's socket address, when it resolves.
async fn target_socket(target: &str) -> Option<std::net::SocketAddr> {
    let uri: tonic::codegen::http::Uri = target.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    tokio::net::lookup_host((host, port)).await.ok()?.next()
}
