//! cargo-fuzz target `config_toml`: see `lb_fuzz::config_toml`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lb_fuzz::config_toml(data));
