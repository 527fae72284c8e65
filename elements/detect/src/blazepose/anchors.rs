//! SSD anchors of the BlazePose person detector.
//!
//! Facts from mediapipe v0.10.21 `mediapipe/calculators/tflite/ssd_anchors_calculator.cc`
//! (`GenerateAnchors`, `CalculateScale`) with the options of
//! `mediapipe/modules/pose_detection/pose_detection_cpu.pbtxt` (node `SsdAnchorsCalculator`),
//! confirmed in the `PoseDetectionCpu` subgraph compiled into the 0.10.21 wheel.
//!
//! For layer `i` of `n` strides the scale is `min + (max - min) i / (n - 1)`. Consecutive layers
//! with the same stride are merged: per cell they contribute, layer by layer, one anchor per
//! aspect ratio and (when `interpolated_scale_aspect_ratio > 0`) one more. Cells are visited
//! row-major on a `ceil(input / stride)` grid; the anchor centre is
//! `((x + offset_x) / width, (y + offset_y) / height)` in [0, 1]; with `fixed_anchor_size` every
//! anchor has `w = h = 1` (the box regression is then relative to the input size only).
//!
//! For the pose detector (224x224, strides 8, 16, 32, 32, 32, one aspect ratio, interpolated
//! ratio 1.0): 28x28 cells x 2 + 14x14 x 2 + 7x7 x 6 = 1568 + 392 + 294 = 2254 anchors.

/// One SSD anchor, normalised to the detector input (0..1), as mediapipe's `Anchor` proto.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Anchor {
    pub x_center: f32,
    pub y_center: f32,
    pub w: f32,
    pub h: f32,
}

/// The subset of `SsdAnchorsCalculatorOptions` the non-multiscale generator reads
/// (`mediapipe/calculators/tflite/ssd_anchors_calculator.proto`).
#[derive(Debug, Clone, PartialEq)]
pub struct SsdAnchorOptions {
    pub input_size_width: u32,
    pub input_size_height: u32,
    pub min_scale: f32,
    pub max_scale: f32,
    pub anchor_offset_x: f32,
    pub anchor_offset_y: f32,
    pub num_layers: usize,
    pub strides: Vec<u32>,
    pub aspect_ratios: Vec<f32>,
    pub reduce_boxes_in_lowest_layer: bool,
    pub interpolated_scale_aspect_ratio: f32,
    pub fixed_anchor_size: bool,
}

impl SsdAnchorOptions {
    /// The options of the `SsdAnchorsCalculator` node in `pose_detection_cpu.pbtxt`.
    pub fn pose_detection() -> Self {
        Self {
            // pose_detection_cpu.pbtxt, SsdAnchorsCalculatorOptions.input_size_width/height
            input_size_width: 224,
            input_size_height: 224,
            // ... .min_scale: 0.1484375, .max_scale: 0.75
            min_scale: 0.148_437_5,
            max_scale: 0.75,
            // ... .anchor_offset_x/y: 0.5 (also the proto default)
            anchor_offset_x: 0.5,
            anchor_offset_y: 0.5,
            // ... .num_layers: 5, .strides: 8 16 32 32 32
            num_layers: 5,
            strides: vec![8, 16, 32, 32, 32],
            // ... .aspect_ratios: 1.0
            aspect_ratios: vec![1.0],
            // not set: proto default false (ssd_anchors_calculator.proto field 12)
            reduce_boxes_in_lowest_layer: false,
            // not set: proto default 1.0 (ssd_anchors_calculator.proto field 13)
            interpolated_scale_aspect_ratio: 1.0,
            // ... .fixed_anchor_size: true
            fixed_anchor_size: true,
        }
    }
}

/// `CalculateScale` of ssd_anchors_calculator.cc.
fn layer_scale(min_scale: f32, max_scale: f32, stride_index: usize, num_strides: usize) -> f32 {
    if num_strides == 1 {
        (min_scale + max_scale) * 0.5
    } else {
        min_scale + (max_scale - min_scale) * stride_index as f32 / (num_strides as f32 - 1.0)
    }
}

/// The anchors in mediapipe's order (layer groups, then rows, then columns, then anchor kinds).
pub fn generate_anchors(o: &SsdAnchorOptions) -> Vec<Anchor> {
    let mut anchors = Vec::new();
    let n_strides = o.strides.len();
    let mut layer_id = 0;
    while layer_id < o.num_layers.min(n_strides) {
        let mut sizes: Vec<(f32, f32)> = Vec::new(); // (w, h) per anchor kind
        let mut last = layer_id;
        while last < n_strides && o.strides[last] == o.strides[layer_id] {
            let scale = layer_scale(o.min_scale, o.max_scale, last, n_strides);
            let mut kinds: Vec<(f32, f32)> = Vec::new(); // (aspect ratio, scale)
            if last == 0 && o.reduce_boxes_in_lowest_layer {
                kinds.extend([(1.0, 0.1), (2.0, scale), (0.5, scale)]);
            } else {
                kinds.extend(o.aspect_ratios.iter().map(|&r| (r, scale)));
                if o.interpolated_scale_aspect_ratio > 0.0 {
                    let next = if last == n_strides - 1 {
                        1.0
                    } else {
                        layer_scale(o.min_scale, o.max_scale, last + 1, n_strides)
                    };
                    kinds.push((o.interpolated_scale_aspect_ratio, (scale * next).sqrt()));
                }
            }
            sizes.extend(kinds.into_iter().map(|(r, s)| (s * r.sqrt(), s / r.sqrt())));
            last += 1;
        }
        let stride = o.strides[layer_id] as f32;
        let fm_h = (o.input_size_height as f32 / stride).ceil() as usize;
        let fm_w = (o.input_size_width as f32 / stride).ceil() as usize;
        for y in 0..fm_h {
            for x in 0..fm_w {
                for &(w, h) in &sizes {
                    let (w, h) = if o.fixed_anchor_size {
                        (1.0, 1.0)
                    } else {
                        (w, h)
                    };
                    anchors.push(Anchor {
                        x_center: (x as f32 + o.anchor_offset_x) / fm_w as f32,
                        y_center: (y as f32 + o.anchor_offset_y) / fm_h as f32,
                        w,
                        h,
                    });
                }
            }
        }
        layer_id = last;
    }
    anchors
}
