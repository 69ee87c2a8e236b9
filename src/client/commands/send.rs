//! `ratectl send`: a usage file (JSONL, or CSV when the name ends in .csv) to ratingd, in batches
//! on one stream, resending what was not acknowledged, with a progress bar and a summary.

use std::path::PathBuf;

use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};

use crate::client::connect::Access;
use crate::client::mapping::Mapping;
use crate::client::output::{Failure, Printed};
use crate::client::send::{SendOptions, send_all};
use crate::client::usage_file;
use crate::wire::proto;

#[derive(clap::Args)]
pub struct SendArgs {
    #[arg(long)]
    file: PathBuf,
    /// Events per batch.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Batches in flight on the stream.
    #[arg(long, default_value_t = 16)]
    in_flight: usize,
    /// Consecutive failed attempts before giving up (unacknowledged batches are resent each time).
    #[arg(long, default_value_t = 10)]
    retries: u32,
    /// Shift every timestamp by whole days so the file's last event falls on yesterday (UTC),
    /// keeping each event's time of day: replays a sample file as recent usage. The same on every
    /// send during one day, so a resend is recognized as a duplicate.
    #[arg(long)]
    rebase_days: bool,
    /// The file's format; by default CSV when the name ends in .csv, else JSONL.
    #[arg(long, value_enum)]
    format: Option<FileFormat>,
    /// A CSV file with its own columns: which column is which field, the timestamp's format and
    /// zone, a factor for the quantity's unit, constant attributes (docs/mediation.md).
    #[arg(long)]
    mapping: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FileFormat {
    Csv,
    Jsonl,
}

pub async fn run(args: &SendArgs, access: &Access) -> Result<Printed, Failure> {
    if args.batch == 0 || args.in_flight == 0 {
        return Err(Failure::new("--batch and --in-flight must be at least 1"));
    }
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| Failure::new(format!("cannot read {}: {e}", args.file.display())))?;
    let name = args.file.to_string_lossy();
    let csv = args.format.map_or(name.ends_with(".csv"), |f| f == FileFormat::Csv);
    let parsed = match &args.mapping {
        Some(path) if csv => {
            let mapping_text = std::fs::read_to_string(path)
                .map_err(|e| Failure::new(format!("cannot read {}: {e}", path.display())))?;
            let mapping = Mapping::parse(&mapping_text).map_err(|e| {
                let lines: Vec<String> = e.0.iter().map(|l| format!("{}: {l}", path.display())).collect();
                Failure::new(lines.join("\n"))
            })?;
            mapping.read(&text)
        }
        Some(_) => {
            return Err(Failure::new(
                "--mapping reads CSV files: give --format csv (or a .csv file)",
            ));
        }
        None if csv => usage_file::parse_csv(&text),
        None => usage_file::parse_jsonl(&text),
    };
    let mut events = parsed.map_err(|e| Failure::new(format!("{name}: {e}")))?;
    if args.rebase_days {
        usage_file::rebase_days(&mut events, Utc::now());
    }
    let total = events.len() as u64;
    let mut batches = Vec::with_capacity(events.len() / args.batch + 1);
    let mut events = events.into_iter().peekable();
    let mut batch_id = 0u64;
    while events.peek().is_some() {
        batches.push(proto::UsageBatch {
            batch_id,
            events: events.by_ref().take(args.batch).collect(),
        });
        batch_id += 1;
    }
    // Drawn only on a terminal (indicatif hides itself otherwise).
    let progress = ProgressBar::new(total);
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} events {per_sec} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let options = SendOptions {
        access: access.clone(),
        in_flight: args.in_flight,
        retries: args.retries,
        max_message_bytes: 64 << 20,
    };
    let summary = send_all(&options, batches, &progress)
        .await
        .map_err(|e| Failure::new(e.to_string()))?;
    progress.finish_and_clear();
    let rejected: u64 = summary.rejected.values().sum();
    let dropped: u64 = summary.dropped.values().sum();
    let mut lines = vec![format!(
        "sent {}: accepted {}, duplicate {}, rejected {rejected}{}",
        summary.sent,
        summary.accepted,
        summary.duplicate,
        if dropped > 0 {
            format!(", dropped {dropped}")
        } else {
            String::new()
        }
    )];
    for (reason, n) in &summary.rejected {
        lines.push(format!("  rejected {reason}: {n}"));
    }
    for (rule, n) in &summary.dropped {
        lines.push(format!("  dropped by rule {rule}: {n}"));
    }
    // Serialized from the struct: its fields in their order (sent, accepted, duplicate, rejected,
    // dropped).
    let json = serde_json::to_string(&summary).unwrap_or_default();
    Ok(Printed::new(lines, json))
}
