//! Bytes -> the dedupe cold tier's manifest and run readers; a changed byte of a run is caught.
//! Invariants: `ratingd::fuzzing::dedupe_cold`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ratingd::fuzzing::dedupe_cold(data));
