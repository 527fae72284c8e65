#![no_main]
//! libFuzzer entry for the `solve_json` target of `ikol_tests::fuzz`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ikol_tests::fuzz::solve_json(data));
