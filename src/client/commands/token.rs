//! `ratectl token hash|new`: bearer tokens for the `[[tokens]]` of ratingd's config (offline).

use serde_json::json;

use crate::client::output::{Failure, Printed};

#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Read a token from standard input (so it stays out of shell history) and print its SHA-256,
    /// the value of `sha256` in the config.
    Hash,
    /// Make a new random token (256 bits, hex); print it and its SHA-256.
    New,
}

use crate::limits::MIN_TOKEN_BYTES;

pub fn run(command: &TokenCommand) -> Result<Printed, Failure> {
    match command {
        TokenCommand::Hash => hash(),
        TokenCommand::New => new(),
    }
}

fn hash() -> Result<Printed, Failure> {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
        .map_err(|e| Failure::new(format!("cannot read the token from standard input: {e}")))?;
    // One trailing line end (from echo or a file) is not part of the token.
    let token = text.strip_suffix('\n').unwrap_or(&text);
    let token = token.strip_suffix('\r').unwrap_or(token);
    if token.len() < MIN_TOKEN_BYTES || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Failure::new(format!(
            "a token must be at least {MIN_TOKEN_BYTES} characters without spaces (`ratectl token new` makes one)"
        )));
    }
    let hash = crate::security::auth::hash_hex(token);
    Ok(Printed::line(hash.clone(), json!({ "sha256": hash })))
}

fn new() -> Result<Printed, Failure> {
    let token = crate::domain::hex::hex(&crate::security::random_bytes::<32>());
    let hash = crate::security::auth::hash_hex(&token);
    Ok(Printed::new(
        vec![format!("token:  {token}"), format!("sha256: {hash}")],
        json!({ "token": token, "sha256": hash }),
    ))
}
