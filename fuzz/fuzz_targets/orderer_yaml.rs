#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| korder_fuzz::orderer_yaml::orderer_yaml(data));
