#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| korder_fuzz::config_update::config_update(data));
