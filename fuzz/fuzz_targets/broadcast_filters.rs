#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| korder_fuzz::broadcast_filters::broadcast_filters(data));
