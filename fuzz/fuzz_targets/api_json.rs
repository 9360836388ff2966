//! cargo-fuzz target `api_json`: see `lb_fuzz::api_json`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lb_fuzz::api_json(data));
