//! `ratingd`: args -> config -> telemetry -> app::start; exits 64 on a bad configuration.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ratingd::config::Config;
use tracing::{error, info, warn};

// Events are allocated on the gRPC threads and freed on the shard threads; glibc's allocator
// spent about a fifth of the daemon's CPU on that under load (BENCHMARKS.md, profile).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Usage rating and mediation daemon.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file.
    #[arg(long, default_value = "config/ratingd.toml")]
    config: PathBuf,
    /// Validate the configuration and the tariff catalogue, then exit.
    #[arg(long)]
    check: bool,
    /// Log format on standard error: `human`, or `json` (one object per line) for log shippers.
    /// The level comes from RUST_LOG, else `log_level` in the config.
    #[arg(long, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("ratingd: invalid configuration {}:\n{errors}", args.config.display());
            return ExitCode::from(64);
        }
    };
    if args.check {
        println!(
            "ratingd {}: configuration {} is valid: {} plans, {} meters, {} subscriptions (tariffs {})",
            env!("CARGO_PKG_VERSION"),
            config.path.display(),
            config.catalogue.plans().len(),
            config.catalogue.meters().count(),
            config.subscriptions.len(),
            config.tariffs_path.display(),
        );
        return ExitCode::SUCCESS;
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log_level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Human => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config))
}

async fn run(config: Config) -> ExitCode {
    let running = match ratingd::app::start(&config).await {
        Ok(r) => r,
        Err(e) => {
            error!(error = %e, "ratingd failed to start");
            return ExitCode::FAILURE;
        }
    };
    // The one line tests and scripts read to find the port (the listen address may be :0).
    println!("ratingd listening on {}", running.addr);
    wait_for_stop(&running, &config.path).await;
    info!(grace_seconds = config.shutdown_grace_seconds, "shutting down");
    running.shutdown();
    match tokio::time::timeout(
        Duration::from_secs(u64::from(config.shutdown_grace_seconds)),
        running.wait(),
    )
    .await
    {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            error!(error = %e, "ratingd stopped with an error");
            ExitCode::FAILURE
        }
        Err(_) => {
            warn!("grace period over before the drain finished; unacknowledged batches will be resent by agents");
            ExitCode::FAILURE
        }
    }
}

/// Waits for SIGTERM or Ctrl-C; reloads the tariffs and the tokens on every SIGHUP meanwhile.
async fn wait_for_stop(running: &ratingd::app::Running, config: &std::path::Path) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut hup)) = (signal(SignalKind::terminate()), signal(SignalKind::hangup())) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return,
                _ = term.recv() => return,
                _ = hup.recv() => {
                    // The outcome is logged by the reload itself; a refused file changes nothing.
                    let _ = running.admin.reload_tariffs().await;
                    let _ = running.reload_tokens(config);
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (running, config);
        let _ = tokio::signal::ctrl_c().await;
    }
}
