//! How ratectl (and other clients built on this crate) reach ratingd: TLS when the target is
//! `https://` or a CA is given, an optional client certificate for mutual TLS, and the bearer
//! token on every call.

use std::path::PathBuf;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::limits::CONNECT_TIMEOUT;

/// Where one daemon is, and the credentials and trust to reach it.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// `http://host:port`, or `https://` for TLS (`--target`, `RATECTL_TARGET`).
    pub target: String,
    /// Sent as `authorization: Bearer <token>`.
    pub token: Option<String>,
    /// PEM CA that signed the daemon's certificate; implies TLS.
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate and key, for a daemon that requires them (mutual TLS).
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// Adds the bearer token to every request.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A channel with the token added to each call.
pub type Authed = InterceptedService<Channel, Bearer>;

fn read(what: &str, path: &PathBuf) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))
}

impl Access {
    /// The interceptor that adds this access's token.
    pub fn bearer(&self) -> Result<Bearer, String> {
        match &self.token {
            None => Ok(Bearer(None)),
            Some(t) => format!("Bearer {}", t.trim())
                .parse()
                .map(|v| Bearer(Some(v)))
                .map_err(|_| "the token holds characters not allowed in a header".to_string()),
        }
    }

    /// Connects to the target (`http://host:port`, or `https://` for TLS).
    pub async fn channel(&self) -> Result<Channel, String> {
        let target = self.target.as_str();
        let tls = target.starts_with("https://") || self.ca_cert.is_some();
        let uri = if tls && let Some(rest) = target.strip_prefix("http://") {
            format!("https://{rest}")
        } else {
            target.to_string()
        };
        let mut endpoint = Endpoint::from_shared(uri)
            .map_err(|e| format!("bad target {target:?}: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT);
        if tls {
            let mut config = ClientTlsConfig::new();
            match &self.ca_cert {
                Some(ca) => config = config.ca_certificate(Certificate::from_pem(read("CA certificate", ca)?)),
                None => {
                    return Err("an https:// target needs --ca-cert (the CA that signed ratingd's certificate)".into());
                }
            }
            match (&self.client_cert, &self.client_key) {
                (Some(cert), Some(key)) => {
                    config = config.identity(Identity::from_pem(
                        read("client certificate", cert)?,
                        read("client key", key)?,
                    ));
                }
                (None, None) => {}
                _ => return Err("--client-cert and --client-key go together".into()),
            }
            endpoint = endpoint
                .tls_config(config)
                .map_err(|e| format!("TLS settings for {target}: {e}"))?;
        }
        endpoint
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {target}: {}", error_chain(&e)))
    }

    /// A channel to the target with the token on every call.
    pub async fn authed(&self) -> Result<Authed, String> {
        let bearer = self.bearer()?;
        Ok(InterceptedService::new(self.channel().await?, bearer))
    }
}

/// An error and every cause under it, `: `-separated (a transport error's TLS or socket reason is
/// two levels down).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}
