//! TLS on the gRPC listener (rustls through tonic), optional client certificates checked against
//! a CA (mutual TLS), and the rule that keeps plaintext on loopback.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// The PEM files of `[tls]`, read when the config is loaded.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// With it, clients must present a certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    client_ca_pem: Option<Vec<u8>>,
    handshake_timeout: Duration,
}

fn read(what: &str, path: &Path, errors: &mut Vec<String>) -> Vec<u8> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.windows(11).any(|w| w == b"-----BEGIN ") => bytes,
        Ok(_) => {
            errors.push(format!("{what}: {} is not a PEM file", path.display()));
            Vec::new()
        }
        Err(e) => {
            errors.push(format!("{what}: cannot read {}: {e}", path.display()));
            Vec::new()
        }
    }
}

impl TlsFiles {
    /// Reads the files; every problem goes to `errors` with its config key.
    pub fn load(
        cert: PathBuf,
        key: PathBuf,
        client_ca: Option<PathBuf>,
        handshake_timeout: Duration,
        errors: &mut Vec<String>,
    ) -> TlsFiles {
        let before = errors.len();
        let cert_pem = read("tls.cert", &cert, errors);
        let key_pem = read("tls.key", &key, errors);
        let client_ca_pem = client_ca.as_deref().map(|p| read("tls.client_ca", p, errors));
        let files = TlsFiles {
            cert,
            key,
            client_ca,
            cert_pem,
            key_pem,
            client_ca_pem,
            handshake_timeout,
        };
        if errors.len() == before
            && let Err(e) = tonic::transport::Server::builder().tls_config(files.server_config())
        {
            errors.push(format!("tls: the certificate, key or CA is not usable: {e}"));
        }
        files
    }

    /// tonic's server TLS settings: the identity, and when a CA is given, required client
    /// certificates signed by it.
    pub fn server_config(&self) -> ServerTlsConfig {
        let config = ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .timeout(self.handshake_timeout);
        match &self.client_ca_pem {
            Some(ca) => config
                .client_ca_root(Certificate::from_pem(ca))
                .client_auth_optional(false),
            None => config,
        }
    }
}

/// Plaintext is allowed on loopback; elsewhere only with `allow_plaintext_non_loopback = true`.
pub fn plaintext_refused(listen: SocketAddr, tls: bool, allow_plaintext_non_loopback: bool) -> bool {
    !tls && !listen.ip().is_loopback() && !allow_plaintext_non_loopback
}
