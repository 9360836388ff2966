//! cargo-fuzz target `maglev`: see `lb_fuzz::maglev`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lb_fuzz::maglev(data));
