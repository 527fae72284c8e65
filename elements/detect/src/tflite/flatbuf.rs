//! A minimal, bounds-checked reader of FlatBuffers binaries: just what the TensorFlow Lite schema
//! needs (tables, scalars, strings, vectors of scalars and of tables, unions).
//!
//! Layout facts (FlatBuffers "internals" documentation):
//! * all scalars are little-endian; the buffer starts with a `u32` offset to the root table, and
//!   bytes 4..8 may hold a four-character file identifier;
//! * a table starts with an `i32` (soffset); its vtable lives at `table - soffset`. A vtable is a
//!   `u16` vtable size in bytes, a `u16` inline table size, then one `u16` per field: the field's
//!   offset from the table start, 0 when the field is absent (the schema default applies);
//! * references (tables, vectors, strings) are `u32` offsets relative to where the offset itself
//!   is stored; a vector or string is a `u32` element count followed by the elements (strings
//!   also carry a trailing NUL); a vector of tables holds one relative `u32` offset per element;
//! * a union field `f` takes two vtable slots: `f_type` (a `u8` tag, 0 = none) then `f` itself.
//!
//! Every access is checked against the buffer length; errors say what was read where.

use std::fmt;

/// What went wrong while reading the buffer (turned into a file-level error by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FbError(pub(crate) String);

impl fmt::Display for FbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) type FbResult<T> = std::result::Result<T, FbError>;

/// Adds context (`"subgraph 0 / tensor 12"`) in front of a low-level message.
pub(crate) trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> FbResult<T>;
}

impl<T> Context<T> for FbResult<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> FbResult<T> {
        self.map_err(|e| FbError(format!("{}: {}", what(), e.0)))
    }
}

/// The whole buffer.
#[derive(Clone, Copy)]
pub(crate) struct Buf<'a> {
    data: &'a [u8],
}

impl fmt::Debug for Buf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Buf({} bytes)", self.data.len())
    }
}

impl<'a> Buf<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub(crate) fn len(&self) -> usize {
        self.data.len()
    }

    pub(crate) fn bytes(&self, pos: usize, len: usize) -> FbResult<&'a [u8]> {
        pos.checked_add(len)
            .and_then(|end| self.data.get(pos..end))
            .ok_or_else(|| {
                FbError(format!(
                    "truncated: {len} bytes at offset {pos} run past the end of the {}-byte file",
                    self.data.len()
                ))
            })
    }

    fn array<const N: usize>(&self, pos: usize) -> FbResult<[u8; N]> {
        let b = self.bytes(pos, N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    pub(crate) fn u8(&self, pos: usize) -> FbResult<u8> {
        Ok(self.array::<1>(pos)?[0])
    }
    pub(crate) fn u16(&self, pos: usize) -> FbResult<u16> {
        Ok(u16::from_le_bytes(self.array(pos)?))
    }
    pub(crate) fn u32(&self, pos: usize) -> FbResult<u32> {
        Ok(u32::from_le_bytes(self.array(pos)?))
    }
    pub(crate) fn i32(&self, pos: usize) -> FbResult<i32> {
        Ok(i32::from_le_bytes(self.array(pos)?))
    }
    pub(crate) fn u64(&self, pos: usize) -> FbResult<u64> {
        Ok(u64::from_le_bytes(self.array(pos)?))
    }

    /// Follows the relative `u32` offset stored at `pos`.
    fn follow(&self, pos: usize) -> FbResult<usize> {
        let off = self.u32(pos)? as usize;
        let target = pos + off;
        if off == 0 || target >= self.data.len() {
            return Err(FbError(format!(
                "bad offset (or truncated file): {off} stored at {pos} points outside the \
                 {}-byte file",
                self.data.len()
            )));
        }
        Ok(target)
    }

    /// The root table (offset at byte 0).
    pub(crate) fn root(&self) -> FbResult<Table<'a>> {
        let pos = self.follow(0).ctx(|| "root table".into())?;
        self.table_at(pos)
    }

    pub(crate) fn table_at(&self, pos: usize) -> FbResult<Table<'a>> {
        let soff = self.i32(pos)? as i64;
        let vt = pos as i64 - soff;
        if vt < 0 || vt as usize + 4 > self.data.len() {
            return Err(FbError(format!(
                "bad offset: vtable of the table at {pos} would be at {vt}, outside the file"
            )));
        }
        let vt = vt as usize;
        let vt_len = self.u16(vt)? as usize;
        let inline_len = self.u16(vt + 2)? as usize;
        if vt_len < 4 || !vt_len.is_multiple_of(2) {
            return Err(FbError(format!("bad vtable at {vt}: size {vt_len}")));
        }
        self.bytes(vt, vt_len)?;
        self.bytes(pos, inline_len.max(4))?;
        Ok(Table {
            buf: *self,
            pos,
            vt,
            n_fields: (vt_len - 4) / 2,
            inline_len,
        })
    }
}

/// One table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Table<'a> {
    buf: Buf<'a>,
    pos: usize,
    vt: usize,
    n_fields: usize,
    inline_len: usize,
}

impl<'a> Table<'a> {
    /// Absolute position of field `id`, `None` if absent.
    fn field(&self, id: usize) -> FbResult<Option<usize>> {
        if id >= self.n_fields {
            return Ok(None);
        }
        let off = self.buf.u16(self.vt + 4 + 2 * id)? as usize;
        if off == 0 {
            return Ok(None);
        }
        if off >= self.inline_len.max(4) {
            return Err(FbError(format!(
                "bad offset: field {id} of the table at {} lies at {off}, beyond its {} inline bytes",
                self.pos, self.inline_len
            )));
        }
        Ok(Some(self.pos + off))
    }

    pub(crate) fn u8(&self, id: usize, default: u8) -> FbResult<u8> {
        self.field(id)?.map_or(Ok(default), |p| self.buf.u8(p))
    }
    pub(crate) fn i8(&self, id: usize, default: i8) -> FbResult<i8> {
        Ok(self.u8(id, default as u8)? as i8)
    }
    pub(crate) fn bool(&self, id: usize, default: bool) -> FbResult<bool> {
        Ok(self.u8(id, default as u8)? != 0)
    }
    pub(crate) fn i32(&self, id: usize, default: i32) -> FbResult<i32> {
        self.field(id)?.map_or(Ok(default), |p| self.buf.i32(p))
    }
    pub(crate) fn u32(&self, id: usize, default: u32) -> FbResult<u32> {
        self.field(id)?.map_or(Ok(default), |p| self.buf.u32(p))
    }
    pub(crate) fn u64(&self, id: usize, default: u64) -> FbResult<u64> {
        self.field(id)?.map_or(Ok(default), |p| self.buf.u64(p))
    }

    pub(crate) fn table(&self, id: usize) -> FbResult<Option<Table<'a>>> {
        match self.field(id)? {
            None => Ok(None),
            Some(p) => {
                let t = self.buf.follow(p)?;
                self.buf.table_at(t).map(Some)
            }
        }
    }

    fn vector(&self, id: usize, elem: usize) -> FbResult<Option<(usize, usize)>> {
        match self.field(id)? {
            None => Ok(None),
            Some(p) => {
                let v = self.buf.follow(p)?;
                let n = self.buf.u32(v)? as usize;
                let len = n
                    .checked_mul(elem)
                    .ok_or_else(|| FbError(format!("bad vector length {n} at {v}")))?;
                self.buf.bytes(v + 4, len)?;
                Ok(Some((v + 4, n)))
            }
        }
    }

    /// A vector of bytes (empty when absent).
    pub(crate) fn bytes(&self, id: usize) -> FbResult<&'a [u8]> {
        match self.vector(id, 1)? {
            None => Ok(&[]),
            Some((start, n)) => self.buf.bytes(start, n),
        }
    }

    /// The byte range of a vector of bytes in the buffer (`None` when absent).
    pub(crate) fn bytes_range(&self, id: usize) -> FbResult<Option<std::ops::Range<usize>>> {
        Ok(self.vector(id, 1)?.map(|(s, n)| s..s + n))
    }

    pub(crate) fn string(&self, id: usize) -> FbResult<Option<String>> {
        match self.vector(id, 1)? {
            None => Ok(None),
            Some((start, n)) => Ok(Some(
                String::from_utf8_lossy(self.buf.bytes(start, n)?).into_owned(),
            )),
        }
    }

    pub(crate) fn i32s(&self, id: usize) -> FbResult<Vec<i32>> {
        match self.vector(id, 4)? {
            None => Ok(Vec::new()),
            Some((start, n)) => (0..n).map(|i| self.buf.i32(start + 4 * i)).collect(),
        }
    }

    pub(crate) fn u16s(&self, id: usize) -> FbResult<Vec<u16>> {
        match self.vector(id, 2)? {
            None => Ok(Vec::new()),
            Some((start, n)) => (0..n).map(|i| self.buf.u16(start + 2 * i)).collect(),
        }
    }

    /// A vector of tables (empty when absent).
    pub(crate) fn tables(&self, id: usize) -> FbResult<Vec<Table<'a>>> {
        match self.vector(id, 4)? {
            None => Ok(Vec::new()),
            Some((start, n)) => (0..n)
                .map(|i| {
                    let t = self.buf.follow(start + 4 * i)?;
                    self.buf.table_at(t)
                })
                .collect(),
        }
    }
}
