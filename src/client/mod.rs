//! Client side of ratectl: its commands ([`commands`], one module each), what it prints
//! ([`output`]), how it reaches ratingd ([`connect`]), reading usage files ([`usage_file`] and
//! [`mapping`], in `wire`: the daemon's spool reads them too) and sending them with retries
//! ([`send`]).

pub mod commands;
pub mod connect;
pub mod output;
pub mod send;

pub use crate::wire::{mapping, usage_file};
