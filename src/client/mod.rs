//! Client side of ratectl: reading usage files and sending them with retries.

pub mod connect;
pub mod send;
pub mod usage_file;
