//! Framed reassembly from seqpacket or datagram records.
//! The checks live in `fdpass::fuzzing::records`, which the corpus replay in
//! `cargo test` runs too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fdpass::fuzzing::records(data));
