//! The interpreter: a TensorFlow Lite graph turned into a list of steps on candle tensors.
//!
//! At load, constant tensors are decoded (float32, float16, int32), the weight-only operators
//! are folded (DENSIFY expands sparse weights, DEQUANTIZE turns float16 into float32), and each
//! remaining operator becomes a step with its weights already laid out for its kernel:
//! * CONV_2D: filter `[C_out, kh, kw, C_in]` packed for the matrix-product kernel of `ops.rs`
//!   (`[kh kw C_in, C_out]` in panels; a 1x1 / stride 1 convolution reads the `[H W, C_in]`
//!   activations directly, any other one its NHWC im2col rows), bias and activation fused;
//!   those with at most 4 output channels run a direct kernel;
//! * ADD of a convolution's output that nothing else reads and a tensor of the same shape
//!   becomes one step: the convolution adds the residual as its results leave the registers
//!   (the step runs where the ADD was, so both inputs exist);
//! * DEPTHWISE_CONV_2D: the direct kernel of `ops.rs` (filter `[1, kh, kw, C_out]`);
//! * PAD before a VALID convolution (the graphs' way of padding stride-2 layers) becomes the
//!   convolution's explicit padding, so no padded copy is made;
//! * the rest (ADD, PAD, RESHAPE, DEPTH_TO_SPACE, RESIZE_BILINEAR, CONCATENATION, MAX_POOL_2D,
//!   LOGISTIC) map to candle operations or to the kernels of `ops.rs`.
//!
//! Activations stay NHWC throughout, so RESHAPE and CONCATENATION keep the file's semantics
//! without any transposition. Every output shape is checked against the shape the file
//! declares, at load. Intermediate tensors are dropped after their last use;
//! [`Model::retain_outputs`] drops the steps of unused outputs. A run executes on a thread of
//! rayon's pool, where the kernels split their work.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};

use super::ops::{
    Act, AddAct, Conv, ConvAdd, ConvDirect, Depthwise, MaxPool, Packed, Pad, ResizeBilinear, Window,
};
use super::{
    Activation, Error, Operator, Options, Padding, Result, SubGraph, TensorType, TfliteFile,
    f16_to_f32,
};

/// Operators this interpreter runs (DENSIFY and DEQUANTIZE only on constant weights).
pub const SUPPORTED_OPS: &[&str] = &[
    "ADD",
    "CONCATENATION",
    "CONV_2D",
    "DENSIFY",
    "DEPTHWISE_CONV_2D",
    "DEPTH_TO_SPACE",
    "DEQUANTIZE",
    "LOGISTIC",
    "MAX_POOL_2D",
    "PAD",
    "RESHAPE",
    "RESIZE_BILINEAR",
];

/// Convolutions with at most this many output channels run the direct kernel.
const DIRECT_MAX_COUT: usize = 4;

/// Wall time of each run-time step: `(operator name, time)` in execution order.
pub type StepTimes = Vec<(String, Duration)>;

/// A PAD step that a following VALID convolution may absorb.
#[derive(Debug, Clone, Copy)]
struct PadInfo {
    /// Position of the step in the step list.
    step: usize,
    /// The tensor being padded.
    src: usize,
    pads: [(usize, usize); 4],
}

/// Name and shape of a model input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
}

/// Constant data decoded at load.
#[derive(Debug, Clone)]
enum ConstData {
    F32(Vec<f32>),
    F16(Vec<u16>),
    I32(Vec<i32>),
}

#[derive(Debug)]
enum Kind {
    /// `[H_out W_out, kh kw C_in] x [kh kw C_in, C_out]` with bias and activation.
    Conv(Conv),
    /// The same followed by the ADD of a residual (inputs: the convolution's, the residual).
    ConvAdd(ConvAdd),
    /// Direct convolution (few output channels).
    ConvDirect(ConvDirect),
    Depthwise(Depthwise),
    Add {
        act: Act,
    },
    Pad(Pad),
    Reshape,
    DepthToSpace {
        block: usize,
    },
    Resize(ResizeBilinear),
    Concat {
        axis: usize,
        act: Act,
    },
    MaxPool(MaxPool),
    Logistic,
}

#[derive(Debug)]
struct Step {
    /// Operator number in the file (for errors).
    index: usize,
    op: String,
    kind: Kind,
    inputs: Vec<usize>,
    output: usize,
    /// Declared output shape.
    shape: Vec<usize>,
    /// Tensors whose last use is this step (dropped after it).
    free: Vec<usize>,
    /// Folded into a later convolution (a PAD before a VALID window).
    folded: bool,
}

/// A TensorFlow Lite model ready to run on candle CPU tensors.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use candle_core::{DType, Device, Tensor};
/// use ikol_detect::tflite::Model;
///
/// let model = Model::load("pose_detection.tflite")?;
/// let x = Tensor::zeros((1, 224, 224, 3), DType::F32, &Device::Cpu)?;
/// let outputs = model.run(&[x])?;
/// assert_eq!(outputs.len(), model.outputs().len());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Model {
    file: String,
    device: Device,
    n_tensors: usize,
    inputs: Vec<(usize, TensorSpec)>,
    outputs: Vec<(usize, TensorSpec)>,
    /// Constant `f32` tensors read by run-time steps (not the folded weights).
    consts: Vec<(usize, Tensor)>,
    steps: Vec<Step>,
}

impl Model {
    /// Reads `path` and prepares its main subgraph.
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<Self> {
        Self::from_file(&TfliteFile::read(path)?)
    }

    /// Prepares the main subgraph of a parsed file.
    pub fn from_file(tf: &TfliteFile) -> Result<Self> {
        Builder::new(tf)?.build()
    }

    /// The file the model was read from.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Inputs, in the order [`Model::run`] takes them.
    pub fn inputs(&self) -> Vec<TensorSpec> {
        self.inputs.iter().map(|(_, s)| s.clone()).collect()
    }

    /// Outputs, in the order [`Model::run`] returns them.
    pub fn outputs(&self) -> Vec<TensorSpec> {
        self.outputs.iter().map(|(_, s)| s.clone()).collect()
    }

    /// Number of run-time steps (operators left after folding the weight-only ones and the
    /// PADs absorbed by convolutions).
    pub fn num_steps(&self) -> usize {
        self.steps.len()
    }

    /// Runs the graph on `inputs` (`f32`, shapes as [`Model::inputs`], NHWC for images) and
    /// returns the outputs in the file's order, with the file's shapes.
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        self.run_inner(inputs, None)
    }

    /// Like [`Model::run`], and also the wall time of every step: `(operator name, time)` in
    /// execution order.
    pub fn run_profiled(&self, inputs: &[Tensor]) -> Result<(Vec<Tensor>, StepTimes)> {
        let mut times = Vec::with_capacity(self.steps.len());
        let out = self.run_inner(inputs, Some(&mut times))?;
        Ok((out, times))
    }

    /// A one-line description of step `i` (operator, output shape, kernel), for profiles.
    pub fn describe_step(&self, i: usize) -> String {
        let Some(s) = self.steps.get(i) else {
            return String::new();
        };
        let kernel = match &s.kind {
            Kind::Conv(c) | Kind::ConvAdd(ConvAdd { conv: c, .. }) => {
                let k = &c.win;
                let add = if matches!(s.kind, Kind::ConvAdd(_)) {
                    " + add"
                } else {
                    ""
                };
                if let Some(d) = &c.pre {
                    format!(
                        "{}x{}/{} depthwise + gemm [{}, {}]{add}",
                        d.win.kh, d.win.kw, d.win.sh, c.w.k, c.w.n
                    )
                } else if c.pointwise {
                    format!("gemm [{}, {}]{add}", c.w.k, c.w.n)
                } else {
                    format!(
                        "{}x{}/{} im2col gemm [{}, {}]{add}",
                        k.kh, k.kw, k.sh, c.w.k, c.w.n
                    )
                }
            }
            Kind::ConvDirect(c) => format!("{}x{}/{} direct", c.win.kh, c.win.kw, c.win.sh),
            Kind::Depthwise(d) => format!("{}x{}/{} depthwise", d.win.kh, d.win.kw, d.win.sh),
            _ => String::new(),
        };
        format!("#{} {} -> {:?} {kernel}", s.index, s.op, s.shape)
    }

    /// Keeps only the outputs called `names` (in the file's order) and drops every step that
    /// only feeds the others: e.g. `pose_landmark_full` without its segmentation mask
    /// (`Identity_2`, a decoder at 256x256) computes the landmarks in about a quarter less
    /// time. The outputs kept are computed exactly as before.
    pub fn retain_outputs(&mut self, names: &[&str]) -> Result<()> {
        if let Some(bad) = names
            .iter()
            .find(|n| !self.outputs.iter().any(|(_, s)| s.name == **n))
        {
            return Err(Error::Input {
                file: self.file.clone(),
                what: format!(
                    "no output `{bad}` (outputs: {})",
                    self.outputs
                        .iter()
                        .map(|(_, s)| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        self.outputs
            .retain(|(_, s)| names.contains(&s.name.as_str()));
        let mut needed = vec![false; self.n_tensors];
        for (i, _) in &self.outputs {
            needed[*i] = true;
        }
        let mut keep = vec![false; self.steps.len()];
        for (k, step) in self.steps.iter().enumerate().rev() {
            if needed[step.output] {
                keep[k] = true;
                for &i in &step.inputs {
                    needed[i] = true;
                }
            }
        }
        let mut keep = keep.into_iter();
        self.steps.retain(|_| keep.next().unwrap_or(false));
        self.consts.retain(|(i, _)| needed[*i]);
        self.set_free_lists();
        Ok(())
    }

    /// Frees each intermediate tensor after its last reader (outputs are kept).
    fn set_free_lists(&mut self) {
        let mut last_use = vec![None; self.n_tensors];
        for (k, step) in self.steps.iter().enumerate() {
            for &i in &step.inputs {
                last_use[i] = Some(k);
            }
        }
        for (i, _) in &self.outputs {
            last_use[*i] = None;
        }
        for step in &mut self.steps {
            step.free.clear();
        }
        for (i, last) in last_use.iter().enumerate() {
            if let Some(k) = last {
                self.steps[*k].free.push(i);
            }
        }
    }

    fn run_inner(&self, inputs: &[Tensor], times: Option<&mut StepTimes>) -> Result<Vec<Tensor>> {
        let bad = |what: String| Error::Input {
            file: self.file.clone(),
            what,
        };
        if inputs.len() != self.inputs.len() {
            return Err(bad(format!(
                "{} input tensors given, the model takes {}",
                inputs.len(),
                self.inputs.len()
            )));
        }
        let mut vals: Vec<Option<Tensor>> = vec![None; self.n_tensors];
        for (i, t) in &self.consts {
            vals[*i] = Some(t.clone());
        }
        for ((i, spec), t) in self.inputs.iter().zip(inputs) {
            if t.dims() != spec.shape.as_slice() {
                return Err(bad(format!(
                    "input {} has shape {:?}, the model expects {:?}",
                    spec.name,
                    t.dims(),
                    spec.shape
                )));
            }
            let t = t
                .to_device(&self.device)
                .and_then(|t| t.to_dtype(DType::F32))
                .and_then(|t| t.contiguous())
                .map_err(|e| bad(format!("input {}: {e}", spec.name)))?;
            vals[*i] = Some(t);
        }
        // The steps run on a thread of rayon's pool, so the kernels' parallel bands start there
        // (the other threads steal them) instead of a blocked caller waking the pool per step.
        rayon::scope(|_| self.run_steps(&mut vals, times))?;
        self.outputs
            .iter()
            .map(|(i, spec)| {
                vals[*i].clone().ok_or_else(|| Error::Invalid {
                    file: self.file.clone(),
                    what: format!("output {} was never computed", spec.name),
                })
            })
            .collect()
    }

    fn run_steps(
        &self,
        vals: &mut [Option<Tensor>],
        mut times: Option<&mut StepTimes>,
    ) -> Result<()> {
        for step in &self.steps {
            let t0 = times.as_ref().map(|_| Instant::now());
            let out = self.exec(step, vals).map_err(|source| Error::Candle {
                file: self.file.clone(),
                index: step.index,
                op: step.op.clone(),
                source: Box::new(source),
            })?;
            if let (Some(times), Some(t0)) = (times.as_deref_mut(), t0) {
                times.push((step.op.clone(), t0.elapsed()));
            }
            vals[step.output] = Some(out);
            for &f in &step.free {
                vals[f] = None;
            }
        }
        Ok(())
    }

    fn exec(&self, step: &Step, vals: &[Option<Tensor>]) -> candle_core::Result<Tensor> {
        let arg = |k: usize| -> candle_core::Result<&Tensor> {
            step.inputs
                .get(k)
                .and_then(|&i| vals[i].as_ref())
                .ok_or_else(|| candle_core::Error::Msg(format!("input {k} is not available")))
        };
        let x = arg(0)?;
        let s = &step.shape;
        match &step.kind {
            Kind::Conv(conv) => x.apply_op1_no_bwd(conv),
            Kind::ConvAdd(conv) => x.apply_op2_no_bwd(arg(1)?, conv),
            Kind::ConvDirect(conv) => x.apply_op1_no_bwd(conv),
            Kind::Depthwise(dw) => x.apply_op1_no_bwd(dw),
            Kind::Add { act } => {
                let y = arg(1)?;
                if x.dims() == y.dims() {
                    x.apply_op2_no_bwd(y, &AddAct { act: *act })
                } else {
                    activation(x.broadcast_add(y)?, *act)
                }
            }
            Kind::Pad(p) => x.apply_op1_no_bwd(p),
            Kind::Reshape => x.reshape(s.as_slice()),
            Kind::DepthToSpace { block } => {
                let (n, h, w, c) = x.dims4()?;
                let b = *block;
                x.reshape(vec![n, h, w, b, b, c / (b * b)])?
                    .permute(vec![0, 1, 3, 2, 4, 5])?
                    .contiguous()?
                    .reshape(s.as_slice())
            }
            Kind::Resize(r) => x.apply_op1_no_bwd(r),
            Kind::Concat { axis, act } => {
                let parts = (0..step.inputs.len())
                    .map(arg)
                    .collect::<candle_core::Result<Vec<_>>>()?;
                activation(Tensor::cat(&parts, *axis)?, *act)
            }
            Kind::MaxPool(p) => x.apply_op1_no_bwd(p),
            Kind::Logistic => candle_nn::ops::sigmoid(x),
        }
    }
}

fn activation(y: Tensor, act: Act) -> candle_core::Result<Tensor> {
    match act {
        Act::None => Ok(y),
        Act::Relu => y.relu(),
        Act::Relu6 => y.clamp(0f32, 6f32),
    }
}

/// Load-time state: the file, the decoded constants and the steps built so far.
struct Builder<'a> {
    tf: &'a TfliteFile,
    sg: &'a SubGraph,
    shapes: Vec<Vec<usize>>,
    consts: Vec<Option<ConstData>>,
    steps: Vec<Step>,
    /// How many operators (and graph outputs) read each tensor.
    uses: Vec<usize>,
    /// PAD steps by output tensor: `(step position, padded tensor, pads)`.
    pads: HashMap<usize, PadInfo>,
}

/// What an operator needs besides its options: the operator's name and number (for errors),
/// its input and output tensor indices.
struct OpCtx {
    index: usize,
    name: String,
    inputs: Vec<Option<usize>>,
    output: usize,
    file: String,
}

impl OpCtx {
    fn err(&self, what: impl std::fmt::Display) -> Error {
        Error::Invalid {
            file: self.file.clone(),
            what: format!("operator #{} ({}): {what}", self.index, self.name),
        }
    }

    fn unsupported(&self, what: impl std::fmt::Display) -> Error {
        Error::Unsupported {
            file: self.file.clone(),
            what: format!("operator #{} ({}): {what}", self.index, self.name),
        }
    }

    fn input(&self, k: usize) -> Result<usize> {
        self.inputs
            .get(k)
            .copied()
            .flatten()
            .ok_or_else(|| self.err(format!("input {k} is missing")))
    }

    fn optional_input(&self, k: usize) -> Option<usize> {
        self.inputs.get(k).copied().flatten()
    }

    fn act(&self, a: Activation) -> Result<Act> {
        match a {
            Activation::None => Ok(Act::None),
            Activation::Relu => Ok(Act::Relu),
            Activation::Relu6 => Ok(Act::Relu6),
            other => Err(self.unsupported(format!("fused activation {other:?}"))),
        }
    }
}

impl<'a> Builder<'a> {
    fn new(tf: &'a TfliteFile) -> Result<Self> {
        let sg = tf.subgraphs.first().ok_or_else(|| Error::Invalid {
            file: tf.file.clone(),
            what: "the model has no subgraph".into(),
        })?;
        let mut b = Self {
            tf,
            sg,
            shapes: Vec::with_capacity(sg.tensors.len()),
            consts: Vec::with_capacity(sg.tensors.len()),
            steps: Vec::new(),
            uses: vec![0; sg.tensors.len()],
            pads: HashMap::new(),
        };
        for i in sg
            .operators
            .iter()
            .flat_map(|o| &o.inputs)
            .chain(&sg.outputs)
        {
            if let Some(u) = usize::try_from(*i).ok().and_then(|i| b.uses.get_mut(i)) {
                *u += 1;
            }
        }
        for (i, t) in sg.tensors.iter().enumerate() {
            let shape = t
                .shape
                .iter()
                .map(|&d| usize::try_from(d))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|_| {
                    b.unsupported(format!(
                        "tensor {i} ({}) has a dynamic shape {:?}",
                        t.name, t.shape
                    ))
                })?;
            b.shapes.push(shape);
            let c = b.decode_const(i)?;
            b.consts.push(c);
        }
        Ok(b)
    }

    fn invalid(&self, what: String) -> Error {
        Error::Invalid {
            file: self.tf.file.clone(),
            what,
        }
    }

    fn unsupported(&self, what: String) -> Error {
        Error::Unsupported {
            file: self.tf.file.clone(),
            what,
        }
    }

    /// The constant data of tensor `i`, `None` when it has no buffer data.
    fn decode_const(&self, i: usize) -> Result<Option<ConstData>> {
        let t = &self.sg.tensors[i];
        let bytes = self.tf.buffer(t.buffer);
        if bytes.is_empty() {
            return Ok(None);
        }
        let Some(size) = t.dtype.size() else {
            return Err(self.unsupported(format!("tensor {i} ({}) has type {:?}", t.name, t.dtype)));
        };
        let count: usize = self.shapes[i].iter().product();
        let ok = if t.sparsity.is_some() {
            bytes.len().is_multiple_of(size)
        } else {
            bytes.len() == count * size
        };
        if !ok {
            return Err(self.invalid(format!(
                "tensor {i} ({}) of shape {:?} and type {:?} has a {}-byte buffer",
                t.name,
                self.shapes[i],
                t.dtype,
                bytes.len()
            )));
        }
        let words2 = || {
            bytes
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
        };
        let words4 = || bytes.chunks_exact(4).map(|b| [b[0], b[1], b[2], b[3]]);
        Ok(Some(match t.dtype {
            TensorType::Float32 => ConstData::F32(words4().map(f32::from_le_bytes).collect()),
            TensorType::Float16 => ConstData::F16(words2().collect()),
            TensorType::Int32 => ConstData::I32(words4().map(i32::from_le_bytes).collect()),
            other => {
                return Err(self.unsupported(format!(
                    "constant tensor {i} ({}) has type {other:?} (float32, float16 and int32 \
                     constants are supported)",
                    t.name
                )));
            }
        }))
    }

    fn build(mut self) -> Result<Model> {
        for (index, op) in self.sg.operators.iter().enumerate() {
            self.add_operator(index, op)?;
        }
        self.steps.retain(|s| !s.folded);
        let n = self.sg.tensors.len();
        let spec = |i: usize| TensorSpec {
            name: self.sg.tensors[i].name.clone(),
            shape: self.shapes[i].clone(),
        };
        // Indices were range-checked by TfliteFile::parse.
        let as_index = |i: &i32| usize::try_from(*i).unwrap_or(usize::MAX);
        let inputs: Vec<_> = self
            .sg
            .inputs
            .iter()
            .map(as_index)
            .map(|i| (i, spec(i)))
            .collect();
        let outputs: Vec<_> = self
            .sg
            .outputs
            .iter()
            .map(as_index)
            .map(|i| (i, spec(i)))
            .collect();
        let device = Device::Cpu;

        // Which tensors exist when: inputs, constants read at run time, step outputs.
        let mut available = vec![false; n];
        for (i, _) in &inputs {
            available[*i] = true;
        }
        let mut consts = Vec::new();
        for step in &self.steps {
            for &i in &step.inputs {
                if !available[i] {
                    match &self.consts[i] {
                        Some(ConstData::F32(v)) => {
                            let t = Tensor::from_slice(v, self.shapes[i].as_slice(), &device)
                                .map_err(|e| self.invalid(format!("constant {i}: {e}")))?;
                            consts.push((i, t));
                            available[i] = true;
                        }
                        _ => {
                            return Err(self.invalid(format!(
                                "operator #{} ({}) reads tensor {i} ({}), which is neither an \
                                 input, a float32 constant nor computed before",
                                step.index, step.op, self.sg.tensors[i].name
                            )));
                        }
                    }
                }
            }
            available[step.output] = true;
        }
        for (i, spec) in &outputs {
            if !available[*i] {
                return Err(self.invalid(format!("output {} is never computed", spec.name)));
            }
        }
        let mut model = Model {
            file: self.tf.file.clone(),
            device,
            n_tensors: n,
            inputs,
            outputs,
            consts,
            steps: self.steps,
        };
        model.set_free_lists();
        Ok(model)
    }

    fn nhwc(&self, i: usize, op: &OpCtx) -> Result<[usize; 4]> {
        match self.shapes[i].as_slice() {
            &[n, h, w, c] => Ok([n, h, w, c]),
            s => Err(op.err(format!("tensor {i} should be NHWC, has shape {s:?}"))),
        }
    }

    fn add_operator(&mut self, index: usize, op: &Operator) -> Result<()> {
        let name = self.tf.op_name(op);
        let code = self.tf.operator_codes[op.opcode_index].builtin;
        let outs: Vec<usize> = op
            .outputs
            .iter()
            .filter_map(|&i| usize::try_from(i).ok())
            .collect();
        let mut cx = OpCtx {
            index,
            name,
            inputs: op.inputs.iter().map(|&i| usize::try_from(i).ok()).collect(),
            output: 0,
            file: self.tf.file.clone(),
        };
        cx.output = match outs.as_slice() {
            &[o] => o,
            _ => return Err(cx.err(format!("expected one output, got {}", outs.len()))),
        };
        match code {
            6 => self.fold_dequantize(&cx),
            124 => self.fold_densify(&cx),
            3 => self.conv(&cx, &op.options),
            4 => self.depthwise(&cx, &op.options),
            0 => self.add(&cx, &op.options),
            34 => self.pad(&cx),
            22 => self.reshape(&cx),
            5 => self.depth_to_space(&cx, &op.options),
            23 => self.resize(&cx, &op.options),
            2 => self.concat(&cx, &op.options),
            17 => self.max_pool(&cx, &op.options),
            14 => {
                let x = cx.input(0)?;
                let shape = self.shapes[x].clone();
                self.push(&cx, Kind::Logistic, vec![x], &shape)
            }
            _ => Err(Error::UnsupportedOp {
                file: self.tf.file.clone(),
                index,
                op: cx.name,
            }),
        }
    }

    /// DEQUANTIZE of a constant: float16 -> float32 at load.
    fn fold_dequantize(&mut self, cx: &OpCtx) -> Result<()> {
        let i = cx.input(0)?;
        if self.sg.tensors[i].sparsity.is_some() {
            return Err(cx.err("input is sparse (DENSIFY it first)"));
        }
        let folded = match &self.consts[i] {
            Some(ConstData::F16(v)) => ConstData::F32(v.iter().map(|&h| f16_to_f32(h)).collect()),
            Some(ConstData::F32(v)) => ConstData::F32(v.clone()),
            Some(ConstData::I32(_)) => {
                return Err(cx.unsupported(
                    "only float16 -> float32 is supported (quantized integer inputs are not)",
                ));
            }
            None => return Err(cx.unsupported("only constant inputs are supported")),
        };
        self.consts[cx.output] = Some(folded);
        Ok(())
    }

    /// DENSIFY of a constant sparse tensor, at load.
    fn fold_densify(&mut self, cx: &OpCtx) -> Result<()> {
        let i = cx.input(0)?;
        let (Some(sp), Some(data)) = (&self.sg.tensors[i].sparsity, &self.consts[i]) else {
            return Err(cx.unsupported("only constant sparse inputs are supported"));
        };
        let shape = &self.shapes[i];
        let dense = match data {
            ConstData::F16(v) => sp.densify(shape, v, 0u16).map(ConstData::F16),
            ConstData::F32(v) => sp.densify(shape, v, 0f32).map(ConstData::F32),
            ConstData::I32(v) => sp.densify(shape, v, 0i32).map(ConstData::I32),
        }
        .map_err(|e| cx.err(format!("tensor {i} ({}): {e}", self.sg.tensors[i].name)))?;
        self.consts[cx.output] = Some(dense);
        Ok(())
    }

    fn conv(&mut self, cx: &OpCtx, options: &Options) -> Result<()> {
        let &Options::Conv2D {
            padding,
            stride_w,
            stride_h,
            activation,
            dilation_w,
            dilation_h,
        } = options
        else {
            return Err(cx.err("missing Conv2DOptions"));
        };
        let f = cx.input(1)?;
        let [cout, kh, kw, fcin] = self.nhwc(f, cx)?;
        let (x, win) = self.window(
            cx,
            cx.input(0)?,
            (kh, kw),
            (stride_h, stride_w),
            (dilation_h, dilation_w),
            padding,
        )?;
        let [_, _, _, cin] = self.nhwc(x, cx)?;
        if fcin != cin {
            return Err(cx.err(format!("filter has {fcin} input channels, input has {cin}")));
        }
        let weights = self.f32_const(f, cx)?;
        let bias = self.bias(cx.optional_input(2), cout, cx)?;
        let act = cx.act(activation)?;
        let pointwise = kh == 1
            && kw == 1
            && stride_h == 1
            && stride_w == 1
            && win.pad_top == 0
            && win.pad_left == 0
            && (win.out_h, win.out_w) == (win.in_h, win.in_w);
        let shape = [1, win.out_h, win.out_w, cout];
        if !pointwise && cout <= DIRECT_MAX_COUT {
            let kind = Kind::ConvDirect(ConvDirect {
                win,
                weights,
                bias,
                act,
            });
            return self.push(cx, kind, vec![x], &shape);
        }
        let k = kh * kw * cin;
        let w = Packed::from_filter(&weights, cout, k, &bias).ok_or_else(|| {
            cx.err(format!(
                "filter of {} values for {cout} x {k}",
                weights.len()
            ))
        })?;
        // A depthwise convolution read only by this one is folded into it.
        let folded = pointwise
            .then(|| self.fold_into(x, |k| matches!(k, Kind::Depthwise(d) if d.multiplier == 1)))
            .flatten();
        let (x, pre) = match folded {
            Some((input, Kind::Depthwise(dw))) => (input, Some(dw)),
            _ => (x, None),
        };
        let kind = Kind::Conv(Conv {
            win,
            cin,
            w,
            act,
            pointwise,
            pre,
        });
        self.push(cx, kind, vec![x], &shape)
    }

    fn depthwise(&mut self, cx: &OpCtx, options: &Options) -> Result<()> {
        let &Options::DepthwiseConv2D {
            padding,
            stride_w,
            stride_h,
            activation,
            dilation_w,
            dilation_h,
            ..
        } = options
        else {
            return Err(cx.err("missing DepthwiseConv2DOptions"));
        };
        let f = cx.input(1)?;
        let [one, kh, kw, cout] = self.nhwc(f, cx)?;
        let (x, win) = self.window(
            cx,
            cx.input(0)?,
            (kh, kw),
            (stride_h, stride_w),
            (dilation_h, dilation_w),
            padding,
        )?;
        let [_, _, _, cin] = self.nhwc(x, cx)?;
        if one != 1 || cin == 0 || !cout.is_multiple_of(cin) {
            return Err(cx.err(format!(
                "filter shape {:?} does not fit {cin} input channels",
                self.shapes[f]
            )));
        }
        let kind = Kind::Depthwise(Depthwise {
            win,
            weights: self.f32_const(f, cx)?,
            bias: self.bias(cx.optional_input(2), cout, cx)?,
            multiplier: cout / cin,
            act: cx.act(activation)?,
        });
        self.push(cx, kind, vec![x], &[1, win.out_h, win.out_w, cout])
    }

    fn add(&mut self, cx: &OpCtx, options: &Options) -> Result<()> {
        let &Options::Add { activation } = options else {
            return Err(cx.err("missing AddOptions"));
        };
        let (a, b) = (cx.input(0)?, cx.input(1)?);
        let shape = broadcast_shape(&self.shapes[a], &self.shapes[b]).ok_or_else(|| {
            cx.err(format!(
                "shapes {:?} and {:?} do not broadcast",
                self.shapes[a], self.shapes[b]
            ))
        })?;
        let act = cx.act(activation)?;
        // A convolution whose only reader is this ADD takes the residual in its epilogue.
        if self.shapes[a] == self.shapes[b] && a != b {
            for (conv_out, res) in [(a, b), (b, a)] {
                let folded = self.fold_into(conv_out, |k| matches!(k, Kind::Conv(_)));
                if let Some((x, Kind::Conv(conv))) = folded {
                    let kind = Kind::ConvAdd(ConvAdd { conv, act2: act });
                    return self.push(cx, kind, vec![x, res], &shape);
                }
            }
        }
        self.push(cx, Kind::Add { act }, vec![a, b], &shape)
    }

    /// Folds the step computing tensor `t` into the caller when the caller is its only reader
    /// and `accept` takes its kind: the step is dropped from the list, and the caller gets the
    /// step's input and its kind.
    fn fold_into(&mut self, t: usize, accept: impl Fn(&Kind) -> bool) -> Option<(usize, Kind)> {
        if self.uses[t] != 1 {
            return None;
        }
        let pos = self
            .steps
            .iter()
            .rposition(|s| s.output == t && !s.folded)?;
        let step = &mut self.steps[pos];
        if !accept(&step.kind) {
            return None;
        }
        step.folded = true;
        Some((
            step.inputs[0],
            std::mem::replace(&mut step.kind, Kind::Reshape),
        ))
    }

    fn pad(&mut self, cx: &OpCtx) -> Result<()> {
        let x = cx.input(0)?;
        let Some(ConstData::I32(v)) = &self.consts[cx.input(1)?] else {
            return Err(cx.err("paddings must be a constant int32 tensor"));
        };
        let rank = self.shapes[x].len();
        if v.len() != 2 * rank || v.iter().any(|&q| q < 0) {
            return Err(cx.err(format!("paddings {v:?} do not fit rank {rank}")));
        }
        let pads: Vec<(usize, usize)> = v
            .chunks_exact(2)
            .map(|q| (q[0] as usize, q[1] as usize))
            .collect();
        let shape: Vec<usize> = self.shapes[x]
            .iter()
            .zip(&pads)
            .map(|(d, (a, b))| d + a + b)
            .collect();
        let Ok(pads) = <[(usize, usize); 4]>::try_from(pads) else {
            return Err(cx.unsupported("only rank-4 tensors can be padded"));
        };
        let info = PadInfo {
            step: self.steps.len(),
            src: x,
            pads,
        };
        self.pads.insert(cx.output, info);
        self.push(cx, Kind::Pad(Pad { pads }), vec![x], &shape)
    }

    /// RESHAPE: the output shape is the declared one (the new_shape option or the shape input
    /// says the same for static graphs).
    fn reshape(&mut self, cx: &OpCtx) -> Result<()> {
        let x = cx.input(0)?;
        let out = self.shapes[cx.output].clone();
        let (a, b): (usize, usize) = (self.shapes[x].iter().product(), out.iter().product());
        if a != b {
            return Err(cx.err(format!("cannot reshape {:?} to {out:?}", self.shapes[x])));
        }
        self.push(cx, Kind::Reshape, vec![x], &out)
    }

    fn depth_to_space(&mut self, cx: &OpCtx, options: &Options) -> Result<()> {
        let &Options::DepthToSpace { block_size: b } = options else {
            return Err(cx.err("missing DepthToSpaceOptions"));
        };
        let x = cx.input(0)?;
        let [n, h, w, c] = self.nhwc(x, cx)?;
        if !c.is_multiple_of(b * b) {
            return Err(cx.err(format!("{c} channels are not divisible by {b}x{b}")));
        }
        let shape = [n, h * b, w * b, c / (b * b)];
        self.push(cx, Kind::DepthToSpace { block: b }, vec![x], &shape)
    }

    fn resize(&mut self, cx: &OpCtx, options: &Options) -> Result<()> {
        let &Options::ResizeBilinear {
            align_corners,
            half_pixel_centers,
        } = options
        else {
            return Err(cx.err("missing ResizeBilinearOptions"));
        };
        let x = cx.input(0)?;
        let [n, _, _, c] = self.nhwc(x, cx)?;
        let Some(ConstData::I32(v)) = &self.consts[cx.input(1)?] else {
            return Err(cx.err("size must be a constant int32 tensor"));
        };
        let &[oh, ow] = v.as_slice() else {
            return Err(cx.err(format!("size {v:?} should have two entries")));
        };
        let (Ok(oh), Ok(ow)) = (usize::try_from(oh), usize::try_from(ow)) else {
            return Err(cx.err(format!("negative size {v:?}")));
        };
        let kind = Kind::Resize(ResizeBilinear {
            out_h: oh,
            out_w: ow,
            align_corners,
            half_pixel_centers,
        });
        self.push(cx, kind, vec![x], &[n, oh, ow, c])
    }

    fn concat(&mut self, cx: &OpCtx, options: &Options) -> Result<()> {
        let &Options::Concatenation { axis, activation } = options else {
            return Err(cx.err("missing ConcatenationOptions"));
        };
        let xs = (0..cx.inputs.len())
            .map(|k| cx.input(k))
            .collect::<Result<Vec<_>>>()?;
        let Some(&first) = xs.first() else {
            return Err(cx.err("no inputs"));
        };
        let rank = self.shapes[first].len() as i32;
        let ax = if axis < 0 { axis + rank } else { axis };
        let Some(ax) = usize::try_from(ax).ok().filter(|&a| (a as i32) < rank) else {
            return Err(cx.err(format!("axis {axis} for rank {rank}")));
        };
        let mut shape = self.shapes[first].clone();
        shape[ax] = xs
            .iter()
            .map(|&i| self.shapes[i].get(ax).copied().unwrap_or(0))
            .sum();
        let act = cx.act(activation)?;
        self.push(cx, Kind::Concat { axis: ax, act }, xs, &shape)
    }

    fn max_pool(&mut self, cx: &OpCtx, options: &Options) -> Result<()> {
        let &Options::Pool2D {
            padding,
            stride_w,
            stride_h,
            filter_w,
            filter_h,
            activation,
        } = options
        else {
            return Err(cx.err("missing Pool2DOptions"));
        };
        let x = cx.input(0)?;
        let [n, h, w, c] = self.nhwc(x, cx)?;
        let win = Window::new(
            (h, w),
            (filter_h, filter_w),
            (stride_h, stride_w),
            (1, 1),
            padding,
        )
        .ok_or_else(|| {
            cx.err(format!(
                "a {filter_h}x{filter_w} window does not fit {h}x{w}"
            ))
        })?;
        let act = cx.act(activation)?;
        let shape = [n, win.out_h, win.out_w, c];
        self.push(cx, Kind::MaxPool(MaxPool { win, act }), vec![x], &shape)
    }

    /// Adds a step after checking its computed output shape against the declared one.
    fn push(&mut self, cx: &OpCtx, kind: Kind, inputs: Vec<usize>, shape: &[usize]) -> Result<()> {
        let declared = &self.shapes[cx.output];
        if declared.as_slice() != shape {
            return Err(cx.err(format!(
                "computed output shape {shape:?}, the file declares {declared:?}"
            )));
        }
        if self.sg.tensors[cx.output].dtype != TensorType::Float32 {
            return Err(cx.unsupported(format!(
                "produces a {:?} tensor (only float32 activations are supported)",
                self.sg.tensors[cx.output].dtype
            )));
        }
        self.steps.push(Step {
            index: cx.index,
            op: cx.name.clone(),
            kind,
            inputs,
            output: cx.output,
            shape: shape.to_vec(),
            free: Vec::new(),
            folded: false,
        });
        Ok(())
    }

    /// The window of a convolution over tensor `x`. A VALID window over the output of a PAD
    /// that pads only height and width and feeds nothing else reads the PAD's input instead,
    /// with the padding made explicit (zeros either way), and the PAD step is dropped.
    fn window(
        &mut self,
        cx: &OpCtx,
        x: usize,
        k: (usize, usize),
        stride: (usize, usize),
        dilation: (usize, usize),
        padding: Padding,
    ) -> Result<(usize, Window)> {
        let [_, h, w, _] = self.nhwc(x, cx)?;
        if padding == Padding::Valid
            && self.uses[x] == 1
            && let Some(&PadInfo {
                step: pos,
                src,
                pads: p,
            }) = self.pads.get(&x)
            && p[0] == (0, 0)
            && p[3] == (0, 0)
            && let &[_, sh, sw, _] = self.shapes[src].as_slice()
            && let Some(win) = Window::explicit((sh, sw), k, stride, dilation, p[1], p[2])
        {
            self.steps[pos].folded = true;
            return Ok((src, win));
        }
        let win = Window::new((h, w), k, stride, dilation, padding).ok_or_else(|| {
            cx.err(format!(
                "a {}x{} window does not fit a {h}x{w} input",
                k.0, k.1
            ))
        })?;
        Ok((x, win))
    }

    fn f32_const(&self, i: usize, cx: &OpCtx) -> Result<Vec<f32>> {
        match &self.consts[i] {
            Some(ConstData::F32(v)) if v.len() == self.shapes[i].iter().product::<usize>() => {
                Ok(v.clone())
            }
            _ => Err(cx.err(format!(
                "tensor {i} ({}) must be a dense float32 constant (after DEQUANTIZE/DENSIFY)",
                self.sg.tensors[i].name
            ))),
        }
    }

    fn bias(&self, i: Option<usize>, n: usize, cx: &OpCtx) -> Result<Vec<f32>> {
        match i {
            None => Ok(vec![0.0; n]),
            Some(i) => {
                let b = self.f32_const(i, cx)?;
                if b.len() != n {
                    return Err(cx.err(format!("bias has {} values for {n} channels", b.len())));
                }
                Ok(b)
            }
        }
    }
}

/// NumPy-style broadcast of two shapes.
fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let get = |s: &[usize], i: usize| (i + s.len()).checked_sub(n).map_or(1, |j| s[j]);
    (0..n)
        .map(|i| match (get(a, i), get(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}
