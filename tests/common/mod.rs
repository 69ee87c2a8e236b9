//! Test helpers: a temp data dir, a test configuration, the daemon in-process (on a pinned clock)
//! or as the built binary, event builders, bounded waits, and the expected totals from the
//! independent reference pricer ([`reference`]).
#![allow(dead_code)]

pub mod reference;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, TimeZone, Utc};
use rust_decimal::Decimal;

use ratingd::config::Config;
use ratingd::wire::proto;

pub use reference::Reference;

/// The instant in-process daemons are pinned to (their clock starts here and runs on at the
/// system clock's pace): Wednesday 2026-11-18 12:00 UTC, mid-month in every test plan's zone and
/// under saas-pro's version 1, so no figure depends on the day the suite runs.
pub fn test_now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 18, 12, 0, 0).unwrap()
}

/// For the built binary, whose clock tests cannot move: an instant at least an hour before the
/// real now such that the day before it lies in one billing period for every test plan's zone
/// (UTC and Europe/Berlin), an hour or more from either month boundary. Near a month start that
/// is the end of the previous month, which stays open for the 72 h close grace.
pub fn safe_now() -> DateTime<Utc> {
    let now = Utc::now();
    let zones = [chrono_tz::UTC, chrono_tz::Europe::Berlin];
    // Month starts in both zones around `now`.
    let mut boundaries = Vec::new();
    for zone in zones {
        let local = now.with_timezone(&zone).date_naive();
        let mut first = local.with_day0(0).unwrap();
        for _ in 0..2 {
            boundaries.push(
                zone.from_local_datetime(&first.and_hms_opt(0, 0, 0).unwrap())
                    .earliest()
                    .unwrap()
                    .with_timezone(&Utc),
            );
            first = (first - chrono::Duration::days(1)).with_day0(0).unwrap();
        }
    }
    let span = chrono::Duration::hours(25);
    let margin = chrono::Duration::hours(1);
    let mut base = now - margin;
    while let Some(earliest) = boundaries
        .iter()
        .filter(|b| **b > base - span - margin && **b <= base + margin)
        .min()
    {
        base = *earliest - margin * 2;
    }
    assert!(
        now - base < chrono::Duration::days(3),
        "{base} is too far back for an open period"
    );
    base
}

/// A channel to a daemon whose every call is bounded: 10 s to connect, 60 s per request (a unary
/// call's answer, a stream's opening), so a daemon that stops answering fails the test.
pub async fn channel(target: &str) -> tonic::transport::Channel {
    let endpoint = tonic::transport::Endpoint::from_shared(target.to_string())
        .expect("a valid target")
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60));
    within(20, "a connection to the daemon", endpoint.connect())
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {target}: {e}"))
}

/// Awaits `future` for at most `seconds`, or fails the test naming `what`.
pub async fn within<T>(seconds: u64, what: &str, future: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(seconds), future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {seconds} s waiting for {what}"),
    }
}

/// Polls `check` every 20 ms until it holds, for at most `seconds`, or fails naming `what`.
pub async fn wait_until<F: std::future::Future<Output = bool>>(seconds: u64, what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {seconds} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

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

/// [`write_config`] with a tariff file of its own holding `tariffs` (which the test may rewrite
/// and reload): the config's path and the tariff file's.
pub fn write_config_with_tariffs(dir: &Path, extra: &str, tariffs: &str) -> (PathBuf, PathBuf) {
    let file = dir.join("tariffs.toml");
    std::fs::write(&file, tariffs).unwrap();
    let config = write_config(dir, extra);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("{:?}", repo().join("config/tariffs.toml").display().to_string()),
        &format!("{:?}", file.display().to_string()),
    );
    std::fs::write(&config, text).unwrap();
    (config, file)
}

pub fn load(path: &Path) -> Config {
    Config::load(path).unwrap_or_else(|e| panic!("test config: {e}"))
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
    /// Starts the daemon with its clock pinned to [`test_now`].
    pub async fn start(config: &Path) -> TestDaemon {
        TestDaemon::start_with(config, ratingd::app::StartOptions::default()).await
    }

    /// Starts the daemon with a test's options; a missing clock is pinned to [`test_now`].
    pub async fn start_with(config: &Path, mut options: ratingd::app::StartOptions) -> TestDaemon {
        if options.clock.is_none() {
            options.clock = Some(std::sync::Arc::new(ratingd::pipeline::Clock::starting_at(test_now())));
        }
        let running = within(
            60,
            "the daemon to start",
            ratingd::app::start_with(&load(config), options),
        )
        .await
        .expect("daemon starts");
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
            within(60, "a graceful stop", r.wait()).await.expect("clean shutdown");
        }
    }

    /// The daemon's clock now.
    pub fn now(&self) -> DateTime<Utc> {
        self.running.as_ref().expect("running").clock.now()
    }

    pub async fn ingest(&self) -> proto::ingest_client::IngestClient<tonic::transport::Channel> {
        proto::ingest_client::IngestClient::new(channel(&self.target).await)
    }

    /// Submits one batch (unary) and waits (bounded) for its ack.
    pub async fn submit(&self, batch_id: u64, events: Vec<proto::UsageEvent>) -> proto::BatchAck {
        let mut client = self.ingest().await;
        within(20, "an ack", client.submit(proto::UsageBatch { batch_id, events }))
            .await
            .expect("the batch is acknowledged")
            .into_inner()
    }

    pub async fn totals(&self, account: &str, period: &str) -> Option<proto::Totals> {
        totals_at(&self.target, account, period).await
    }
}

/// The explanation of one account's record (ExplainRecord), which must exist.
pub async fn explain(target: &str, account: &str, event_id: &str) -> proto::ExplainRecordResponse {
    proto::query_client::QueryClient::new(channel(target).await)
        .explain_record(proto::ExplainRecordRequest {
            account_id: account.into(),
            event_id: event_id.into(),
        })
        .await
        .unwrap_or_else(|s| panic!("explain {account} {event_id}: {s}"))
        .into_inner()
}

pub async fn totals_at(target: &str, account: &str, period: &str) -> Option<proto::Totals> {
    let mut q = proto::query_client::QueryClient::new(channel(target).await);
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
        // Bounded: a daemon that never says where it listens fails the test instead of hanging it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("ratingd did not print its address within 60 s");
            }
        };
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

    /// Sends a signal (`TERM`, `HUP`, ...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name}");
    }

    /// Waits at most 60 s for the process to exit; its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "ratingd did not exit within 60 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits (bounded) for the graceful exit (which writes checkpoints).
    pub fn terminate(mut self) {
        self.signal("TERM");
        assert_eq!(self.wait_exit(), Some(0), "graceful exit");
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the daemon should hold after `events` (sent in that order), from the reference pricer
/// with the test configuration's accounts.
pub fn expected(events: &[proto::UsageEvent]) -> reference::Outcome {
    Reference::shipped().rate(events)
}

/// Expected charge and events per meter, per (account, period), from the reference pricer.
pub fn expected_totals(events: &[proto::UsageEvent]) -> BTreeMap<(String, String), BTreeMap<String, (Decimal, u64)>> {
    expected(events)
        .totals
        .into_iter()
        .map(|(key, t)| {
            (
                key,
                t.meters.into_iter().map(|(m, v)| (m, (v.charge, v.events))).collect(),
            )
        })
        .collect()
}

/// A deterministic mix of events over the test accounts, every meter of both plans, with about
/// `dup_ratio` of them resends of earlier events (same id, same content), dated within the day
/// before [`test_now`] (for in-process daemons, whose clock is pinned there).
pub fn generate(n: usize, dup_ratio: f64, seed: u64) -> Vec<proto::UsageEvent> {
    generate_at(n, dup_ratio, seed, test_now())
}

/// As [`generate`], dated within the day before `now` ([`safe_now`] for the built binary).
pub fn generate_at(n: usize, dup_ratio: f64, seed: u64, now: DateTime<Utc>) -> Vec<proto::UsageEvent> {
    let mut rng = seed.max(1);
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
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

/// Asserts the daemon's committed totals equal the reference pricer's for every account-period
/// of `events`: currency, plan, per meter quantity, rated quantity, charge, amount and events, the
/// exact total and the invoice amount.
pub async fn assert_totals_match(target: &str, events: &[proto::UsageEvent]) {
    assert_totals_match_with(target, &Reference::shipped(), events).await;
}

/// [`assert_totals_match`] against a given reference (another catalogue, more subscriptions).
pub async fn assert_totals_match_with(target: &str, reference: &Reference, events: &[proto::UsageEvent]) {
    let expected = reference.rate(events);
    assert!(!expected.totals.is_empty());
    for ((account, period), want) in &expected.totals {
        let got = totals_at(target, account, period)
            .await
            .unwrap_or_else(|| panic!("no totals for {account} {period}"));
        assert_totals_equal(reference, account, period, &got, want);
    }
}

/// One account-period's totals against the reference's.
pub fn assert_totals_equal(
    reference: &Reference,
    account: &str,
    period: &str,
    got: &proto::Totals,
    want: &reference::Totals,
) {
    let dec = |x: &str| x.parse::<Decimal>().unwrap_or_else(|e| panic!("{x:?}: {e}"));
    let what = format!("{account} {period}");
    assert_eq!(got.currency, want.currency, "{what} currency");
    assert_eq!(got.plan, want.plan, "{what} plan");
    let plan = reference.plan(&want.plan);
    for (meter, w) in &want.meters {
        let m = got
            .meters
            .iter()
            .find(|m| &m.meter == meter)
            .unwrap_or_else(|| panic!("{what}: no {meter}"));
        assert_eq!(dec(&m.charge), w.charge, "{what} {meter} charge");
        assert_eq!(dec(&m.amount), plan.amount(w.charge), "{what} {meter} amount");
        assert_eq!(dec(&m.quantity), w.quantity, "{what} {meter} quantity");
        assert_eq!(
            dec(&m.rated_quantity),
            w.rated_quantity,
            "{what} {meter} rated quantity"
        );
        assert_eq!(m.events, w.events, "{what} {meter} events");
    }
    assert_eq!(got.meters.len(), want.meters.len(), "{what} meters");
    assert_eq!(dec(&got.total_charge), want.total_charge, "{what} total");
    assert_eq!(dec(&got.total_amount), want.total_amount, "{what} invoice amount");
    // One plan, one currency: the per-currency and per-subscription figures say the same.
    let [c] = got.by_currency.as_slice() else {
        panic!("{what}: one currency expected, got {:?}", got.by_currency)
    };
    assert_eq!(
        (c.currency.as_str(), dec(&c.total_charge), dec(&c.total_amount)),
        (want.currency.as_str(), want.total_charge, want.total_amount),
        "{what} by_currency"
    );
    let [part] = got.subscriptions.as_slice() else {
        panic!("{what}: one subscription expected, got {:?}", got.subscriptions)
    };
    assert_part_equal(reference, &what, part, want);
}

/// One plan's part of an account-period (`GetTotals.subscriptions`) against the reference.
pub fn assert_part_equal(reference: &Reference, what: &str, got: &proto::SubscriptionTotals, want: &reference::Totals) {
    let dec = |x: &str| x.parse::<Decimal>().unwrap_or_else(|e| panic!("{x:?}: {e}"));
    let what = format!("{what} plan {}", want.plan);
    assert_eq!(
        (got.plan.as_str(), got.currency.as_str()),
        (want.plan.as_str(), want.currency.as_str()),
        "{what}"
    );
    let plan = reference.plan(&want.plan);
    let got_meters: BTreeMap<&str, (Decimal, Decimal, Decimal, u64)> = got
        .meters
        .iter()
        .map(|m| {
            (
                m.meter.as_str(),
                (dec(&m.quantity), dec(&m.rated_quantity), dec(&m.charge), m.events),
            )
        })
        .collect();
    let want_meters: BTreeMap<&str, (Decimal, Decimal, Decimal, u64)> = want
        .meters
        .iter()
        .map(|(k, m)| (k.as_str(), (m.quantity, m.rated_quantity, m.charge, m.events)))
        .collect();
    assert_eq!(got_meters, want_meters, "{what} meters");
    assert_eq!(dec(&got.total_charge), want.total_charge, "{what} total");
    assert_eq!(dec(&got.total_amount), plan.amount(want.total_charge), "{what} amount");
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
            // Under scripts/test-at.sh the clock of every process is faked by an LD_PRELOAD
            // library, which redis-server's allocator does not survive; Redis's own clock plays
            // no part in these tests (ratingd writes every timestamp it holds).
            .env_remove("LD_PRELOAD")
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

/// GET /metrics with a plain HTTP/1.0 request (bounded by a read timeout); the samples by
/// `name{labels}`.
pub fn scrape_metrics(addr: &str) -> std::collections::HashMap<String, f64> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .expect("the scrape answers within 10 s");
    text.lines()
        .filter(|l| l.starts_with("ratingd_"))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Runs `command` to completion with its output captured, for at most `seconds`: one that takes
/// longer is killed and fails the test, naming it.
pub fn output_within(command: &mut Command, seconds: u64) -> std::process::Output {
    let what = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    );
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {seconds} s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    std::process::Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Opens a data dir this process just closed. sled's I/O threads can still hold its file lock for
/// a moment after the last handle is dropped (a new process never sees this: the lock goes with
/// the old one), so a lock refusal is retried until it is released, for at most 10 s.
pub fn reopen(path: &std::path::Path) -> ratingd::store::Store {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match ratingd::store::Store::open(path) {
            Ok(store) => return store,
            Err(e) if e.to_string().contains("could not acquire lock") && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("reopening {}: {e}", path.display()),
        }
    }
}

/// Every rated record of `account` (with an event time from `from` on, when given), all pages.
pub async fn records_from(target: &str, account: &str, from: Option<DateTime<Utc>>) -> Vec<proto::RatedRecord> {
    let mut q = proto::query_client::QueryClient::new(channel(target).await);
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = q
            .list_rated_records(proto::ListRatedRecordsRequest {
                account_id: account.into(),
                from: from.map(|f| f.to_rfc3339()).unwrap_or_default(),
                page_size: 1000,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        out.extend(page.records);
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

/// Every entry of `account`'s balance ledger, all pages.
pub async fn ledger_of(target: &str, account: &str) -> Vec<proto::LedgerEntry> {
    let mut q = proto::query_client::QueryClient::new(channel(target).await);
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = q
            .list_ledger(proto::ListLedgerRequest {
                account_id: account.into(),
                page_size: 1000,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        out.extend(page.entries);
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

/// Every suspense entry with `reason`, all pages.
pub async fn suspended(target: &str, reason: proto::RejectReason) -> Vec<proto::SuspendedEvent> {
    let mut admin = proto::admin_client::AdminClient::new(channel(target).await);
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = admin
            .list_suspense(proto::ListSuspenseRequest {
                reason: reason as i32,
                page_size: 1000,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        all.extend(page.events);
        if page.next_page_token.is_empty() {
            return all;
        }
        token = page.next_page_token;
    }
}
