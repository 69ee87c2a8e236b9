//! The spool directory (`[mediation.spool]`, docs/mediation.md): CDR files that systems without
//! gRPC drop into a directory, read exactly once. Every poll takes the `*.jsonl` and `*.csv` files
//! of the directory in name order (other names, such as a `.part` still being written, are left
//! alone). A file's events go through the pipeline's door in batches; its lines that are not
//! events go to suspense with the file name and line number; only when all of it is acknowledged
//! (durable) does the file move to `done/`. A crash before that move reads the file again: its
//! events are then DUPLICATE, charged once. A file that cannot be read as a whole (not UTF-8, a
//! CSV header without a required column) moves to `failed/` with a report beside it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::shutdown::Shutdown;
use tracing::{info, warn};

use crate::config::SpoolConfig;
use crate::domain::usage::{RawEvent, RejectReason, Rejected};
use crate::pipeline::{Pipeline, PipelineError};
use crate::wire::convert::raw_event;
use crate::wire::mapping::Mapping;
use crate::wire::usage_file::{Lines, lines_csv, lines_jsonl};

use crate::limits::BAD_LINE_TEXT_BYTES;

/// Why the spool cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("mediation.spool: cannot create {path}: {error}")]
    Dir { path: String, error: std::io::Error },
    #[error("mediation.spool.mapping: {0}")]
    Mapping(String),
}

/// A spool ready to run: its directories exist and its mapping is read.
pub struct Spool {
    settings: SpoolConfig,
    mapping: Option<Mapping>,
}

/// What became of one file.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    accepted: u32,
    duplicate: u32,
    rejected: u32,
    dropped: u32,
    bad_lines: u32,
}

impl Spool {
    /// Checks the settings: creates `done/` and `failed/`, reads the mapping.
    pub fn new(settings: SpoolConfig) -> Result<Spool, SpoolError> {
        for dir in [settings.dir.join("done"), settings.dir.join("failed")] {
            std::fs::create_dir_all(&dir).map_err(|error| SpoolError::Dir {
                path: dir.display().to_string(),
                error,
            })?;
        }
        let mapping = match &settings.mapping {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| SpoolError::Mapping(format!("cannot read {}: {e}", path.display())))?;
                Some(Mapping::parse(&text).map_err(|e| SpoolError::Mapping(format!("{}: {e}", path.display())))?)
            }
        };
        Ok(Spool { settings, mapping })
    }

    /// Polls the directory until the daemon stops.
    pub async fn run(self, pipeline: Arc<Pipeline>, mut shutdown: Shutdown) {
        let interval = std::time::Duration::from_millis(self.settings.poll_interval_ms);
        loop {
            if shutdown.is_started() {
                return;
            }
            for path in self.waiting() {
                match self.take(&pipeline, &path).await {
                    Ok(()) => {}
                    // Nothing moved: the file is read again once ratingd takes work again.
                    Err(error) => {
                        warn!(%error, file = %path.display(), "spool file left in place");
                        break;
                    }
                }
                if shutdown.is_started() {
                    return;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = shutdown.started() => return,
            }
        }
    }

    /// The files waiting, in name order.
    fn waiting(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.settings.dir) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl" || x == "csv"))
            .collect();
        files.sort();
        files
    }

    /// Reads one file through the pipeline and moves it to `done/` or `failed/`.
    async fn take(&self, pipeline: &Pipeline, path: &Path) -> Result<(), PipelineError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let (text, lines) = match self.read(path, &name).await {
            Ok(read) => read,
            Err(why) => {
                self.fail(path, &name, &why);
                return Ok(());
            }
        };
        match self.send(pipeline, &name, &text, lines).await {
            Ok(counts) => self.done(path, &name, counts),
            // The records of an account in this file cannot be trusted: not this file's fault,
            // but it cannot be read until the data dir is restored.
            Err(error @ PipelineError::Damaged { .. }) => self.fail(path, &name, &error.to_string()),
            Err(error) => return Err(error),
        }
        Ok(())
    }

    /// A file's text and its lines, or why it cannot be read as a whole.
    async fn read(&self, path: &Path, name: &str) -> Result<(String, Lines), String> {
        // Off the runtime's threads: a day's CDR file is megabytes.
        let owned = path.to_path_buf();
        let bytes = tokio::task::spawn_blocking(move || std::fs::read(owned))
            .await
            .map_err(|e| format!("cannot read: {e}"))?
            .map_err(|e| format!("cannot read: {e}"))?;
        let text = String::from_utf8(bytes).map_err(|_| "the file is not UTF-8 text".to_string())?;
        let lines = if name.ends_with(".jsonl") {
            lines_jsonl(&text)
        } else if let Some(mapping) = &self.mapping {
            mapping.lines(&text).map_err(|e| e.to_string())?
        } else {
            lines_csv(&text).map_err(|e| e.to_string())?
        };
        Ok((text, lines))
    }

    /// Sends a file's events in batches and its bad lines to suspense; every part acknowledged.
    async fn send(&self, pipeline: &Pipeline, name: &str, text: &str, lines: Lines) -> Result<Counts, PipelineError> {
        let texts: Vec<&str> = text.lines().collect();
        let now = pipeline.clock().now().timestamp_nanos_opt().unwrap_or(0);
        let mut events = Vec::with_capacity(lines.len());
        let mut bad = Vec::new();
        for (n, line) in lines {
            match line {
                Ok(event) => events.push(raw_event(event)),
                Err(why) => bad.push(bad_line(name, n, texts.get(n - 1).copied().unwrap_or(""), why, now)),
            }
        }
        let mut counts = Counts {
            bad_lines: bad.len() as u32,
            ..Counts::default()
        };
        // Batch ids from the file name: they only name batches in logs.
        let base = xxhash_rust::xxh3::xxh3_64(name.as_bytes()) & !0xFFFF_FFFF;
        let size = self.settings.batch_events.max(1);
        for (k, chunk) in events.chunks(size).enumerate() {
            let ack = pipeline
                .intake(base | k as u64, chunk.iter().cloned(), None)
                .await?
                .ack()
                .await?;
            counts.accepted += ack.accepted;
            counts.duplicate += ack.duplicate;
            counts.rejected += ack.rejected;
            counts.dropped += ack.dropped;
        }
        if !bad.is_empty() {
            pipeline.suspend(base | 0xFFFF_FFFF, bad).await?.ack().await?;
            metrics::counter!(crate::telemetry::SPOOL_BAD_LINES).increment(u64::from(counts.bad_lines));
        }
        Ok(counts)
    }

    fn done(&self, path: &Path, name: &str, c: Counts) {
        match move_into(path, &self.settings.dir.join("done"), name) {
            Ok(to) => {
                metrics::counter!(crate::telemetry::SPOOL_FILES, "outcome" => "done").increment(1);
                info!(
                    file = name,
                    accepted = c.accepted,
                    duplicate = c.duplicate,
                    rejected = c.rejected,
                    dropped = c.dropped,
                    bad_lines = c.bad_lines,
                    to = %to.display(),
                    "spool file read"
                );
            }
            // Read again at the next poll: every event of it a DUPLICATE then.
            Err(error) => warn!(file = name, %error, "spool file read but not moved to done/"),
        }
    }

    /// Moves a file that cannot be read to `failed/` and writes why beside it.
    fn fail(&self, path: &Path, name: &str, why: &str) {
        let failed = self.settings.dir.join("failed");
        match move_into(path, &failed, name) {
            Ok(to) => {
                metrics::counter!(crate::telemetry::SPOOL_FILES, "outcome" => "failed").increment(1);
                let report = format!(
                    "{name}: not read at {}: {why}\nFix the file and put it back into the spool directory.\n",
                    chrono::Utc::now().to_rfc3339()
                );
                let mut report_path = to.into_os_string();
                report_path.push(".report");
                if let Err(error) = std::fs::write(&report_path, report) {
                    warn!(file = name, %error, "spool report not written");
                }
                warn!(file = name, why, "spool file moved to failed/");
            }
            Err(error) => warn!(file = name, %error, why, "spool file could not be moved to failed/"),
        }
    }
}

/// Moves `path` into `dir` under its name, or under its name and a time suffix when a file of that
/// name is there already (a file sent twice); returns where it went.
fn move_into(path: &Path, dir: &Path, name: &str) -> std::io::Result<PathBuf> {
    let mut to = dir.join(name);
    if to.exists() {
        to = dir.join(format!(
            "{name}.{}",
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
        ));
    }
    std::fs::rename(path, &to)?;
    Ok(to)
}

/// The suspense entry of a line that is not an event: named by file and line, its text kept.
fn bad_line(name: &str, n: usize, text: &str, why: String, now_nanos: i64) -> Rejected {
    let mut cut = text.len().min(BAD_LINE_TEXT_BYTES);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    Rejected {
        event: RawEvent {
            event_id: format!("{name}:{n}"),
            account_id: String::new(),
            meter: String::new(),
            quantity: None,
            timestamp_unix_nanos: 0,
            attributes: vec![
                ("spool_file".into(), name.to_string()),
                ("spool_line".into(), n.to_string()),
                ("text".into(), text[..cut].to_string()),
            ],
        },
        reason: RejectReason::InvalidField,
        detail: format!("spool file {name} line {n}: {why}"),
        received_unix_nanos: now_nanos,
    }
}
