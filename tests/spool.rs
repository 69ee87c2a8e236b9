//! The spool directory (docs/mediation.md, "The spool directory"): a JSONL file with bad lines is
//! read once (its events rated, each bad line in suspense with the file name and line number, the
//! file in done/); the same file dropped again is all DUPLICATE; a CSV file through a mapping; a
//! CSV file without a required column goes to failed/ with a report; files still being written
//! (another extension) are left alone. The daemon's clock is pinned to 2026-11-18 12:00 UTC.

mod common;

use std::path::Path;

use common::*;
use ratingd::wire::proto;

fn config(dir: &TempDir, extra: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let spool = dir.0.join("spool");
    let text = format!(
        "[mediation.spool]\ndir = {:?}\npoll_interval_ms = 20\nbatch_events = 2\n{extra}",
        spool.display().to_string()
    );
    (write_config(&dir.0, &text), spool)
}

/// Drops a file into the spool as a writer should: written under another name, then renamed.
fn drop_file(spool: &Path, name: &str, text: &str) {
    let part = spool.join(format!("{name}.part"));
    std::fs::write(&part, text).unwrap();
    std::fs::rename(&part, spool.join(name)).unwrap();
}

async fn wait_for(path: std::path::PathBuf) {
    wait_until(20, &format!("{} to appear", path.display()), || {
        let path = path.clone();
        async move { path.exists() }
    })
    .await;
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_file_with_bad_lines_is_read_once_and_its_bad_lines_wait_in_suspense() {
    let dir = TempDir::new("spool-jsonl");
    let (config, spool) = config(&dir, "");
    let d = TestDaemon::start(&config).await;
    let line = |id: &str, account: &str, q: &str| {
        format!(
            "{{\"event_id\":\"{id}\",\"account\":\"{account}\",\"meter\":\"api.requests\",\"quantity\":\"{q}\",\"timestamp\":\"2026-11-18T10:00:00Z\"}}"
        )
    };
    let text = [
        line("s-1", "saas-1", "100"),
        "{not json".to_string(),
        line("s-2", "saas-1", "50"),
        String::new(),
        "{\"event_id\":\"s-3\",\"account\":\"saas-1\"}".to_string(),
        line("s-4", "saas-2", "7"),
    ]
    .join("\n");
    // Still being written: not read.
    std::fs::write(spool.join("cdr-2.jsonl.part"), &text).unwrap();
    drop_file(&spool, "cdr-1.jsonl", &text);
    wait_for(spool.join("done/cdr-1.jsonl")).await;
    assert_eq!(names(&spool), ["cdr-2.jsonl.part", "done", "failed"]);

    let t = d.totals("saas-1", "2026-11").await.unwrap();
    assert_eq!(t.meters[0].quantity, "150");
    assert_eq!(records_from(&d.target, "saas-2", None).await.len(), 1);
    let bad = suspended(&d.target, proto::RejectReason::InvalidField).await;
    let mut details: Vec<&str> = bad.iter().map(|e| e.detail.as_str()).collect();
    details.sort();
    assert_eq!(details.len(), 2, "{details:?}");
    assert!(details[0].starts_with("spool file cdr-1.jsonl line 2: "), "{details:?}");
    assert_eq!(details[1], "spool file cdr-1.jsonl line 5: `meter` must be a string");
    let line5 = bad
        .iter()
        .find(|e| e.detail.contains("line 5"))
        .unwrap()
        .event
        .as_ref()
        .unwrap();
    assert_eq!(line5.event_id, "cdr-1.jsonl:5");
    assert!(
        line5
            .attributes
            .iter()
            .any(|a| a.key == "text" && a.value.contains("\"s-3\""))
    );

    // The same file again (an agent's retry): read, moved beside the first, every event a
    // duplicate, nothing charged twice.
    drop_file(&spool, "cdr-1.jsonl", &text);
    wait_until(20, "the second copy to be read", || {
        let done = spool.join("done");
        async move { names(&done).len() == 2 }
    })
    .await;
    assert_eq!(d.totals("saas-1", "2026-11").await.unwrap().meters[0].quantity, "150");
    d.stop().await;
}

#[tokio::test]
async fn csv_files_are_read_through_a_mapping_and_a_bad_file_goes_to_failed() {
    let dir = TempDir::new("spool-csv");
    let mapping = dir.0.join("switch.toml");
    std::fs::write(
        &mapping,
        "event_id = \"ref\"\naccount = \"subscriber\"\nmeter_constant = \"voice.seconds\"\nquantity = \"ms\"\n\
         timestamp = \"start\"\ntimestamp_format = \"%d.%m.%Y %H:%M:%S\"\ntime_zone = \"Europe/Berlin\"\n\
         quantity_multiply = \"0.001\"\ndelimiter = \";\"\n[attributes]\ndestination = \"called\"\n",
    )
    .unwrap();
    let (config, spool) = config(&dir, &format!("mapping = {:?}\n", mapping.display().to_string()));
    let d = TestDaemon::start(&config).await;
    drop_file(
        &spool,
        "sw-1.csv",
        "ref;subscriber;called;start;ms\nr-1;tel-5;+441632960000;18.11.2026 12:30:00;61500\nr-2;tel-5;+44;18.11.2026 xx;1000\n",
    );
    drop_file(
        &spool,
        "sw-2.csv",
        "ref;subscriber;start;ms\nr-3;tel-5;18.11.2026 12:30:00;1000\n",
    );
    wait_for(spool.join("done/sw-1.csv")).await;
    wait_for(spool.join("failed/sw-2.csv.report")).await;
    let records = records_from(&d.target, "tel-5", None).await;
    assert_eq!(records.len(), 1);
    assert_eq!(
        (records[0].quantity.as_str(), records[0].timestamp.as_str()),
        ("61.5", "2026-11-18T11:30:00+00:00")
    );
    let bad = suspended(&d.target, proto::RejectReason::InvalidField).await;
    assert_eq!(bad.len(), 1);
    assert!(
        bad[0]
            .detail
            .starts_with("spool file sw-1.csv line 3: timestamp \"18.11.2026 xx\""),
        "{}",
        bad[0].detail
    );
    assert!(spool.join("failed/sw-2.csv").exists());
    let report = std::fs::read_to_string(spool.join("failed/sw-2.csv.report")).unwrap();
    assert!(report.contains("column \"called\" is not in the header"), "{report}");
    d.stop().await;
}

#[test]
fn spool_settings_are_checked() {
    let dir = TempDir::new("spool-config");
    let spool = dir.0.join("spool");
    let config = write_config(
        &dir.0,
        &format!(
            "[mediation.spool]\ndir = {:?}\npoll_interval_ms = 0\nbatch_events = 0\n",
            spool.display().to_string()
        ),
    );
    let errors = ratingd::config::Config::load(&config).expect_err("refused").0;
    assert_eq!(
        errors,
        [
            "mediation.spool.poll_interval_ms: must be at least 1",
            "mediation.spool.batch_events: must be 1..=10000 (limits.max_batch_events)",
        ]
    );
}
