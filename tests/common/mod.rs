//! Test helpers: a temp data dir, a test configuration, the daemon in-process or as the built
//! binary, event builders, and an independent computation of expected totals.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use ratingd::config::Config;
use ratingd::domain::tariff::Catalogue;
use ratingd::domain::tariff_file::parse_catalogue;
use ratingd::ingest::proto;
use ratingd::rating::{RatingInput, rate};

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ratingd-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Accounts of the test configuration: `tel-N` on telecom-standard, `saas-N` on saas-pro.
pub const ACCOUNTS_PER_PLAN: usize = 8;

/// Writes a test configuration into `dir` and returns its path.
pub fn write_config(dir: &Path, extra: &str) -> PathBuf {
    // Metrics are off unless a test turns them on (one exporter per process, one port each).
    let metrics = if extra.contains("metrics_listen") {
        ""
    } else {
        "metrics_listen = \"\"\n"
    };
    // `extra` holds top-level keys first, then tables; subscriptions follow it.
    let mut text = format!(
        "listen = \"127.0.0.1:0\"\n{metrics}data_dir = {:?}\nshards = 2\ntariffs = {:?}\n{extra}\n",
        dir.join("data").display().to_string(),
        repo().join("config/tariffs.toml").display().to_string(),
    );
    for i in 0..ACCOUNTS_PER_PLAN {
        for (prefix, plan) in [("tel", "telecom-standard"), ("saas", "saas-pro")] {
            text.push_str(&format!(
                "[[subscriptions]]\naccount = \"{prefix}-{i}\"\nplan = \"{plan}\"\nfrom = \"2020-01-01T00:00:00Z\"\n"
            ));
        }
    }
    if !extra.contains("[redis]") {
        // No Redis for tests that do not test the projection: nothing listens on port 1, so flushes
        // fail fast and quietly, and the machine's Redis is left alone.
        text.push_str("[redis]\nurl = \"redis://127.0.0.1:1\"\n");
    }
    let path = dir.join("ratingd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

pub fn load(path: &Path) -> Config {
    Config::load(path).unwrap_or_else(|e| panic!("test config: {e}"))
}

pub fn catalogue() -> Catalogue {
    parse_catalogue(include_str!("../../config/tariffs.toml")).unwrap()
}

/// The plan of a test account.
pub fn plan_of(account: &str) -> &'static str {
    if account.starts_with("tel") || account == "globex" {
        "telecom-standard"
    } else {
        "saas-pro"
    }
}

pub fn event(
    id: &str,
    account: &str,
    meter: &str,
    units: i64,
    nanos: i32,
    at: DateTime<Utc>,
    attrs: &[(&str, &str)],
) -> proto::UsageEvent {
    proto::UsageEvent {
        event_id: id.to_string(),
        account_id: account.to_string(),
        meter: meter.to_string(),
        quantity: Some(proto::Quantity { units, nanos }),
        timestamp_unix_nanos: at.timestamp_nanos_opt().unwrap(),
        attributes: attrs
            .iter()
            .map(|(k, v)| proto::Attribute {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect(),
    }
}

/// A running in-process daemon on a free port with its own data dir.
pub struct TestDaemon {
    pub running: Option<ratingd::app::Running>,
    pub target: String,
    pub config: PathBuf,
}

impl TestDaemon {
    pub async fn start(config: &Path) -> TestDaemon {
        let running = ratingd::app::start(&load(config)).await.expect("daemon starts");
        let target = format!("http://{}", running.addr);
        TestDaemon {
            running: Some(running),
            target,
            config: config.to_path_buf(),
        }
    }

    /// Graceful stop (as on SIGTERM).
    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown();
            r.wait().await.expect("clean shutdown");
        }
    }

    pub async fn ingest(&self) -> proto::ingest_client::IngestClient<tonic::transport::Channel> {
        proto::ingest_client::IngestClient::connect(self.target.clone())
            .await
            .unwrap()
    }

    pub async fn totals(&self, account: &str, period: &str) -> Option<proto::Totals> {
        totals_at(&self.target, account, period).await
    }
}

pub async fn totals_at(target: &str, account: &str, period: &str) -> Option<proto::Totals> {
    let mut q = proto::query_client::QueryClient::connect(target.to_string())
        .await
        .unwrap();
    match q
        .get_totals(proto::GetTotalsRequest {
            account_id: account.into(),
            period: period.into(),
            ..Default::default()
        })
        .await
    {
        Ok(t) => Some(t.into_inner()),
        Err(s) if s.code() == tonic::Code::NotFound => None,
        Err(s) => panic!("GetTotals: {s}"),
    }
}

/// The daemon as the built binary (for kill -9).
pub struct DaemonProcess {
    pub child: Child,
    pub target: String,
}

impl DaemonProcess {
    pub fn spawn(config: &Path) -> DaemonProcess {
        DaemonProcess::spawn_with_stderr(config, Stdio::inherit())
    }

    /// As [`DaemonProcess::spawn`], with its log (warnings and errors) going to `stderr`.
    pub fn spawn_with_stderr(config: &Path, stderr: impl Into<Stdio>) -> DaemonProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ratingd"))
            .args(["--config", config.to_str().unwrap()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("ratingd binary starts");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("ratingd listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        DaemonProcess {
            target: format!("http://{addr}"),
            child,
        }
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits for the graceful exit (which writes checkpoints).
    pub fn terminate(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        assert!(self.child.wait().unwrap().success(), "graceful exit");
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Expected totals per (account, period): charge and events per meter, computed independently of
/// the daemon: each distinct accepted event rated once, in the given order, by the pure engine.
pub fn expected_totals(events: &[proto::UsageEvent]) -> BTreeMap<(String, String), BTreeMap<String, (Decimal, u64)>> {
    let catalogue = catalogue();
    let mut seen = std::collections::HashSet::new();
    let mut usage: BTreeMap<(String, String, String), Decimal> = BTreeMap::new();
    let mut out: BTreeMap<(String, String), BTreeMap<String, (Decimal, u64)>> = BTreeMap::new();
    for e in events {
        if !seen.insert((e.account_id.clone(), e.event_id.clone())) {
            continue;
        }
        let plan = catalogue.plan(plan_of(&e.account_id)).unwrap();
        let at = DateTime::<Utc>::from_timestamp_nanos(e.timestamp_unix_nanos);
        let q = e.quantity.unwrap();
        let quantity =
            Decimal::from_i128_with_scale(i128::from(q.units) * 1_000_000_000 + i128::from(q.nanos), 9).normalize();
        let period = plan.period.period_of(plan.time_zone, at).label;
        let key = (e.account_id.clone(), period.clone(), e.meter.clone());
        let before = usage.get(&key).copied().unwrap_or_default();
        let attributes: Vec<(String, String)> = e.attributes.iter().map(|a| (a.key.clone(), a.value.clone())).collect();
        let input = RatingInput {
            meter: &e.meter,
            quantity,
            at,
            attributes: &attributes,
            period_usage: before,
            subscription_discount: None,
        };
        let rated = rate(plan, &input).expect("generated events are valid");
        usage.insert(key, before + rated.rated_quantity);
        let slot = out
            .entry((e.account_id.clone(), period))
            .or_default()
            .entry(e.meter.clone())
            .or_default();
        slot.0 += rated.charge;
        slot.1 += 1;
    }
    out
}

/// A deterministic mix of events over the test accounts, every meter of both plans, with about
/// `dup_ratio` of them resends of earlier events (same id, same content).
pub fn generate(n: usize, dup_ratio: f64, seed: u64) -> Vec<proto::UsageEvent> {
    let mut rng = seed.max(1);
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let now = Utc::now();
    let mut events: Vec<proto::UsageEvent> = Vec::with_capacity(n);
    let destinations = ["+442071234567", "+447911123456", "+12125550100", "+33142000000"];
    for i in 0..n {
        if i > 10 && (next() % 1000) as f64 / 1000.0 < dup_ratio {
            let earlier = events[(next() as usize) % events.len()].clone();
            events.push(earlier);
            continue;
        }
        let account_n = (next() as usize) % ACCOUNTS_PER_PLAN;
        // Within the last day, so every event is inside the window and the period is recent.
        let at = now - chrono::Duration::seconds((next() % 86_000) as i64 + 60);
        let id = format!("ev-{seed}-{i}");
        let e = match next() % 5 {
            0 => {
                let dest = destinations[(next() % 4) as usize];
                event(
                    &id,
                    &format!("tel-{account_n}"),
                    "voice.seconds",
                    (next() % 900) as i64,
                    0,
                    at,
                    &[("destination", dest)],
                )
            }
            1 => event(
                &id,
                &format!("tel-{account_n}"),
                "sms.count",
                (next() % 5) as i64 + 1,
                0,
                at,
                &[],
            ),
            2 => event(
                &id,
                &format!("tel-{account_n}"),
                "data.mb",
                (next() % 300) as i64,
                (next() % 1000) as i32 * 1_000_000,
                at,
                &[],
            ),
            3 => event(
                &id,
                &format!("saas-{account_n}"),
                "api.requests",
                (next() % 50_000) as i64 + 1,
                0,
                at,
                &[],
            ),
            _ => event(
                &id,
                &format!("saas-{account_n}"),
                "storage.gb_hours",
                (next() % 40) as i64,
                (next() % 10) as i32 * 100_000_000,
                at,
                &[],
            ),
        };
        events.push(e);
    }
    events
}

/// Asserts the daemon's committed totals equal the independent computation for every account.
pub async fn assert_totals_match(target: &str, events: &[proto::UsageEvent]) {
    let expected = expected_totals(events);
    assert!(!expected.is_empty());
    for ((account, period), meters) in &expected {
        let t = totals_at(target, account, period)
            .await
            .unwrap_or_else(|| panic!("no totals for {account} {period}"));
        let mut total = Decimal::ZERO;
        for (meter, (charge, count)) in meters {
            let m = t
                .meters
                .iter()
                .find(|m| &m.meter == meter)
                .unwrap_or_else(|| panic!("{account} {period}: no {meter}"));
            assert_eq!(
                m.charge.parse::<Decimal>().unwrap(),
                *charge,
                "{account} {period} {meter} charge"
            );
            assert_eq!(m.events, *count, "{account} {period} {meter} events");
            total += *charge;
        }
        assert_eq!(
            t.total_charge.parse::<Decimal>().unwrap(),
            total,
            "{account} {period} total"
        );
        assert_eq!(t.meters.len(), meters.len(), "{account} {period} meters");
    }
}

/// Events cut into batches of `size`, numbered from 0.
pub fn batches(events: &[proto::UsageEvent], size: usize) -> Vec<proto::UsageBatch> {
    events
        .chunks(size)
        .enumerate()
        .map(|(i, c)| proto::UsageBatch {
            batch_id: i as u64,
            events: c.to_vec(),
        })
        .collect()
}

/// The same, keyed by batch id: what a client still has to get acknowledged.
pub fn pending_batches(events: &[proto::UsageEvent], size: usize) -> BTreeMap<u64, proto::UsageBatch> {
    batches(events, size).into_iter().map(|b| (b.batch_id, b)).collect()
}

/// A redis-server of this test's own, killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    pub fn start(port: u16) -> RedisServer {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test.sh installs it)");
        let server = RedisServer {
            child: Some(child),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        // Readiness check: poll until it answers PING (bounded).
        while redis::Client::open(server.url())
            .and_then(|c| c.get_connection())
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_err()
        {
            assert!(Instant::now() < deadline, "redis-server did not start on port {port}");
            std::thread::sleep(Duration::from_millis(10));
        }
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Every entry of a Redis stream, as field maps, oldest first.
pub fn xrange(url: &str, key: &str) -> Vec<std::collections::HashMap<String, String>> {
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    let entries: Vec<(String, std::collections::HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query(&mut c)
        .unwrap_or_default();
    entries.into_iter().map(|(_, fields)| fields).collect()
}

/// Waits (bounded) until the projection has flushed `n` more times (it rewrites `<prefix>:meta`
/// at the end of every flush).
pub async fn wait_for_flushes(url: &str, prefix: &str, n: usize) {
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    let meta = format!("{prefix}:meta");
    let stamp = |c: &mut redis::Connection| {
        redis::cmd("HGET")
            .arg(&meta)
            .arg("updated_at")
            .query::<String>(c)
            .unwrap_or_default()
    };
    let mut last = stamp(&mut c);
    let mut changes = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while changes < n {
        assert!(Instant::now() < deadline, "the projection did not flush {n} times");
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = stamp(&mut c);
        if now != last {
            changes += 1;
            last = now;
        }
    }
}
