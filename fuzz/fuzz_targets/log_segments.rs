#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| korder_fuzz::log_segments::log_segments(data));
