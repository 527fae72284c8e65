//! A bounded reader for PyTorch zip checkpoints (`torch.save` of torch >= 1.6).
//!
//! Why our own and not candle's `pickle` module: candle 0.11's unpickler panics on crafted
//! input, recurses on nesting depth (a 10^6-deep tuple overflows the stack), sizes its memo by
//! the largest index it is given (a 200-byte pickle asks for gigabytes) and its tensor reader
//! inflates whole zip entries and trusts storage offsets. Here:
//! - the pickle goes through `ikol_body::pickle`, an iterative stack machine that checks every
//!   length against the bytes that remain, keeps its memo in a map, bounds the depth and size of
//!   the tree it builds and never executes anything; `data.pkl` itself is read with a cap of
//!   [`MAX_PICKLE_BYTES`];
//! - a storage (`<archive>/data/<key>`) must declare exactly `numel * itemsize` bytes, as the
//!   pickle's persistent id says, and is read with a streaming inflater that stops at that size
//!   (a deflate bomb is refused, not inflated); a compressed storage may inflate at most
//!   [`MAX_INFLATE_RATIO`] times; all storages together are at most [`MAX_TOTAL_BYTES`];
//! - every tensor's offset, sizes and strides are checked with checked arithmetic against its
//!   storage before a byte is copied; any layout (contiguous, transposed, strided views) is
//!   gathered into a contiguous C-order buffer.
//!
//! Understood: `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`,
//! `torch._utils._rebuild_parameter(tensor, ...)`, persistent ids `('storage', torch.XStorage,
//! key, location, numel)`, storage types Float, Double, Half, BFloat16, Long, Int, Short, Char,
//! Byte and Bool (the integer types other than Long and Byte are widened to i64).

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use ikol_body::pickle::{PERSISTENT_ID, PyObject, Value, read_pickle_with_persistent_ids};

/// Largest `data.pkl` accepted (a ResNet-152 state dict pickles to about 100 KB).
pub const MAX_PICKLE_BYTES: u64 = 64 << 20;
/// Largest total of all storages (the largest upstream HybrIK checkpoint is about 0.3 GB).
pub const MAX_TOTAL_BYTES: u64 = 8 << 30;
/// Largest inflated / compressed size of a deflated storage (float weights compress by a few
/// percent; torch stores them uncompressed).
pub const MAX_INFLATE_RATIO: u64 = 64;
/// Most dimensions of one tensor.
const MAX_DIMS: usize = 16;

/// Element types of a checkpoint's tensors, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PthDType {
    F32,
    F64,
    F16,
    BF16,
    I64,
    U8,
}

impl PthDType {
    pub fn size(self) -> usize {
        match self {
            PthDType::F64 | PthDType::I64 => 8,
            PthDType::F32 => 4,
            PthDType::F16 | PthDType::BF16 => 2,
            PthDType::U8 => 1,
        }
    }
}

/// One tensor: contiguous little-endian bytes in C order.
#[derive(Debug, Clone, PartialEq)]
pub struct PthTensor {
    pub dtype: PthDType,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// A storage type name to (how it is stored, how it is kept): narrow integer types are widened
/// to i64 (`Int` 4 bytes, `Short` 2, `Char` 1, signed).
fn storage_type(name: &str) -> Option<(usize, PthDType, bool)> {
    Some(match name {
        "FloatStorage" => (4, PthDType::F32, false),
        "DoubleStorage" => (8, PthDType::F64, false),
        "HalfStorage" => (2, PthDType::F16, false),
        "BFloat16Storage" => (2, PthDType::BF16, false),
        "LongStorage" => (8, PthDType::I64, false),
        "IntStorage" => (4, PthDType::I64, true),
        "ShortStorage" => (2, PthDType::I64, true),
        "CharStorage" => (1, PthDType::I64, true),
        "ByteStorage" | "BoolStorage" => (1, PthDType::U8, false),
        _ => return None,
    })
}

/// A storage the pickle refers to.
#[derive(Debug, Clone)]
struct StorageRef {
    key: String,
    /// Bytes per stored element, and whether to widen signed integers to i64.
    itemsize: usize,
    dtype: PthDType,
    widen: bool,
    numel: u64,
}

fn int(v: &Value, what: &str) -> Result<i64, String> {
    v.as_i64()
        .ok_or_else(|| format!("{what} is a {}, not an integer", v.type_name()))
}

fn ints(v: &Value, what: &str) -> Result<Vec<i64>, String> {
    v.as_list()
        .ok_or_else(|| format!("{what} is a {}, not a tuple", v.type_name()))?
        .iter()
        .map(|x| int(x, what))
        .collect()
}

fn storage_ref(o: &PyObject) -> Result<StorageRef, String> {
    let t = o
        .args
        .as_list()
        .ok_or_else(|| "a persistent id that is not a tuple".to_owned())?;
    let [kind, ty, key, _location, numel] = t else {
        return Err(format!("a persistent id of {} items, expected 5", t.len()));
    };
    if kind.as_str().as_deref() != Some("storage") {
        return Err("a persistent id that is not a storage".into());
    }
    let ty_name = match ty {
        Value::Global { name, .. } => name.clone(),
        other => return Err(format!("storage type is a {}", other.type_name())),
    };
    let (itemsize, dtype, widen) =
        storage_type(&ty_name).ok_or_else(|| format!("unsupported storage type {ty_name}"))?;
    let key = key
        .as_str()
        .ok_or_else(|| "storage key is not a string".to_owned())?
        .into_owned();
    if key.is_empty() || key.contains(['/', '\\']) || key.contains("..") {
        return Err(format!("storage key {key:?} is not a plain name"));
    }
    let numel = u64::try_from(int(numel, "storage size")?)
        .map_err(|_| "negative storage size".to_owned())?;
    Ok(StorageRef {
        key,
        itemsize,
        dtype,
        widen,
        numel,
    })
}

/// A tensor the pickle describes, before its bytes are read.
#[derive(Debug)]
struct TensorRef {
    storage: StorageRef,
    offset: u64,
    shape: Vec<usize>,
    stride: Vec<u64>,
}

fn tensor_ref(v: &Value) -> Result<Option<TensorRef>, String> {
    let Some(o) = v.as_object() else {
        return Ok(None);
    };
    match (o.module.as_str(), o.name.as_str()) {
        ("torch._utils", "_rebuild_parameter") => {
            let inner = o
                .args
                .as_list()
                .and_then(|a| a.first())
                .ok_or_else(|| "_rebuild_parameter without a tensor".to_owned())?;
            tensor_ref(inner)
        }
        ("torch._utils", "_rebuild_tensor_v2") => {
            let a = o
                .args
                .as_list()
                .ok_or_else(|| "_rebuild_tensor_v2 arguments are not a tuple".to_owned())?;
            let (Some(st), Some(off), Some(size), Some(stride)) =
                (a.first(), a.get(1), a.get(2), a.get(3))
            else {
                return Err(format!("_rebuild_tensor_v2 with {} arguments", a.len()));
            };
            let st = st
                .as_object()
                .filter(|s| (s.module.as_str(), s.name.as_str()) == PERSISTENT_ID)
                .ok_or_else(|| "a tensor whose storage is not a persistent id".to_owned())?;
            let storage = storage_ref(st)?;
            let offset = u64::try_from(int(off, "storage offset")?)
                .map_err(|_| "negative storage offset".to_owned())?;
            let shape = ints(size, "size")?;
            let stride = ints(stride, "stride")?;
            if shape.len() != stride.len() || shape.len() > MAX_DIMS {
                return Err(format!(
                    "{} sizes and {} strides (at most {MAX_DIMS})",
                    shape.len(),
                    stride.len()
                ));
            }
            let shape = shape
                .iter()
                .map(|&d| usize::try_from(d).map_err(|_| format!("negative size {d}")))
                .collect::<Result<Vec<_>, _>>()?;
            let stride = stride
                .iter()
                .map(|&d| u64::try_from(d).map_err(|_| format!("negative stride {d}")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some(TensorRef {
                storage,
                offset,
                shape,
                stride,
            }))
        }
        _ => Ok(None),
    }
}

/// Checks that the view lies inside its storage (checked arithmetic) and returns its element
/// count.
fn check_view(t: &TensorRef) -> Result<usize, String> {
    let numel = t
        .shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .ok_or("the element count overflows")?;
    if numel == 0 {
        return Ok(0);
    }
    // The last element the view touches: offset + sum (size_i - 1) stride_i.
    let last = t
        .shape
        .iter()
        .zip(&t.stride)
        .try_fold(t.offset, |acc, (&d, &s)| {
            (d as u64 - 1)
                .checked_mul(s)
                .and_then(|x| acc.checked_add(x))
        })
        .ok_or("offset + extent overflows")?;
    if last >= t.storage.numel {
        return Err(format!(
            "the view (offset {}, sizes {:?}, strides {:?}) reaches element {last} of a storage \
             of {}",
            t.offset, t.shape, t.stride, t.storage.numel
        ));
    }
    usize::try_from(numel).map_err(|_| "too many elements".into())
}

/// Gathers the view into C order (and widens narrow integers).
fn gather(t: &TensorRef, storage: &[u8], numel: usize) -> Vec<u8> {
    let (isz, osz) = (t.storage.itemsize, t.storage.dtype.size());
    let mut out = Vec::with_capacity(numel * osz);
    let mut idx = vec![0usize; t.shape.len()];
    for _ in 0..numel {
        let e = t.offset as usize
            + idx
                .iter()
                .zip(&t.stride)
                .map(|(&i, &s)| i * s as usize)
                .sum::<usize>();
        let b = &storage[e * isz..(e + 1) * isz];
        if t.storage.widen {
            let v: i64 = match isz {
                1 => i64::from(b[0] as i8),
                2 => i64::from(i16::from_le_bytes([b[0], b[1]])),
                _ => i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            };
            out.extend_from_slice(&v.to_le_bytes());
        } else {
            out.extend_from_slice(b);
        }
        // Next C-order index.
        for k in (0..idx.len()).rev() {
            idx[k] += 1;
            if idx[k] < t.shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    out
}

/// Reads one zip entry of exactly `size` bytes, never more (streaming; a bomb stops at the cap).
fn read_entry<R: Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    name: &str,
    size: u64,
) -> Result<Vec<u8>, String> {
    let entry = zip.by_name(name).map_err(|e| format!("{name}: {e}"))?;
    if entry.size() != size {
        return Err(format!(
            "{name}: holds {} bytes, the checkpoint says {size}",
            entry.size()
        ));
    }
    let packed = entry.compressed_size().max(1);
    if entry.compression() != zip::CompressionMethod::Stored
        && size > packed.saturating_mul(MAX_INFLATE_RATIO)
    {
        return Err(format!(
            "{name}: {packed} compressed bytes would inflate to {size} (more than \
             {MAX_INFLATE_RATIO}x: refused as a zip bomb)"
        ));
    }
    let cap = usize::try_from(size).map_err(|_| format!("{name}: too large"))?;
    let mut out = Vec::with_capacity(cap);
    entry
        .take(size + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("{name}: {e}"))?;
    if out.len() as u64 != size {
        return Err(format!(
            "{name}: inflates to {} bytes, declared {size}",
            out.len()
        ));
    }
    Ok(out)
}

/// The state dict of the unpickled top level (unwrapping `{"state_dict": ...}` and the like).
fn state_dict<'a>(top: &'a Value, wrappers: &[&str]) -> Option<&'a [(Value, Value)]> {
    let d = top.as_dict()?;
    for w in wrappers {
        if let Some(inner) = top.get(w).and_then(Value::as_dict) {
            return Some(inner);
        }
    }
    Some(d)
}

/// Reads the tensors of a torch zip checkpoint (entries that are not tensors, such as an epoch
/// counter, are skipped). `wrappers`: keys whose dict is the state dict when present. Errors
/// name the problem; the caller names the file.
pub fn read_pth(path: &Path, wrappers: &[&str]) -> Result<Vec<(String, PthTensor)>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    read_pth_from(std::io::BufReader::new(file), wrappers)
}

/// [`read_pth`] of a checkpoint held in memory.
pub fn read_pth_bytes(bytes: &[u8], wrappers: &[&str]) -> Result<Vec<(String, PthTensor)>, String> {
    read_pth_from(std::io::Cursor::new(bytes), wrappers)
}

/// [`read_pth`] from any seekable reader.
pub fn read_pth_from<R: Read + std::io::Seek>(
    reader: R,
    wrappers: &[&str],
) -> Result<Vec<(String, PthTensor)>, String> {
    let mut zip = zip::ZipArchive::new(reader)
        .map_err(|e| format!("not a valid torch zip checkpoint: {e}"))?;
    let pkl = zip
        .file_names()
        .filter_map(|f| f.ok().map(|f| f.into_owned()))
        .find(|f| f.ends_with("/data.pkl") || f == "data.pkl")
        .ok_or("no data.pkl in the zip archive")?;
    let dir = pkl.strip_suffix("data.pkl").unwrap_or_default().to_owned();
    let size = zip.by_name(&pkl).map_err(|e| format!("{pkl}: {e}"))?.size();
    if size > MAX_PICKLE_BYTES {
        return Err(format!(
            "{pkl}: {size} bytes, more than {MAX_PICKLE_BYTES} (no state dict pickle is that large)"
        ));
    }
    let bytes = read_entry(&mut zip, &pkl, size)?;
    let top = read_pickle_with_persistent_ids(&bytes).map_err(|e| format!("{pkl}: {e}"))?;
    let entries = state_dict(&top, wrappers).ok_or("the pickle is not a dict of tensors")?;
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut total = 0u64;
    let mut out = Vec::new();
    for (k, v) in entries {
        let Some(name) = k.as_str() else { continue };
        let t = match tensor_ref(v) {
            Ok(Some(t)) => t,
            Ok(None) => continue,
            Err(e) => return Err(format!("tensor {name}: {e}")),
        };
        let numel = check_view(&t).map_err(|e| format!("tensor {name}: {e}"))?;
        if !storages.contains_key(&t.storage.key) {
            let bytes = t
                .storage
                .numel
                .checked_mul(t.storage.itemsize as u64)
                .ok_or_else(|| format!("tensor {name}: the storage size overflows"))?;
            total = total.saturating_add(bytes);
            if total > MAX_TOTAL_BYTES {
                return Err(format!(
                    "the storages add up to more than {MAX_TOTAL_BYTES} bytes"
                ));
            }
            let entry = format!("{dir}data/{}", t.storage.key);
            let data =
                read_entry(&mut zip, &entry, bytes).map_err(|e| format!("tensor {name}: {e}"))?;
            storages.insert(t.storage.key.clone(), data);
        }
        let data = gather(&t, &storages[&t.storage.key], numel);
        out.push((
            name.into_owned(),
            PthTensor {
                dtype: t.storage.dtype,
                shape: t.shape,
                data,
            },
        ));
    }
    if out.is_empty() {
        return Err("no tensors found in the checkpoint".into());
    }
    Ok(out)
}
