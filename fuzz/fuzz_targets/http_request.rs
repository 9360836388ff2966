//! cargo-fuzz target `http_request`: see `lb_fuzz::http_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lb_fuzz::http_request(data));
