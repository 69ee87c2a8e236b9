//! `loadtest`: the load generator (`loadtest run`), null sink (`loadtest sink`) and charging
//! session driver (`loadtest charge`) for ratingd.
//! How to measure with them: BENCHMARKS.md and `loadtest/run.sh`.

mod charge;
mod generate;
mod procstat;
mod run;
mod sink;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "loadtest", version, about = "Load generator and null sink for ratingd")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve ratingd.v1.Ingest, acknowledging every batch as all accepted (the stack's ceiling).
    Sink {
        #[arg(long, default_value = "127.0.0.1:50061")]
        listen: SocketAddr,
    },
    /// Send generated usage and check every acknowledgement.
    Run(RunArgs),
    /// Run charging sessions (Authorize, then Terminate) back to back, one prepaid account per
    /// worker: sessions per second and the latency of each call.
    Charge {
        #[arg(long)]
        target: String,
        #[arg(long, default_value_t = 100_000)]
        sessions: u64,
        /// Workers, each with its own account and one session at a time.
        #[arg(long, default_value_t = 16)]
        concurrency: u32,
    },
}

#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("amount").args(["events", "duration_s"]))]
struct RunArgs {
    /// ratingd (or sink) address, e.g. http://127.0.0.1:50051
    #[arg(long)]
    target: String,
    /// Total events to send (default 1,000,000 unless --duration-s is given).
    #[arg(long)]
    events: Option<u64>,
    /// Send for this many seconds instead of a fixed count.
    #[arg(long)]
    duration_s: Option<f64>,
    /// Offered load in events/s (all streams together); latency then counts from each batch's
    /// intended send time. Without it, as fast as acknowledgements allow.
    #[arg(long)]
    rate: Option<f64>,
    /// Events per batch.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Concurrent bidirectional streams, one connection each.
    #[arg(long, default_value_t = 2)]
    streams: u32,
    /// Batches in flight (sent, not yet acknowledged) per stream.
    #[arg(long, default_value_t = 8)]
    in_flight: usize,
    /// Distinct accounts; half on each example plan (subscribed through the Admin API first).
    #[arg(long, default_value_t = 100_000)]
    accounts: u64,
    /// Zipf exponent of the account choice (uniform when absent).
    #[arg(long)]
    zipf: Option<f64>,
    /// Share of events that are resends of earlier accepted events (expected DUPLICATE).
    #[arg(long, default_value_t = 0.1)]
    dup_ratio: f64,
    /// Share of events that are invalid on purpose (expected REJECTED).
    #[arg(long, default_value_t = 0.0)]
    invalid_ratio: f64,
    /// Event times are spread over this many hours before the start (older than the daemon's
    /// `dedupe_hot_hours`, they fill its dedupe window's cold tier). Every event must stay in an
    /// open billing period: past a closed one it is PERIOD_CLOSED and the run fails.
    #[arg(long, default_value_t = 1)]
    spread_hours: u32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
    /// Give up connecting after this many seconds.
    #[arg(long, default_value_t = 5.0)]
    connect_timeout_s: f64,
    /// The daemon's process id for its CPU and memory figures (found from the listening port
    /// when the target is on this machine).
    #[arg(long)]
    daemon_pid: Option<u32>,
    /// Subscribe the accounts as prepaid and top each up first (every record is then paid from
    /// its balance: the cost of prepaid ingest, docs/charging.md).
    #[arg(long)]
    prepaid: bool,
}

fn check_args(a: &RunArgs) -> Result<(), String> {
    let ratio = |name: &str, v: f64| {
        if (0.0..=1.0).contains(&v) {
            Ok(())
        } else {
            Err(format!("--{name} must be between 0 and 1"))
        }
    };
    ratio("dup-ratio", a.dup_ratio)?;
    ratio("invalid-ratio", a.invalid_ratio)?;
    if !(1..=34 * 24).contains(&a.spread_hours) {
        // Older events would be TOO_OLD for ratingd's default 35-day window.
        return Err("--spread-hours must be between 1 and 816 (34 days)".into());
    }
    if a.batch == 0 || a.streams == 0 || a.in_flight == 0 || a.accounts == 0 {
        return Err("--batch, --streams, --in-flight and --accounts must be at least 1".into());
    }
    if a.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err("--rate must be a positive number".into());
    }
    if a.duration_s.is_some_and(|d| !(d > 0.0 && d.is_finite())) {
        return Err("--duration-s must be a positive number".into());
    }
    if !(a.connect_timeout_s > 0.0 && a.connect_timeout_s.is_finite()) {
        return Err("--connect-timeout-s must be a positive number".into());
    }
    Ok(())
}

fn print_human(s: &serde_json::Value) {
    let n = |k: &str| s[k].as_f64().unwrap_or(0.0);
    println!(
        "{} events acknowledged in {:.3} s: {:.0} events/s ({})",
        s["acked_events"], s["elapsed_s"], s["events_per_sec"], s["mode"]
    );
    println!(
        "outcomes: {} accepted, {} duplicate, {} rejected {}",
        s["accepted"], s["duplicate"], s["rejected"], s["rejected_by_reason"]
    );
    println!(
        "ack latency ms: p50 {:.2}  p99 {:.2}  p999 {:.2}  max {:.2}",
        n("p50_ms"),
        n("p99_ms"),
        n("p999_ms"),
        n("max_ms")
    );
    println!(
        "backpressure: {} s blocked by flow control, {} s with every in-flight slot taken, {} late batches",
        s["backpressure"]["send_blocked_s"], s["backpressure"]["window_full_s"], s["late_batches"]
    );
    if let Some(d) = s["daemon"].as_object() {
        println!(
            "daemon pid {}: {} CPU s ({} cores), peak RSS {} MiB; loadtest {} CPU s",
            d["pid"], d["cpu_s"], d["cpu_cores"], d["peak_rss_mib"], s["loadtest_cpu_s"]
        );
    }
    if n("mismatched_acks") > 0.0 {
        println!(
            "MISMATCHED ACKS: {} (first: {})",
            s["mismatched_acks"], s["first_mismatch"]
        );
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadtest: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Sink { listen } => match runtime.block_on(sink::serve(listen)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("loadtest: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Charge {
            target,
            sessions,
            concurrency,
        } => {
            let plan = charge::ChargePlan {
                target,
                sessions,
                concurrency: concurrency.max(1),
            };
            match runtime.block_on(charge::run(plan)) {
                Ok(summary) => {
                    println!("{summary}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("loadtest: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run(args) => {
            if let Err(e) = check_args(&args) {
                eprintln!("loadtest: {e}");
                return ExitCode::from(2);
            }
            let plan = run::Plan {
                target: args.target,
                events: match (args.events, args.duration_s) {
                    (None, None) => Some(1_000_000),
                    (events, _) => events,
                },
                duration: args.duration_s.map(Duration::from_secs_f64),
                rate: args.rate,
                batch: args.batch,
                streams: args.streams,
                in_flight: args.in_flight,
                accounts: args.accounts,
                zipf: args.zipf,
                dup_ratio: args.dup_ratio,
                invalid_ratio: args.invalid_ratio,
                spread_hours: args.spread_hours,
                seed: args.seed,
                connect_timeout: Duration::from_secs_f64(args.connect_timeout_s),
                daemon_pid: args.daemon_pid,
                prepaid: args.prepaid,
            };
            match runtime.block_on(run::run(plan)) {
                Ok(report) => {
                    if args.json {
                        println!("{}", report.summary);
                    } else {
                        print_human(&report.summary);
                    }
                    if report.ok {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("loadtest: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
