#![no_main]
//! libFuzzer entry for the `pth` target of `ikol_tests::fuzz`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ikol_tests::fuzz::pth(data));
