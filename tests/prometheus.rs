//! Against a real Prometheus server (Debian's `prometheus`, installed by scripts/test.sh): it
//! scrapes ratingd, and its query API returns the number of events sent. `promtool check metrics`
//! accepts the scrape text (every metric described).

mod common;

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ratingd::wire::proto;

fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    // Bounded: a server that never finishes its answer fails this read instead of hanging it.
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    text.split_once("\r\n\r\n").map(|(_, body)| body.to_string())
}

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_events_sent() {
    let dir = TempDir::new("prometheus");
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let config = write_config(&dir.0, &format!("metrics_listen = \"{metrics_addr}\""));
    let daemon = DaemonProcess::spawn(&config);
    // The binary runs on the real clock: dates from safe_now(), in one open period.
    let events = generate_at(700, 0.0, 81, safe_now());
    let mut client = proto::ingest_client::IngestClient::new(common::channel(&daemon.target.clone()).await);
    for b in batches(&events, 100) {
        client.submit(b).await.unwrap();
    }

    // promtool: the exposition is well-formed and every metric has help text.
    let scrape = http_get(&metrics_addr, "/metrics").unwrap();
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (scripts/test.sh installs prometheus)");
    promtool.stdin.take().unwrap().write_all(scrape.as_bytes()).unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    let web = format!("127.0.0.1:{}", free_port());
    let prom_config = dir.0.join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!("global:\n  scrape_interval: 500ms\nscrape_configs:\n  - job_name: ratingd\n    static_configs:\n      - targets: [\"{metrics_addr}\"]\n"),
    )
    .unwrap();
    let _prometheus = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}", prom_config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.0.join("tsdb").display()))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is installed (scripts/test.sh installs it)"),
    );
    // Poll (bounded) until Prometheus has scraped the counter and answers with it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = http_get(&web, "/api/v1/query?query=ratingd_events_accepted_total");
        let value = answer
            .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok())
            .and_then(|v| v["data"]["result"][0]["value"][1].as_str().map(str::to_string));
        if value.as_deref() == Some("700") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus never reported 700 accepted events (last: {value:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
