#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| korder_fuzz::pulled_blocks::pulled_blocks(data));
