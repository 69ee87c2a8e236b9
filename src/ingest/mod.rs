//! The gRPC front end for agents: the `Ingest` service (bidirectional stream and unary submit).
//! A batch is checked against the caller's scope and the size limit here, then handed to the
//! pipeline's door (`Pipeline::intake`), which checks every event and routes it.

pub mod service;
