#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| korder_fuzz::block::block_decode(data));
