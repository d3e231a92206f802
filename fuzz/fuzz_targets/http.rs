#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| inceptionxml_fuzz::run("http", data));
