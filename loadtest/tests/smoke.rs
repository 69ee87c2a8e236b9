//! The load generator cannot rot: it runs a few thousand events against an in-process ratingd
//! (every acknowledgement checked) and against its own sink, and fails clearly on a dead target.
//! No timings are asserted here; figures belong in BENCHMARKS.md.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ratingd::wire::proto;

/// Runs loadtest to completion, for at most 5 minutes (a hung run is killed and fails the test).
fn loadtest(args: &[String]) -> (i32, String, String) {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("loadtest runs");
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            panic!("loadtest {args:?} did not finish within 300 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    (
        status.code().unwrap_or(-1),
        stdout.join().unwrap(),
        stderr.join().unwrap(),
    )
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ratingd-loadtest-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn config(dir: &Path) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let text = format!(
        "listen = \"127.0.0.1:0\"\nmetrics_listen = \"\"\ndata_dir = {:?}\nshards = 2\ntariffs = {:?}\n\
         [redis]\nurl = \"redis://127.0.0.1:1\"\n",
        dir.join("data").display().to_string(),
        repo.join("config/tariffs.toml").display().to_string(),
    );
    let path = dir.join("ratingd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn summary(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("one JSON object ({e}): {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ack_matches_against_ratingd() {
    let dir = temp_dir("daemon");
    let config = ratingd::config::Config::load(&config(&dir)).unwrap();
    let running = ratingd::app::start(&config).await.expect("daemon starts");
    let target = format!("http://{}", running.addr);
    let run = args(&[
        "run",
        "--target",
        &target,
        "--events",
        "4000",
        "--batch",
        "100",
        "--streams",
        "2",
        "--in-flight",
        "4",
        "--accounts",
        "300",
        "--zipf",
        "1.1",
        "--dup-ratio",
        "0.2",
        "--invalid-ratio",
        "0.05",
        "--seed",
        "9",
        "--json",
    ]);
    let started = chrono::Utc::now();
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || loadtest(&run)).await.unwrap();
    assert_eq!(code, 0, "loadtest failed: {stderr}{stdout}");
    let s = summary(&stdout);
    assert_eq!(s["mode"], "ratingd");
    assert_eq!(s["mismatched_acks"], 0);
    assert_eq!(s["acked_events"], 4000);
    let (accepted, duplicate, rejected) = (
        s["accepted"].as_u64().unwrap(),
        s["duplicate"].as_u64().unwrap(),
        s["rejected"].as_u64().unwrap(),
    );
    assert_eq!(accepted + duplicate + rejected, 4000);
    assert!(duplicate > 200, "{duplicate} resends acknowledged as DUPLICATE");
    assert!(rejected > 50, "{rejected} invalid events REJECTED");
    assert!(
        s["rejected_by_reason"].get("NO_TARIFF").is_none(),
        "every account was subscribed: {s}"
    );
    for key in ["events_per_sec", "p50_ms", "p99_ms", "p999_ms"] {
        assert!(s[key].as_f64().is_some(), "{key} in {s}");
    }
    // What loadtest counted as accepted is what ratingd rated, exactly. Its events fall in the
    // hour before the run; half the accounts bill by UTC months and half by Berlin months, so the
    // periods to read are the months of the run's first hour and of its end in both zones (one
    // label in all but the first hours of a month).
    let mut labels: Vec<String> = [started - chrono::Duration::minutes(70), chrono::Utc::now()]
        .iter()
        .flat_map(|t| {
            [
                t.format("%Y-%m").to_string(),
                t.with_timezone(&chrono_tz::Europe::Berlin).format("%Y-%m").to_string(),
            ]
        })
        .collect();
    labels.sort();
    labels.dedup();
    let mut query = proto::query_client::QueryClient::connect(target.clone()).await.unwrap();
    let mut events = 0u64;
    for n in 0..300 {
        for period in &labels {
            let request = proto::GetTotalsRequest {
                account_id: format!("lt-{n:06}"),
                period: period.clone(),
                meter: String::new(),
            };
            match query.get_totals(request).await {
                Ok(totals) => events += totals.into_inner().meters.iter().map(|m| m.events).sum::<u64>(),
                Err(status) => assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}"),
            }
        }
    }
    assert_eq!(events, accepted, "rated events in {labels:?} vs accepted");
    running.shutdown();
    tokio::time::timeout(std::time::Duration::from_secs(60), running.wait())
        .await
        .expect("ratingd stops within 60 s")
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_sink_acknowledges_everything() {
    let mut sink = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["sink", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: the first line is read on a thread and waited for at most 60 s.
    let stdout = sink.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the sink says where it listens within 60 s");
    let addr = line
        .trim()
        .strip_prefix("sink listening on ")
        .expect("the sink says where it listens");
    let target = format!("http://{addr}");
    let (code, stdout, stderr) = loadtest(&args(&[
        "run",
        "--target",
        &target,
        "--events",
        "5000",
        "--batch",
        "250",
        "--accounts",
        "50",
        "--json",
    ]));
    // A fixed offered load for a fixed time: 20 batches of 100 per second for half a second.
    let (paced_code, paced_stdout, paced_stderr) = loadtest(&args(&[
        "run",
        "--target",
        &target,
        "--duration-s",
        "0.5",
        "--rate",
        "2000",
        "--batch",
        "100",
        "--streams",
        "1",
        "--accounts",
        "50",
        "--json",
    ]));
    sink.kill().unwrap();
    let _ = sink.wait();
    assert_eq!(code, 0, "{stderr}{stdout}");
    let s = summary(&stdout);
    assert_eq!(s["mode"], "sink");
    assert_eq!(s["accepted"], 5000);
    assert_eq!(s["batches"], 20);
    assert_eq!(paced_code, 0, "{paced_stderr}{paced_stdout}");
    let paced = summary(&paced_stdout);
    assert_eq!(paced["offered_rate"], 2000.0);
    // Batches are due every 50 ms from the start: 10 fall inside half a second (the last at 450 ms).
    assert_eq!(paced["batches"], 10, "{paced}");
    assert_eq!(paced["acked_events"], 1000);
}

#[test]
fn a_dead_target_is_a_clear_error() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = format!("http://127.0.0.1:{port}");
    let (code, stdout, stderr) = loadtest(&args(&[
        "run",
        "--target",
        &target,
        "--events",
        "10",
        "--connect-timeout-s",
        "2",
    ]));
    assert_eq!(code, 1, "{stdout}");
    assert!(stderr.contains("cannot connect to"), "{stderr}");
    assert!(stdout.is_empty());
}
