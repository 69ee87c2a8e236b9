//! Protobuf UsageBatch bytes -> validation -> rating. Invariants: `ratingd::fuzzing::ingest_batch`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ratingd::fuzzing::ingest_batch(data));
