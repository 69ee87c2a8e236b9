//! Client side of ratectl: its commands ([`commands`], one module each), what it prints
//! ([`output`]), how it reaches ratingd ([`connect`]), reading usage files ([`usage_file`]) and
//! sending them with retries ([`send`]).

pub mod commands;
pub mod connect;
pub mod mapping;
pub mod output;
pub mod send;
pub mod usage_file;
