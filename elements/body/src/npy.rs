//! NumPy `.npy` / `.npz` reading and writing, without Python.
//!
//! Format: NEP 1 / `numpy/lib/format.py`. A `.npy` file is the magic `\x93NUMPY`, a major and minor
//! version byte, the header length (little-endian `u16` for version 1.0, `u32` for 2.0 and 3.0), a
//! header that is a Python dict literal `{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }`
//! (latin-1 for 1.0/2.0, UTF-8 for 3.0) padded with spaces and a final `\n`, then the raw elements.
//! A `.npz` is a zip archive (stored or deflate) of `<key>.npy` members, as `np.savez` /
//! `np.savez_compressed` write it.
//!
//! [`NdArray::data`] always holds **little-endian** elements: big-endian (`>`) input is byte-swapped
//! on read. Only plain numeric dtypes are supported (`f8 f4 f2 i8 i4 i2 i1 u8 u4 u2 u1 b1`);
//! structured, string, object, complex and datetime dtypes are refused with
//! [`NpyError::UnsupportedDtype`]. Every length in the input is checked against the bytes
//! actually present before anything is allocated from it.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{Cursor, Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Largest inflated `.npz` member (an SMPL-X model's largest array is about 100 MB).
pub const MAX_NPZ_MEMBER_BYTES: u64 = 1 << 30;
/// Largest inflated `.npz` in all.
pub const MAX_NPZ_TOTAL_BYTES: u64 = 2 << 30;

/// Longest string element (`U<n>`) accepted: numpy has no limit, a body model or motion file
/// needs a few dozen characters.
const MAX_STR_CHARS: u32 = 1 << 16;

/// Element type of an [`NdArray`] (stored little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DType {
    /// IEEE binary64 (`f8`).
    F64,
    /// IEEE binary32 (`f4`).
    F32,
    /// IEEE binary16 (`f2`).
    F16,
    /// `i8` (numpy spelling: 8-byte signed integer).
    I64,
    /// `i4`.
    I32,
    /// `i2`.
    I16,
    /// `i1`.
    I8,
    /// `u8` (numpy spelling: 8-byte unsigned integer).
    U64,
    /// `u4`.
    U32,
    /// `u2`.
    U16,
    /// `u1`.
    U8,
    /// `b1`: one byte per element, 0 = false, anything else = true.
    Bool,
    /// `U<n>`: numpy's fixed-width `str_`, n UTF-32 code points per element, shorter strings
    /// padded with NUL (little-endian only).
    Unicode(u32),
}

impl DType {
    /// Bytes per element.
    pub fn itemsize(self) -> usize {
        match self {
            DType::F64 | DType::I64 | DType::U64 => 8,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F16 | DType::I16 | DType::U16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
            DType::Unicode(n) => 4 * n as usize,
        }
    }

    /// numpy's short code without byte order, e.g. `"f8"`, `"b1"`, `"U7"`.
    pub fn code(self) -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed(match self {
            DType::F64 => "f8",
            DType::F32 => "f4",
            DType::F16 => "f2",
            DType::I64 => "i8",
            DType::I32 => "i4",
            DType::I16 => "i2",
            DType::I8 => "i1",
            DType::U64 => "u8",
            DType::U32 => "u4",
            DType::U16 => "u2",
            DType::U8 => "u1",
            DType::Bool => "b1",
            DType::Unicode(n) => return std::borrow::Cow::Owned(format!("U{n}")),
        })
    }

    /// The `.npy` `descr` string numpy writes for this dtype (`"<f8"`, `"|u1"`, `"|b1"`).
    pub fn descr(self) -> String {
        if self.itemsize() == 1 && !matches!(self, DType::Unicode(_)) {
            format!("|{}", self.code())
        } else {
            format!("<{}", self.code())
        }
    }

    /// Parses a numpy type string such as `"<f8"`, `">i4"`, `"|b1"`, `"f8"`, `"float64"`, `"?"`.
    /// Returns the dtype and whether the stored bytes are big-endian.
    pub fn parse(descr: &str) -> Result<(DType, bool), NpyError> {
        let unsupported = || NpyError::UnsupportedDtype {
            descr: descr.to_owned(),
        };
        let (big, rest) = match descr.as_bytes().first() {
            Some(b'<') | Some(b'|') => (false, &descr[1..]),
            Some(b'=') => (cfg!(target_endian = "big"), &descr[1..]),
            Some(b'>') => (true, &descr[1..]),
            _ => (false, descr),
        };
        let dt = match rest {
            "f8" | "d" | "float64" => DType::F64,
            "f4" | "f" | "float32" => DType::F32,
            "f2" | "e" | "float16" => DType::F16,
            "i8" | "q" | "int64" => DType::I64,
            "i4" | "i" | "int32" => DType::I32,
            "i2" | "h" | "int16" => DType::I16,
            "i1" | "b" | "int8" => DType::I8,
            "u8" | "Q" | "uint64" => DType::U64,
            "u4" | "I" | "uint32" => DType::U32,
            "u2" | "H" | "uint16" => DType::U16,
            "u1" | "B" | "uint8" => DType::U8,
            "b1" | "?" | "bool" => DType::Bool,
            // Strings: little-endian only (big-endian swaps per code point, not per element).
            u if u.starts_with('U') && !big => match u[1..].parse::<u32>() {
                Ok(n) if (1..=MAX_STR_CHARS).contains(&n) => DType::Unicode(n),
                _ => return Err(unsupported()),
            },
            _ => return Err(unsupported()),
        };
        Ok((dt, big && dt.itemsize() > 1))
    }

    /// True for the three float types.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F64 | DType::F32 | DType::F16)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.code())
    }
}

/// Errors of the `.npy` / `.npz` reader and writer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NpyError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A problem inside a named file (wraps the other variants).
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: Box<NpyError>,
    },
    /// A problem inside one member of a `.npz` archive.
    #[error("npz member '{member}': {source}")]
    Member {
        /// The zip member name (e.g. `weights.npy`).
        member: String,
        /// What went wrong.
        source: Box<NpyError>,
    },
    /// The bytes do not start with `\x93NUMPY`.
    #[error("not a .npy file: missing the \\x93NUMPY magic")]
    BadMagic,
    /// A format version other than 1.0, 2.0, 3.0.
    #[error("unsupported .npy format version {major}.{minor} (1.0, 2.0, 3.0 are supported)")]
    UnsupportedVersion {
        /// Major version byte.
        major: u8,
        /// Minor version byte.
        minor: u8,
    },
    /// The input ends before a part it announces.
    #[error("truncated .npy: the {what} needs {needed} bytes but only {available} remain")]
    Truncated {
        /// Which part is cut.
        what: &'static str,
        /// Bytes required.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// The header dict is malformed.
    #[error("bad .npy header: {reason}")]
    BadHeader {
        /// Description.
        reason: String,
    },
    /// A dtype this reader does not handle.
    #[error(
        "unsupported dtype '{descr}' (supported: f8 f4 f2 i8 i4 i2 i1 u8 u4 u2 u1 b1, either byte order)"
    )]
    UnsupportedDtype {
        /// The `descr` as written in the file.
        descr: String,
    },
    /// The data length does not match shape x itemsize.
    #[error(
        "array data is {actual} bytes but shape {shape:?} of dtype {dtype} needs {expected} bytes"
    )]
    SizeMismatch {
        /// Shape.
        shape: Vec<usize>,
        /// Element type.
        dtype: DType,
        /// Bytes required by the shape.
        expected: usize,
        /// Bytes present.
        actual: usize,
    },
    /// The element count overflows `usize`.
    #[error("array shape {shape:?} is too large")]
    ShapeOverflow {
        /// Shape.
        shape: Vec<usize>,
    },
    /// A value conversion that would change the value's meaning.
    #[error("cannot convert dtype {from} to {to}: {reason}")]
    Convert {
        /// Source dtype.
        from: DType,
        /// Target Rust type.
        to: &'static str,
        /// Why.
        reason: String,
    },
    /// The zip container of a `.npz` is broken.
    #[error("bad .npz zip archive: {source}")]
    Zip {
        /// The zip error.
        source: zip::result::ZipError,
    },
    /// An I/O error inside the zip stream (e.g. bad deflate data or CRC).
    #[error("reading npz member failed: {source}")]
    ZipRead {
        /// The error.
        source: std::io::Error,
    },
    /// Writing array bytes to a writer or into a zip member failed.
    #[error("writing .npy/.npz data failed: {source}")]
    Write {
        /// The I/O error.
        source: std::io::Error,
    },
    /// A key cannot be written (empty, or containing '/').
    #[error("invalid npz key '{key}'")]
    BadKey {
        /// The key.
        key: String,
    },
}

type Result<T, E = NpyError> = std::result::Result<T, E>;

/// An n-dimensional numeric array as stored in `.npy` files and numpy pickles.
///
/// `data` is little-endian, `shape.iter().product() * dtype.itemsize()` bytes, in C (row-major)
/// order unless `fortran_order`. The `to_*` conversions always return C-order values.
#[derive(Clone, PartialEq)]
pub struct NdArray {
    /// Dimensions (empty for a 0-d scalar array).
    pub shape: Vec<usize>,
    /// Element type.
    pub dtype: DType,
    /// Column-major storage (numpy `order='F'`).
    pub fortran_order: bool,
    /// Raw little-endian element bytes.
    pub data: Vec<u8>,
}

impl fmt::Debug for NdArray {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NdArray")
            .field("shape", &self.shape)
            .field("dtype", &self.dtype)
            .field("fortran_order", &self.fortran_order)
            .field("data_bytes", &self.data.len())
            .finish()
    }
}

/// Number of elements of `shape`, `None` on overflow.
pub(crate) fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

macro_rules! from_vec {
    ($name:ident, $t:ty, $dt:expr) => {
        #[doc = concat!("A C-order array of `", stringify!($t), "` values; errors if `shape` does not match `values.len()`.")]
        pub fn $name(shape: &[usize], values: &[$t]) -> Result<NdArray> {
            let mut data = Vec::with_capacity(values.len() * std::mem::size_of::<$t>());
            for v in values {
                data.extend_from_slice(&v.to_le_bytes());
            }
            NdArray::new(shape.to_vec(), $dt, false, data)
        }
    };
}

impl NdArray {
    /// Builds an array after checking that `data` has exactly the bytes the shape needs.
    pub fn new(
        shape: Vec<usize>,
        dtype: DType,
        fortran_order: bool,
        data: Vec<u8>,
    ) -> Result<Self> {
        let expected = checked_numel(&shape)
            .and_then(|n| n.checked_mul(dtype.itemsize()))
            .ok_or_else(|| NpyError::ShapeOverflow {
                shape: shape.clone(),
            })?;
        if expected != data.len() {
            return Err(NpyError::SizeMismatch {
                shape,
                dtype,
                expected,
                actual: data.len(),
            });
        }
        Ok(Self {
            shape,
            dtype,
            fortran_order,
            data,
        })
    }

    from_vec!(from_f64, f64, DType::F64);
    from_vec!(from_f32, f32, DType::F32);
    from_vec!(from_i64, i64, DType::I64);
    from_vec!(from_i32, i32, DType::I32);
    from_vec!(from_u32, u32, DType::U32);
    from_vec!(from_u8, u8, DType::U8);

    /// A 0-d string array (numpy `np.array("neutral")`, dtype `<U7`).
    pub fn from_str_scalar(s: &str) -> Result<NdArray> {
        let n = u32::try_from(s.chars().count().max(1)).map_err(|_| NpyError::ShapeOverflow {
            shape: vec![s.len()],
        })?;
        let mut data = Vec::with_capacity(4 * n as usize);
        for c in s.chars() {
            data.extend_from_slice(&u32::from(c).to_le_bytes());
        }
        data.resize(4 * n as usize, 0);
        NdArray::new(Vec::new(), DType::Unicode(n), false, data)
    }

    /// The strings of a `U<n>` array, C order, trailing NULs removed.
    pub fn to_strings(&self) -> Result<Vec<String>> {
        self.validate()?;
        let DType::Unicode(n) = self.dtype else {
            return Err(NpyError::Convert {
                from: self.dtype,
                to: "String",
                reason: "not a string array".into(),
            });
        };
        let c = self.to_c_order()?;
        c.data
            .chunks_exact(4 * n as usize)
            .map(|item| {
                item.chunks_exact(4)
                    .map(|b| u32::from_le_bytes(le4(b)))
                    .take_while(|&u| u != 0)
                    .map(|u| {
                        char::from_u32(u).ok_or_else(|| NpyError::Convert {
                            from: self.dtype,
                            to: "String",
                            reason: format!("code point {u:#x} is not a character"),
                        })
                    })
                    .collect()
            })
            .collect()
    }

    /// A C-order bool array.
    pub fn from_bool(shape: &[usize], values: &[bool]) -> Result<NdArray> {
        NdArray::new(
            shape.to_vec(),
            DType::Bool,
            false,
            values.iter().map(|&b| u8::from(b)).collect(),
        )
    }

    /// Number of elements (product of the shape; 1 for a 0-d array).
    pub fn len(&self) -> usize {
        checked_numel(&self.shape).unwrap_or(usize::MAX)
    }

    /// True when the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of dimensions.
    pub fn ndim(&self) -> usize {
        self.shape.len()
    }

    /// Checks the data length against shape and dtype (the fields are public, so this is
    /// re-checked before every conversion).
    pub fn validate(&self) -> Result<()> {
        let expected = checked_numel(&self.shape)
            .and_then(|n| n.checked_mul(self.dtype.itemsize()))
            .ok_or_else(|| NpyError::ShapeOverflow {
                shape: self.shape.clone(),
            })?;
        if expected != self.data.len() {
            return Err(NpyError::SizeMismatch {
                shape: self.shape.clone(),
                dtype: self.dtype,
                expected,
                actual: self.data.len(),
            });
        }
        Ok(())
    }

    /// For each C-order position, the element index in storage (`None` = identity).
    fn storage_order(&self) -> Option<Vec<usize>> {
        if !self.fortran_order || self.shape.len() < 2 {
            return None;
        }
        let n = self.len();
        let nd = self.shape.len();
        // Fortran strides in elements: stride_0 = 1, stride_k = stride_{k-1} * d_{k-1}.
        let mut fstride = vec![1usize; nd];
        for k in 1..nd {
            fstride[k] = fstride[k - 1] * self.shape[k - 1];
        }
        let mut idx = vec![0usize; nd];
        let mut out = Vec::with_capacity(n);
        let mut off = 0usize;
        for _ in 0..n {
            out.push(off);
            // odometer increment over C order (last axis fastest)
            for k in (0..nd).rev() {
                idx[k] += 1;
                off += fstride[k];
                if idx[k] < self.shape[k] {
                    break;
                }
                off -= fstride[k] * idx[k];
                idx[k] = 0;
            }
        }
        Some(out)
    }

    fn convert<T>(&self, mut f: impl FnMut(&[u8]) -> Result<T>) -> Result<Vec<T>> {
        self.validate()?;
        if let DType::Unicode(_) = self.dtype {
            return Err(NpyError::Convert {
                from: self.dtype,
                to: "a number",
                reason: "string array where numbers are expected".into(),
            });
        }
        let w = self.dtype.itemsize();
        match self.storage_order() {
            None => self.data.chunks_exact(w).map(&mut f).collect(),
            Some(order) => order
                .into_iter()
                .map(|e| f(&self.data[e * w..(e + 1) * w]))
                .collect(),
        }
    }

    /// Values as `f64`, C order. Integers and bools convert (bool = 0/1; integers above 2^53
    /// round).
    pub fn to_f64(&self) -> Result<Vec<f64>> {
        let dt = self.dtype;
        self.convert(|b| Ok(elem_f64(dt, b)))
    }

    /// Values as `f32`, C order (f64 and integers are rounded to nearest).
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        let dt = self.dtype;
        self.convert(|b| {
            Ok(match dt {
                DType::F32 => f32::from_le_bytes(le4(b)),
                _ => elem_f64(dt, b) as f32,
            })
        })
    }

    /// Values as `i64`, C order. Only integer and bool dtypes; `u8` values above `i64::MAX`
    /// are an error.
    pub fn to_i64(&self) -> Result<Vec<i64>> {
        let dt = self.dtype;
        if dt.is_float() {
            return Err(NpyError::Convert {
                from: dt,
                to: "i64",
                reason: "float array where integers are expected".into(),
            });
        }
        self.convert(|b| {
            Ok(match dt {
                DType::U64 => {
                    let v = u64::from_le_bytes(le8(b));
                    i64::try_from(v).map_err(|_| NpyError::Convert {
                        from: dt,
                        to: "i64",
                        reason: format!("value {v} exceeds i64::MAX"),
                    })?
                }
                _ => elem_i64(dt, b),
            })
        })
    }

    /// Values as `bool` (non-zero = true), C order.
    pub fn to_bool(&self) -> Result<Vec<bool>> {
        let dt = self.dtype;
        self.convert(|b| {
            Ok(if dt.is_float() {
                elem_f64(dt, b) != 0.0
            } else {
                b.iter().any(|&x| x != 0)
            })
        })
    }

    /// The same values in C order (`fortran_order = false`).
    pub fn to_c_order(&self) -> Result<NdArray> {
        self.validate()?;
        let w = self.dtype.itemsize();
        let data = match self.storage_order() {
            None => self.data.clone(),
            Some(order) => {
                let mut d = Vec::with_capacity(self.data.len());
                for e in order {
                    d.extend_from_slice(&self.data[e * w..(e + 1) * w]);
                }
                d
            }
        };
        Ok(NdArray {
            shape: self.shape.clone(),
            dtype: self.dtype,
            fortran_order: false,
            data,
        })
    }
}

fn le2(b: &[u8]) -> [u8; 2] {
    [b[0], b[1]]
}
fn le4(b: &[u8]) -> [u8; 4] {
    [b[0], b[1], b[2], b[3]]
}
fn le8(b: &[u8]) -> [u8; 8] {
    [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]
}

/// IEEE binary16 -> f64.
fn f16_to_f64(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((bits >> 10) & 0x1f);
    let frac = f64::from(bits & 0x3ff);
    match exp {
        0 => sign * frac * 2f64.powi(-24),
        31 if frac == 0.0 => sign * f64::INFINITY,
        31 => f64::NAN,
        _ => sign * (1.0 + frac / 1024.0) * 2f64.powi(exp - 15),
    }
}

/// One element (exactly `itemsize` bytes) as f64.
fn elem_f64(dt: DType, b: &[u8]) -> f64 {
    match dt {
        DType::F64 => f64::from_le_bytes(le8(b)),
        DType::F32 => f64::from(f32::from_le_bytes(le4(b))),
        DType::F16 => f16_to_f64(u16::from_le_bytes(le2(b))),
        DType::U64 => u64::from_le_bytes(le8(b)) as f64,
        _ => elem_i64(dt, b) as f64,
    }
}

/// One integer/bool element as i64 (`U64` wraps; callers check it).
fn elem_i64(dt: DType, b: &[u8]) -> i64 {
    match dt {
        DType::I64 => i64::from_le_bytes(le8(b)),
        DType::U64 => u64::from_le_bytes(le8(b)) as i64,
        DType::I32 => i64::from(i32::from_le_bytes(le4(b))),
        DType::U32 => i64::from(u32::from_le_bytes(le4(b))),
        DType::I16 => i64::from(i16::from_le_bytes(le2(b))),
        DType::U16 => i64::from(u16::from_le_bytes(le2(b))),
        DType::I8 => i64::from(b[0] as i8),
        DType::U8 => i64::from(b[0]),
        DType::Bool => i64::from(b[0] != 0),
        DType::F64 | DType::F32 | DType::F16 => elem_f64(dt, b) as i64,
        // `convert` refuses string arrays before any element is read.
        DType::Unicode(_) => 0,
    }
}

/// Byte-swaps every element in place (big-endian input -> little-endian storage).
pub(crate) fn swap_bytes(data: &mut [u8], itemsize: usize) {
    if itemsize > 1 {
        for chunk in data.chunks_exact_mut(itemsize) {
            chunk.reverse();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Header literal parsing

#[derive(Debug, Clone)]
enum Lit {
    Str(String),
    Bool(bool),
    Int(u64),
    None,
    Tuple(Vec<Lit>),
    List(Vec<Lit>),
    Dict(Vec<(Lit, Lit)>),
}

struct LitParser<'a> {
    s: &'a [u8],
    pos: usize,
    depth: usize,
}

impl LitParser<'_> {
    fn err(&self, what: &str) -> NpyError {
        NpyError::BadHeader {
            reason: format!("{what} at header offset {}", self.pos),
        }
    }

    fn skip_ws(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.pos).copied()
    }

    fn value(&mut self) -> Result<Lit> {
        self.depth += 1;
        if self.depth > 32 {
            return Err(self.err("nesting too deep"));
        }
        let v = match self.peek() {
            Some(q @ (b'\'' | b'"')) => {
                self.pos += 1;
                let start = self.pos;
                while self.pos < self.s.len() && self.s[self.pos] != q {
                    if self.s[self.pos] == b'\\' {
                        return Err(self.err("escapes in header strings are not supported"));
                    }
                    self.pos += 1;
                }
                if self.pos >= self.s.len() {
                    return Err(self.err("unterminated string"));
                }
                let text = String::from_utf8_lossy(&self.s[start..self.pos]).into_owned();
                self.pos += 1;
                Lit::Str(text)
            }
            Some(open @ (b'(' | b'[' | b'{')) => {
                self.pos += 1;
                let close = match open {
                    b'(' => b')',
                    b'[' => b']',
                    _ => b'}',
                };
                let mut items = Vec::new();
                let mut pairs = Vec::new();
                loop {
                    if self.peek() == Some(close) {
                        self.pos += 1;
                        break;
                    }
                    let item = self.value()?;
                    if open == b'{' {
                        if self.peek() != Some(b':') {
                            return Err(self.err("expected ':'"));
                        }
                        self.pos += 1;
                        let v = self.value()?;
                        pairs.push((item, v));
                    } else {
                        items.push(item);
                    }
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(c) if c == close => {}
                        _ => return Err(self.err("expected ',' or closing bracket")),
                    }
                }
                match open {
                    b'(' => Lit::Tuple(items),
                    b'[' => Lit::List(items),
                    _ => Lit::Dict(pairs),
                }
            }
            Some(c) if c.is_ascii_digit() => {
                let start = self.pos;
                while self.pos < self.s.len() && self.s[self.pos].is_ascii_digit() {
                    self.pos += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.pos]).unwrap_or("");
                let n = text
                    .parse::<u64>()
                    .map_err(|_| self.err("integer too large"))?;
                // Python 2 longs: "3L"
                if self.pos < self.s.len() && matches!(self.s[self.pos], b'L' | b'l') {
                    self.pos += 1;
                }
                Lit::Int(n)
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.pos;
                while self.pos < self.s.len() && self.s[self.pos].is_ascii_alphanumeric() {
                    self.pos += 1;
                }
                match &self.s[start..self.pos] {
                    b"True" => Lit::Bool(true),
                    b"False" => Lit::Bool(false),
                    b"None" => Lit::None,
                    _ => return Err(self.err("unknown identifier")),
                }
            }
            Some(_) => return Err(self.err("unexpected character")),
            None => return Err(self.err("unexpected end of header")),
        };
        self.depth -= 1;
        Ok(v)
    }
}

struct Header {
    dtype: DType,
    big_endian: bool,
    fortran_order: bool,
    shape: Vec<usize>,
}

fn parse_header(text: &[u8]) -> Result<Header> {
    let mut p = LitParser {
        s: text,
        pos: 0,
        depth: 0,
    };
    let Lit::Dict(pairs) = p.value()? else {
        return Err(NpyError::BadHeader {
            reason: "header is not a dict".into(),
        });
    };
    let get = |key: &str| {
        pairs
            .iter()
            .find(|(k, _)| matches!(k, Lit::Str(s) if s == key))
            .map(|(_, v)| v.clone())
            .ok_or_else(|| NpyError::BadHeader {
                reason: format!("missing key '{key}'"),
            })
    };
    let (dtype, big_endian) = match get("descr")? {
        Lit::Str(d) => DType::parse(&d)?,
        other => {
            return Err(NpyError::UnsupportedDtype {
                descr: format!("{other:?}"),
            });
        }
    };
    let fortran_order = match get("fortran_order")? {
        Lit::Bool(b) => b,
        _ => {
            return Err(NpyError::BadHeader {
                reason: "'fortran_order' is not a bool".into(),
            });
        }
    };
    let shape = match get("shape")? {
        Lit::Tuple(items) | Lit::List(items) => items
            .iter()
            .map(|l| match l {
                Lit::Int(n) => usize::try_from(*n).map_err(|_| NpyError::BadHeader {
                    reason: format!("dimension {n} too large"),
                }),
                _ => Err(NpyError::BadHeader {
                    reason: "'shape' holds a non-integer".into(),
                }),
            })
            .collect::<Result<Vec<_>>>()?,
        _ => {
            return Err(NpyError::BadHeader {
                reason: "'shape' is not a tuple".into(),
            });
        }
    };
    Ok(Header {
        dtype,
        big_endian,
        fortran_order,
        shape,
    })
}

// ---------------------------------------------------------------------------------------------
// Reading

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Parses a complete `.npy` file held in memory.
pub fn read_npy(bytes: &[u8]) -> Result<NdArray> {
    if bytes.len() < 8 {
        if !MAGIC.starts_with(&bytes[..bytes.len().min(6)]) {
            return Err(NpyError::BadMagic);
        }
        return Err(NpyError::Truncated {
            what: "preamble",
            needed: 8,
            available: bytes.len(),
        });
    }
    if &bytes[..6] != MAGIC {
        return Err(NpyError::BadMagic);
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (hlen, hstart) = match (major, minor) {
        (1, 0) => {
            if bytes.len() < 10 {
                return Err(NpyError::Truncated {
                    what: "header length",
                    needed: 2,
                    available: bytes.len() - 8,
                });
            }
            (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10)
        }
        (2, 0) | (3, 0) => {
            if bytes.len() < 12 {
                return Err(NpyError::Truncated {
                    what: "header length",
                    needed: 4,
                    available: bytes.len() - 8,
                });
            }
            let n = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
            (usize::try_from(n).unwrap_or(usize::MAX), 12)
        }
        _ => return Err(NpyError::UnsupportedVersion { major, minor }),
    };
    let available = bytes.len() - hstart;
    if hlen > available {
        return Err(NpyError::Truncated {
            what: "header",
            needed: hlen,
            available,
        });
    }
    let header = parse_header(&bytes[hstart..hstart + hlen])?;
    let body = &bytes[hstart + hlen..];
    let expected = checked_numel(&header.shape)
        .and_then(|n| n.checked_mul(header.dtype.itemsize()))
        .ok_or_else(|| NpyError::ShapeOverflow {
            shape: header.shape.clone(),
        })?;
    if body.len() < expected {
        return Err(NpyError::Truncated {
            what: "array data",
            needed: expected,
            available: body.len(),
        });
    }
    if body.len() > expected {
        return Err(NpyError::SizeMismatch {
            shape: header.shape,
            dtype: header.dtype,
            expected,
            actual: body.len(),
        });
    }
    let mut data = body.to_vec();
    if header.big_endian {
        swap_bytes(&mut data, header.dtype.itemsize());
    }
    Ok(NdArray {
        shape: header.shape,
        dtype: header.dtype,
        fortran_order: header.fortran_order,
        data,
    })
}

/// Reads a `.npy` file.
pub fn read_npy_file(path: impl AsRef<Path>) -> Result<NdArray> {
    let path = path.as_ref();
    let bytes = fs::read(path).map_err(|source| NpyError::Io {
        path: path.to_owned(),
        source,
    })?;
    read_npy(&bytes).map_err(|e| NpyError::File {
        path: path.to_owned(),
        source: Box::new(e),
    })
}

/// Reads every `<key>.npy` member of an `.npz` archive held in memory. Keys drop the `.npy`
/// suffix; members not ending in `.npy` are skipped.
pub fn read_npz_bytes(bytes: &[u8]) -> Result<BTreeMap<String, NdArray>> {
    read_npz_reader(Cursor::new(bytes))
}

/// Reads every `<key>.npy` member of an `.npz` archive from a seekable reader.
pub fn read_npz_reader<R: Read + Seek>(reader: R) -> Result<BTreeMap<String, NdArray>> {
    read_npz_members(reader)?
        .into_iter()
        .map(|(k, v)| v.map(|a| (k, a)))
        .collect()
}

/// Like [`read_npz_reader`], but a member that cannot be parsed (e.g. a string or object array
/// next to the numeric ones, as some model files have) is returned as its own error instead of
/// failing the whole archive. Broken zip structure is still an error of the whole call.
pub fn read_npz_members<R: Read + Seek>(reader: R) -> Result<BTreeMap<String, Result<NdArray>>> {
    let mut archive = zip::ZipArchive::new(reader).map_err(|source| NpyError::Zip { source })?;
    let mut out = BTreeMap::new();
    let mut total = 0u64;
    for i in 0..archive.len() {
        let mut member = archive
            .by_index(i)
            .map_err(|source| NpyError::Zip { source })?;
        if member.is_dir() {
            continue;
        }
        let name = String::from_utf8_lossy(member.name_raw()).into_owned();
        let Some(key) = name.strip_suffix(".npy") else {
            continue;
        };
        let key = key.to_owned();
        // Bounded: each member at most MAX_NPZ_MEMBER_BYTES and all together at most
        // MAX_NPZ_TOTAL_BYTES as declared, and never more read than declared (a deflate bomb
        // that under-declares stops at its declared size and is refused).
        let declared = member.size();
        total = total.saturating_add(declared);
        let too_big = |what: String| NpyError::Member {
            member: name.clone(),
            source: Box::new(NpyError::BadHeader { reason: what }),
        };
        if declared > MAX_NPZ_MEMBER_BYTES || total > MAX_NPZ_TOTAL_BYTES {
            return Err(too_big(format!(
                "{declared} bytes inflated ({total} with the members before), more than \
                 {MAX_NPZ_MEMBER_BYTES} per member / {MAX_NPZ_TOTAL_BYTES} in all"
            )));
        }
        let mut buf = Vec::with_capacity(usize::try_from(declared).unwrap_or(0).min(1 << 26));
        (&mut member)
            .take(declared.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|source| NpyError::Member {
                member: name.clone(),
                source: Box::new(NpyError::ZipRead { source }),
            })?;
        if buf.len() as u64 != declared {
            return Err(too_big(format!(
                "inflates to more or fewer bytes than the {declared} it declares"
            )));
        }
        let arr = read_npy(&buf).map_err(|e| NpyError::Member {
            member: name.clone(),
            source: Box::new(e),
        });
        out.insert(key, arr);
    }
    Ok(out)
}

/// Reads an `.npz` file (stored or deflate members), keyed by member name without `.npy`.
pub fn read_npz(path: impl AsRef<Path>) -> Result<BTreeMap<String, NdArray>> {
    let path = path.as_ref();
    let bytes = fs::read(path).map_err(|source| NpyError::Io {
        path: path.to_owned(),
        source,
    })?;
    read_npz_bytes(&bytes).map_err(|e| NpyError::File {
        path: path.to_owned(),
        source: Box::new(e),
    })
}

// ---------------------------------------------------------------------------------------------
// Writing

/// The complete `.npy` bytes (format 1.0, or 2.0 when the header exceeds 65535 bytes) of `arr`,
/// header padded so the data starts on a 64-byte boundary as numpy does.
pub fn npy_bytes(arr: &NdArray) -> Result<Vec<u8>> {
    arr.validate()?;
    let shape = match arr.shape.len() {
        1 => format!("({},)", arr.shape[0]),
        _ => format!(
            "({})",
            arr.shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let dict = format!(
        "{{'descr': '{}', 'fortran_order': {}, 'shape': {}, }}",
        arr.dtype.descr(),
        if arr.fortran_order { "True" } else { "False" },
        shape
    );
    let mut out = Vec::with_capacity(arr.data.len() + dict.len() + 80);
    out.extend_from_slice(MAGIC);
    // preamble = magic(6) + version(2) + length(2 for 1.0, 4 for 2.0); data 64-byte aligned
    let v1_total = (10 + dict.len() + 1).div_ceil(64) * 64;
    if v1_total - 10 <= usize::from(u16::MAX) {
        out.extend_from_slice(&[1, 0]);
        let hlen = (v1_total - 10) as u16;
        out.extend_from_slice(&hlen.to_le_bytes());
    } else {
        out.extend_from_slice(&[2, 0]);
        let total = (12 + dict.len() + 1).div_ceil(64) * 64;
        let hlen = u32::try_from(total - 12).map_err(|_| NpyError::BadHeader {
            reason: "header too long".into(),
        })?;
        out.extend_from_slice(&hlen.to_le_bytes());
    }
    let total = if out[6] == 1 {
        v1_total
    } else {
        (12 + dict.len() + 1).div_ceil(64) * 64
    };
    out.extend_from_slice(dict.as_bytes());
    out.resize(total - 1, b' ');
    out.push(b'\n');
    out.extend_from_slice(&arr.data);
    Ok(out)
}

/// Writes `arr` as `.npy` to a writer.
pub fn write_npy<W: Write>(mut w: W, arr: &NdArray) -> Result<()> {
    let bytes = npy_bytes(arr)?;
    w.write_all(&bytes)
        .map_err(|source| NpyError::Write { source })
}

/// Writes `arr` to a `.npy` file.
pub fn write_npy_file(path: impl AsRef<Path>, arr: &NdArray) -> Result<()> {
    let path = path.as_ref();
    let bytes = npy_bytes(arr)?;
    fs::write(path, bytes).map_err(|source| NpyError::Io {
        path: path.to_owned(),
        source,
    })
}

/// The bytes of an uncompressed (stored) `.npz` holding `arrays` as `<key>.npy` members, in the
/// order given (readable by `np.load`).
pub fn npz_bytes<'a>(arrays: impl IntoIterator<Item = (&'a str, &'a NdArray)>) -> Result<Vec<u8>> {
    let mut zw = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (key, arr) in arrays {
        if key.is_empty() || key.contains('/') {
            return Err(NpyError::BadKey { key: key.into() });
        }
        let bytes = npy_bytes(arr)?;
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .large_file(bytes.len() as u64 >= u64::from(u32::MAX));
        zw.start_file(format!("{key}.npy"), opts)
            .map_err(|source| NpyError::Zip { source })?;
        zw.write_all(&bytes)
            .map_err(|source| NpyError::Write { source })?;
    }
    let cursor = zw.finish().map_err(|source| NpyError::Zip { source })?;
    Ok(cursor.into_inner())
}

/// Writes an uncompressed `.npz` file (see [`npz_bytes`]).
pub fn write_npz<'a>(
    path: impl AsRef<Path>,
    arrays: impl IntoIterator<Item = (&'a str, &'a NdArray)>,
) -> Result<()> {
    let path = path.as_ref();
    let bytes = npz_bytes(arrays).map_err(|e| NpyError::File {
        path: path.to_owned(),
        source: Box::new(e),
    })?;
    fs::write(path, bytes).map_err(|source| NpyError::Io {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // python3 -c "import numpy as np, io; b = io.BytesIO(); np.save(b, np.array([[1.5, -2.0], [3.0, 4.25]])); print(b.getvalue())"
    // -> b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }
    //    <spaces>\n" + 32 data bytes (header length 0x76 = 118, data at offset 128)
    fn numpy_2x2() -> Vec<u8> {
        let mut b = b"\x93NUMPY\x01\x00v\x00".to_vec();
        let dict = b"{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }";
        b.extend_from_slice(dict);
        b.resize(127, b' ');
        b.push(b'\n');
        for v in [1.5f64, -2.0, 3.0, 4.25] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b
    }

    #[test]
    fn reads_numpy_v1() {
        let a = read_npy(&numpy_2x2()).unwrap();
        assert_eq!(a.shape, vec![2, 2]);
        assert_eq!(a.dtype, DType::F64);
        assert_eq!(a.to_f64().unwrap(), vec![1.5, -2.0, 3.0, 4.25]);
        assert_eq!(a.len(), 4);
    }

    #[test]
    fn write_matches_numpy_bytes() {
        let a = NdArray::from_f64(&[2, 2], &[1.5, -2.0, 3.0, 4.25]).unwrap();
        assert_eq!(npy_bytes(&a).unwrap(), numpy_2x2());
    }

    #[test]
    fn versions_2_and_3() {
        let v1 = numpy_2x2();
        for major in [2u8, 3] {
            let mut b = b"\x93NUMPY".to_vec();
            b.extend_from_slice(&[major, 0]);
            b.extend_from_slice(&118u32.to_le_bytes());
            b.extend_from_slice(&v1[10..]);
            let a = read_npy(&b).unwrap();
            assert_eq!(a.to_f64().unwrap(), vec![1.5, -2.0, 3.0, 4.25]);
        }
        let mut b = v1.clone();
        b[6] = 4;
        assert!(matches!(
            read_npy(&b),
            Err(NpyError::UnsupportedVersion { major: 4, minor: 0 })
        ));
    }

    // np.asfortranarray(np.arange(6, dtype='>i4').reshape(2, 3)): storage order 0 3 1 4 2 5,
    // big-endian bytes.
    #[test]
    fn fortran_big_endian() {
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        let dict = b"{'descr': '>i4', 'fortran_order': True, 'shape': (2, 3), }";
        let total = (10 + dict.len() + 1).div_ceil(64) * 64;
        b.extend_from_slice(&((total - 10) as u16).to_le_bytes());
        b.extend_from_slice(dict);
        b.resize(total - 1, b' ');
        b.push(b'\n');
        for v in [0i32, 3, 1, 4, 2, 5] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        let a = read_npy(&b).unwrap();
        assert!(a.fortran_order);
        assert_eq!(a.dtype, DType::I32);
        assert_eq!(a.to_i64().unwrap(), vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(a.to_f64().unwrap(), vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        let c = a.to_c_order().unwrap();
        assert_eq!(c.to_i64().unwrap(), vec![0, 1, 2, 3, 4, 5]);
        assert!(!c.fortran_order);
    }

    #[test]
    fn fortran_3d() {
        // C value at (i,j,k) = 100i + 10j + k, shape (2,3,4) stored column-major.
        let shape = [2usize, 3, 4];
        let mut vals = vec![0f64; 24];
        for i in 0..2 {
            for j in 0..3 {
                for k in 0..4 {
                    vals[i + 2 * (j + 3 * k)] = (100 * i + 10 * j + k) as f64;
                }
            }
        }
        let mut a = NdArray::from_f64(&shape, &vals).unwrap();
        a.fortran_order = true;
        let c = a.to_f64().unwrap();
        let want: Vec<f64> = (0..24)
            .map(|n| (100 * (n / 12) + 10 * ((n / 4) % 3) + n % 4) as f64)
            .collect();
        assert_eq!(c, want);
    }

    #[test]
    fn f16_and_bool() {
        assert_eq!(f16_to_f64(0x3c00), 1.0);
        assert_eq!(f16_to_f64(0xc000), -2.0);
        assert_eq!(f16_to_f64(0x0001), 2f64.powi(-24));
        assert!(f16_to_f64(0x7c00).is_infinite());
        let a = NdArray::from_bool(&[3], &[true, false, true]).unwrap();
        assert_eq!(a.to_bool().unwrap(), vec![true, false, true]);
        assert_eq!(a.to_i64().unwrap(), vec![1, 0, 1]);
    }

    #[test]
    fn truncated_and_bad() {
        let full = numpy_2x2();
        for cut in [0, 3, 7, 9, 50, 127, 128, 150, full.len() - 1] {
            let err = read_npy(&full[..cut]).unwrap_err();
            assert!(
                matches!(err, NpyError::Truncated { .. } | NpyError::BadMagic),
                "cut {cut}: {err}"
            );
        }
        let mut extra = full.clone();
        extra.push(0);
        assert!(matches!(
            read_npy(&extra),
            Err(NpyError::SizeMismatch { .. })
        ));
        let mut obj = full.clone();
        obj[21..24].copy_from_slice(b"|O8");
        let e = read_npy(&obj).unwrap_err();
        assert!(e.to_string().contains("unsupported dtype '|O8'"), "{e}");
        // absurd shape: never allocates, reports truncation
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        let dict =
            b"{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000, 1000000000), }\n";
        b.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        b.extend_from_slice(dict);
        assert!(matches!(read_npy(&b), Err(NpyError::Truncated { .. })));
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        let dict =
            b"{'descr': '<f8', 'fortran_order': False, 'shape': (18446744073709551615, 4), }\n";
        b.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        b.extend_from_slice(dict);
        assert!(matches!(read_npy(&b), Err(NpyError::ShapeOverflow { .. })));
    }

    #[test]
    fn py2_long_shape_and_scalar() {
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        let dict = b"{'descr': '<i8', 'fortran_order': False, 'shape': (2L,), }\n";
        b.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        b.extend_from_slice(dict);
        b.extend_from_slice(&7i64.to_le_bytes());
        b.extend_from_slice(&(-8i64).to_le_bytes());
        assert_eq!(read_npy(&b).unwrap().to_i64().unwrap(), vec![7, -8]);
        let s = NdArray::from_f32(&[], &[2.5]).unwrap();
        let back = read_npy(&npy_bytes(&s).unwrap()).unwrap();
        assert_eq!(back.shape, Vec::<usize>::new());
        assert_eq!(back.to_f32().unwrap(), vec![2.5]);
    }

    #[test]
    fn npz_round_trip() {
        let a = NdArray::from_f64(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let b = NdArray::from_i32(&[3], &[-1, 0, 7]).unwrap();
        let c = NdArray::from_i64(&[1, 2], &[i64::MIN, i64::MAX]).unwrap();
        let d = NdArray::from_f32(&[0, 3], &[]).unwrap();
        let bytes = npz_bytes([("a", &a), ("b", &b), ("c", &c), ("d", &d)]).unwrap();
        let m = read_npz_bytes(&bytes).unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(m["a"], a);
        assert_eq!(m["b"], b);
        assert_eq!(m["c"], c);
        assert_eq!(m["d"], d);
        for cut in [0, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(read_npz_bytes(&bytes[..cut]).is_err());
        }
        assert!(matches!(
            npz_bytes([("x/y", &a)]),
            Err(NpyError::BadKey { .. })
        ));
    }

    #[test]
    fn conversions_refuse_meaning_changes() {
        let f = NdArray::from_f64(&[1], &[1.5]).unwrap();
        assert!(f.to_i64().is_err());
        let mut u =
            NdArray::new(vec![1], DType::U64, false, u64::MAX.to_le_bytes().to_vec()).unwrap();
        assert!(u.to_i64().is_err());
        u.data.pop();
        assert!(matches!(u.to_f64(), Err(NpyError::SizeMismatch { .. })));
    }
}
