#![no_main]
//! libFuzzer entry for the `pw3d` target of `ikol_tests::fuzz`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ikol_tests::fuzz::pw3d(data));
