//! Framed reassembly from a byte stream with descriptors at arbitrary offsets.
//! The checks live in `fdpass::fuzzing::stream`, which the corpus replay in
//! `cargo test` runs too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fdpass::fuzzing::stream(data));
