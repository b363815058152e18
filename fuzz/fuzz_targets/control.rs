//! The control-message walker and the MSG_CTRUNC judgement on arbitrary control buffers.
//! The checks live in `fdpass::fuzzing::control`, which the corpus replay in
//! `cargo test` runs too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fdpass::fuzzing::control(data));
