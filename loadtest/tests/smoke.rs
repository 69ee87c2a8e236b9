//! The load generator cannot rot: it runs a few thousand events against an in-process ratingd
//! (every acknowledgement checked) and against its own sink, and fails clearly on a dead target.
//! No timings are asserted here; figures belong in BENCHMARKS.md.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ratingd::ingest::proto;

fn loadtest(args: &[String]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .output()
        .expect("loadtest runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
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
    // What loadtest counted as accepted is what ratingd rated: the totals of the accounts it used
    // add up to the accepted events (a run straddling a month's start puts some in the last one).
    let mut query = proto::query_client::QueryClient::connect(target.clone()).await.unwrap();
    let period = chrono::Utc::now().format("%Y-%m").to_string();
    let mut events = 0u64;
    for n in 0..300 {
        let request = proto::GetTotalsRequest {
            account_id: format!("lt-{n:06}"),
            period: period.clone(),
            meter: String::new(),
        };
        if let Ok(totals) = query.get_totals(request).await {
            events += totals.into_inner().meters.iter().map(|m| m.events).sum::<u64>();
        }
    }
    assert!(
        events <= accepted && events + 200 >= accepted,
        "{events} rated vs {accepted} accepted"
    );
    running.shutdown();
    running.wait().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_sink_acknowledges_everything() {
    let mut sink = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["sink", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(sink.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
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
