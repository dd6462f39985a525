#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| korder_fuzz::chain::chain_records(data));
