#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| korder_fuzz::participation_join::participation_join(data));
