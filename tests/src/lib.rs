//! Cross-crate tests live in tests/tests/*.rs; the fuzz targets shared by `make fuzz` and
//! `make test` in [`fuzz`].

pub mod fuzz;
