//! A TensorFlow Lite reader and a small interpreter on candle tensors, enough to run the two
//! BlazePose graphs shipped in the `mediapipe==0.10.21` wheel (`pose_detection.tflite` and
//! `pose_landmark_full.tflite`) without any TensorFlow code.
//!
//! * This module reads the FlatBuffers file ([`TfliteFile`]): model -> subgraphs -> tensors
//!   (shape, type, buffer, name, sparsity), operators (opcode, inputs, outputs, builtin options),
//!   operator codes and buffers. Field numbers and enum values follow the public TensorFlow Lite
//!   schema (`tensorflow/compiler/mlir/lite/schema/schema.fbs`, schema version 3); the binary
//!   layout is FlatBuffers' (see `flatbuf.rs`).
//! * [`sparse`]: the sparse weight format (`SparsityParameters`: traversal order, block map,
//!   per-dimension DENSE / SPARSE_CSR metadata, the TACO-style format of Kjolstad et al.,
//!   OOPSLA 2017) expanded to dense, and IEEE 754 binary16 -> f32.
//! * [`Model`] (in `interp.rs`): folds the weight-only ops (DEQUANTIZE, DENSIFY) at load and runs
//!   the rest on NHWC candle tensors with the kernels of `ops.rs`.
//!
//! Every error names the file and what is wrong.

mod flatbuf;
mod interp;
mod ops;
pub mod sparse;

use std::ops::Range;
use std::path::{Path, PathBuf};

use flatbuf::{Buf, Context, FbError, FbResult, Table};
pub use interp::{Model, StepTimes, TensorSpec};
pub use sparse::{DimensionMetadata, Sparsity, f16_to_f32};

/// Errors of the TensorFlow Lite reader and interpreter. Each names the model file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a valid TensorFlow Lite flatbuffer (truncated, bad offset, ...).
    #[error("{file}: not a valid TensorFlow Lite model: {what}")]
    Malformed { file: String, what: String },
    /// The graph uses an operator this interpreter does not implement.
    #[error(
        "{file}: operator #{index} is {op}, which this TensorFlow Lite interpreter does not \
         support (supported: {})",
        interp::SUPPORTED_OPS.join(", ")
    )]
    UnsupportedOp {
        file: String,
        index: usize,
        op: String,
    },
    /// A supported operator or tensor uses a feature that is not implemented (a tensor type,
    /// an option value, a sparse layout).
    #[error("{file}: {what}")]
    Unsupported { file: String, what: String },
    /// The graph is inconsistent (shapes that do not fit, a missing constant, ...).
    #[error("{file}: invalid graph: {what}")]
    Invalid { file: String, what: String },
    /// The caller's input does not fit the model.
    #[error("{file}: bad input: {what}")]
    Input { file: String, what: String },
    /// A tensor operation failed while running operator `index`.
    #[error("{file}: operator #{index} ({op}): {source}")]
    Candle {
        file: String,
        index: usize,
        op: String,
        #[source]
        source: Box<candle_core::Error>,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// Element type of a tensor (schema enum `TensorType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorType {
    Float32,
    Float16,
    Int32,
    Uint8,
    Int64,
    Int8,
    Int16,
    /// Any other value of the enum (bool, string, complex, ...): readable, never executable.
    Other(i8),
}

impl TensorType {
    fn from_code(c: i8) -> Self {
        match c {
            0 => Self::Float32,
            1 => Self::Float16,
            2 => Self::Int32,
            3 => Self::Uint8,
            4 => Self::Int64,
            7 => Self::Int16,
            9 => Self::Int8,
            other => Self::Other(other),
        }
    }

    /// Size of one element in bytes, `None` for types without a fixed size here.
    pub fn size(self) -> Option<usize> {
        match self {
            Self::Float32 | Self::Int32 => Some(4),
            Self::Float16 | Self::Int16 => Some(2),
            Self::Uint8 | Self::Int8 => Some(1),
            Self::Int64 => Some(8),
            Self::Other(_) => None,
        }
    }
}

/// One tensor of a subgraph.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions (NHWC for image tensors). Unknown (-1) dimensions are kept as read.
    pub shape: Vec<i32>,
    pub dtype: TensorType,
    /// Index into [`TfliteFile::buffers`]; 0 (the empty sentinel) for non-constant tensors.
    pub buffer: usize,
    /// Set when the constant data is stored sparse (expanded by DENSIFY).
    pub sparsity: Option<Sparsity>,
}

/// Fused activation of an operator (schema enum `ActivationFunctionType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activation {
    #[default]
    None,
    Relu,
    ReluN1To1,
    Relu6,
    Tanh,
    SignBit,
    Other(i8),
}

impl Activation {
    fn from_code(c: i8) -> Self {
        match c {
            0 => Self::None,
            1 => Self::Relu,
            2 => Self::ReluN1To1,
            3 => Self::Relu6,
            4 => Self::Tanh,
            5 => Self::SignBit,
            other => Self::Other(other),
        }
    }
}

/// Window padding (schema enum `Padding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Padding {
    #[default]
    Same,
    Valid,
}

/// The builtin options the interpreter uses; other option tables are recorded by their union
/// tag only.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Options {
    #[default]
    None,
    Conv2D {
        padding: Padding,
        stride_w: usize,
        stride_h: usize,
        activation: Activation,
        dilation_w: usize,
        dilation_h: usize,
    },
    DepthwiseConv2D {
        padding: Padding,
        stride_w: usize,
        stride_h: usize,
        /// Redundant in current TensorFlow Lite (derived from the shapes); kept as read.
        depth_multiplier: i32,
        activation: Activation,
        dilation_w: usize,
        dilation_h: usize,
    },
    Pool2D {
        padding: Padding,
        stride_w: usize,
        stride_h: usize,
        filter_w: usize,
        filter_h: usize,
        activation: Activation,
    },
    Concatenation {
        axis: i32,
        activation: Activation,
    },
    Add {
        activation: Activation,
    },
    ResizeBilinear {
        align_corners: bool,
        half_pixel_centers: bool,
    },
    Reshape {
        new_shape: Vec<i32>,
    },
    DepthToSpace {
        block_size: usize,
    },
    /// An option table this reader does not decode (its `BuiltinOptions` union tag).
    Other(u8),
}

/// One operator code (schema table `OperatorCode`).
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorCode {
    /// The builtin operator: the larger of `deprecated_builtin_code` and `builtin_code` (old
    /// files fill only the first, new files write 127 there once codes exceed it).
    pub builtin: i32,
    pub custom: Option<String>,
    pub version: i32,
}

impl OperatorCode {
    /// The operator's name as in the schema (`CONV_2D`), or `CUSTOM(name)`.
    pub fn name(&self) -> String {
        match (&self.custom, self.builtin) {
            (Some(c), 32) => format!("CUSTOM({c})"),
            (_, b) => builtin_name(b),
        }
    }
}

/// One operator of a subgraph.
#[derive(Debug, Clone, PartialEq)]
pub struct Operator {
    pub opcode_index: usize,
    /// Tensor indices; -1 marks an omitted optional input.
    pub inputs: Vec<i32>,
    pub outputs: Vec<i32>,
    pub options: Options,
}

/// One subgraph (the first is the model's main graph).
#[derive(Debug, Clone, PartialEq)]
pub struct SubGraph {
    pub name: Option<String>,
    pub tensors: Vec<TensorInfo>,
    pub inputs: Vec<i32>,
    pub outputs: Vec<i32>,
    pub operators: Vec<Operator>,
}

/// A parsed TensorFlow Lite file; constant data stays in the file's bytes.
#[derive(Debug, Clone)]
pub struct TfliteFile {
    /// The file name used in errors.
    pub file: String,
    pub version: u32,
    pub description: Option<String>,
    pub operator_codes: Vec<OperatorCode>,
    pub subgraphs: Vec<SubGraph>,
    /// Byte range of each buffer in the file (the first is the empty sentinel).
    pub buffers: Vec<Range<usize>>,
    data: Vec<u8>,
}

impl TfliteFile {
    /// Reads and parses `path`.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let data = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(data, &path.display().to_string())
    }

    /// Parses the bytes of a model; `file` names it in errors.
    pub fn parse(data: Vec<u8>, file: &str) -> Result<Self> {
        let malformed = |e: FbError| Error::Malformed {
            file: file.to_owned(),
            what: e.0,
        };
        let parsed = parse_model(Buf::new(&data)).map_err(malformed)?;
        let (version, description, operator_codes, subgraphs, buffers) = parsed;
        let f = Self {
            file: file.to_owned(),
            version,
            description,
            operator_codes,
            subgraphs,
            buffers,
            data,
        };
        f.check_indices()?;
        Ok(f)
    }

    /// The bytes of buffer `index` (empty for the sentinel and for out-of-range indices, which
    /// [`TfliteFile::parse`] rejects).
    pub fn buffer(&self, index: usize) -> &[u8] {
        self.buffers
            .get(index)
            .and_then(|r| self.data.get(r.clone()))
            .unwrap_or(&[])
    }

    /// The schema name of operator `op`'s code (`DEPTHWISE_CONV_2D`).
    pub fn op_name(&self, op: &Operator) -> String {
        self.operator_codes.get(op.opcode_index).map_or_else(
            || format!("opcode #{}", op.opcode_index),
            OperatorCode::name,
        )
    }

    fn invalid(&self, what: String) -> Error {
        Error::Invalid {
            file: self.file.clone(),
            what,
        }
    }

    /// Every index (opcode, tensor, buffer) must point at something.
    fn check_indices(&self) -> Result<()> {
        for (g, sg) in self.subgraphs.iter().enumerate() {
            let nt = sg.tensors.len() as i32;
            for (t, ti) in sg.tensors.iter().enumerate() {
                if ti.buffer >= self.buffers.len().max(1) {
                    return Err(self.invalid(format!(
                        "subgraph {g} tensor {t} ({}) refers to buffer {} of {}",
                        ti.name,
                        ti.buffer,
                        self.buffers.len()
                    )));
                }
            }
            let bad_tensor = |v: &[i32], optional: bool| {
                v.iter()
                    .find(|&&i| !((0..nt).contains(&i) || (optional && i == -1)))
                    .copied()
            };
            if let Some(i) = bad_tensor(&sg.inputs, false).or(bad_tensor(&sg.outputs, false)) {
                return Err(self.invalid(format!(
                    "subgraph {g} input/output refers to tensor {i} of {nt}"
                )));
            }
            for (o, op) in sg.operators.iter().enumerate() {
                if op.opcode_index >= self.operator_codes.len() {
                    return Err(self.invalid(format!(
                        "subgraph {g} operator {o} uses opcode {} of {}",
                        op.opcode_index,
                        self.operator_codes.len()
                    )));
                }
                if let Some(i) = bad_tensor(&op.inputs, true).or(bad_tensor(&op.outputs, false)) {
                    return Err(self.invalid(format!(
                        "subgraph {g} operator {o} ({}) refers to tensor {i} of {nt}",
                        self.op_name(op)
                    )));
                }
            }
        }
        Ok(())
    }
}

type ParsedModel = (
    u32,
    Option<String>,
    Vec<OperatorCode>,
    Vec<SubGraph>,
    Vec<Range<usize>>,
);

fn parse_model(buf: Buf<'_>) -> FbResult<ParsedModel> {
    if buf.len() < 8 {
        return Err(FbError(format!(
            "truncated: {} bytes, shorter than a flatbuffer header",
            buf.len()
        )));
    }
    let ident = buf.bytes(4, 4)?;
    if ident != b"TFL3" {
        return Err(FbError(format!(
            "file identifier is {:?}, expected \"TFL3\"",
            String::from_utf8_lossy(ident)
        )));
    }
    let model = buf.root()?;
    // Model: version 0, operator_codes 1, subgraphs 2, description 3, buffers 4.
    let version = model.u32(0, 0).ctx(|| "model version".into())?;
    let operator_codes = model
        .tables(1)
        .ctx(|| "operator_codes".into())?
        .iter()
        .enumerate()
        .map(|(i, t)| parse_opcode(t).ctx(|| format!("operator code {i}")))
        .collect::<FbResult<Vec<_>>>()?;
    let subgraphs = model
        .tables(2)
        .ctx(|| "subgraphs".into())?
        .iter()
        .enumerate()
        .map(|(i, t)| parse_subgraph(t, &operator_codes).ctx(|| format!("subgraph {i}")))
        .collect::<FbResult<Vec<_>>>()?;
    let description = model.string(3).ctx(|| "description".into())?;
    let buffers = model
        .tables(4)
        .ctx(|| "buffers".into())?
        .iter()
        .enumerate()
        .map(|(i, t)| parse_buffer(t, buf.len()).ctx(|| format!("buffer {i}")))
        .collect::<FbResult<Vec<_>>>()?;
    Ok((version, description, operator_codes, subgraphs, buffers))
}

fn parse_opcode(t: &Table<'_>) -> FbResult<OperatorCode> {
    // OperatorCode: deprecated_builtin_code 0 (byte), custom_code 1, version 2, builtin_code 3.
    let deprecated = t.i8(0, 0)? as i32;
    let builtin = t.i32(3, 0)?;
    Ok(OperatorCode {
        builtin: deprecated.max(builtin),
        custom: t.string(1)?,
        version: t.i32(2, 1)?,
    })
}

fn parse_buffer(t: &Table<'_>, file_len: usize) -> FbResult<Range<usize>> {
    // Buffer: data 0, offset 1, size 2 (offset/size: data outside the flatbuffer, > 2 GB models).
    if let Some(r) = t.bytes_range(0)? {
        return Ok(r);
    }
    let offset = t.u64(1, 0)?;
    let size = t.u64(2, 0)?;
    if offset > 1 {
        let (o, s) = (offset as usize, size as usize);
        if o.checked_add(s).is_none_or(|end| end > file_len) {
            return Err(FbError(format!(
                "truncated: external data at {o} of {s} bytes runs past the end of the \
                 {file_len}-byte file"
            )));
        }
        return Ok(o..o + s);
    }
    Ok(0..0)
}

fn parse_subgraph(t: &Table<'_>, codes: &[OperatorCode]) -> FbResult<SubGraph> {
    // SubGraph: tensors 0, inputs 1, outputs 2, operators 3, name 4.
    let tensors = t
        .tables(0)?
        .iter()
        .enumerate()
        .map(|(i, tt)| parse_tensor(tt).ctx(|| format!("tensor {i}")))
        .collect::<FbResult<Vec<_>>>()?;
    let operators = t
        .tables(3)?
        .iter()
        .enumerate()
        .map(|(i, ot)| parse_operator(ot, codes).ctx(|| format!("operator {i}")))
        .collect::<FbResult<Vec<_>>>()?;
    Ok(SubGraph {
        name: t.string(4)?,
        tensors,
        inputs: t.i32s(1)?,
        outputs: t.i32s(2)?,
        operators,
    })
}

fn parse_tensor(t: &Table<'_>) -> FbResult<TensorInfo> {
    // Tensor: shape 0, type 1, buffer 2, name 3, quantization 4, is_variable 5, sparsity 6.
    let sparsity = match t.table(6)? {
        None => None,
        Some(s) => Some(parse_sparsity(&s).ctx(|| "sparsity".into())?),
    };
    Ok(TensorInfo {
        name: t.string(3)?.unwrap_or_default(),
        shape: t.i32s(0)?,
        dtype: TensorType::from_code(t.i8(1, 0)?),
        buffer: t.u32(2, 0)? as usize,
        sparsity,
    })
}

fn parse_sparsity(t: &Table<'_>) -> FbResult<Sparsity> {
    // SparsityParameters: traversal_order 0, block_map 1, dim_metadata 2.
    let to_usize = |v: Vec<i32>, what: &str| {
        v.into_iter()
            .map(|x| usize::try_from(x).map_err(|_| FbError(format!("negative {what} entry {x}"))))
            .collect::<FbResult<Vec<_>>>()
    };
    let dim_metadata = t
        .tables(2)?
        .iter()
        .enumerate()
        .map(|(i, d)| parse_dim_metadata(d).ctx(|| format!("dim_metadata {i}")))
        .collect::<FbResult<Vec<_>>>()?;
    Ok(Sparsity {
        traversal_order: to_usize(t.i32s(0)?, "traversal_order")?,
        block_map: to_usize(t.i32s(1)?, "block_map")?,
        dim_metadata,
    })
}

fn parse_dim_metadata(t: &Table<'_>) -> FbResult<DimensionMetadata> {
    // DimensionMetadata: format 0, dense_size 1, array_segments_type 2, array_segments 3,
    // array_indices_type 4, array_indices 5. SparseIndexVector union: 1 Int32Vector,
    // 2 Uint16Vector, 3 Uint8Vector, each a table with `values` at field 0.
    let index_vector = |type_id: usize, id: usize, what: &str| -> FbResult<Vec<usize>> {
        let tag = t.u8(type_id, 0)?;
        let Some(v) = t.table(id)? else {
            return Err(FbError(format!("SPARSE_CSR dimension without {what}")));
        };
        match tag {
            1 => v
                .i32s(0)?
                .into_iter()
                .map(|x| usize::try_from(x).map_err(|_| FbError(format!("negative {what} {x}"))))
                .collect(),
            2 => Ok(v.u16s(0)?.into_iter().map(usize::from).collect()),
            3 => Ok(v.bytes(0)?.iter().map(|&b| usize::from(b)).collect()),
            other => Err(FbError(format!(
                "{what}: unknown SparseIndexVector type {other}"
            ))),
        }
    };
    match t.i8(0, 0)? {
        0 => Ok(DimensionMetadata::Dense {
            size: usize::try_from(t.i32(1, 0)?)
                .map_err(|_| FbError("negative dense_size".into()))?,
        }),
        1 => Ok(DimensionMetadata::SparseCsr {
            segments: index_vector(2, 3, "array_segments")?,
            indices: index_vector(4, 5, "array_indices")?,
        }),
        other => Err(FbError(format!("unknown DimensionType {other}"))),
    }
}

fn parse_operator(t: &Table<'_>, codes: &[OperatorCode]) -> FbResult<Operator> {
    // Operator: opcode_index 0, inputs 1, outputs 2, builtin_options_type 3, builtin_options 4.
    let opcode_index = t.u32(0, 0)? as usize;
    let tag = t.u8(3, 0)?;
    let builtin = codes.get(opcode_index).map_or(-1, |c| c.builtin);
    let options = match t.table(4)? {
        None => Options::None,
        Some(o) => parse_options(builtin, tag, &o).ctx(|| "builtin_options".into())?,
    };
    Ok(Operator {
        opcode_index,
        inputs: t.i32s(1)?,
        outputs: t.i32s(2)?,
        options,
    })
}

fn positive(v: i32, what: &str) -> FbResult<usize> {
    usize::try_from(v)
        .ok()
        .filter(|&x| x > 0)
        .ok_or_else(|| FbError(format!("{what} is {v}, must be positive")))
}

fn padding(o: &Table<'_>, id: usize) -> FbResult<Padding> {
    match o.i8(id, 0)? {
        0 => Ok(Padding::Same),
        1 => Ok(Padding::Valid),
        other => Err(FbError(format!("unknown padding {other}"))),
    }
}

/// Decodes the option tables of the operators the interpreter runs. The union tags (1-based
/// positions in the schema's `BuiltinOptions` union) are checked against the operator code.
fn parse_options(builtin: i32, tag: u8, o: &Table<'_>) -> FbResult<Options> {
    let act = |id| -> FbResult<Activation> { Ok(Activation::from_code(o.i8(id, 0)?)) };
    let expect = |want: u8, name: &str| {
        if tag == want {
            Ok(())
        } else {
            Err(FbError(format!(
                "{} carries options of union type {tag}, expected {want} ({name})",
                builtin_name(builtin)
            )))
        }
    };
    Ok(match builtin {
        // CONV_2D: Conv2DOptions (1): padding 0, stride_w 1, stride_h 2, activation 3,
        // dilation_w 4 (default 1), dilation_h 5 (default 1).
        3 => {
            expect(1, "Conv2DOptions")?;
            Options::Conv2D {
                padding: padding(o, 0)?,
                stride_w: positive(o.i32(1, 0)?, "stride_w")?,
                stride_h: positive(o.i32(2, 0)?, "stride_h")?,
                activation: act(3)?,
                dilation_w: positive(o.i32(4, 1)?, "dilation_w")?,
                dilation_h: positive(o.i32(5, 1)?, "dilation_h")?,
            }
        }
        // DEPTHWISE_CONV_2D: DepthwiseConv2DOptions (2): padding 0, stride_w 1, stride_h 2,
        // depth_multiplier 3, activation 4, dilation_w 5, dilation_h 6.
        4 => {
            expect(2, "DepthwiseConv2DOptions")?;
            Options::DepthwiseConv2D {
                padding: padding(o, 0)?,
                stride_w: positive(o.i32(1, 0)?, "stride_w")?,
                stride_h: positive(o.i32(2, 0)?, "stride_h")?,
                depth_multiplier: o.i32(3, 0)?,
                activation: act(4)?,
                dilation_w: positive(o.i32(5, 1)?, "dilation_w")?,
                dilation_h: positive(o.i32(6, 1)?, "dilation_h")?,
            }
        }
        // AVERAGE_POOL_2D, MAX_POOL_2D, L2_POOL_2D: Pool2DOptions (5): padding 0, stride_w 1,
        // stride_h 2, filter_width 3, filter_height 4, activation 5.
        1 | 12 | 17 => {
            expect(5, "Pool2DOptions")?;
            Options::Pool2D {
                padding: padding(o, 0)?,
                stride_w: positive(o.i32(1, 0)?, "stride_w")?,
                stride_h: positive(o.i32(2, 0)?, "stride_h")?,
                filter_w: positive(o.i32(3, 0)?, "filter_width")?,
                filter_h: positive(o.i32(4, 0)?, "filter_height")?,
                activation: act(5)?,
            }
        }
        // CONCATENATION: ConcatenationOptions (10): axis 0, activation 1.
        2 => {
            expect(10, "ConcatenationOptions")?;
            Options::Concatenation {
                axis: o.i32(0, 0)?,
                activation: act(1)?,
            }
        }
        // ADD: AddOptions (11): activation 0.
        0 => {
            expect(11, "AddOptions")?;
            Options::Add {
                activation: act(0)?,
            }
        }
        // RESIZE_BILINEAR: ResizeBilinearOptions (15): new_height 0 and new_width 1
        // (deprecated), align_corners 2, half_pixel_centers 3.
        23 => {
            expect(15, "ResizeBilinearOptions")?;
            Options::ResizeBilinear {
                align_corners: o.bool(2, false)?,
                half_pixel_centers: o.bool(3, false)?,
            }
        }
        // RESHAPE: ReshapeOptions (17): new_shape 0.
        22 => {
            expect(17, "ReshapeOptions")?;
            Options::Reshape {
                new_shape: o.i32s(0)?,
            }
        }
        // DEPTH_TO_SPACE: DepthToSpaceOptions (94): block_size 0.
        5 => {
            expect(94, "DepthToSpaceOptions")?;
            Options::DepthToSpace {
                block_size: positive(o.i32(0, 0)?, "block_size")?,
            }
        }
        _ => Options::Other(tag),
    })
}

/// Names of the builtin operators, indexed by code (schema enum `BuiltinOperator`).
const BUILTIN_NAMES: &[&str] = &[
    "ADD",
    "AVERAGE_POOL_2D",
    "CONCATENATION",
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "DEPTH_TO_SPACE",
    "DEQUANTIZE",
    "EMBEDDING_LOOKUP",
    "FLOOR",
    "FULLY_CONNECTED",
    "HASHTABLE_LOOKUP",
    "L2_NORMALIZATION",
    "L2_POOL_2D",
    "LOCAL_RESPONSE_NORMALIZATION",
    "LOGISTIC",
    "LSH_PROJECTION",
    "LSTM",
    "MAX_POOL_2D",
    "MUL",
    "RELU",
    "RELU_N1_TO_1",
    "RELU6",
    "RESHAPE",
    "RESIZE_BILINEAR",
    "RNN",
    "SOFTMAX",
    "SPACE_TO_DEPTH",
    "SVDF",
    "TANH",
    "CONCAT_EMBEDDINGS",
    "SKIP_GRAM",
    "CALL",
    "CUSTOM",
    "EMBEDDING_LOOKUP_SPARSE",
    "PAD",
    "UNIDIRECTIONAL_SEQUENCE_RNN",
    "GATHER",
    "BATCH_TO_SPACE_ND",
    "SPACE_TO_BATCH_ND",
    "TRANSPOSE",
    "MEAN",
    "SUB",
    "DIV",
    "SQUEEZE",
    "UNIDIRECTIONAL_SEQUENCE_LSTM",
    "STRIDED_SLICE",
    "BIDIRECTIONAL_SEQUENCE_RNN",
    "EXP",
    "TOPK_V2",
    "SPLIT",
    "LOG_SOFTMAX",
    "DELEGATE",
    "BIDIRECTIONAL_SEQUENCE_LSTM",
    "CAST",
    "PRELU",
    "MAXIMUM",
    "ARG_MAX",
    "MINIMUM",
    "LESS",
    "NEG",
    "PADV2",
    "GREATER",
    "GREATER_EQUAL",
    "LESS_EQUAL",
    "SELECT",
    "SLICE",
    "SIN",
    "TRANSPOSE_CONV",
    "SPARSE_TO_DENSE",
    "TILE",
    "EXPAND_DIMS",
    "EQUAL",
    "NOT_EQUAL",
    "LOG",
    "SUM",
    "SQRT",
    "RSQRT",
    "SHAPE",
    "POW",
    "ARG_MIN",
    "FAKE_QUANT",
    "REDUCE_PROD",
    "REDUCE_MAX",
    "PACK",
    "LOGICAL_OR",
    "ONE_HOT",
    "LOGICAL_AND",
    "LOGICAL_NOT",
    "UNPACK",
    "REDUCE_MIN",
    "FLOOR_DIV",
    "REDUCE_ANY",
    "SQUARE",
    "ZEROS_LIKE",
    "FILL",
    "FLOOR_MOD",
    "RANGE",
    "RESIZE_NEAREST_NEIGHBOR",
    "LEAKY_RELU",
    "SQUARED_DIFFERENCE",
    "MIRROR_PAD",
    "ABS",
    "SPLIT_V",
    "UNIQUE",
    "CEIL",
    "REVERSE_V2",
    "ADD_N",
    "GATHER_ND",
    "COS",
    "WHERE",
    "RANK",
    "ELU",
    "REVERSE_SEQUENCE",
    "MATRIX_DIAG",
    "QUANTIZE",
    "MATRIX_SET_DIAG",
    "ROUND",
    "HARD_SWISH",
    "IF",
    "WHILE",
    "NON_MAX_SUPPRESSION_V4",
    "NON_MAX_SUPPRESSION_V5",
    "SCATTER_ND",
    "SELECT_V2",
    "DENSIFY",
    "SEGMENT_SUM",
    "BATCH_MATMUL",
    "PLACEHOLDER_FOR_GREATER_OP_CODES",
    "CUMSUM",
    "CALL_ONCE",
    "BROADCAST_TO",
    "RFFT2D",
    "CONV_3D",
    "IMAG",
    "REAL",
    "COMPLEX_ABS",
    "HASHTABLE",
    "HASHTABLE_FIND",
    "HASHTABLE_IMPORT",
    "HASHTABLE_SIZE",
    "REDUCE_ALL",
    "CONV_3D_TRANSPOSE",
    "VAR_HANDLE",
    "READ_VARIABLE",
    "ASSIGN_VARIABLE",
    "BROADCAST_ARGS",
    "RANDOM_STANDARD_NORMAL",
    "BUCKETIZE",
    "RANDOM_UNIFORM",
    "MULTINOMIAL",
    "GELU",
    "DYNAMIC_UPDATE_SLICE",
    "RELU_0_TO_1",
    "UNSORTED_SEGMENT_PROD",
    "UNSORTED_SEGMENT_MAX",
    "UNSORTED_SEGMENT_SUM",
    "ATAN2",
    "UNSORTED_SEGMENT_MIN",
    "SIGN",
    "BITCAST",
    "BITWISE_XOR",
    "RIGHT_SHIFT",
];

/// The schema name of builtin operator `code`, or `BUILTIN_<code>` for codes past the table.
pub fn builtin_name(code: i32) -> String {
    usize::try_from(code)
        .ok()
        .and_then(|c| BUILTIN_NAMES.get(c))
        .map_or_else(|| format!("BUILTIN_{code}"), |s| (*s).to_owned())
}
