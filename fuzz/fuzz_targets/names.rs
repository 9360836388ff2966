//! cargo-fuzz target `names`: see `lb_fuzz::names`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lb_fuzz::names(data));
