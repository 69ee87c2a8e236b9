//! `loadtest`: the load generator and null sink for ratingd.
//!
//! The workspace member exists from the first commit so that the layout of SPEC section 1 is in
//! place; the generator (`loadtest run`) and the null sink (`loadtest sink`) come with the
//! performance work, once the gRPC ingest service exists to be loaded.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("loadtest: no subcommands yet; the generator arrives with the gRPC ingest service");
    ExitCode::from(64)
}
