#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| korder_fuzz::deliver_seek::deliver_seek(data));
