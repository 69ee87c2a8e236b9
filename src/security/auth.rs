//! Bearer tokens with roles. The config holds each token's SHA-256 (never the token); a request's
//! `authorization: Bearer <token>` header is hashed and compared in constant time with every
//! configured hash, before anything of the request body is read.

use std::sync::Arc;

use chrono::{DateTime, Utc};

/// Why a caller's token or scope is refused. The service edge maps it to a gRPC status
/// (UNAUTHENTICATED for the token, PERMISSION_DENIED for the role and the scope).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no authorization header (want \"Bearer <token>\")")]
    MissingToken,
    #[error("the authorization header is not \"Bearer <token>\"")]
    MalformedToken,
    #[error("unknown or revoked token")]
    UnknownToken,
    #[error("the token has expired")]
    ExpiredToken,
    #[error("token {token:?} has role {role}; {method} needs {needed}")]
    RoleNotAllowed {
        token: String,
        role: &'static str,
        method: String,
        needed: &'static str,
    },
    #[error("token {token:?} may only use accounts that start with {prefix:?}, not {account:?}")]
    AccountOutOfScope {
        token: String,
        prefix: String,
        account: String,
    },
}

/// What a token may call. Each role includes nothing of the others except `admin`, which may call
/// everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// `ratingd.v1.Ingest` only: metering agents.
    Ingest,
    /// `ratingd.v1.Query` only: billing backends.
    Read,
    /// `ratingd.v1.Admin`, and every other service too.
    Admin,
    /// `ratingd.v1.Charging` only: the network's online charging client (authorize, update,
    /// terminate).
    Charging,
}

impl Role {
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "ingest" => Some(Role::Ingest),
            "read" => Some(Role::Read),
            "admin" => Some(Role::Admin),
            "charging" => Some(Role::Charging),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Read => "read",
            Role::Admin => "admin",
            Role::Charging => "charging",
        }
    }

    /// True when a token of this role may call a method of a service that needs `needed`.
    pub fn allows(self, needed: Role) -> bool {
        self == Role::Admin || self == needed
    }
}

/// One configured token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// For logs and metrics (never the token itself).
    pub name: Arc<str>,
    pub sha256: [u8; 32],
    pub role: Role,
    /// Accounts this token may write or read: those that start with this prefix.
    pub account_prefix: Option<Arc<str>>,
    /// Refused from this instant on.
    pub expires: Option<DateTime<Utc>>,
}

/// Who is calling: put into the request's extensions once the token is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: Arc<str>,
    pub role: Role,
    pub account_prefix: Option<Arc<str>>,
}

impl Principal {
    /// True when this caller may touch `account`.
    pub fn may_touch(&self, account: &str) -> bool {
        self.account_prefix.as_deref().is_none_or(|p| account.starts_with(p))
    }

    /// [`AuthError::AccountOutOfScope`] naming the account, unless the caller may touch it.
    pub fn check_account(&self, account: &str) -> Result<(), AuthError> {
        if self.may_touch(account) {
            return Ok(());
        }
        Err(AuthError::AccountOutOfScope {
            token: self.name.to_string(),
            prefix: self.prefix().to_string(),
            account: account.to_string(),
        })
    }

    /// The account prefix the token is limited to ("" when it is not).
    pub fn prefix(&self) -> &str {
        self.account_prefix.as_deref().unwrap_or_default()
    }
}

/// SHA-256 of a token, as the lowercase hex that goes into the config.
pub fn hash_hex(token: &str) -> String {
    crate::domain::hex::hex(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}

/// The tokens in force (replaced whole on a config reload).
#[derive(Debug, Clone, Default)]
pub struct TokenBook {
    tokens: Vec<Token>,
}

impl TokenBook {
    pub fn new(tokens: Vec<Token>) -> TokenBook {
        TokenBook { tokens }
    }

    /// True when requests must carry a token.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The caller behind an `authorization` header value (`Bearer <token>`).
    /// A token that is missing, malformed, unknown or expired is refused with the matching
    /// [`AuthError`].
    pub fn authenticate(&self, header: Option<&[u8]>, now: DateTime<Utc>) -> Result<Principal, AuthError> {
        let header = header.ok_or(AuthError::MissingToken)?;
        let token = header
            .strip_prefix(b"Bearer ")
            .or_else(|| header.strip_prefix(b"bearer "))
            .ok_or(AuthError::MalformedToken)?;
        if token.is_empty() {
            return Err(AuthError::MalformedToken);
        }
        let presented = ring::digest::digest(&ring::digest::SHA256, token);
        // Every hash is compared, whatever matched before: the time taken does not depend on
        // which token (if any) matched, nor on how many leading bytes agree.
        let mut found: Option<&Token> = None;
        for t in &self.tokens {
            if constant_time_eq(presented.as_ref(), &t.sha256) {
                found = Some(t);
            }
        }
        let token = found.ok_or(AuthError::UnknownToken)?;
        if token.expires.is_some_and(|e| now >= e) {
            return Err(AuthError::ExpiredToken);
        }
        Ok(Principal {
            name: token.name.clone(),
            role: token.role,
            account_prefix: token.account_prefix.clone(),
        })
    }
}

/// Equality of two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    // black_box keeps the compiler from turning the fold into an early exit.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(name: &str, secret: &str, role: Role, prefix: Option<&str>, expires: Option<&str>) -> Token {
        let hash = crate::domain::hex::unhex(&hash_hex(secret)).unwrap();
        Token {
            name: name.into(),
            sha256: hash.try_into().unwrap(),
            role,
            account_prefix: prefix.map(Arc::from),
            expires: expires.map(|e| e.parse().unwrap()),
        }
    }

    #[test]
    fn tokens_are_checked_by_hash_role_and_expiry() {
        let book = TokenBook::new(vec![
            token("agent", "s3cret-agent", Role::Ingest, Some("tenant-a/"), None),
            token("old", "s3cret-old", Role::Read, None, Some("2026-01-01T00:00:00Z")),
        ]);
        let now: DateTime<Utc> = "2026-06-01T00:00:00Z".parse().unwrap();
        let agent = book.authenticate(Some(b"Bearer s3cret-agent"), now).unwrap();
        assert_eq!(agent.role, Role::Ingest);
        assert!(agent.may_touch("tenant-a/1") && !agent.may_touch("tenant-b/1"));
        let refusal = |header: &[u8]| book.authenticate(Some(header), now).unwrap_err();
        assert!(matches!(book.authenticate(None, now), Err(AuthError::MissingToken)));
        assert!(matches!(refusal(b"Basic abc"), AuthError::MalformedToken));
        assert!(matches!(refusal(b"Bearer "), AuthError::MalformedToken));
        assert!(matches!(refusal(b"Bearer s3cret-agenT"), AuthError::UnknownToken));
        assert!(matches!(refusal(b"Bearer s3cret-old"), AuthError::ExpiredToken));
        let before: DateTime<Utc> = "2025-12-31T23:59:59Z".parse().unwrap();
        assert!(book.authenticate(Some(b"Bearer s3cret-old"), before).is_ok());
        assert!(Role::Admin.allows(Role::Ingest) && Role::Admin.allows(Role::Read));
        assert!(!Role::Ingest.allows(Role::Read) && !Role::Read.allows(Role::Admin));
    }

    #[test]
    fn the_hash_is_sha256_in_hex() {
        // sha256("abc") from FIPS 180-2, appendix B.1.
        assert_eq!(
            hash_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(
            constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd") && !constant_time_eq(b"ab", b"abc")
        );
    }
}
