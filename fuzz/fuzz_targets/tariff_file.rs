//! Tariff file text -> catalogue parser and validator. Invariants: `ratingd::fuzzing::tariff_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ratingd::fuzzing::tariff_file(data));
