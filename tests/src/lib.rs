//! Cross-crate tests live in tests/tests/*.rs; the fuzz targets shared by `make fuzz` and
//! `make test` in [`fuzz`]; renders of the body model with known 3D in [`renders`].

pub mod fuzz;
pub mod renders;
