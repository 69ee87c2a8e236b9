//! The gRPC front end: proto <-> domain conversion, all input validation, and the `Ingest`
//! service (bidirectional stream and unary submit).

pub mod convert;
pub mod service;
