#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| korder_fuzz::block_file_scan::block_file_scan(data));
