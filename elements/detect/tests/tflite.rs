//! The TensorFlow Lite reader and interpreter.
//!
//! * Parity: the two BlazePose models of the mediapipe 0.10.21 wheel against Google's own
//!   TensorFlow Lite runtime, on the fixed inputs of `tools/gen_tflite_fixture.py` (its output,
//!   `tests/data/tflite_expected.json`, is committed). Skipped, with a note, when the models
//!   have not been fetched (`elements/detect/tools/fetch_mediapipe_models.sh`, which `make test`
//!   runs); when they are present any difference beyond the tolerance fails.
//! * Pruning: [`Model::retain_outputs`] keeps the landmark model's other outputs bit for bit.
//! * Reader unit tests on small flatbuffers written here: sparse DENSIFY expansion against
//!   hand-expanded tensors, float16 conversion, folding of DENSIFY + DEQUANTIZE into a
//!   convolution, and the errors for unsupported operators and broken files.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use ikol_detect::tflite::{DimensionMetadata, Error, Model, Sparsity, TfliteFile, f16_to_f32};
use serde_json::Value;

// ------------------------------------------------------------------------------------------------
// Parity with the TensorFlow Lite runtime

const FIXTURE: &str = include_str!("data/tflite_expected.json");

/// Tolerance on `max |ours - reference| / max(1, max |reference|)` per output. The outputs are
/// in pixels (boxes, landmarks: up to ~250) or logits (segmentation: up to ~1600 on these
/// synthetic inputs), where float32 summation order alone moves values by more than 1e-3:
/// TensorFlow Lite's own optimized and reference kernels differ by up to 0.17 on the
/// segmentation logits and its XNNPACK path by 1.2 (see the fixture script's output). Outputs
/// of magnitude <= 1 (presence, world landmarks in metres) are held to 1e-3 absolute.
const TOLERANCE: f64 = 1e-3;

fn models_dir() -> PathBuf {
    std::env::var_os("IKOL_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_default();
            PathBuf::from(home).join(".cache/ikol/models")
        })
}

/// The smooth input of the fixture script: values in [-1, 1].
fn smooth(h: usize, w: usize, c: usize) -> Vec<f64> {
    let mut v = Vec::with_capacity(h * w * c);
    for y in 0..h {
        for x in 0..w {
            for ch in 0..c {
                let (y, x, ch) = (y as f64, x as f64, ch as f64);
                v.push(
                    (0.031 * y + 0.017 * x * (ch + 1.0) + 0.9 * ch).sin()
                        * (0.023 * x - 0.011 * y + 0.5 * ch).cos(),
                );
            }
        }
    }
    v
}

/// The noise input of the fixture script: an LCG in row-major order, values in [-1, 1).
fn noise(n: usize) -> Vec<f64> {
    let mut s: u64 = 20261121;
    (0..n)
        .map(|_| {
            s = (1103515245 * s + 12345) % (1 << 31);
            2.0 * (s as f64 / (1u64 << 31) as f64) - 1.0
        })
        .collect()
}

fn input_tensor(shape: &[usize], kind: &str, lo: f64, hi: f64) -> (Tensor, f64) {
    let (h, w, c) = (shape[1], shape[2], shape[3]);
    let v = match kind {
        "smooth" => smooth(h, w, c),
        _ => noise(h * w * c),
    };
    let v: Vec<f32> = v
        .iter()
        .map(|&x| (lo + (x + 1.0) * 0.5 * (hi - lo)) as f32)
        .collect();
    let sum = v.iter().map(|&x| f64::from(x)).sum();
    let t = Tensor::from_vec(v, shape, &Device::Cpu).expect("input tensor");
    (t, sum)
}

/// Runs one model on both fixture inputs and checks every output. Returns false if skipped.
fn parity(name: &str, lo: f64, hi: f64) -> bool {
    let path = models_dir().join(format!("{name}.tflite"));
    if !path.exists() {
        println!(
            "SKIPPED tflite parity for {name}: {} not found (run \
             elements/detect/tools/fetch_mediapipe_models.sh; `make test` does)",
            path.display()
        );
        return false;
    }
    let fixture: Value = serde_json::from_str(FIXTURE).expect("fixture JSON");
    let entry = &fixture["models"][name];
    let t0 = Instant::now();
    let model = Model::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let shape = model.inputs()[0].shape.clone();
    let expected_shape: Vec<usize> =
        serde_json::from_value(entry["input_shape"].clone()).expect("input_shape");
    assert_eq!(shape, expected_shape, "{name}: input shape");

    let mut failures = Vec::new();
    for kind in ["smooth", "noise"] {
        let want = &entry["inputs"][kind];
        let (x, sum) = input_tensor(&shape, kind, lo, hi);
        let want_sum = want["input_sum"].as_f64().expect("input_sum");
        assert!(
            (sum - want_sum).abs() < 1e-6 * want_sum.abs().max(1.0),
            "{name} {kind}: the input differs from the fixture script's (sum {sum} vs {want_sum})"
        );
        let outs = model.run(&[x]).unwrap_or_else(|e| panic!("{e}"));
        for (spec, out) in model.outputs().iter().zip(&outs) {
            let w = &want["outputs"][spec.name.as_str()];
            let w_shape: Vec<usize> = serde_json::from_value(w["shape"].clone()).expect("shape");
            assert_eq!(
                out.dims(),
                w_shape.as_slice(),
                "{name} {kind} {}: shape",
                spec.name
            );
            let got: Vec<f32> = out
                .flatten_all()
                .and_then(|t| t.to_vec1())
                .expect("output values");
            let stride = w["stride"].as_u64().expect("stride") as usize;
            let values: Vec<f64> = serde_json::from_value(w["values"].clone()).expect("values");
            let scale = w["max"]
                .as_f64()
                .expect("max")
                .abs()
                .max(w["min"].as_f64().expect("min").abs());
            let mut max_diff = 0f64;
            for (k, &v) in values.iter().enumerate() {
                max_diff = max_diff.max((f64::from(got[k * stride]) - v).abs());
            }
            let got_sum: f64 = got.iter().map(|&g| f64::from(g)).sum();
            let want_sum = w["sum"].as_f64().expect("sum");
            let rel = max_diff / scale.max(1.0);
            println!(
                "{name} {kind:6} {:10} {:>16?} |ref| <= {scale:8.3}: max abs diff {max_diff:.2e} \
                 ({} values, normalised {rel:.2e}); sum {got_sum:.4} vs {want_sum:.4}",
                spec.name,
                out.dims(),
                values.len()
            );
            if rel.is_nan() || rel >= TOLERANCE {
                failures.push(format!(
                    "{kind} {}: normalised max diff {rel:.3e}",
                    spec.name
                ));
            }
            let sum_tol = 1e-4 * w["abs_sum"].as_f64().expect("abs_sum").max(1.0);
            if (got_sum - want_sum).is_nan() || (got_sum - want_sum).abs() >= sum_tol {
                failures.push(format!("{kind} {}: sum {got_sum} vs {want_sum}", spec.name));
            }
        }
    }

    // Time per run (the fixture script prints the Python runtime's).
    let (x, _) = input_tensor(&shape, "smooth", lo, hi);
    let mut times = Vec::new();
    for _ in 0..12 {
        let t = Instant::now();
        model.run(std::slice::from_ref(&x)).expect("run");
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let py = &entry["python_timings_ms"];
    println!(
        "{name}: load {load_ms:.1} ms, run median {:.2} ms (min {:.2}) over {} runs, {} steps \
         ({} build); TensorFlow Lite runtime (fixture script): {py}",
        times[times.len() / 2],
        times[0],
        times.len(),
        model.num_steps(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    assert!(failures.is_empty(), "{name}: {}", failures.join("; "));
    true
}

#[test]
fn parity_pose_detection() {
    // mediapipe feeds the detector [-1, 1] (pose_detection_cpu.pbtxt, ImageToTensorCalculator).
    parity("pose_detection", -1.0, 1.0);
}

#[test]
fn parity_pose_landmark_full() {
    // ... and the landmark model [0, 1] (pose_landmark_by_roi_cpu.pbtxt).
    parity("pose_landmark_full", 0.0, 1.0);
}

// ------------------------------------------------------------------------------------------------
// A tiny FlatBuffers writer for test models (objects laid out front to back, so every
// reference points forward as the format requires).

enum F {
    /// A scalar, little-endian bytes.
    S(Vec<u8>),
    /// A table: one entry per field id (`None` = absent).
    T(Vec<Option<F>>),
    /// A vector of scalars: element size and little-endian bytes.
    V(usize, Vec<u8>),
    /// A vector of tables.
    VT(Vec<Vec<Option<F>>>),
    Str(String),
}

fn u8f(v: u8) -> Option<F> {
    Some(F::S(vec![v]))
}
fn i32f(v: i32) -> Option<F> {
    Some(F::S(v.to_le_bytes().to_vec()))
}
fn vi32(v: &[i32]) -> Option<F> {
    Some(F::V(4, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
}
fn vu16(v: &[u16]) -> Option<F> {
    Some(F::V(2, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
}
fn vbytes(v: Vec<u8>) -> Option<F> {
    Some(F::V(1, v))
}
fn st(s: &str) -> Option<F> {
    Some(F::Str(s.to_owned()))
}
fn tab(fields: Vec<Option<F>>) -> Option<F> {
    Some(F::T(fields))
}
fn tabs(t: Vec<Vec<Option<F>>>) -> Option<F> {
    Some(F::VT(t))
}

#[derive(Default)]
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn align(&mut self, a: usize) {
        while !self.buf.len().is_multiple_of(a) {
            self.buf.push(0);
        }
    }

    fn patch(&mut self, slot: usize, target: usize) {
        let off = (target - slot) as u32;
        self.buf[slot..slot + 4].copy_from_slice(&off.to_le_bytes());
    }

    fn table(&mut self, fields: &[Option<F>]) -> usize {
        // Inline slots: 4 bytes each (8 for 8-byte scalars), after the 4-byte soffset.
        let mut offs = Vec::new();
        let mut off = 4usize;
        for f in fields {
            match f {
                None => offs.push(0),
                Some(F::S(b)) => {
                    offs.push(off);
                    off += b.len().max(4);
                }
                Some(_) => {
                    offs.push(off);
                    off += 4;
                }
            }
        }
        self.align(4);
        let vt = self.buf.len();
        self.buf.extend((4 + 2 * fields.len() as u16).to_le_bytes());
        self.buf.extend((off as u16).to_le_bytes());
        for &o in &offs {
            self.buf.extend((o as u16).to_le_bytes());
        }
        self.align(4);
        let pos = self.buf.len();
        self.buf.extend(((pos - vt) as i32).to_le_bytes());
        self.buf.resize(pos + off, 0);
        for (f, &o) in fields.iter().zip(&offs) {
            if let Some(F::S(b)) = f {
                self.buf[pos + o..pos + o + b.len()].copy_from_slice(b);
            }
        }
        for (f, &o) in fields.iter().zip(&offs) {
            match f {
                None | Some(F::S(_)) => {}
                Some(child) => {
                    let c = self.object(child);
                    self.patch(pos + o, c);
                }
            }
        }
        pos
    }

    fn object(&mut self, f: &F) -> usize {
        match f {
            F::S(_) => unreachable!("scalars are inline"),
            F::T(fields) => self.table(fields),
            F::V(size, bytes) => {
                self.align(4);
                let pos = self.buf.len();
                self.buf.extend(((bytes.len() / size) as u32).to_le_bytes());
                self.buf.extend(bytes);
                pos
            }
            F::Str(s) => {
                self.align(4);
                let pos = self.buf.len();
                self.buf.extend((s.len() as u32).to_le_bytes());
                self.buf.extend(s.as_bytes());
                self.buf.push(0);
                pos
            }
            F::VT(tables) => {
                self.align(4);
                let pos = self.buf.len();
                self.buf.extend((tables.len() as u32).to_le_bytes());
                let slots = self.buf.len();
                self.buf.resize(slots + 4 * tables.len(), 0);
                for (i, t) in tables.iter().enumerate() {
                    let c = self.table(t);
                    self.patch(slots + 4 * i, c);
                }
                pos
            }
        }
    }

    /// A complete file: root offset, "TFL3", the root table.
    fn finish(root: Vec<Option<F>>) -> Vec<u8> {
        let mut w = Writer { buf: vec![0; 8] };
        w.buf[4..8].copy_from_slice(b"TFL3");
        let r = w.table(&root);
        w.patch(0, r);
        w.buf
    }
}

/// Schema field order of the tables used below (see tflite/mod.rs).
fn tensor(
    shape: &[i32],
    dtype: u8,
    buffer: i32,
    name: &str,
    sparsity: Option<F>,
) -> Vec<Option<F>> {
    // shape 0, type 1, buffer 2, name 3, quantization 4, is_variable 5, sparsity 6
    vec![
        vi32(shape),
        u8f(dtype),
        i32f(buffer),
        st(name),
        None,
        None,
        sparsity,
    ]
}

fn operator(
    opcode: i32,
    inputs: &[i32],
    outputs: &[i32],
    options: Option<(u8, Vec<Option<F>>)>,
) -> Vec<Option<F>> {
    // opcode_index 0, inputs 1, outputs 2, builtin_options_type 3, builtin_options 4
    let (tag, opts) = match options {
        Some((t, o)) => (u8f(t), tab(o)),
        None => (None, None),
    };
    vec![i32f(opcode), vi32(inputs), vi32(outputs), tag, opts]
}

fn opcode(code: i32) -> Vec<Option<F>> {
    // deprecated_builtin_code 0, custom_code 1, version 2, builtin_code 3
    vec![u8f(code.min(127) as u8), None, i32f(1), i32f(code)]
}

fn model(
    codes: Vec<Vec<Option<F>>>,
    tensors: Vec<Vec<Option<F>>>,
    inputs: &[i32],
    outputs: &[i32],
    ops: Vec<Vec<Option<F>>>,
    buffers: Vec<Vec<u8>>,
) -> Vec<u8> {
    let subgraph = vec![
        tabs(tensors),
        vi32(inputs),
        vi32(outputs),
        tabs(ops),
        st("main"),
    ];
    let buffers: Vec<Vec<Option<F>>> = buffers
        .into_iter()
        .map(|b| {
            if b.is_empty() {
                vec![]
            } else {
                vec![vbytes(b)]
            }
        })
        .collect();
    // version 0, operator_codes 1, subgraphs 2, description 3, buffers 4
    Writer::finish(vec![
        i32f(3),
        tabs(codes),
        tabs(vec![subgraph]),
        st("test model"),
        tabs(buffers),
    ])
}

fn temp_model(name: &str, bytes: &[u8]) -> PathBuf {
    let p = std::env::temp_dir().join(format!("ikol-tflite-test-{}-{name}", std::process::id()));
    std::fs::write(&p, bytes).expect("write temp model");
    p
}

fn f16_bits(v: f32) -> u16 {
    // Exact for the small dyadic values used in the tests.
    let b = v.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    if v == 0.0 {
        return sign;
    }
    let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
    sign | ((exp as u16) << 10) | ((b >> 13) & 0x3ff) as u16
}

// ------------------------------------------------------------------------------------------------
// Reader unit tests

#[test]
fn densify_csr_matrix() {
    // 3 x 4 matrix, row-major, rows dense and columns CSR:
    //   [[0, 1, 0, 2],
    //    [0, 0, 0, 0],
    //    [3, 0, 0, 4]]
    // row pointers [0, 2, 2, 4], column indices [1, 3, 0, 3], values [1, 2, 3, 4].
    let sp = Sparsity {
        traversal_order: vec![0, 1],
        block_map: vec![],
        dim_metadata: vec![
            DimensionMetadata::Dense { size: 3 },
            DimensionMetadata::SparseCsr {
                segments: vec![0, 2, 2, 4],
                indices: vec![1, 3, 0, 3],
            },
        ],
    };
    let d = sp
        .densify(&[3, 4], &[1.0f32, 2.0, 3.0, 4.0], 0.0)
        .expect("densify");
    assert_eq!(d, vec![0., 1., 0., 2., 0., 0., 0., 0., 3., 0., 0., 4.]);

    // The same matrix stored column-major (traversal order (d1, d0)): columns dense, rows CSR.
    // Column 0 holds row 2 (3); column 1 row 0 (1); column 2 nothing; column 3 rows 0, 2 (2, 4).
    let sp = Sparsity {
        traversal_order: vec![1, 0],
        block_map: vec![],
        dim_metadata: vec![
            DimensionMetadata::Dense { size: 4 },
            DimensionMetadata::SparseCsr {
                segments: vec![0, 1, 2, 2, 4],
                indices: vec![2, 0, 0, 2],
            },
        ],
    };
    let d = sp
        .densify(&[3, 4], &[3.0f32, 1.0, 2.0, 4.0], 0.0)
        .expect("densify");
    assert_eq!(d, vec![0., 1., 0., 2., 0., 0., 0., 0., 3., 0., 0., 4.]);
}

#[test]
fn densify_block_sparse() {
    // 4 x 4 matrix in 2 x 2 blocks (block rows dense, block columns CSR, blocks dense inside):
    //   [[1, 2, 0, 0],
    //    [3, 4, 0, 0],
    //    [0, 0, 5, 6],
    //    [0, 0, 7, 8]]
    // Block row 0 has block column 0, block row 1 has block column 1.
    let sp = Sparsity {
        traversal_order: vec![0, 1, 2, 3],
        block_map: vec![0, 1],
        dim_metadata: vec![
            DimensionMetadata::Dense { size: 2 },
            DimensionMetadata::SparseCsr {
                segments: vec![0, 1, 2],
                indices: vec![0, 1],
            },
            DimensionMetadata::Dense { size: 2 },
            DimensionMetadata::Dense { size: 2 },
        ],
    };
    let vals: Vec<i32> = (1..=8).collect();
    let d = sp.densify(&[4, 4], &vals, 0).expect("densify");
    assert_eq!(d, vec![1, 2, 0, 0, 3, 4, 0, 0, 0, 0, 5, 6, 0, 0, 7, 8]);
}

#[test]
fn densify_rejects_inconsistent_metadata() {
    let sp = Sparsity {
        traversal_order: vec![0, 1],
        block_map: vec![],
        dim_metadata: vec![
            DimensionMetadata::Dense { size: 2 },
            DimensionMetadata::SparseCsr {
                segments: vec![0, 1],
                indices: vec![0],
            },
        ],
    };
    let e = sp.densify(&[2, 2], &[1.0f32], 0.0).unwrap_err();
    assert!(e.contains("array_segments"), "{e}");
    let bad_order = Sparsity {
        traversal_order: vec![0, 0],
        ..sp
    };
    assert!(
        bad_order
            .densify(&[2, 2], &[1.0f32], 0.0)
            .unwrap_err()
            .contains("permutation")
    );
}

#[test]
fn float16_conversion() {
    assert_eq!(f16_to_f32(0x3c00), 1.0);
    assert_eq!(f16_to_f32(0xc000), -2.0);
    assert_eq!(f16_to_f32(0x3555), 0.333_251_95); // 1/3 rounded to half: 0x3555
    assert_eq!(f16_to_f32(0x7bff), 65504.0); // largest normal
    assert_eq!(f16_to_f32(0x0400), 2f32.powi(-14)); // smallest normal
    assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24)); // smallest subnormal
    assert_eq!(f16_to_f32(0x03ff), 1023.0 * 2f32.powi(-24)); // largest subnormal
    assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
    assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
    assert_eq!(f16_to_f32(0xfc00), f32::NEG_INFINITY);
    assert!(f16_to_f32(0x7e00).is_nan());
    // Every half value agrees with candle's own conversion.
    let bytes: Vec<u8> = (0..=u16::MAX).flat_map(u16::to_le_bytes).collect();
    let all = Tensor::from_raw_buffer(&bytes, DType::F16, &[1 << 16], &Device::Cpu)
        .and_then(|t| t.to_dtype(DType::F32))
        .and_then(|t| t.to_vec1::<f32>())
        .expect("candle f16");
    for (h, &c) in (0..=u16::MAX).zip(&all) {
        let ours = f16_to_f32(h);
        assert!(
            ours.to_bits() == c.to_bits() || (ours.is_nan() && c.is_nan()),
            "{h:#06x}: {ours} vs {c}"
        );
    }
}

/// input x [1, 2, 2, 2] -> CONV_2D 1x1 (filter: sparse float16 -> DENSIFY -> DEQUANTIZE, bias
/// float32, fused RELU) -> y [1, 2, 2, 3].
fn conv_model(uint16_segments: bool) -> Vec<u8> {
    // Filter [3, 1, 1, 2] (C_out, kh, kw, C_in):
    //   out 0: [ 1.0, 0.5]     out 1: [0, 0]     out 2: [0, -2.0]
    // stored sparse: dims 0-2 dense, dim 3 CSR (as in pose_detection.tflite).
    let sparsity = tab(vec![
        vi32(&[0, 1, 2, 3]),
        None,
        tabs(vec![
            vec![u8f(0), i32f(3)],
            vec![u8f(0), i32f(1)],
            vec![u8f(0), i32f(1)],
            // format SPARSE_CSR; segments as Int32Vector (1) or Uint16Vector (2), indices as
            // Uint8Vector (3)
            vec![
                u8f(1),
                None,
                u8f(if uint16_segments { 2 } else { 1 }),
                tab(vec![if uint16_segments {
                    vu16(&[0, 2, 2, 3])
                } else {
                    vi32(&[0, 2, 2, 3])
                }]),
                u8f(3),
                tab(vec![vbytes(vec![0, 1, 1])]),
            ],
        ]),
    ]);
    let values: Vec<u8> = [1.0f32, 0.5, -2.0]
        .iter()
        .flat_map(|&v| f16_bits(v).to_le_bytes())
        .collect();
    let bias: Vec<u8> = [0.25f32, -1.0, 0.5]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let tensors = vec![
        tensor(&[1, 2, 2, 2], 0, 0, "x", None),
        tensor(&[3, 1, 1, 2], 1, 1, "w_sparse", sparsity),
        tensor(&[3, 1, 1, 2], 1, 0, "w_f16", None),
        tensor(&[3, 1, 1, 2], 0, 0, "w", None),
        tensor(&[3], 0, 2, "b", None),
        tensor(&[1, 2, 2, 3], 0, 0, "y", None),
    ];
    // Conv2DOptions: padding 0 (SAME), stride_w 1, stride_h 2, activation 3 (RELU = 1)
    let conv_opts = vec![u8f(0), i32f(1), i32f(1), u8f(1)];
    let ops = vec![
        operator(0, &[1], &[2], None),
        operator(1, &[2], &[3], None),
        operator(2, &[0, 3, 4], &[5], Some((1, conv_opts))),
    ];
    model(
        vec![opcode(124), opcode(6), opcode(3)],
        tensors,
        &[0],
        &[5],
        ops,
        vec![vec![], values, bias],
    )
}

#[test]
fn folds_sparse_float16_weights_into_a_convolution() {
    for uint16 in [false, true] {
        folds_sparse_float16_weights(uint16);
    }
}

fn folds_sparse_float16_weights(uint16_segments: bool) {
    let path = temp_model("conv.tflite", &conv_model(uint16_segments));
    let m = Model::load(&path).unwrap_or_else(|e| panic!("{e}"));
    std::fs::remove_file(&path).ok();
    assert_eq!(
        m.num_steps(),
        1,
        "DENSIFY and DEQUANTIZE are folded at load"
    );
    assert_eq!(m.inputs()[0].name, "x");
    assert_eq!(m.outputs()[0].shape, vec![1, 2, 2, 3]);
    let x = Tensor::new(
        &[[[[1f32, 2.], [-1., 0.]], [[0.5, -0.5], [4., 1.]]]],
        &Device::Cpu,
    )
    .expect("x");
    let y = m.run(&[x]).expect("run")[0]
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .expect("y");
    // y = relu([x0 + 0.5 x1 + 0.25, -1, -2 x1 + 0.5]) per pixel
    let want = [
        2.25, 0., 0., // (1, 2): 1 + 1 + 0.25; -1; -4 + 0.5
        0., 0., 0.5, // (-1, 0): -0.75 -> 0; -1; 0.5
        0.5, 0., 1.5, // (0.5, -0.5): 0.5 - 0.25 + 0.25; -1; 1 + 0.5
        4.75, 0., 0., // (4, 1): 4 + 0.5 + 0.25; -1; -2 + 0.5
    ];
    assert_eq!(y, want);
}

#[test]
fn unsupported_operator_names_the_op_and_the_file() {
    // GELU (150) is past the one-byte code: deprecated_builtin_code holds 127, builtin_code 150.
    let tensors = vec![
        tensor(&[1, 4], 0, 0, "x", None),
        tensor(&[1, 4], 0, 0, "y", None),
    ];
    let bytes = model(
        vec![opcode(150)],
        tensors,
        &[0],
        &[1],
        vec![operator(0, &[0], &[1], None)],
        vec![vec![]],
    );
    let path = temp_model("gelu.tflite", &bytes);
    let tf = TfliteFile::read(&path).expect("readable");
    assert_eq!(tf.op_name(&tf.subgraphs[0].operators[0]), "GELU");
    let e = Model::load(&path).unwrap_err();
    std::fs::remove_file(&path).ok();
    let msg = e.to_string();
    assert!(matches!(e, Error::UnsupportedOp { index: 0, .. }), "{e:?}");
    assert!(
        msg.contains("GELU") && msg.contains(&path.display().to_string()),
        "{msg}"
    );
    assert!(
        msg.contains("DEPTHWISE_CONV_2D"),
        "lists what is supported: {msg}"
    );
}

#[test]
fn broken_files_say_what_is_wrong() {
    let good = conv_model(false);
    // Truncated in the middle.
    let e = TfliteFile::parse(good[..good.len() / 2].to_vec(), "half.tflite").unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with("half.tflite: not a valid TensorFlow Lite model:"),
        "{msg}"
    );
    assert!(msg.contains("truncated"), "{msg}");
    // Not a TensorFlow Lite file.
    let mut other = good.clone();
    other[4..8].copy_from_slice(b"ABCD");
    let msg = TfliteFile::parse(other, "x.bin").unwrap_err().to_string();
    assert!(msg.contains("x.bin") && msg.contains("TFL3"), "{msg}");
    // A root offset past the end.
    let mut bad = good.clone();
    bad[0..4].copy_from_slice(&(good.len() as u32 + 8).to_le_bytes());
    let msg = TfliteFile::parse(bad, "bad.tflite")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("bad offset"), "{msg}");
    // Missing file.
    let msg = Model::load("/nonexistent/pose.tflite")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("/nonexistent/pose.tflite"), "{msg}");
}

#[test]
fn retained_outputs_are_computed_as_before() {
    let path = models_dir().join("pose_landmark_full.tflite");
    if !path.exists() {
        println!("SKIPPED: {} not found", path.display());
        return;
    }
    let full = Model::load(&path).expect("load");
    let mut pruned = Model::load(&path).expect("load");
    // everything but the segmentation mask (Identity_2)
    let keep = ["Identity", "Identity_1", "Identity_3", "Identity_4"];
    pruned.retain_outputs(&keep).expect("retain");
    assert!(
        pruned.num_steps() < full.num_steps(),
        "{} steps, the full model has {}",
        pruned.num_steps(),
        full.num_steps()
    );
    let names: Vec<String> = pruned.outputs().into_iter().map(|s| s.name).collect();
    assert_eq!(names, keep);
    let (x, _) = input_tensor(&full.inputs()[0].shape, "smooth", 0.0, 1.0);
    let a = full.run(std::slice::from_ref(&x)).expect("run");
    let b = pruned.run(std::slice::from_ref(&x)).expect("run");
    for (name, got) in keep.iter().zip(&b) {
        let k = full
            .outputs()
            .iter()
            .position(|s| s.name == *name)
            .expect("output");
        let (u, v) = (
            a[k].flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .expect("f32"),
            got.flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .expect("f32"),
        );
        assert_eq!(u, v, "{name} differs after pruning");
    }
    let e = pruned
        .retain_outputs(&["Identity_9"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("Identity_9") && e.contains("Identity_3"), "{e}");
}

#[test]
fn reads_the_real_models_structure() {
    let path = models_dir().join("pose_detection.tflite");
    if !path.exists() {
        println!("SKIPPED: {} not found", path.display());
        return;
    }
    let tf = TfliteFile::read(&path).expect("read");
    let sg = &tf.subgraphs[0];
    let count = |name: &str| {
        sg.operators
            .iter()
            .filter(|o| tf.op_name(o) == name)
            .count()
    };
    // Counts from reference/blazepose-models.md.
    assert_eq!(sg.operators.len(), 291);
    assert_eq!(
        (count("DEQUANTIZE"), count("DENSIFY"), count("CONV_2D")),
        (144, 38, 45)
    );
    assert_eq!(
        sg.tensors.iter().filter(|t| t.sparsity.is_some()).count(),
        38
    );
}

/// Time per operator kind (`cargo test --release -p ikol-detect --test tflite -- --ignored
/// --nocapture profile`).
#[test]
#[ignore = "prints a profile; run on demand"]
fn profile() {
    for (name, lo, hi) in [
        ("pose_detection", -1.0, 1.0),
        ("pose_landmark_full", 0.0, 1.0),
    ] {
        let path = models_dir().join(format!("{name}.tflite"));
        if !path.exists() {
            continue;
        }
        let model = Model::load(&path).expect("load");
        let (x, _) = input_tensor(&model.inputs()[0].shape, "smooth", lo, hi);
        // Minimum over runs of each step (the machine is shared: means are noisy).
        let mut per_step = vec![f64::INFINITY; model.num_steps()];
        let mut ops = vec![String::new(); model.num_steps()];
        for _ in 0..25 {
            let (_, times) = model.run_profiled(std::slice::from_ref(&x)).expect("run");
            for (i, (op, t)) in times.into_iter().enumerate() {
                per_step[i] = per_step[i].min(t.as_secs_f64() * 1e3);
                ops[i] = op;
            }
        }
        let mut total: std::collections::BTreeMap<String, f64> = Default::default();
        for (op, ms) in ops.iter().zip(&per_step) {
            *total.entry(op.clone()).or_default() += ms;
        }
        let sum: f64 = total.values().sum();
        println!("{name}: {sum:.2} ms per run (sum of per-step minima over 25 runs)");
        for (op, ms) in &total {
            println!("  {op:20} {ms:7.2} ms");
        }
        let mut order: Vec<usize> = (0..per_step.len()).collect();
        order.sort_by(|&a, &b| per_step[b].total_cmp(&per_step[a]));
        println!("  slowest steps:");
        for &i in order.iter().take(12) {
            println!("  {:7.3} ms  {}", per_step[i], model.describe_step(i));
        }
    }
}

#[test]
fn model_can_move_to_a_streaming_thread() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Model>();
}
