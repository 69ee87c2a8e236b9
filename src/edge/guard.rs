//! The tower layer in front of every gRPC service.
//!
//! For each request, from its headers alone (the body is not read yet):
//! 1. the role the method needs (`Ingest` service: ingest, `Query`: read, `Admin`: admin; health
//!    and reflection need none);
//! 2. when tokens are configured, the bearer token: `UNAUTHENTICATED` without a valid one,
//!    `PERMISSION_DENIED` without the role; the caller ([`Principal`]) goes into the request's
//!    extensions for the account-scope checks of the handlers;
//! 3. unary calls get `limits.request_timeout_seconds` (`DEADLINE_EXCEEDED`), and a unary message
//!    over `limits.max_message_bytes`, which tonic refuses as `OUT_OF_RANGE` before any handler
//!    runs, is answered `RESOURCE_EXHAUSTED` like the streaming path.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{HeaderValue, Request, Response};
use tonic::Status;
use tonic::body::Body;

use super::ApiError;
use crate::security::auth::{AuthError, Principal, Role, TokenBook};
use crate::security::{Refused, refused};

/// Methods that stream requests: no request timeout for them.
const STREAMING: [&str; 3] = [
    "/ratingd.v1.Ingest/Stream",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
];

/// What tonic says when a decoded message is over the limit.
const TOO_LARGE: &str = "message length too large";

/// The role a method needs; `None` for health and reflection.
fn needed_role(path: &str) -> Option<Role> {
    if path.starts_with("/ratingd.v1.Ingest/") {
        Some(Role::Ingest)
    } else if path.starts_with("/ratingd.v1.Query/") {
        Some(Role::Read)
    } else if path.starts_with("/ratingd.v1.Admin/") {
        Some(Role::Admin)
    } else if path.starts_with("/ratingd.v1.Charging/") {
        Some(Role::Charging)
    } else {
        None
    }
}

/// Shared by every connection; the token book is replaced on a config reload.
#[derive(Clone)]
pub struct GuardLayer {
    tokens: Arc<ArcSwap<TokenBook>>,
    unary_timeout: Duration,
}

impl GuardLayer {
    pub fn new(tokens: Arc<ArcSwap<TokenBook>>, unary_timeout: Duration) -> GuardLayer {
        GuardLayer { tokens, unary_timeout }
    }
}

impl<S> tower::Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    layer: GuardLayer,
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

fn refuse(reason: Refused, path: &str, error: ApiError) -> BoxFuture {
    let status = Status::from(error);
    refused(reason, path, status.message());
    Box::pin(std::future::ready(Ok(status.into_http())))
}

impl<S> tower::Service<Request<Body>> for Guard<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> BoxFuture {
        let path = request.uri().path().to_string();
        if let Some(needed) = needed_role(&path) {
            let book = self.layer.tokens.load();
            if book.enabled() {
                let header = request
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .map(HeaderValue::as_bytes);
                match book.authenticate(header, chrono::Utc::now()) {
                    Ok(principal) if principal.role.allows(needed) => {
                        request.extensions_mut().insert::<Principal>(principal);
                    }
                    Ok(principal) => {
                        let error = AuthError::RoleNotAllowed {
                            token: principal.name.to_string(),
                            role: principal.role.name(),
                            method: path.clone(),
                            needed: needed.name(),
                        };
                        return refuse(Refused::PermissionDenied, &path, error.into());
                    }
                    Err(error) => return refuse(Refused::Unauthenticated, &path, error.into()),
                }
            }
        }
        // The usual tower dance: the clone that was made ready is the one that is called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let response = inner.call(request);
        if STREAMING.contains(&path.as_str()) {
            return Box::pin(response);
        }
        let timeout = self.layer.unary_timeout;
        Box::pin(async move {
            let Ok(response) = tokio::time::timeout(timeout, response).await else {
                let status = Status::from(ApiError::Timeout {
                    seconds: timeout.as_secs_f64(),
                });
                refused(Refused::DeadlineExceeded, &path, status.message());
                return Ok(status.into_http());
            };
            let Ok(mut response) = response;
            // A unary message over the limit: tonic answers OUT_OF_RANGE in the headers, before
            // our handler runs; the streaming path says RESOURCE_EXHAUSTED, so this does too.
            let headers = response.headers_mut();
            let too_large = headers.get("grpc-status").is_some_and(|s| s == "11")
                && headers
                    .get("grpc-message")
                    .and_then(|m| m.to_str().ok())
                    .is_some_and(|m| m.contains(TOO_LARGE) || m.contains("message%20length%20too%20large"));
            if too_large {
                headers.insert("grpc-status", HeaderValue::from_static("8"));
                let detail = headers
                    .get("grpc-message")
                    .and_then(|m| m.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                refused(Refused::ResourceExhausted, &path, &detail);
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, Service};

    /// A service that never answers.
    #[derive(Clone)]
    struct Stalls;

    impl tower::Service<Request<Body>> for Stalls {
        type Response = Response<Body>;
        type Error = Infallible;
        type Future = std::future::Pending<Result<Response<Body>, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<Body>) -> Self::Future {
            std::future::pending()
        }
    }

    fn request(path: &str, token: Option<&str>) -> Request<Body> {
        let mut r = Request::builder().uri(format!("http://localhost{path}"));
        if let Some(t) = token {
            r = r.header("authorization", format!("Bearer {t}"));
        }
        r.body(Body::empty()).unwrap()
    }

    fn code(response: &Response<Body>) -> &str {
        response.headers().get("grpc-status").unwrap().to_str().unwrap()
    }

    // Paused time: the 30 s pass at once, and the hour the stream is given passes without it ending.
    #[tokio::test(start_paused = true)]
    async fn unary_calls_time_out_and_streams_do_not() {
        let layer = GuardLayer::new(
            Arc::new(ArcSwap::from_pointee(TokenBook::default())),
            Duration::from_secs(30),
        );
        let mut guard = layer.layer(Stalls);
        let response = guard.call(request("/ratingd.v1.Query/GetTotals", None)).await.unwrap();
        assert_eq!(code(&response), "4", "DEADLINE_EXCEEDED");
        let stream = guard.call(request("/ratingd.v1.Ingest/Stream", None));
        tokio::select! {
            _ = stream => panic!("a stream is not bounded in time"),
            () = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }

    #[tokio::test]
    async fn the_token_is_checked_before_the_service_is_called() {
        let hash = crate::domain::hex::unhex(&crate::security::auth::hash_hex("reader-token-0000")).unwrap();
        let book = TokenBook::new(vec![crate::security::auth::Token {
            name: "reader".into(),
            sha256: hash.try_into().unwrap(),
            role: Role::Read,
            account_prefix: None,
            expires: None,
        }]);
        let mut guard = GuardLayer::new(Arc::new(ArcSwap::from_pointee(book)), Duration::from_secs(30)).layer(Stalls);
        // Refused at once: the stalling service is never reached.
        let none = guard.call(request("/ratingd.v1.Query/GetTotals", None)).await.unwrap();
        assert_eq!(code(&none), "16", "UNAUTHENTICATED");
        let role = guard
            .call(request("/ratingd.v1.Ingest/Submit", Some("reader-token-0000")))
            .await
            .unwrap();
        assert_eq!(code(&role), "7", "PERMISSION_DENIED");
    }
}
