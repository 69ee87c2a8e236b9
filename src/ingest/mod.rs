//! The gRPC front end: proto <-> domain conversion, all input validation, and the `Ingest`
//! service (bidirectional stream and unary submit). Proto types never leave this module (and
//! `query`).

pub mod codec;
pub mod convert;
pub mod proto;
pub mod service;
