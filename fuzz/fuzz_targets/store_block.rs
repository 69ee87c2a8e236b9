//! Stored bytes -> block, record and suspense decoders; changed bytes are caught. Invariants: `ratingd::fuzzing::store_block`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ratingd::fuzzing::store_block(data));
