//! A small, safe unpickler for the Python pickles body models and datasets ship in: SMPL model
//! files (Python 2, protocol 2, numpy arrays, chumpy `Ch` objects, scipy sparse matrices) and
//! 3DPW sequence files (Python 2, protocol 2, numpy arrays).
//!
//! It is a stack machine over the opcodes of `Lib/pickletools.py` (protocols 0-4, plus
//! `BYTEARRAY8` of protocol 5 for in-band buffers), with CPython's mark handling (a mark saves
//! the current stack and starts a new one, as in `Lib/pickle.py`, `_Unpickler.load_mark`) and a
//! memo. Lists, dicts, sets and objects are shared (`Rc<RefCell<..>>`) while unpickling, so
//! `APPENDS` / `SETITEMS` / `BUILD` on a memoized object mutate every reference, as in Python.
//! Nothing is ever imported or executed: `GLOBAL` / `STACK_GLOBAL` only record the name, and
//! `REDUCE` / `NEWOBJ` / `BUILD` on an unknown class build a generic [`PyObject`]. These callables
//! are understood:
//! - `numpy.core.multiarray._reconstruct` / `numpy._core.multiarray._reconstruct` + `BUILD`
//!   with `(version, shape, dtype, is_fortran, raw_bytes)`, where dtype is `numpy.dtype(code,
//!   align, copy)` + `BUILD` `(version, byteorder, ...)` -> [`Value::Array`];
//! - `numpy.core.numeric._frombuffer` / `numpy._core.numeric._frombuffer` (protocol-5 in-band
//!   arrays) -> [`Value::Array`];
//! - `numpy.core.multiarray.scalar(dtype, raw)` (numpy scalars) -> 0-d [`Value::Array`];
//! - `_codecs.encode(text, 'latin1')` (how Python 3 writes `bytes` at protocol 2),
//!   `builtins.bytes` / `bytearray` -> [`Value::Bytes`];
//! - `set` / `frozenset` -> [`Value::Set`], `collections.OrderedDict` -> [`Value::Dict`];
//! - `copy_reg._reconstructor(cls, object, None)` (protocol 0/1 objects) -> [`PyObject`] of `cls`.
//!
//! Python 2 `str` (opcodes `STRING`, `BINSTRING`, `SHORT_BINSTRING`) becomes [`Value::Bytes`],
//! like `pickle.load(f, encoding='bytes')`; [`Value::as_str`] decodes bytes as latin-1, and
//! [`Value::get`] matches str and bytes keys alike, which is what `encoding='latin1'` gives.
//!
//! Every length read from the input is checked against the bytes that remain before anything is
//! allocated, unsupported opcodes (extension registry, out-of-band buffers; persistent ids
//! unless asked for, see [`read_pickle_with_persistent_ids`]) are errors naming the opcode and
//! its byte offset, and building the owned [`Value`] tree is
//! bounded in depth and size (so self-referencing or exponentially shared structures fail
//! cleanly).

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::npy::{DType, NdArray, checked_numel, swap_bytes};

/// Errors of the unpickler. Offsets are byte positions in the pickle.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PickleError {
    /// Reading the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A problem inside a named file.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: Box<PickleError>,
    },
    /// The input ends inside an opcode's argument.
    #[error(
        "truncated pickle: opcode {name} (0x{opcode:02x}) at byte {offset} needs {needed} more bytes but only {available} remain"
    )]
    Truncated {
        /// Opcode byte.
        opcode: u8,
        /// Opcode name.
        name: &'static str,
        /// Offset of the opcode.
        offset: usize,
        /// Bytes the argument needs.
        needed: usize,
        /// Bytes left.
        available: usize,
    },
    /// The input ends without a STOP opcode.
    #[error("truncated pickle: input ends at byte {len} without a STOP opcode")]
    MissingStop {
        /// Input length.
        len: usize,
    },
    /// An opcode this reader does not implement.
    #[error("unsupported pickle opcode {name} (0x{opcode:02x}) at byte {offset}{hint}")]
    UnsupportedOpcode {
        /// Opcode byte.
        opcode: u8,
        /// Opcode name (`"unknown"` for bytes that are not opcodes).
        name: &'static str,
        /// Offset of the opcode.
        offset: usize,
        /// Extra explanation (may be empty).
        hint: &'static str,
    },
    /// PROTO announces a protocol newer than 5.
    #[error("unsupported pickle protocol {protocol} at byte {offset}")]
    UnsupportedProtocol {
        /// Protocol number.
        protocol: u8,
        /// Offset of the PROTO opcode.
        offset: usize,
    },
    /// An opcode finds fewer stack items than it needs, or no mark.
    #[error("malformed pickle: opcode {name} at byte {offset}: {reason}")]
    Malformed {
        /// Opcode name.
        name: &'static str,
        /// Offset of the opcode.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// A GET names a memo slot that was never PUT.
    #[error(
        "malformed pickle: opcode {name} at byte {offset} reads memo slot {index}, which was never stored"
    )]
    MemoMissing {
        /// Opcode name.
        name: &'static str,
        /// Offset of the opcode.
        offset: usize,
        /// Memo index.
        index: u64,
    },
    /// The unpickled structure is self-referencing, too deep or too large to copy out.
    #[error("pickle structure too large or recursive: {reason}")]
    TooLarge {
        /// What limit was hit.
        reason: String,
    },
}

type Result<T, E = PickleError> = std::result::Result<T, E>;

/// An unpickled Python value, as an owned tree.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// `None`.
    None,
    /// `bool`.
    Bool(bool),
    /// `int` that fits in i64.
    Int(i64),
    /// `int` outside i64, as decimal text.
    BigInt(String),
    /// `float`.
    Float(f64),
    /// Python 3 `str` / Python 2 `unicode`.
    Str(String),
    /// Python 3 `bytes` / `bytearray`, and Python 2 `str`.
    Bytes(Vec<u8>),
    /// `list`.
    List(Vec<Value>),
    /// `tuple`.
    Tuple(Vec<Value>),
    /// `dict` / `OrderedDict`, in insertion order.
    Dict(Vec<(Value, Value)>),
    /// `set` / `frozenset`.
    Set(Vec<Value>),
    /// A numpy array or numpy scalar (0-d) of a supported dtype.
    Array(NdArray),
    /// A class or function reference that was never called.
    Global {
        /// Module.
        module: String,
        /// Qualified name.
        name: String,
    },
    /// An instance of any other class (including numpy arrays of unsupported dtypes).
    Object(Box<PyObject>),
}

/// A generic instance: `module.name(*args)`, then `__setstate__(state)`, plus items appended or
/// set on it (`APPENDS` / `SETITEMS` on a non-list / non-dict).
#[derive(Debug, Clone, PartialEq)]
pub struct PyObject {
    /// Module of the class.
    pub module: String,
    /// Class name.
    pub name: String,
    /// Constructor arguments (usually a tuple).
    pub args: Value,
    /// `BUILD` state (`Value::None` when never built).
    pub state: Value,
    /// Items appended with `APPEND(S)`.
    pub list_items: Vec<Value>,
    /// Items set with `SETITEM(S)`.
    pub dict_items: Vec<(Value, Value)>,
}

impl PyObject {
    /// `"module.name"`.
    pub fn qualname(&self) -> String {
        format!("{}.{}", self.module, self.name)
    }
}

fn latin1_eq(bytes: &[u8], s: &str) -> bool {
    let mut it = bytes.iter();
    for ch in s.chars() {
        match it.next() {
            Some(&b) if u32::from(b) == u32::from(ch) => {}
            _ => return false,
        }
    }
    it.next().is_none()
}

impl Value {
    /// Dictionary lookup by a string key; `str` and latin-1 `bytes` keys both match. On a
    /// [`PyObject`] it looks in the `BUILD` state dict (e.g. chumpy's `x`, scipy's `indptr`), then in
    /// the set items.
    pub fn get(&self, key: &str) -> Option<&Value> {
        fn find<'v>(pairs: &'v [(Value, Value)], key: &str) -> Option<&'v Value> {
            pairs
                .iter()
                .find(|(k, _)| match k {
                    Value::Str(s) => s == key,
                    Value::Bytes(b) => latin1_eq(b, key),
                    _ => false,
                })
                .map(|(_, v)| v)
        }
        match self {
            Value::Dict(pairs) => find(pairs, key),
            Value::Object(o) => {
                let in_state = match &o.state {
                    Value::Dict(p) => find(p, key),
                    // (dict_state, slot_state) as written for classes with __slots__
                    Value::Tuple(t) => t.iter().find_map(|s| match s {
                        Value::Dict(p) => find(p, key),
                        _ => None,
                    }),
                    _ => None,
                };
                in_state.or_else(|| find(&o.dict_items, key))
            }
            _ => None,
        }
    }

    /// The string keys of a dict (or object state), latin-1-decoding bytes keys.
    pub fn keys(&self) -> Vec<String> {
        let pairs: &[(Value, Value)] = match self {
            Value::Dict(p) => p,
            Value::Object(o) => match &o.state {
                Value::Dict(p) => p,
                _ => &o.dict_items,
            },
            _ => &[],
        };
        pairs
            .iter()
            .filter_map(|(k, _)| k.as_str().map(Cow::into_owned))
            .collect()
    }

    /// The array of an [`Value::Array`].
    pub fn as_array(&self) -> Option<&NdArray> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// Text of a `Str`, or of `Bytes` decoded as latin-1 (Python 2 `str`).
    pub fn as_str(&self) -> Option<Cow<'_, str>> {
        match self {
            Value::Str(s) => Some(Cow::Borrowed(s)),
            Value::Bytes(b) => Some(Cow::Owned(b.iter().map(|&c| char::from(c)).collect())),
            _ => None,
        }
    }

    /// The bytes of a `Bytes`.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// An `Int` or `Bool` (or a one-element integer array) as i64.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(i64::from(*b)),
            Value::Array(a) if a.len() == 1 && !a.dtype.is_float() => {
                a.to_i64().ok().and_then(|v| v.first().copied())
            }
            _ => None,
        }
    }

    /// A `Float`, `Int`, `Bool` or one-element array as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            Value::Bool(b) => Some(f64::from(u8::from(*b))),
            Value::Array(a) if a.len() == 1 => a.to_f64().ok().and_then(|v| v.first().copied()),
            _ => None,
        }
    }

    /// A `Bool`.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The items of a `List` or `Tuple`.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(v) | Value::Tuple(v) => Some(v),
            _ => None,
        }
    }

    /// The entries of a `Dict`.
    pub fn as_dict(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Dict(v) => Some(v),
            _ => None,
        }
    }

    /// The object of an `Object`.
    pub fn as_object(&self) -> Option<&PyObject> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    /// A short description for error messages, e.g. `numpy array f8[6890, 3]`,
    /// `object chumpy.ch.Ch`.
    pub fn type_name(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(_) => "bool".into(),
            Value::Int(_) | Value::BigInt(_) => "int".into(),
            Value::Float(_) => "float".into(),
            Value::Str(_) => "str".into(),
            Value::Bytes(_) => "bytes".into(),
            Value::List(v) => format!("list of {}", v.len()),
            Value::Tuple(v) => format!("tuple of {}", v.len()),
            Value::Dict(v) => format!("dict of {}", v.len()),
            Value::Set(v) => format!("set of {}", v.len()),
            Value::Array(a) => format!("numpy array {}{:?}", a.dtype, a.shape),
            Value::Global { module, name } => format!("global {module}.{name}"),
            Value::Object(o) => format!("object {}", o.qualname()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Opcodes (Lib/pickletools.py)

const MARK: u8 = b'(';
const STOP: u8 = b'.';
const POP: u8 = b'0';
const POP_MARK: u8 = b'1';
const DUP: u8 = b'2';
const FLOAT: u8 = b'F';
const INT: u8 = b'I';
const BININT: u8 = b'J';
const BININT1: u8 = b'K';
const LONG: u8 = b'L';
const BININT2: u8 = b'M';
const NONE: u8 = b'N';
const PERSID: u8 = b'P';
const BINPERSID: u8 = b'Q';
const REDUCE: u8 = b'R';
const STRING: u8 = b'S';
const BINSTRING: u8 = b'T';
const SHORT_BINSTRING: u8 = b'U';
const UNICODE: u8 = b'V';
const BINUNICODE: u8 = b'X';
const APPEND: u8 = b'a';
const BUILD: u8 = b'b';
const GLOBAL: u8 = b'c';
const DICT: u8 = b'd';
const EMPTY_DICT: u8 = b'}';
const APPENDS: u8 = b'e';
const GET: u8 = b'g';
const BINGET: u8 = b'h';
const INST: u8 = b'i';
const LONG_BINGET: u8 = b'j';
const LIST: u8 = b'l';
const EMPTY_LIST: u8 = b']';
const OBJ: u8 = b'o';
const PUT: u8 = b'p';
const BINPUT: u8 = b'q';
const LONG_BINPUT: u8 = b'r';
const SETITEM: u8 = b's';
const TUPLE: u8 = b't';
const EMPTY_TUPLE: u8 = b')';
const SETITEMS: u8 = b'u';
const BINFLOAT: u8 = b'G';
const PROTO: u8 = 0x80;
const NEWOBJ: u8 = 0x81;
const EXT1: u8 = 0x82;
const EXT2: u8 = 0x83;
const EXT4: u8 = 0x84;
const TUPLE1: u8 = 0x85;
const TUPLE2: u8 = 0x86;
const TUPLE3: u8 = 0x87;
const NEWTRUE: u8 = 0x88;
const NEWFALSE: u8 = 0x89;
const LONG1: u8 = 0x8a;
const LONG4: u8 = 0x8b;
const BINBYTES: u8 = b'B';
const SHORT_BINBYTES: u8 = b'C';
const SHORT_BINUNICODE: u8 = 0x8c;
const BINUNICODE8: u8 = 0x8d;
const BINBYTES8: u8 = 0x8e;
const EMPTY_SET: u8 = 0x8f;
const ADDITEMS: u8 = 0x90;
const FROZENSET: u8 = 0x91;
const NEWOBJ_EX: u8 = 0x92;
const STACK_GLOBAL: u8 = 0x93;
const MEMOIZE: u8 = 0x94;
const FRAME: u8 = 0x95;
const BYTEARRAY8: u8 = 0x96;
const NEXT_BUFFER: u8 = 0x97;
const READONLY_BUFFER: u8 = 0x98;

/// The pickletools name of an opcode byte (`"unknown"` otherwise).
pub fn opcode_name(op: u8) -> &'static str {
    match op {
        MARK => "MARK",
        STOP => "STOP",
        POP => "POP",
        POP_MARK => "POP_MARK",
        DUP => "DUP",
        FLOAT => "FLOAT",
        INT => "INT",
        BININT => "BININT",
        BININT1 => "BININT1",
        LONG => "LONG",
        BININT2 => "BININT2",
        NONE => "NONE",
        PERSID => "PERSID",
        BINPERSID => "BINPERSID",
        REDUCE => "REDUCE",
        STRING => "STRING",
        BINSTRING => "BINSTRING",
        SHORT_BINSTRING => "SHORT_BINSTRING",
        UNICODE => "UNICODE",
        BINUNICODE => "BINUNICODE",
        APPEND => "APPEND",
        BUILD => "BUILD",
        GLOBAL => "GLOBAL",
        DICT => "DICT",
        EMPTY_DICT => "EMPTY_DICT",
        APPENDS => "APPENDS",
        GET => "GET",
        BINGET => "BINGET",
        INST => "INST",
        LONG_BINGET => "LONG_BINGET",
        LIST => "LIST",
        EMPTY_LIST => "EMPTY_LIST",
        OBJ => "OBJ",
        PUT => "PUT",
        BINPUT => "BINPUT",
        LONG_BINPUT => "LONG_BINPUT",
        SETITEM => "SETITEM",
        TUPLE => "TUPLE",
        EMPTY_TUPLE => "EMPTY_TUPLE",
        SETITEMS => "SETITEMS",
        BINFLOAT => "BINFLOAT",
        PROTO => "PROTO",
        NEWOBJ => "NEWOBJ",
        EXT1 => "EXT1",
        EXT2 => "EXT2",
        EXT4 => "EXT4",
        TUPLE1 => "TUPLE1",
        TUPLE2 => "TUPLE2",
        TUPLE3 => "TUPLE3",
        NEWTRUE => "NEWTRUE",
        NEWFALSE => "NEWFALSE",
        LONG1 => "LONG1",
        LONG4 => "LONG4",
        BINBYTES => "BINBYTES",
        SHORT_BINBYTES => "SHORT_BINBYTES",
        SHORT_BINUNICODE => "SHORT_BINUNICODE",
        BINUNICODE8 => "BINUNICODE8",
        BINBYTES8 => "BINBYTES8",
        EMPTY_SET => "EMPTY_SET",
        ADDITEMS => "ADDITEMS",
        FROZENSET => "FROZENSET",
        NEWOBJ_EX => "NEWOBJ_EX",
        STACK_GLOBAL => "STACK_GLOBAL",
        MEMOIZE => "MEMOIZE",
        FRAME => "FRAME",
        BYTEARRAY8 => "BYTEARRAY8",
        NEXT_BUFFER => "NEXT_BUFFER",
        READONLY_BUFFER => "READONLY_BUFFER",
        _ => "unknown",
    }
}

// ---------------------------------------------------------------------------------------------
// Internal shared representation

#[derive(Clone)]
enum P {
    None,
    Bool(bool),
    Int(i64),
    BigInt(Rc<str>),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    List(Rc<RefCell<Items>>),
    Tuple(Rc<Items>),
    Dict(Rc<RefCell<Pairs>>),
    Set(Rc<RefCell<Items>>),
    Global(Rc<(String, String)>),
    Obj(Rc<RefCell<Obj>>),
}

/// Container contents. Their `Drop` hands the children to [`teardown`], so dropping a structure
/// nested millions deep (a few megabytes of pickle) never recurses.
struct Items(Vec<P>);
struct Pairs(Vec<(P, P)>);

impl std::ops::Deref for Items {
    type Target = Vec<P>;
    fn deref(&self) -> &Vec<P> {
        &self.0
    }
}
impl std::ops::DerefMut for Items {
    fn deref_mut(&mut self) -> &mut Vec<P> {
        &mut self.0
    }
}
impl std::ops::Deref for Pairs {
    type Target = Vec<(P, P)>;
    fn deref(&self) -> &Vec<(P, P)> {
        &self.0
    }
}
impl std::ops::DerefMut for Pairs {
    fn deref_mut(&mut self) -> &mut Vec<(P, P)> {
        &mut self.0
    }
}
impl Drop for Items {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            teardown(std::mem::take(&mut self.0));
        }
    }
}
impl Drop for Pairs {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            teardown(self.0.drain(..).flat_map(|(k, v)| [k, v]).collect());
        }
    }
}

fn tuple(items: Vec<P>) -> P {
    P::Tuple(Rc::new(Items(items)))
}
fn list(items: Vec<P>) -> P {
    let rc = Rc::new(RefCell::new(Items(items)));
    register(Mutable::Items(Rc::downgrade(&rc)));
    P::List(rc)
}
fn set(items: Vec<P>) -> P {
    let rc = Rc::new(RefCell::new(Items(items)));
    register(Mutable::Items(Rc::downgrade(&rc)));
    P::Set(rc)
}
fn dict(pairs: Vec<(P, P)>) -> P {
    let rc = Rc::new(RefCell::new(Pairs(pairs)));
    register(Mutable::Pairs(Rc::downgrade(&rc)));
    P::Dict(rc)
}

/// A mutable container created while unpickling. A pickle can make reference cycles (a list
/// appended to itself through the memo: `APPENDS` after `GET`), which `Rc` alone would leak
/// (found by fuzzing, `tests/data/fuzz/pw3d/leak-*`); every mutable container is registered
/// and emptied when the unpickling ends ([`CycleBreaker`]), and every cycle runs through one.
enum Mutable {
    Items(std::rc::Weak<RefCell<Items>>),
    Pairs(std::rc::Weak<RefCell<Pairs>>),
    Obj(std::rc::Weak<RefCell<Obj>>),
}

thread_local! {
    static CREATED: RefCell<Vec<Mutable>> = const { RefCell::new(Vec::new()) };
}

fn register(m: Mutable) {
    CREATED.with(|c| c.borrow_mut().push(m));
}

/// Empties every container registered since it was made, when dropped (on success and on
/// error alike).
struct CycleBreaker;

impl CycleBreaker {
    fn new() -> Self {
        CREATED.with(|c| c.borrow_mut().clear());
        CycleBreaker
    }
}

impl Drop for CycleBreaker {
    fn drop(&mut self) {
        let created = CREATED.with(|c| std::mem::take(&mut *c.borrow_mut()));
        let mut work = Vec::new();
        for m in created {
            match m {
                Mutable::Items(w) => {
                    if let Some(rc) = w.upgrade()
                        && let Ok(mut cell) = rc.try_borrow_mut()
                    {
                        work.append(&mut cell.0);
                    }
                }
                Mutable::Pairs(w) => {
                    if let Some(rc) = w.upgrade()
                        && let Ok(mut cell) = rc.try_borrow_mut()
                    {
                        work.extend(cell.0.drain(..).flat_map(|(k, v)| [k, v]));
                    }
                }
                Mutable::Obj(w) => {
                    if let Some(rc) = w.upgrade()
                        && let Ok(mut o) = rc.try_borrow_mut()
                    {
                        work.push(std::mem::replace(&mut o.args, P::None));
                        work.push(std::mem::replace(&mut o.state, P::None));
                        work.append(&mut o.list_items);
                        work.extend(o.dict_items.drain(..).flat_map(|(k, v)| [k, v]));
                    }
                }
            }
            // Dropped one container at a time: what it held goes through `teardown`.
            teardown(std::mem::take(&mut work));
        }
    }
}

impl P {
    fn kind(&self) -> &'static str {
        match self {
            P::None => "None",
            P::Bool(_) => "bool",
            P::Int(_) | P::BigInt(_) => "int",
            P::Float(_) => "float",
            P::Str(_) => "str",
            P::Bytes(_) => "bytes",
            P::List(_) => "list",
            P::Tuple(_) => "tuple",
            P::Dict(_) => "dict",
            P::Set(_) => "set",
            P::Global(_) => "global",
            P::Obj(_) => "object",
        }
    }
}

enum Kind {
    Generic,
    /// `_reconstruct(ndarray, (0,), b'b')`, waiting for its BUILD.
    PendingArray,
    /// A built numpy array.
    Array(NdArray),
    /// `numpy.dtype(code, ..)`; `dtype` is None for dtypes this reader does not handle.
    Dtype {
        dtype: Option<DType>,
        big_endian: bool,
    },
}

struct Obj {
    module: String,
    name: String,
    kind: Kind,
    args: P,
    state: P,
    list_items: Vec<P>,
    dict_items: Vec<(P, P)>,
}

impl Drop for Obj {
    fn drop(&mut self) {
        let mut work = vec![
            std::mem::replace(&mut self.args, P::None),
            std::mem::replace(&mut self.state, P::None),
        ];
        work.append(&mut self.list_items);
        work.extend(self.dict_items.drain(..).flat_map(|(k, v)| [k, v]));
        teardown(work);
    }
}

impl Obj {
    fn make(module: &str, name: &str, kind: Kind, args: P) -> P {
        let rc = Rc::new(RefCell::new(Obj {
            module: module.to_owned(),
            name: name.to_owned(),
            kind,
            args,
            state: P::None,
            list_items: Vec::new(),
            dict_items: Vec::new(),
        }));
        register(Mutable::Obj(Rc::downgrade(&rc)));
        P::Obj(rc)
    }
}

// ---------------------------------------------------------------------------------------------
// The machine

struct Machine<'a> {
    input: &'a [u8],
    pos: usize,
    /// Offset and byte of the opcode being executed.
    op_off: usize,
    op: u8,
    stack: Vec<P>,
    metastack: Vec<Vec<P>>,
    memo: HashMap<u64, P>,
    /// `PERSID` / `BINPERSID` become [`PERSISTENT_ID`] objects instead of errors.
    persistent_ids: bool,
}

impl<'a> Machine<'a> {
    fn name(&self) -> &'static str {
        opcode_name(self.op)
    }

    fn malformed(&self, reason: impl Into<String>) -> PickleError {
        PickleError::Malformed {
            name: self.name(),
            offset: self.op_off,
            reason: reason.into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let available = self.input.len() - self.pos;
        if n > available {
            return Err(PickleError::Truncated {
                opcode: self.op,
                name: self.name(),
                offset: self.op_off,
                needed: n,
                available,
            });
        }
        let s = &self.input[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn i32(&mut self) -> Result<i32> {
        let b = self.take(4)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes([
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
        ]))
    }

    /// A length from the input as usize (checked against the input by `take`).
    fn len_u64(&mut self, n: u64) -> Result<&'a [u8]> {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        self.take(n)
    }

    /// A text line up to `\n` (without it).
    fn line(&mut self) -> Result<&'a [u8]> {
        let rest = &self.input[self.pos..];
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                self.pos += i + 1;
                Ok(&rest[..i])
            }
            None => Err(PickleError::Truncated {
                opcode: self.op,
                name: self.name(),
                offset: self.op_off,
                needed: rest.len() + 1,
                available: rest.len(),
            }),
        }
    }

    fn line_str(&mut self) -> Result<&'a str> {
        let l = self.line()?;
        std::str::from_utf8(l).map_err(|_| self.malformed("text argument is not UTF-8"))
    }

    fn utf8(&self, b: &[u8]) -> Result<P> {
        match std::str::from_utf8(b) {
            Ok(s) => Ok(P::Str(Rc::from(s))),
            Err(_) => Err(self.malformed("string is not valid UTF-8")),
        }
    }

    fn pop(&mut self) -> Result<P> {
        match self.stack.pop() {
            Some(v) => Ok(v),
            None => Err(self.malformed("stack is empty")),
        }
    }

    fn top(&self) -> Result<&P> {
        self.stack
            .last()
            .ok_or_else(|| self.malformed("stack is empty"))
    }

    fn pop_mark(&mut self) -> Result<Vec<P>> {
        match self.metastack.pop() {
            Some(prev) => Ok(std::mem::replace(&mut self.stack, prev)),
            None => Err(self.malformed("no MARK on the stack")),
        }
    }

    fn memo_get(&self, index: u64) -> Result<P> {
        self.memo
            .get(&index)
            .cloned()
            .ok_or(PickleError::MemoMissing {
                name: self.name(),
                offset: self.op_off,
                index,
            })
    }

    fn memo_put(&mut self, index: u64) -> Result<()> {
        let v = self.top()?.clone();
        self.memo.insert(index, v);
        Ok(())
    }

    fn unsupported(&self, hint: &'static str) -> PickleError {
        PickleError::UnsupportedOpcode {
            opcode: self.op,
            name: self.name(),
            offset: self.op_off,
            hint,
        }
    }

    fn run(&mut self) -> Result<P> {
        loop {
            if self.pos >= self.input.len() {
                return Err(PickleError::MissingStop {
                    len: self.input.len(),
                });
            }
            self.op_off = self.pos;
            self.op = self.input[self.pos];
            self.pos += 1;
            match self.op {
                STOP => return self.pop(),
                PROTO => {
                    let p = self.u8()?;
                    if p > 5 {
                        return Err(PickleError::UnsupportedProtocol {
                            protocol: p,
                            offset: self.op_off,
                        });
                    }
                }
                FRAME => {
                    // Framing only groups opcodes for buffered reading; the content is inline.
                    let n = self.u64()?;
                    let available = self.input.len() - self.pos;
                    if usize::try_from(n).map_or(true, |n| n > available) {
                        return Err(PickleError::Truncated {
                            opcode: self.op,
                            name: self.name(),
                            offset: self.op_off,
                            needed: usize::try_from(n).unwrap_or(usize::MAX),
                            available,
                        });
                    }
                }
                MARK => {
                    let cur = std::mem::take(&mut self.stack);
                    self.metastack.push(cur);
                }
                POP => {
                    if self.stack.pop().is_none() {
                        self.pop_mark()?;
                    }
                }
                POP_MARK => {
                    self.pop_mark()?;
                }
                DUP => {
                    let v = self.top()?.clone();
                    self.stack.push(v);
                }
                // ---- constants and numbers
                NONE => self.stack.push(P::None),
                NEWTRUE => self.stack.push(P::Bool(true)),
                NEWFALSE => self.stack.push(P::Bool(false)),
                INT => {
                    let l = self.line_str()?;
                    let v = match l {
                        "00" => P::Bool(false),
                        "01" => P::Bool(true),
                        _ => self.parse_int_text(l)?,
                    };
                    self.stack.push(v);
                }
                LONG => {
                    let l = self.line_str()?;
                    let l = l.strip_suffix('L').unwrap_or(l);
                    let v = self.parse_int_text(l)?;
                    self.stack.push(v);
                }
                BININT => {
                    let v = self.i32()?;
                    self.stack.push(P::Int(i64::from(v)));
                }
                BININT1 => {
                    let v = self.u8()?;
                    self.stack.push(P::Int(i64::from(v)));
                }
                BININT2 => {
                    let v = self.u16()?;
                    self.stack.push(P::Int(i64::from(v)));
                }
                LONG1 => {
                    let n = self.u8()?;
                    let b = self.take(usize::from(n))?;
                    self.stack.push(long_from_le(b));
                }
                LONG4 => {
                    let n = self.i32()?;
                    let n = usize::try_from(n).map_err(|_| self.malformed("negative length"))?;
                    let b = self.take(n)?;
                    self.stack.push(long_from_le(b));
                }
                FLOAT => {
                    let l = self.line_str()?;
                    let f = l
                        .trim()
                        .parse::<f64>()
                        .map_err(|_| self.malformed(format!("bad float literal {l:?}")))?;
                    self.stack.push(P::Float(f));
                }
                BINFLOAT => {
                    let b = self.take(8)?;
                    let f = f64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
                    self.stack.push(P::Float(f));
                }
                // ---- strings
                STRING => {
                    let l = self.line()?;
                    let b = self.decode_py_string_literal(l)?;
                    self.stack.push(P::Bytes(Rc::from(b)));
                }
                BINSTRING => {
                    let n = self.i32()?;
                    let n = usize::try_from(n).map_err(|_| self.malformed("negative length"))?;
                    let b = self.take(n)?;
                    self.stack.push(P::Bytes(Rc::from(b)));
                }
                SHORT_BINSTRING | SHORT_BINBYTES => {
                    let n = self.u8()?;
                    let b = self.take(usize::from(n))?;
                    self.stack.push(P::Bytes(Rc::from(b)));
                }
                BINBYTES => {
                    let n = self.u32()?;
                    let b = self.len_u64(u64::from(n))?;
                    self.stack.push(P::Bytes(Rc::from(b)));
                }
                BINBYTES8 | BYTEARRAY8 => {
                    let n = self.u64()?;
                    let b = self.len_u64(n)?;
                    self.stack.push(P::Bytes(Rc::from(b)));
                }
                UNICODE => {
                    let l = self.line()?;
                    let s = self.decode_raw_unicode_escape(l)?;
                    self.stack.push(P::Str(Rc::from(s)));
                }
                BINUNICODE => {
                    let n = self.u32()?;
                    let b = self.len_u64(u64::from(n))?;
                    let v = self.utf8(b)?;
                    self.stack.push(v);
                }
                SHORT_BINUNICODE => {
                    let n = self.u8()?;
                    let b = self.take(usize::from(n))?;
                    let v = self.utf8(b)?;
                    self.stack.push(v);
                }
                BINUNICODE8 => {
                    let n = self.u64()?;
                    let b = self.len_u64(n)?;
                    let v = self.utf8(b)?;
                    self.stack.push(v);
                }
                // ---- containers
                EMPTY_TUPLE => self.stack.push(tuple(Vec::new())),
                TUPLE1 | TUPLE2 | TUPLE3 => {
                    let n = usize::from(self.op - TUPLE1 + 1);
                    if self.stack.len() < n {
                        return Err(self.malformed(format!("needs {n} stack items")));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(tuple(items));
                }
                TUPLE => {
                    let items = self.pop_mark()?;
                    self.stack.push(tuple(items));
                }
                EMPTY_LIST => self.stack.push(list(Vec::new())),
                LIST => {
                    let items = self.pop_mark()?;
                    self.stack.push(list(items));
                }
                EMPTY_DICT => self.stack.push(dict(Vec::new())),
                DICT => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    self.stack.push(dict(pairs));
                }
                EMPTY_SET => self.stack.push(set(Vec::new())),
                FROZENSET => {
                    let items = self.pop_mark()?;
                    self.stack.push(set(items));
                }
                APPEND => {
                    let v = self.pop()?;
                    let target = self.top()?.clone();
                    self.append(&target, vec![v])?;
                }
                APPENDS => {
                    let items = self.pop_mark()?;
                    let target = self.top()?.clone();
                    self.append(&target, items)?;
                }
                SETITEM => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let target = self.top()?.clone();
                    self.setitems(&target, vec![(k, v)])?;
                }
                SETITEMS => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    let target = self.top()?.clone();
                    self.setitems(&target, pairs)?;
                }
                ADDITEMS => {
                    let items = self.pop_mark()?;
                    match self.top()? {
                        P::Set(s) => s.borrow_mut().extend(items),
                        other => {
                            return Err(self.malformed(format!("ADDITEMS on a {}", other.kind())));
                        }
                    }
                }
                // ---- memo
                PUT => {
                    let l = self.line_str()?;
                    let i = l
                        .trim()
                        .parse::<u64>()
                        .map_err(|_| self.malformed("bad memo index"))?;
                    self.memo_put(i)?;
                }
                BINPUT => {
                    let i = self.u8()?;
                    self.memo_put(u64::from(i))?;
                }
                LONG_BINPUT => {
                    let i = self.u32()?;
                    self.memo_put(u64::from(i))?;
                }
                MEMOIZE => {
                    let i = self.memo.len() as u64;
                    self.memo_put(i)?;
                }
                GET => {
                    let l = self.line_str()?;
                    let i = l
                        .trim()
                        .parse::<u64>()
                        .map_err(|_| self.malformed("bad memo index"))?;
                    let v = self.memo_get(i)?;
                    self.stack.push(v);
                }
                BINGET => {
                    let i = self.u8()?;
                    let v = self.memo_get(u64::from(i))?;
                    self.stack.push(v);
                }
                LONG_BINGET => {
                    let i = self.u32()?;
                    let v = self.memo_get(u64::from(i))?;
                    self.stack.push(v);
                }
                // ---- objects
                GLOBAL => {
                    let module = self.line_str()?.to_owned();
                    let name = self.line_str()?.to_owned();
                    self.stack.push(P::Global(Rc::new((module, name))));
                }
                STACK_GLOBAL => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (P::Str(m), P::Str(n)) => self
                            .stack
                            .push(P::Global(Rc::new((m.to_string(), n.to_string())))),
                        _ => return Err(self.malformed("module and name must be str")),
                    }
                }
                REDUCE => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let v = self.call(func, args)?;
                    self.stack.push(v);
                }
                NEWOBJ => {
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let v = self.new_object(cls, args)?;
                    self.stack.push(v);
                }
                NEWOBJ_EX => {
                    let kwargs = self.pop()?;
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let has_kwargs = match &kwargs {
                        P::Dict(d) => !d.borrow().is_empty(),
                        _ => true,
                    };
                    let args = if has_kwargs {
                        tuple(vec![args, kwargs])
                    } else {
                        args
                    };
                    let v = self.new_object(cls, args)?;
                    self.stack.push(v);
                }
                INST => {
                    let module = self.line_str()?.to_owned();
                    let name = self.line_str()?.to_owned();
                    let items = self.pop_mark()?;
                    let v = self.call(P::Global(Rc::new((module, name))), tuple(items))?;
                    self.stack.push(v);
                }
                OBJ => {
                    let mut items = self.pop_mark()?;
                    if items.is_empty() {
                        return Err(self.malformed("OBJ needs a class after the MARK"));
                    }
                    let cls = items.remove(0);
                    let v = self.call(cls, tuple(items))?;
                    self.stack.push(v);
                }
                BUILD => {
                    let state = self.pop()?;
                    let target = self.top()?.clone();
                    self.build(&target, state)?;
                }
                PERSID | BINPERSID if self.persistent_ids => {
                    // Only recorded: the caller resolves the id (a PyTorch storage reference).
                    let pid = if self.op == PERSID {
                        let l = self.line_str()?;
                        P::Str(Rc::from(l))
                    } else {
                        self.pop()?
                    };
                    self.stack.push(Obj::make(
                        PERSISTENT_ID.0,
                        PERSISTENT_ID.1,
                        Kind::Generic,
                        pid,
                    ));
                }
                PERSID | BINPERSID => {
                    return Err(self.unsupported(
                        " (persistent ids, e.g. PyTorch tensor storages, are not supported)",
                    ));
                }
                EXT1 | EXT2 | EXT4 => {
                    return Err(self.unsupported(" (copyreg extension registry)"));
                }
                NEXT_BUFFER | READONLY_BUFFER => {
                    return Err(self.unsupported(
                        " (protocol-5 out-of-band buffers; re-save with protocol <= 4 or in-band buffers)",
                    ));
                }
                _ => return Err(self.unsupported("")),
            }
        }
    }

    fn parse_int_text(&self, l: &str) -> Result<P> {
        let t = l.trim();
        if let Ok(v) = t.parse::<i64>() {
            return Ok(P::Int(v));
        }
        let digits = t.strip_prefix('-').unwrap_or(t);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            Ok(P::BigInt(Rc::from(t)))
        } else {
            Err(self.malformed(format!("bad integer literal {l:?}")))
        }
    }

    fn pairs(&self, items: Vec<P>) -> Result<Vec<(P, P)>> {
        if !items.len().is_multiple_of(2) {
            return Err(self.malformed("odd number of items for key/value pairs"));
        }
        let mut out = Vec::with_capacity(items.len() / 2);
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            out.push((k, v));
        }
        Ok(out)
    }

    fn append(&self, target: &P, items: Vec<P>) -> Result<()> {
        match target {
            P::List(l) => l.borrow_mut().extend(items),
            P::Obj(o) => o.borrow_mut().list_items.extend(items),
            other => return Err(self.malformed(format!("append to a {}", other.kind()))),
        }
        Ok(())
    }

    fn setitems(&self, target: &P, pairs: Vec<(P, P)>) -> Result<()> {
        match target {
            P::Dict(d) => {
                let mut d = d.borrow_mut();
                for (k, v) in pairs {
                    // Python dict semantics: a repeated key replaces the value in place.
                    match d.iter_mut().find(|(ek, _)| key_eq(ek, &k)) {
                        Some(slot) => slot.1 = v,
                        None => d.push((k, v)),
                    }
                }
            }
            P::Obj(o) => o.borrow_mut().dict_items.extend(pairs),
            other => return Err(self.malformed(format!("item assignment on a {}", other.kind()))),
        }
        Ok(())
    }

    /// `cls.__new__(cls, *args)` for NEWOBJ.
    fn new_object(&self, cls: P, args: P) -> Result<P> {
        let P::Global(g) = &cls else {
            return Err(self.malformed(format!("class is a {}, not a global", cls.kind())));
        };
        let (module, name) = (g.0.as_str(), g.1.as_str());
        match (module, name) {
            ("collections", "OrderedDict") => Ok(dict(Vec::new())),
            ("builtins" | "__builtin__", "set" | "frozenset") => Ok(set(Vec::new())),
            ("builtins" | "__builtin__", "dict") => Ok(dict(Vec::new())),
            ("builtins" | "__builtin__", "list") => Ok(list(Vec::new())),
            _ => Ok(Obj::make(module, name, Kind::Generic, args)),
        }
    }

    /// `func(*args)` for REDUCE / INST / OBJ: known callables are interpreted, everything else
    /// becomes a generic object.
    fn call(&self, func: P, args: P) -> Result<P> {
        let P::Global(g) = &func else {
            return Err(self.malformed(format!("callable is a {}, not a global", func.kind())));
        };
        let (module, name) = (g.0.as_str(), g.1.as_str());
        let argv: Vec<P> = match &args {
            P::Tuple(t) => t.to_vec(),
            _ => return Err(self.malformed("arguments are not a tuple")),
        };
        match (module, name) {
            ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => {
                Ok(Obj::make("numpy", "ndarray", Kind::PendingArray, args))
            }
            ("numpy", "dtype") => {
                let code = match argv.first() {
                    Some(P::Str(s)) => s.to_string(),
                    Some(P::Bytes(b)) => b.iter().map(|&c| char::from(c)).collect(),
                    _ => return Err(self.malformed("numpy.dtype() without a type code")),
                };
                let (dtype, big_endian) = match DType::parse(&code) {
                    Ok((d, b)) => (Some(d), b),
                    Err(_) => (None, false),
                };
                Ok(Obj::make(
                    "numpy",
                    "dtype",
                    Kind::Dtype { dtype, big_endian },
                    args,
                ))
            }
            ("numpy.core.multiarray" | "numpy._core.multiarray", "scalar") => {
                let (Some(dt), Some(raw)) = (argv.first(), argv.get(1)) else {
                    return Err(self.malformed("numpy scalar() needs (dtype, bytes)"));
                };
                let Some((dtype, big)) = dtype_of(dt) else {
                    return Ok(Obj::make(module, name, Kind::Generic, args));
                };
                let raw = self.raw_bytes(raw)?;
                self.make_array(Vec::new(), dtype, big, false, raw)
                    .map(|a| Obj::make("numpy", "ndarray", Kind::Array(a), P::None))
            }
            ("numpy.core.numeric" | "numpy._core.numeric", "_frombuffer") => {
                // _frombuffer(buffer, dtype, shape, order)
                let (Some(buf), Some(dt), Some(shape)) = (argv.first(), argv.get(1), argv.get(2))
                else {
                    return Err(self.malformed("_frombuffer needs (buffer, dtype, shape, order)"));
                };
                let Some((dtype, big)) = dtype_of(dt) else {
                    return Ok(Obj::make(module, name, Kind::Generic, args));
                };
                let fortran = matches!(argv.get(3), Some(P::Str(s)) if &**s == "F");
                let shape = self.shape(shape)?;
                let raw = self.raw_bytes(buf)?;
                self.make_array(shape, dtype, big, fortran, raw)
                    .map(|a| Obj::make("numpy", "ndarray", Kind::Array(a), P::None))
            }
            ("_codecs", "encode") => {
                let text = match argv.first() {
                    Some(P::Str(s)) => s.clone(),
                    _ => return Err(self.malformed("_codecs.encode needs a str")),
                };
                let enc = match argv.get(1) {
                    Some(P::Str(e)) => e.to_ascii_lowercase().replace(['-', '_'], ""),
                    None => "utf8".into(),
                    _ => return Err(self.malformed("_codecs.encode: encoding is not a str")),
                };
                match enc.as_str() {
                    "latin1" | "iso88591" | "l1" => Ok(P::Bytes(Rc::from(self.latin1(&text)?))),
                    "utf8" => Ok(P::Bytes(Rc::from(text.as_bytes()))),
                    "ascii" if text.is_ascii() => Ok(P::Bytes(Rc::from(text.as_bytes()))),
                    _ => Err(self.malformed(format!("_codecs.encode with encoding {enc:?}"))),
                }
            }
            ("builtins" | "__builtin__", "bytes" | "bytearray") => match argv.as_slice() {
                [] => Ok(P::Bytes(Rc::from(Vec::new()))),
                [P::Bytes(b)] => Ok(P::Bytes(b.clone())),
                [P::Str(s), _enc] => Ok(P::Bytes(Rc::from(self.latin1(s)?))),
                [P::List(l)] => {
                    let l = l.borrow();
                    let mut out = Vec::with_capacity(l.len());
                    for v in l.iter() {
                        match v {
                            P::Int(i) => out.push(
                                u8::try_from(*i)
                                    .map_err(|_| self.malformed("byte out of range"))?,
                            ),
                            _ => return Err(self.malformed("bytes() from a non-int list")),
                        }
                    }
                    Ok(P::Bytes(Rc::from(out)))
                }
                _ => Ok(Obj::make(module, name, Kind::Generic, args)),
            },
            ("builtins" | "__builtin__", "set" | "frozenset") => match argv.as_slice() {
                [] => Ok(set(Vec::new())),
                [P::List(l)] => Ok(set(l.borrow().to_vec())),
                [P::Tuple(t)] => Ok(set(t.to_vec())),
                _ => Ok(Obj::make(module, name, Kind::Generic, args)),
            },
            ("collections", "OrderedDict") => match argv.as_slice() {
                [] => Ok(dict(Vec::new())),
                [P::List(l)] => {
                    let mut pairs = Vec::new();
                    for item in l.borrow().iter() {
                        match item {
                            P::Tuple(t) if t.len() == 2 => pairs.push((t[0].clone(), t[1].clone())),
                            P::List(t) if t.borrow().len() == 2 => {
                                let t = t.borrow();
                                pairs.push((t[0].clone(), t[1].clone()))
                            }
                            _ => return Err(self.malformed("OrderedDict items are not pairs")),
                        }
                    }
                    Ok(dict(pairs))
                }
                _ => Ok(Obj::make(module, name, Kind::Generic, args)),
            },
            ("copy_reg" | "copyreg", "_reconstructor") | ("copy_reg" | "copyreg", "__newobj__") => {
                match argv.first() {
                    Some(cls @ P::Global(_)) => {
                        let rest = tuple(argv.get(1..).unwrap_or(&[]).to_vec());
                        self.new_object(cls.clone(), rest)
                    }
                    _ => Err(self.malformed(format!("{module}.{name} without a class"))),
                }
            }
            _ => Ok(Obj::make(module, name, Kind::Generic, args)),
        }
    }

    fn latin1(&self, s: &str) -> Result<Vec<u8>> {
        s.chars()
            .map(|c| u8::try_from(u32::from(c)))
            .collect::<std::result::Result<Vec<u8>, _>>()
            .map_err(|_| {
                self.malformed("text has characters above U+00FF; cannot encode as latin-1")
            })
    }

    /// Array payload: bytes, or a str of latin-1 code points (what `encoding='latin1'` makes).
    fn raw_bytes(&self, p: &P) -> Result<Rc<[u8]>> {
        match p {
            P::Bytes(b) => Ok(b.clone()),
            P::Str(s) => Ok(Rc::from(self.latin1(s)?)),
            other => Err(self.malformed(format!("array data is a {}, not bytes", other.kind()))),
        }
    }

    fn shape(&self, p: &P) -> Result<Vec<usize>> {
        let items: Vec<P> = match p {
            P::Tuple(t) => t.to_vec(),
            P::List(l) => l.borrow().to_vec(),
            P::Int(_) => vec![p.clone()],
            other => return Err(self.malformed(format!("array shape is a {}", other.kind()))),
        };
        items
            .iter()
            .map(|d| match d {
                P::Int(i) => usize::try_from(*i).map_err(|_| self.malformed("negative dimension")),
                _ => Err(self.malformed("array shape holds a non-integer")),
            })
            .collect()
    }

    fn make_array(
        &self,
        shape: Vec<usize>,
        dtype: DType,
        big_endian: bool,
        fortran: bool,
        raw: Rc<[u8]>,
    ) -> Result<NdArray> {
        let expected = checked_numel(&shape)
            .and_then(|n| n.checked_mul(dtype.itemsize()))
            .ok_or_else(|| self.malformed(format!("array shape {shape:?} overflows")))?;
        if raw.len() != expected {
            return Err(self.malformed(format!(
                "array of shape {shape:?} and dtype {dtype} needs {expected} bytes, the pickle holds {}",
                raw.len()
            )));
        }
        let mut data = raw.to_vec();
        if big_endian {
            swap_bytes(&mut data, dtype.itemsize());
        }
        Ok(NdArray {
            shape,
            dtype,
            fortran_order: fortran,
            data,
        })
    }

    fn build(&self, target: &P, state: P) -> Result<()> {
        let P::Obj(o) = target else {
            return Err(self.malformed(format!("BUILD on a {}", target.kind())));
        };
        let mut o = o.borrow_mut();
        match &mut o.kind {
            Kind::PendingArray => {
                // ndarray.__setstate__((version, shape, dtype, is_fortran, rawdata)); the
                // version is absent in very old pickles.
                let items: Vec<P> = match &state {
                    P::Tuple(t) => t.to_vec(),
                    _ => return Err(self.malformed("ndarray state is not a tuple")),
                };
                let items = match items.len() {
                    5 => &items[1..],
                    4 => &items[..],
                    n => return Err(self.malformed(format!("ndarray state has {n} items"))),
                };
                let shape = self.shape(&items[0])?;
                let fortran = match &items[2] {
                    P::Bool(b) => *b,
                    P::Int(i) => *i != 0,
                    _ => return Err(self.malformed("ndarray is_fortran is not a bool")),
                };
                match (dtype_of(&items[1]), &items[3]) {
                    (Some((dtype, big)), P::Bytes(_) | P::Str(_)) => {
                        let raw = self.raw_bytes(&items[3])?;
                        let a = self.make_array(shape, dtype, big, fortran, raw)?;
                        o.kind = Kind::Array(a);
                    }
                    // unsupported dtype or object array: keep as a generic object
                    _ => {
                        o.kind = Kind::Generic;
                        o.state = state;
                    }
                }
            }
            Kind::Dtype {
                dtype, big_endian, ..
            } => {
                // (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])
                if let P::Tuple(t) = &state {
                    if let Some(order) = t.get(1) {
                        let order = match order {
                            P::Str(s) => s.to_string(),
                            P::Bytes(b) => b.iter().map(|&c| char::from(c)).collect(),
                            _ => String::new(),
                        };
                        match order.as_str() {
                            ">" => *big_endian = dtype.is_some_and(|d| d.itemsize() > 1),
                            "<" | "|" => *big_endian = false,
                            "=" => *big_endian = cfg!(target_endian = "big"),
                            _ => {}
                        }
                    }
                    // structured (names) or sub-array dtypes are not plain numeric
                    let structured = !matches!(t.get(3), None | Some(P::None))
                        || !matches!(t.get(2), None | Some(P::None));
                    if structured {
                        *dtype = None;
                    }
                }
                o.state = state;
            }
            Kind::Array(_) => return Err(self.malformed("BUILD on an already built array")),
            Kind::Generic => {
                // default __setstate__: update __dict__ with a dict state
                let merged = match (&o.state, &state) {
                    (P::Dict(old), P::Dict(new)) if !Rc::ptr_eq(old, new) => {
                        let new = new.borrow().clone();
                        let mut old = old.borrow_mut();
                        for (k, v) in new {
                            match old.iter_mut().find(|(ek, _)| key_eq(ek, &k)) {
                                Some(slot) => slot.1 = v,
                                None => old.push((k, v)),
                            }
                        }
                        true
                    }
                    _ => false,
                };
                if !merged {
                    o.state = state;
                }
            }
        }
        Ok(())
    }

    /// Python 2 `repr(str)` literal (STRING opcode) to bytes.
    fn decode_py_string_literal(&self, l: &[u8]) -> Result<Vec<u8>> {
        let l = l.strip_suffix(b"\r").unwrap_or(l);
        let inner = match l {
            [q, inner @ .., q2] if (*q == b'\'' || *q == b'"') && q == q2 => inner,
            _ => return Err(self.malformed("STRING argument is not quoted")),
        };
        let mut out = Vec::with_capacity(inner.len());
        let mut i = 0;
        while i < inner.len() {
            let c = inner[i];
            i += 1;
            if c != b'\\' {
                out.push(c);
                continue;
            }
            let Some(&e) = inner.get(i) else {
                return Err(self.malformed("dangling backslash in STRING"));
            };
            i += 1;
            match e {
                b'\\' => out.push(b'\\'),
                b'\'' => out.push(b'\''),
                b'"' => out.push(b'"'),
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b't' => out.push(b'\t'),
                b'a' => out.push(7),
                b'b' => out.push(8),
                b'f' => out.push(12),
                b'v' => out.push(11),
                b'\n' => {}
                b'x' => {
                    let h = inner
                        .get(i..i + 2)
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                        .ok_or_else(|| self.malformed("bad \\x escape in STRING"))?;
                    out.push(h);
                    i += 2;
                }
                b'0'..=b'7' => {
                    let mut v = u32::from(e - b'0');
                    for _ in 0..2 {
                        match inner.get(i) {
                            Some(&d @ b'0'..=b'7') => {
                                v = v * 8 + u32::from(d - b'0');
                                i += 1;
                            }
                            _ => break,
                        }
                    }
                    out.push((v & 0xff) as u8);
                }
                other => {
                    out.push(b'\\');
                    out.push(other);
                }
            }
        }
        Ok(out)
    }

    /// `raw-unicode-escape` (UNICODE opcode): `\uXXXX` and `\UXXXXXXXX` escapes, other bytes
    /// are latin-1 code points.
    fn decode_raw_unicode_escape(&self, l: &[u8]) -> Result<String> {
        let mut out = String::with_capacity(l.len());
        let mut i = 0;
        while i < l.len() {
            let c = l[i];
            if c == b'\\' && matches!(l.get(i + 1), Some(b'u' | b'U')) {
                let n = if l[i + 1] == b'u' { 4 } else { 8 };
                let ch = l
                    .get(i + 2..i + 2 + n)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .and_then(char::from_u32)
                    .ok_or_else(|| self.malformed("bad \\u escape in UNICODE"))?;
                out.push(ch);
                i += 2 + n;
            } else {
                out.push(char::from(c));
                i += 1;
            }
        }
        Ok(out)
    }
}

/// The dtype and byte order of a `numpy.dtype` object (None if not a supported dtype object).
fn dtype_of(p: &P) -> Option<(DType, bool)> {
    match p {
        // try_borrow: the object may be the one being built (a self-referencing state)
        P::Obj(o) => match &o.try_borrow().ok()?.kind {
            Kind::Dtype {
                dtype: Some(d),
                big_endian,
                ..
            } => Some((*d, *big_endian)),
            _ => None,
        },
        _ => None,
    }
}

/// Key equality for dict assignment (scalars and strings; containers never compare equal).
fn key_eq(a: &P, b: &P) -> bool {
    key_eq_depth(a, b, 0)
}

fn key_eq_depth(a: &P, b: &P, depth: usize) -> bool {
    if depth > 32 {
        return false;
    }
    match (a, b) {
        (P::Str(x), P::Str(y)) => x == y,
        (P::Bytes(x), P::Bytes(y)) => x == y,
        (P::Int(x), P::Int(y)) => x == y,
        (P::Bool(x), P::Bool(y)) => x == y,
        (P::Int(x), P::Bool(y)) | (P::Bool(y), P::Int(x)) => *x == i64::from(*y),
        (P::BigInt(x), P::BigInt(y)) => x == y,
        (P::Float(x), P::Float(y)) => x == y,
        (P::None, P::None) => true,
        (P::Tuple(x), P::Tuple(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y.iter())
                    .all(|(a, b)| key_eq_depth(a, b, depth + 1))
        }
        _ => false,
    }
}

/// LONG1/LONG4 payload: little-endian two's complement.
fn long_from_le(b: &[u8]) -> P {
    if b.is_empty() {
        return P::Int(0);
    }
    if b.len() <= 8 {
        let neg = b[b.len() - 1] & 0x80 != 0;
        let mut buf = if neg { [0xffu8; 8] } else { [0u8; 8] };
        buf[..b.len()].copy_from_slice(b);
        return P::Int(i64::from_le_bytes(buf));
    }
    // Longer: fits i64 only if the extra bytes are pure sign extension.
    let neg = b[b.len() - 1] & 0x80 != 0;
    let ext = if neg { 0xff } else { 0 };
    if b[8..].iter().all(|&x| x == ext) && ((b[7] & 0x80 != 0) == neg) {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(&b[..8]);
        return P::Int(i64::from_le_bytes(buf));
    }
    P::BigInt(Rc::from(le_twos_complement_to_decimal(b)))
}

/// Decimal text of a little-endian two's-complement integer of any length.
fn le_twos_complement_to_decimal(b: &[u8]) -> String {
    let neg = b.last().is_some_and(|&x| x & 0x80 != 0);
    // magnitude, big-endian
    let mut mag: Vec<u8> = b.iter().rev().copied().collect();
    if neg {
        // two's complement negate: invert and add one
        for x in mag.iter_mut() {
            *x = !*x;
        }
        for x in mag.iter_mut().rev() {
            let (v, carry) = x.overflowing_add(1);
            *x = v;
            if !carry {
                break;
            }
        }
    }
    let mut digits = Vec::new();
    while mag.iter().any(|&x| x != 0) {
        let mut rem = 0u32;
        for x in mag.iter_mut() {
            let cur = (rem << 8) | u32::from(*x);
            *x = (cur / 10) as u8;
            rem = cur % 10;
        }
        digits.push(b'0' + rem as u8);
    }
    if digits.is_empty() {
        digits.push(b'0');
    }
    if neg {
        digits.push(b'-');
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Copy-out into the owned tree

const MAX_DEPTH: usize = 200;

/// Bytes the owned tree of an `input`-byte pickle may take: 8 times the input (memoised
/// arrays referenced again are copied) plus 16 MiB. A 700-byte pickle of shared references
/// (found by fuzzing the 3DPW reader) expanded to 680 MB under the earlier 64 MiB allowance
/// charged at 32 bytes a node.
fn copy_out_allowance(input: usize) -> usize {
    input.saturating_mul(8).saturating_add(16 << 20)
}

struct Budget {
    /// Bytes (estimated) still allowed to be produced.
    left: usize,
}

impl Budget {
    fn charge(&mut self, n: usize) -> Result<()> {
        match self.left.checked_sub(n) {
            Some(l) => {
                self.left = l;
                Ok(())
            }
            None => Err(PickleError::TooLarge {
                reason: "the unpickled value would be far larger than the input (shared references expand)".into(),
            }),
        }
    }
}

fn to_value(p: &P, depth: usize, budget: &mut Budget) -> Result<Value> {
    if depth > MAX_DEPTH {
        return Err(PickleError::TooLarge {
            reason: format!(
                "nesting deeper than {MAX_DEPTH} levels (or a self-referencing container)"
            ),
        });
    }
    // Every node costs at least its own slot; charging the real size keeps the allowance a
    // bound on memory, not on a guess.
    budget.charge(std::mem::size_of::<Value>())?;
    let d = depth + 1;
    let list = |items: &[P], budget: &mut Budget| -> Result<Vec<Value>> {
        items.iter().map(|x| to_value(x, d, budget)).collect()
    };
    let pairs = |items: &[(P, P)], budget: &mut Budget| -> Result<Vec<(Value, Value)>> {
        items
            .iter()
            .map(|(k, v)| Ok((to_value(k, d, budget)?, to_value(v, d, budget)?)))
            .collect()
    };
    Ok(match p {
        P::None => Value::None,
        P::Bool(b) => Value::Bool(*b),
        P::Int(i) => Value::Int(*i),
        P::BigInt(s) => Value::BigInt(s.to_string()),
        P::Float(f) => Value::Float(*f),
        P::Str(s) => {
            budget.charge(s.len())?;
            Value::Str(s.to_string())
        }
        P::Bytes(b) => {
            budget.charge(b.len())?;
            Value::Bytes(b.to_vec())
        }
        P::List(l) => Value::List(list(&l.try_borrow().map_err(|_| recursive())?, budget)?),
        P::Tuple(t) => Value::Tuple(list(t, budget)?),
        P::Set(s) => Value::Set(list(&s.try_borrow().map_err(|_| recursive())?, budget)?),
        P::Dict(m) => Value::Dict(pairs(&m.try_borrow().map_err(|_| recursive())?, budget)?),
        P::Global(g) => Value::Global {
            module: g.0.clone(),
            name: g.1.clone(),
        },
        P::Obj(o) => {
            let o = o.try_borrow().map_err(|_| recursive())?;
            match &o.kind {
                Kind::Array(a) => {
                    budget.charge(a.data.len())?;
                    Value::Array(a.clone())
                }
                _ => Value::Object(Box::new(PyObject {
                    module: o.module.clone(),
                    name: o.name.clone(),
                    args: to_value(&o.args, d, budget)?,
                    state: to_value(&o.state, d, budget)?,
                    list_items: list(&o.list_items, budget)?,
                    dict_items: pairs(&o.dict_items, budget)?,
                })),
            }
        }
    })
}

fn recursive() -> PickleError {
    PickleError::TooLarge {
        reason: "self-referencing object".into(),
    }
}

/// Drops a graph of shared values without recursion: containers we hold the last reference
/// to are emptied into the work list before their (now shallow) shell is dropped.
fn teardown(mut work: Vec<P>) {
    // `Rc::get_mut` fails while the cycle registry holds a weak pointer, so sole ownership is
    // told by the strong count; the contents are then taken through the RefCell.
    while let Some(p) = work.pop() {
        match p {
            P::List(rc) | P::Set(rc) => {
                if Rc::strong_count(&rc) == 1
                    && let Ok(mut cell) = rc.try_borrow_mut()
                {
                    work.append(&mut cell.0);
                }
            }
            P::Dict(rc) => {
                if Rc::strong_count(&rc) == 1
                    && let Ok(mut cell) = rc.try_borrow_mut()
                {
                    work.extend(cell.0.drain(..).flat_map(|(k, v)| [k, v]));
                }
            }
            P::Tuple(mut rc) => {
                if let Some(items) = Rc::get_mut(&mut rc) {
                    work.append(&mut items.0);
                }
            }
            P::Obj(rc) => {
                if Rc::strong_count(&rc) == 1
                    && let Ok(mut o) = rc.try_borrow_mut()
                {
                    work.push(std::mem::replace(&mut o.args, P::None));
                    work.push(std::mem::replace(&mut o.state, P::None));
                    work.append(&mut o.list_items);
                    work.extend(o.dict_items.drain(..).flat_map(|(k, v)| [k, v]));
                }
            }
            _ => {}
        }
    }
}

/// (module, name) of the [`PyObject`] a persistent id becomes with
/// [`read_pickle_with_persistent_ids`]; its `args` is the id (for PyTorch: `('storage',
/// storage_type, key, location, numel)`).
pub const PERSISTENT_ID: (&str, &str) = ("", "persistent_id");

/// Unpickles a complete pickle held in memory (bytes after STOP are ignored, as in Python).
/// Persistent ids are errors.
pub fn read_pickle(bytes: &[u8]) -> Result<Value> {
    unpickle(bytes, false)
}

/// [`read_pickle`], with persistent ids (`PERSID`, `BINPERSID`: how `torch.save` refers to
/// tensor storages) recorded as [`PERSISTENT_ID`] objects for the caller to resolve.
pub fn read_pickle_with_persistent_ids(bytes: &[u8]) -> Result<Value> {
    unpickle(bytes, true)
}

fn unpickle(bytes: &[u8], persistent_ids: bool) -> Result<Value> {
    let _cycles = CycleBreaker::new();
    let mut m = Machine {
        input: bytes,
        pos: 0,
        op_off: 0,
        op: 0,
        stack: Vec::new(),
        metastack: Vec::new(),
        memo: HashMap::new(),
        persistent_ids,
    };
    let top = m.run()?;
    drop(m); // memo and stacks: the tree below then holds the only references
    let mut budget = Budget {
        left: copy_out_allowance(bytes.len()),
    };
    to_value(&top, 0, &mut budget)
}

/// Reads and unpickles a file.
pub fn read_pickle_file(path: impl AsRef<Path>) -> Result<Value> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| PickleError::Io {
        path: path.to_owned(),
        source,
    })?;
    read_pickle(&bytes).map_err(|e| PickleError::File {
        path: path.to_owned(),
        source: Box::new(e),
    })
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.type_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Byte strings below are `pickle.dumps(...)` output of Python 3.11 / numpy 2.4, printed with
    // a small script that writes Rust byte literals. The Python expression is above each one.

    // {'a': [1, -2, 300, 70000, -70000, 2**40, 2**70, -2**70], 'b': (1.5, None, True, False),
    //  'c': 'h\xe9llo', 'd': b'\x00\xffxy'}, protocol=2
    const P2_DICT: &[u8] = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01J\xfe\xff\xff\xffM,\x01Jp\x11\x01\x00J\x90\xee\xfe\xff\x8a\x06\x00\x00\x00\x00\x00\x01\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00@\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\xc0eX\x01\x00\x00\x00bq\x03(G?\xf8\x00\x00\x00\x00\x00\x00N\x88\x89tq\x04X\x01\x00\x00\x00cq\x05X\x06\x00\x00\x00h\xc3\xa9lloq\x06X\x01\x00\x00\x00dq\x07c_codecs\nencode\nq\x08X\x05\x00\x00\x00\x00\xc3\xbfxyq\x09X\x06\x00\x00\x00latin1q\n\x86q\x0bRq\x0cu.";
    // same dict minus 'd', plus 'e': (1, 2, 3, 4), protocol=0
    const P0_DICT: &[u8] = b"(dp0\nVa\np1\n(lp2\nI1\naI-2\naI300\naI70000\naL1180591620717411303424L\nasVb\np3\n(F1.5\nNI01\nI00\ntp4\nsVc\np5\nVh\xe9llo\np6\nsVe\np7\n(I1\nI2\nI3\nI4\ntp8\ns.";
    // {'s': {1, 2}, 'fs': frozenset([3]), 'b': b'abc', 'u': 'xxx'}, protocol=4
    const P4_SETS: &[u8] = b"\x80\x04\x95/\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01s\x94\x8f\x94(K\x01K\x02\x90\x8c\x02fs\x94(K\x03\x91\x94\x8c\x01b\x94C\x03abc\x94\x8c\x01u\x94\x8c\x03xxx\x94u.";
    // [b'', bytearray(b'ab')], protocol=5 (in-band BYTEARRAY8)
    const P5_BYTES: &[u8] = b"\x80\x05\x95\x14\x00\x00\x00\x00\x00\x00\x00]\x94(C\x00\x94\x96\x02\x00\x00\x00\x00\x00\x00\x00ab\x94e.";
    // [1, 'x', 2.5, [None]], protocol=1
    const P1_LIST: &[u8] =
        b"]q\x00(K\x01X\x01\x00\x00\x00xq\x01G@\x04\x00\x00\x00\x00\x00\x00]q\x02Nae.";
    // [b'ab', 'z'], protocol=3
    const P3_BYTES: &[u8] = b"\x80\x03]q\x00(C\x02abq\x01X\x01\x00\x00\x00zq\x02e.";
    // np.array([[1, 2], [3, 4]], dtype='<i4'), protocol=2
    const P2_I4: &[u8] = b"\x80\x02cnumpy._core.multiarray\n_reconstruct\nq\x00cnumpy\nndarray\nq\x01K\x00\x85q\x02c_codecs\nencode\nq\x03X\x01\x00\x00\x00bq\x04X\x06\x00\x00\x00latin1q\x05\x86q\x06Rq\x07\x87q\x08Rq\x09(K\x01K\x02K\x02\x86q\ncnumpy\ndtype\nq\x0bX\x02\x00\x00\x00i4q\x0c\x89\x88\x87q\x0dRq\x0e(K\x03X\x01\x00\x00\x00<q\x0fNNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tq\x10b\x89h\x03X\x10\x00\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00\x03\x00\x00\x00\x04\x00\x00\x00q\x11h\x05\x86q\x12Rq\x13tq\x14b.";
    // np.float64(2.5), protocol=2
    const P2_SCALAR: &[u8] = b"\x80\x02cnumpy._core.multiarray\nscalar\nq\x00cnumpy\ndtype\nq\x01X\x02\x00\x00\x00f8q\x02\x89\x88\x87q\x03Rq\x04(K\x03X\x01\x00\x00\x00<q\x05NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tq\x06bc_codecs\nencode\nq\x07X\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00\x04@q\x08X\x06\x00\x00\x00latin1q\x09\x86q\nRq\x0b\x86q\x0cRq\x0d.";
    // np.asfortranarray(np.array([[1, 2, 3], [4, 5, 6]], dtype='>i2')), protocol=2
    const P2_FORTRAN_BE: &[u8] = b"\x80\x02cnumpy._core.multiarray\n_reconstruct\nq\x00cnumpy\nndarray\nq\x01K\x00\x85q\x02c_codecs\nencode\nq\x03X\x01\x00\x00\x00bq\x04X\x06\x00\x00\x00latin1q\x05\x86q\x06Rq\x07\x87q\x08Rq\x09(K\x01K\x02K\x03\x86q\ncnumpy\ndtype\nq\x0bX\x02\x00\x00\x00i2q\x0c\x89\x88\x87q\x0dRq\x0e(K\x03X\x01\x00\x00\x00>q\x0fNNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tq\x10b\x88h\x03X\x0c\x00\x00\x00\x00\x01\x00\x04\x00\x02\x00\x05\x00\x03\x00\x06q\x11h\x05\x86q\x12Rq\x13tq\x14b.";
    // np.array([1.0, -0.5], dtype='<f4'), protocol=5
    const P5_F4: &[u8] = b"\x80\x05\x95|\x00\x00\x00\x00\x00\x00\x00\x8c\x13numpy._core.numeric\x94\x8c\x0b_frombuffer\x94\x93\x94(\x96\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00\x80?\x00\x00\x00\xbf\x94\x8c\x05numpy\x94\x8c\x05dtype\x94\x93\x94\x8c\x02f4\x94\x89\x88\x87\x94R\x94(K\x03\x8c\x01<\x94NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t\x94bK\x02\x85\x94\x8c\x01C\x94t\x94R\x94.";
    // np.array([True, False]), protocol=4
    const P4_BOOL: &[u8] = b"\x80\x04\x95\x8b\x00\x00\x00\x00\x00\x00\x00\x8c\x16numpy._core.multiarray\x94\x8c\x0c_reconstruct\x94\x93\x94\x8c\x05numpy\x94\x8c\x07ndarray\x94\x93\x94K\x00\x85\x94C\x01b\x94\x87\x94R\x94(K\x01K\x02\x85\x94h\x03\x8c\x05dtype\x94\x93\x94\x8c\x02b1\x94\x89\x88\x87\x94R\x94(K\x03\x8c\x01|\x94NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00t\x94b\x89C\x02\x01\x00\x94t\x94b.";

    // Hand-assembled as Python 2.7 `cPickle.dumps({'seq': 'abc\xe9', 'x': np.array([1.5, 2.0])}, 2)`
    // writes it (memo from 1, SHORT_BINSTRING, numpy.core.multiarray, dtype args (code, 0, 1)).
    // Python 3: pickle.loads(PY2_DICT, encoding='latin1') -> {'seq': 'abcé', 'x': array([1.5, 2. ])}
    const PY2_DICT: &[u8] = b"\x80\x02}q\x01(U\x03seqq\x02U\x04abc\xe9q\x03U\x01xq\x04cnumpy.core.multiarray\n_reconstruct\nq\x05cnumpy\nndarray\nq\x06K\x00\x85U\x01b\x87Rq\x07(K\x01K\x02\x85cnumpy\ndtype\nq\x08U\x02f8K\x00K\x01\x87Rq\x09(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89U\x10\x00\x00\x00\x00\x00\x00\xf8?\x00\x00\x00\x00\x00\x00\x00@tbu.";

    fn s(x: &str) -> Value {
        Value::Str(x.into())
    }

    #[test]
    fn protocol2_scalars_and_containers() {
        let v = read_pickle(P2_DICT).unwrap();
        let a = v.get("a").unwrap().as_list().unwrap();
        assert_eq!(
            a,
            &[
                Value::Int(1),
                Value::Int(-2),
                Value::Int(300),
                Value::Int(70000),
                Value::Int(-70000),
                Value::Int(1 << 40),
                Value::BigInt("1180591620717411303424".into()),
                Value::BigInt("-1180591620717411303424".into()),
            ]
        );
        assert_eq!(
            v.get("b").unwrap(),
            &Value::Tuple(vec![
                Value::Float(1.5),
                Value::None,
                Value::Bool(true),
                Value::Bool(false)
            ])
        );
        assert_eq!(v.get("c").unwrap(), &s("h\u{e9}llo"));
        // Python 3 bytes at protocol 2 = _codecs.encode('\x00\xffxy', 'latin1')
        assert_eq!(
            v.get("d").unwrap(),
            &Value::Bytes(vec![0, 0xff, b'x', b'y'])
        );
        assert_eq!(v.keys(), vec!["a", "b", "c", "d"]);
        assert!(v.get("zz").is_none());
    }

    #[test]
    fn protocol0_text_opcodes() {
        let v = read_pickle(P0_DICT).unwrap();
        assert_eq!(
            v.get("a").unwrap().as_list().unwrap(),
            &[
                Value::Int(1),
                Value::Int(-2),
                Value::Int(300),
                Value::Int(70000),
                Value::BigInt("1180591620717411303424".into()),
            ]
        );
        assert_eq!(
            v.get("b").unwrap(),
            &Value::Tuple(vec![
                Value::Float(1.5),
                Value::None,
                Value::Bool(true),
                Value::Bool(false)
            ])
        );
        assert_eq!(v.get("c").unwrap(), &s("h\u{e9}llo"));
        assert_eq!(
            v.get("e").unwrap(),
            &Value::Tuple((1..=4).map(Value::Int).collect())
        );
    }

    #[test]
    fn protocol1_3_4_5() {
        assert_eq!(
            read_pickle(P1_LIST).unwrap(),
            Value::List(vec![
                Value::Int(1),
                s("x"),
                Value::Float(2.5),
                Value::List(vec![Value::None])
            ])
        );
        assert_eq!(
            read_pickle(P3_BYTES).unwrap(),
            Value::List(vec![Value::Bytes(b"ab".to_vec()), s("z")])
        );
        let v = read_pickle(P4_SETS).unwrap();
        assert_eq!(
            v.get("s").unwrap(),
            &Value::Set(vec![Value::Int(1), Value::Int(2)])
        );
        assert_eq!(v.get("fs").unwrap(), &Value::Set(vec![Value::Int(3)]));
        assert_eq!(v.get("b").unwrap().as_bytes().unwrap(), b"abc");
        assert_eq!(v.get("u").unwrap(), &s("xxx"));
        assert_eq!(
            read_pickle(P5_BYTES).unwrap(),
            Value::List(vec![Value::Bytes(vec![]), Value::Bytes(b"ab".to_vec())])
        );
    }

    #[test]
    fn python2_str_and_string_opcode() {
        // pickle.loads(b"S'a\\x00b\\'c\\n'\np0\n.", encoding='bytes') == b"a\x00b'c\n"
        let v = read_pickle(b"S'a\\x00b\\'c\\n'\np0\n.").unwrap();
        assert_eq!(v, Value::Bytes(b"a\x00b'c\n".to_vec()));
        let v = read_pickle(PY2_DICT).unwrap();
        // py2 str keys are bytes; get() matches them, as_str() decodes latin-1
        assert_eq!(v.get("seq").unwrap().as_str().unwrap(), "abc\u{e9}");
        assert_eq!(v.get("seq").unwrap().as_bytes().unwrap(), b"abc\xe9");
        let x = v.get("x").unwrap().as_array().unwrap();
        assert_eq!((x.dtype, x.shape.clone()), (DType::F64, vec![2]));
        assert_eq!(x.to_f64().unwrap(), vec![1.5, 2.0]);
    }

    #[test]
    fn numpy_arrays_and_scalars() {
        let a = read_pickle(P2_I4).unwrap();
        let a = a.as_array().unwrap();
        assert_eq!(
            (a.dtype, a.shape.clone(), a.fortran_order),
            (DType::I32, vec![2, 2], false)
        );
        assert_eq!(a.to_i64().unwrap(), vec![1, 2, 3, 4]);

        let v = read_pickle(P2_SCALAR).unwrap();
        assert_eq!(v.as_array().unwrap().shape, Vec::<usize>::new());
        assert_eq!(v.as_f64(), Some(2.5));

        let f = read_pickle(P2_FORTRAN_BE).unwrap();
        let f = f.as_array().unwrap();
        assert_eq!(
            (f.dtype, f.shape.clone(), f.fortran_order),
            (DType::I16, vec![2, 3], true)
        );
        assert_eq!(f.to_i64().unwrap(), vec![1, 2, 3, 4, 5, 6]);

        let p5 = read_pickle(P5_F4).unwrap();
        let p5 = p5.as_array().unwrap();
        assert_eq!((p5.dtype, p5.shape.clone()), (DType::F32, vec![2]));
        assert_eq!(p5.to_f32().unwrap(), vec![1.0, -0.5]);

        let b = read_pickle(P4_BOOL).unwrap();
        let b = b.as_array().unwrap();
        assert_eq!(b.dtype, DType::Bool);
        assert_eq!(b.to_bool().unwrap(), vec![true, false]);
    }

    #[test]
    fn objects_reduce_newobj_build() {
        // class Foo: x = 1; y = 'b' (set in __init__) -- pickle.dumps(Foo(), 0) and (.., 2)
        let p0 = b"ccopy_reg\n_reconstructor\np0\n(c__main__\nFoo\np1\nc__builtin__\nobject\np2\nNtp3\nRp4\n(dp5\nVx\np6\nI1\nsVy\np7\nVb\np8\nsb.";
        let p2 = b"\x80\x02c__main__\nFoo\nq\x00)\x81q\x01}q\x02(X\x01\x00\x00\x00xq\x03K\x01X\x01\x00\x00\x00yq\x04X\x01\x00\x00\x00bq\x05ub.";
        for bytes in [&p0[..], &p2[..]] {
            let v = read_pickle(bytes).unwrap();
            let o = v.as_object().unwrap();
            assert_eq!(o.qualname(), "__main__.Foo");
            assert_eq!(v.get("x"), Some(&Value::Int(1)));
            assert_eq!(v.get("y"), Some(&s("b")));
        }
        // collections.OrderedDict([('k', 1), ('j', 2)]), protocol 2: REDUCE then SETITEMS
        let od = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01(X\x01\x00\x00\x00kq\x02K\x01X\x01\x00\x00\x00jq\x03K\x02u.";
        assert_eq!(
            read_pickle(od).unwrap(),
            Value::Dict(vec![(s("k"), Value::Int(1)), (s("j"), Value::Int(2))])
        );
        // INST and OBJ (protocol 0/1 old-style classes): (I7\nimod\nK\n. and (cmod\nK\nK\x07o.
        let inst = read_pickle(b"(I7\nimod\nK\n.").unwrap();
        let o = inst.as_object().unwrap();
        assert_eq!(
            (o.qualname(), &o.args),
            ("mod.K".into(), &Value::Tuple(vec![Value::Int(7)]))
        );
        let obj = read_pickle(b"(cmod\nK\nK\x07o.").unwrap();
        assert_eq!(obj, inst);
    }

    #[test]
    fn memoized_objects_are_shared_and_mutated() {
        // x = []; d = {'a': x, 'b': x}; x.append(1) happens via APPEND on the memo entry:
        // }q\x00(X..a h? ... built by hand: EMPTY_DICT, MARK, 'a', EMPTY_LIST, BINPUT 1, 'b',
        // BINGET 1, SETITEMS, BINGET 1, K 5, APPEND, POP, STOP
        let b = b"}q\x00(X\x01\x00\x00\x00a]q\x01X\x01\x00\x00\x00bh\x01uh\x01K\x05a0.";
        let v = read_pickle(b).unwrap();
        assert_eq!(v.get("a"), Some(&Value::List(vec![Value::Int(5)])));
        assert_eq!(v.get("b"), Some(&Value::List(vec![Value::Int(5)])));
        // (2**63-1, -2**63, 2**63, -2**63-1, 255, 256, 65536, -1), protocol 2
        let ints = b"\x80\x02(\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x80\x00\x8a\x09\xff\xff\xff\xff\xff\xff\xff\x7f\xffK\xffM\x00\x01J\x00\x00\x01\x00J\xff\xff\xff\xfftq\x00.";
        assert_eq!(
            read_pickle(ints).unwrap(),
            Value::Tuple(vec![
                Value::Int(i64::MAX),
                Value::Int(i64::MIN),
                Value::BigInt("9223372036854775808".into()),
                Value::BigInt("-9223372036854775809".into()),
                Value::Int(255),
                Value::Int(256),
                Value::Int(65536),
                Value::Int(-1),
            ])
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        for full in [P2_DICT, P0_DICT, P4_SETS, P5_F4, P2_I4, PY2_DICT] {
            for cut in 0..full.len() {
                let e = read_pickle(&full[..cut]).unwrap_err();
                assert!(
                    matches!(
                        e,
                        PickleError::Truncated { .. }
                            | PickleError::MissingStop { .. }
                            | PickleError::Malformed { .. }
                    ),
                    "cut at {cut}: {e}"
                );
            }
        }
        let e = read_pickle(&P2_I4[..40]).unwrap_err().to_string();
        assert!(e.contains("truncated pickle"), "{e}");
    }

    #[test]
    fn unsupported_and_malformed() {
        let e = read_pickle(b"\x80\x05\x97.").unwrap_err();
        assert!(matches!(
            e,
            PickleError::UnsupportedOpcode {
                opcode: 0x97,
                offset: 2,
                ..
            }
        ));
        let msg = e.to_string();
        assert!(
            msg.contains("NEXT_BUFFER") && msg.contains("0x97") && msg.contains("byte 2"),
            "{msg}"
        );
        let e = read_pickle(b"\x80\x02N\xff.").unwrap_err().to_string();
        assert!(e.contains("unknown (0xff) at byte 3"), "{e}");
        let e = read_pickle(b"Q.").unwrap_err().to_string();
        assert!(e.contains("BINPERSID") && e.contains("persistent"), "{e}");
        assert!(matches!(
            read_pickle(b"\x80\x06N."),
            Err(PickleError::UnsupportedProtocol { protocol: 6, .. })
        ));
        assert!(matches!(
            read_pickle(b"h\x05."),
            Err(PickleError::MemoMissing { index: 5, .. })
        ));
        assert!(matches!(
            read_pickle(b"a."),
            Err(PickleError::Malformed { .. })
        ));
        assert!(matches!(
            read_pickle(b"t."),
            Err(PickleError::Malformed { .. })
        ));
        assert!(matches!(read_pickle(b"N."), Ok(Value::None)));
        // bogus lengths never allocate: 2^63-byte BINUNICODE8, 4 GiB BINBYTES, negative BINSTRING
        assert!(matches!(
            read_pickle(b"\x8d\xff\xff\xff\xff\xff\xff\xff\x7fabc"),
            Err(PickleError::Truncated { .. })
        ));
        assert!(matches!(
            read_pickle(b"B\xff\xff\xff\xffab"),
            Err(PickleError::Truncated { .. })
        ));
        assert!(matches!(
            read_pickle(b"T\xff\xff\xff\xffab"),
            Err(PickleError::Malformed { .. })
        ));
        // an array whose byte count disagrees with its shape
        let mut bad = P2_I4.to_vec();
        let at = bad.windows(3).position(|w| w == b"K\x02\x86").unwrap();
        bad[at + 1] = 3; // shape (2, 3) with 16 bytes of data
        let e = read_pickle(&bad).unwrap_err().to_string();
        assert!(
            e.contains("needs 24 bytes") && e.contains("holds 16"),
            "{e}"
        );
    }

    #[test]
    fn recursion_and_blowup_are_bounded() {
        // l = []; l.append(l); pickle.dumps(l, 2)
        let e = read_pickle(b"\x80\x02]q\x00h\x00a.").unwrap_err();
        assert!(matches!(e, PickleError::TooLarge { .. }), "{e}");
        // 200k nested lists: must not overflow the stack when converted or dropped
        let n = 200_000;
        let mut deep = vec![b']'; n];
        deep.extend(std::iter::repeat_n(b'a', n - 1));
        deep.push(b'.');
        assert!(matches!(
            read_pickle(&deep),
            Err(PickleError::TooLarge { .. })
        ));
        // ... also when the deep structure is popped and dropped mid-stream, and for tuples
        let mut popped = vec![b']'; n];
        popped.extend(std::iter::repeat_n(b'a', n - 1));
        popped.extend_from_slice(b"0N.");
        assert_eq!(read_pickle(&popped).unwrap(), Value::None);
        let mut tuples = vec![b')'];
        tuples.extend(std::iter::repeat_n(0x85u8, n));
        tuples.push(b'.');
        assert!(matches!(
            read_pickle(&tuples),
            Err(PickleError::TooLarge { .. })
        ));
        // deep tuples as dict keys (compared on SETITEM) stay bounded too
        let mut keys = b"}".to_vec();
        for _ in 0..2 {
            keys.push(b')');
            keys.extend(std::iter::repeat_n(0x85u8, 100_000));
            keys.extend_from_slice(b"Ns");
        }
        keys.extend_from_slice(b"0N.");
        assert_eq!(read_pickle(&keys).unwrap(), Value::None);
        // an ndarray whose BUILD state names the array itself as its dtype: no RefCell panic
        let selfref = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87Rq\x00(K\x01K\x01\x85h\x00\x89U\x08\x00\x00\x00\x00\x00\x00\x00\x00tb.";
        assert!(matches!(
            read_pickle(selfref),
            Err(PickleError::TooLarge { .. })
        ));
        // L_i = [L_{i-1}, L_{i-1}] for 60 levels: 2^60 leaves from ~500 bytes
        let mut laughs = b"]q\x00".to_vec();
        for i in 1..60u8 {
            laughs.extend_from_slice(&[b'(', b'h', i - 1, b'h', i - 1, b'l', b'q', i]);
        }
        laughs.push(b'.');
        assert!(matches!(
            read_pickle(&laughs),
            Err(PickleError::TooLarge { .. })
        ));
        // ... refused within the allowance: for this input about 17 MB of nodes at most
        assert!(copy_out_allowance(laughs.len()) < 17 << 20);
    }
}
