//! `ratingd`: args -> config -> run. Exits 64 on a bad configuration.
//!
//! This build loads and validates the configuration and the tariff catalogue it names; the gRPC
//! ingest service, storage and the rest of the daemon are added on top of this start-up path.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ratingd::config::Config;

/// Usage rating and mediation daemon.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file.
    #[arg(long, default_value = "config/ratingd.toml")]
    config: PathBuf,
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
    println!(
        "ratingd {}: configuration {} is valid: {} plans, {} meters, {} subscriptions (tariffs {})",
        env!("CARGO_PKG_VERSION"),
        config.path.display(),
        config.catalogue.plans().len(),
        config.catalogue.meters().count(),
        config.subscriptions.len(),
        config.tariffs_path.display(),
    );
    println!("ratingd: this build rates offline only (ratectl tariffs quote); it does not serve gRPC yet");
    ExitCode::SUCCESS
}
