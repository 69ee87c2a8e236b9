//! `loadtest charge`: online charging against a running ratingd. Each worker runs sessions back
//! to back on its own prepaid account (voice on the example telecom plan: a connect fee, 60/1
//! increments, destination prices and peak/off-peak bands): Authorize for 300 s, Terminate at
//! 120 s. Reports sessions per second, the latency of each call and the daemon's CPU per session.

use std::net::SocketAddr;
use std::time::Instant;

use hdrhistogram::Histogram;
use ratingd::wire::proto::{self, admin_client::AdminClient, charging_client::ChargingClient};
use tonic::transport::{Channel, Endpoint};

use crate::procstat;

pub struct ChargePlan {
    pub target: String,
    pub sessions: u64,
    pub concurrency: u32,
}

fn account(worker: u32) -> String {
    format!("lt-charge-{worker}")
}

async fn setup(channel: Channel, workers: u32) -> Result<(), String> {
    let mut admin = AdminClient::new(channel);
    let subscriptions = (0..workers)
        .map(|w| proto::Subscription {
            account_id: account(w),
            plan_id: "telecom-standard".into(),
            from: "2000-01-01T00:00:00Z".into(),
            ..Default::default()
        })
        .collect();
    admin
        .upsert_subscriptions(proto::Subscriptions { subscriptions })
        .await
        .map_err(|s| format!("subscribing: {s}"))?;
    for w in 0..workers {
        let top_up = proto::TopUpRequest {
            account_id: account(w),
            amount: "1000000000".into(),
            currency: "EUR".into(),
            id: "loadtest-charge".into(),
            expires_at: String::new(),
        };
        admin.top_up(top_up).await.map_err(|s| format!("topping up: {s}"))?;
    }
    Ok(())
}

struct Latencies {
    authorize: Histogram<u64>,
    terminate: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    // Microseconds, up to a minute, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

async fn worker(channel: Channel, w: u32, sessions: u64, run: u64) -> Result<Latencies, String> {
    let mut client = ChargingClient::new(channel);
    let mut out = Latencies {
        authorize: histogram(),
        terminate: histogram(),
    };
    let micros = |since: Instant| since.elapsed().as_micros().max(1) as u64;
    for n in 0..sessions {
        let session = format!("lt-{run}-{w}-{n}");
        let ask = proto::AuthorizeRequest {
            session_id: session.clone(),
            account_id: account(w),
            meter: "voice.seconds".into(),
            attributes: vec![proto::Attribute {
                key: "destination".into(),
                value: "+441234567".into(),
            }],
            requested_units: Some(proto::Quantity { units: 300, nanos: 0 }),
            started_at: String::new(),
        };
        let t = Instant::now();
        let grant = client
            .authorize(ask)
            .await
            .map_err(|s| format!("authorize: {s}"))?
            .into_inner();
        out.authorize.saturating_record(micros(t));
        if grant.granted_units != "300" {
            return Err(format!("granted {} units, not 300", grant.granted_units));
        }
        let end = proto::TerminateRequest {
            session_id: session,
            used_units: Some(proto::Quantity { units: 120, nanos: 0 }),
        };
        let t = Instant::now();
        client.terminate(end).await.map_err(|s| format!("terminate: {s}"))?;
        out.terminate.saturating_record(micros(t));
    }
    Ok(out)
}

/// Runs the sessions; the JSON summary.
pub async fn run(plan: ChargePlan) -> Result<serde_json::Value, String> {
    let channel = Endpoint::from_shared(plan.target.clone())
        .map_err(|e| format!("bad target: {e}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", plan.target))?;
    setup(channel.clone(), plan.concurrency).await?;
    let daemon_pid = plan
        .target
        .trim_start_matches("http://")
        .parse::<SocketAddr>()
        .ok()
        .and_then(procstat::listener_pid);
    let cpu_before = daemon_pid.and_then(procstat::cpu_seconds);
    // Session ids unique per run, so a second run against the same data dir starts afresh.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let per_worker = plan.sessions / u64::from(plan.concurrency);
    let started = Instant::now();
    let tasks: Vec<_> = (0..plan.concurrency)
        .map(|w| tokio::spawn(worker(channel.clone(), w, per_worker, run)))
        .collect();
    let mut authorize = histogram();
    let mut terminate = histogram();
    for t in tasks {
        let l = t.await.map_err(|e| e.to_string())??;
        authorize.add(&l.authorize).map_err(|e| e.to_string())?;
        terminate.add(&l.terminate).map_err(|e| e.to_string())?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let sessions = per_worker * u64::from(plan.concurrency);
    let cpu = daemon_pid
        .and_then(procstat::cpu_seconds)
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Ok(serde_json::json!({
        "sessions": sessions,
        "concurrency": plan.concurrency,
        "elapsed_s": elapsed,
        "sessions_per_sec": sessions as f64 / elapsed,
        "authorize_ms": { "p50": ms(&authorize, 0.5), "p99": ms(&authorize, 0.99), "p999": ms(&authorize, 0.999), "max": ms(&authorize, 1.0) },
        "terminate_ms": { "p50": ms(&terminate, 0.5), "p99": ms(&terminate, 0.99), "p999": ms(&terminate, 0.999), "max": ms(&terminate, 1.0) },
        "daemon_cpu_s": cpu,
        "daemon_cpu_us_per_session": cpu.map(|c| c / sessions as f64 * 1e6),
    }))
}
