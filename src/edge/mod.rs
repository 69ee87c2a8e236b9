//! The service edge: where requests come in and answers go out, between the contract (`wire`)
//! and what lies below the services (pipeline, billing, store, security).
//!
//! - [`status`]: [`ApiError`], every error a client can get, and the one mapping to a gRPC code;
//! - [`guard`]: the tower layer in front of every service (token and role from the headers,
//!   unary timeout, over-size messages);
//! - [`access`]: who is calling and what they may touch (the account-scope check every handler
//!   makes), and refusals counted;
//! - [`balance`]: balance and charging requests checked into pipeline operations.
//!
//! Services answer through here; the layers below keep their own error types and never name a
//! status.

pub mod access;
pub mod balance;
pub mod guard;
pub mod status;

pub use status::ApiError;
