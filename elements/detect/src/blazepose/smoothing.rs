//! Temporal filtering of the landmarks between frames (video mode), as
//! `mediapipe/modules/pose_landmark/pose_landmark_filtering.pbtxt` does. It matters for
//! tracking: the next frame's ROI is computed from the *filtered* auxiliary landmarks, and
//! that filter is always on (it is outside the `SwitchContainer`s that `smooth_landmarks`
//! controls).
//!
//! Facts from mediapipe v0.10.21:
//! - `mediapipe/util/filtering/one_euro_filter.cc` (the 1-euro filter of Casiez, Roussel and
//!   Vogel, "1 Euro Filter: A Simple Speed-based Low-pass Filter for Noisy Input in Interactive
//!   Systems", CHI 2012): `alpha(cutoff) = 1 / (1 + tau / te)` with `te = 1 / frequency`,
//!   `tau = 1 / (2 pi cutoff)`; the frequency is re-estimated from each timestamp difference
//!   (the previous time starts at -1 ns); the derivative `(x - last raw x) * value_scale *
//!   frequency` (0 on the first sample) is low-passed with `alpha(derivate_cutoff)`, and the
//!   value with `alpha(min_cutoff + beta |derivative|)`; an older or equal timestamp returns
//!   the value unfiltered.
//! - `mediapipe/util/filtering/low_pass_filter.cc`: first sample passes through, then
//!   `alpha x + (1 - alpha) previous`; state in float.
//! - `mediapipe/calculators/util/landmarks_smoothing_calculator.cc` and
//!   `landmarks_smoothing_calculator_utils.cc`: normalised landmarks are filtered in pixels
//!   (`x W`, `y H`, `z W`) with `value_scale = 1 / object_scale`, where `object_scale` is the
//!   mean of the `OBJECT_SCALE_ROI` rect's width and height in pixels (else the mean extent of
//!   the landmarks); below `min_allowed_object_scale` (default 1e-6) nothing is filtered; an
//!   empty input resets the filters. Timestamps in microseconds (the Python solution steps
//!   them by 33333 us per frame: `mediapipe/python/solution_base.py`).
//! - `pose_landmark_filtering.pbtxt`: the `OBJECT_SCALE_ROI` is the alignment rect of the
//!   auxiliary landmarks (`AlignmentPointsRectsCalculator` only: side `2 |aux1 - aux0|`, no
//!   1.25 scale); visibility is low-passed with alpha 0.1 (`VisibilitySmoothingCalculator`).

use super::landmarks::PoseLandmarks;
use std::f64::consts::PI;

/// mediapipe's `LowPassFilter` (float state).
#[derive(Debug, Clone, Copy, Default)]
pub struct LowPassFilter {
    raw: f32,
    stored: f32,
    initialized: bool,
}

impl LowPassFilter {
    /// Filters `value` with `alpha` in [0, 1] (the 1-euro filter's alphas always are; an alpha
    /// outside is treated as 1).
    pub fn apply(&mut self, value: f32, alpha: f32) -> f32 {
        let alpha = if (0.0..=1.0).contains(&alpha) {
            alpha
        } else {
            1.0
        };
        let result = if self.initialized {
            // float * float + double * float, as in low_pass_filter.cc
            (f64::from(alpha * value) + (1.0 - f64::from(alpha)) * f64::from(self.stored)) as f32
        } else {
            self.initialized = true;
            value
        };
        self.raw = value;
        self.stored = result;
        result
    }

    pub fn last_raw(&self) -> Option<f32> {
        self.initialized.then_some(self.raw)
    }
}

/// Parameters of a 1-euro landmark filter (`LandmarksSmoothingCalculatorOptions.OneEuroFilter`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OneEuroParams {
    /// Initial frequency in Hz (proto default 30).
    pub frequency: f64,
    pub min_cutoff: f64,
    pub beta: f64,
    pub derivate_cutoff: f64,
    /// Proto default 1e-6.
    pub min_allowed_object_scale: f64,
    pub disable_value_scaling: bool,
}

impl OneEuroParams {
    /// The auxiliary landmarks (always on): `min_cutoff: 0.01`, `beta: 10.0`,
    /// `derivate_cutoff: 1.0` (pose_landmark_filtering.pbtxt, last `LandmarksSmoothingCalculator`).
    pub const POSE_AUX: OneEuroParams = OneEuroParams {
        frequency: 30.0,
        min_cutoff: 0.01,
        beta: 10.0,
        derivate_cutoff: 1.0,
        min_allowed_object_scale: 1e-6,
        disable_value_scaling: false,
    };
    /// The 33 landmarks when `smooth_landmarks`: `min_cutoff: 0.05`, `beta: 80.0`,
    /// `derivate_cutoff: 1.0` (pose_landmark_filtering.pbtxt).
    pub const POSE_LANDMARKS: OneEuroParams = OneEuroParams {
        frequency: 30.0,
        min_cutoff: 0.05,
        beta: 80.0,
        derivate_cutoff: 1.0,
        min_allowed_object_scale: 1e-6,
        disable_value_scaling: false,
    };
    /// The world landmarks when `smooth_landmarks`: `min_cutoff: 0.1`, `beta: 40.0`,
    /// `derivate_cutoff: 1.0`, `disable_value_scaling: true` (pose_landmark_filtering.pbtxt).
    pub const POSE_WORLD: OneEuroParams = OneEuroParams {
        frequency: 30.0,
        min_cutoff: 0.1,
        beta: 40.0,
        derivate_cutoff: 1.0,
        min_allowed_object_scale: 1e-6,
        disable_value_scaling: true,
    };
}

/// `VisibilitySmoothingCalculatorOptions.low_pass_filter.alpha: 0.1` (pose_landmark_filtering.pbtxt).
pub const VISIBILITY_ALPHA: f32 = 0.1;

/// mediapipe's `OneEuroFilter` for one scalar.
#[derive(Debug, Clone)]
pub struct OneEuroFilter {
    frequency: f64,
    min_cutoff: f64,
    beta: f64,
    derivate_cutoff: f64,
    x: LowPassFilter,
    dx: LowPassFilter,
    last_time_ns: i64,
}

impl OneEuroFilter {
    pub fn new(p: &OneEuroParams) -> Self {
        Self {
            frequency: p.frequency,
            min_cutoff: p.min_cutoff,
            beta: p.beta,
            derivate_cutoff: p.derivate_cutoff,
            x: LowPassFilter::default(),
            dx: LowPassFilter::default(),
            last_time_ns: -1,
        }
    }

    fn alpha(&self, cutoff: f64) -> f64 {
        let te = 1.0 / self.frequency;
        let tau = 1.0 / (2.0 * PI * cutoff);
        1.0 / (1.0 + tau / te)
    }

    /// Filters `value` observed at `timestamp_ns`.
    pub fn apply(&mut self, timestamp_ns: i64, value_scale: f64, value: f64) -> f64 {
        if self.last_time_ns >= timestamp_ns {
            return value;
        }
        if self.last_time_ns != 0 && timestamp_ns != 0 {
            self.frequency = 1.0 / ((timestamp_ns - self.last_time_ns) as f64 * 1e-9);
        }
        self.last_time_ns = timestamp_ns;
        let dvalue = match self.x.last_raw() {
            Some(last) => (value - f64::from(last)) * value_scale * self.frequency,
            None => 0.0,
        };
        let a_d = self.alpha(self.derivate_cutoff) as f32;
        let edvalue = f64::from(self.dx.apply(dvalue as f32, a_d));
        let cutoff = self.min_cutoff + self.beta * edvalue.abs();
        let a = self.alpha(cutoff) as f32;
        f64::from(self.x.apply(value as f32, a))
    }
}

/// `LandmarksSmoothingCalculator` with a 1-euro filter over points in pixels (or metres).
#[derive(Debug, Clone)]
pub struct LandmarksSmoother {
    params: OneEuroParams,
    filters: Vec<[OneEuroFilter; 3]>,
}

impl LandmarksSmoother {
    pub fn new(params: OneEuroParams) -> Self {
        Self {
            params,
            filters: Vec::new(),
        }
    }

    /// Forgets the history (mediapipe does this on a frame without landmarks).
    pub fn reset(&mut self) {
        self.filters.clear();
    }

    /// Filters `points` (x, y, z) in place at `timestamp_us`; `object_scale` in the points'
    /// units, `None` = the mean extent of the points.
    pub fn apply(&mut self, timestamp_us: i64, object_scale: Option<f64>, points: &mut [[f64; 3]]) {
        if self.filters.len() != points.len() {
            let f = OneEuroFilter::new(&self.params);
            self.filters = vec![[f.clone(), f.clone(), f]; points.len()];
        }
        let mut value_scale = 1.0;
        if !self.params.disable_value_scaling {
            let scale = object_scale.unwrap_or_else(|| extent(points));
            if scale < self.params.min_allowed_object_scale {
                return;
            }
            value_scale = 1.0 / scale;
        }
        let t_ns = timestamp_us.saturating_mul(1000);
        for (p, f) in points.iter_mut().zip(&mut self.filters) {
            for k in 0..3 {
                p[k] = f[k].apply(t_ns, value_scale, p[k]);
            }
        }
    }
}

/// `GetObjectScale(landmarks)`: the mean of the x and y extents.
fn extent(points: &[[f64; 3]]) -> f64 {
    let (mut lo, mut hi) = ([f64::MAX; 2], [f64::MIN; 2]);
    for p in points {
        for k in 0..2 {
            lo[k] = lo[k].min(p[k]);
            hi[k] = hi[k].max(p[k]);
        }
    }
    ((hi[0] - lo[0]) + (hi[1] - lo[1])) / 2.0
}

/// `PoseLandmarkFiltering`: the auxiliary landmarks are always filtered; the body and world
/// landmarks (positions, and visibility with a low-pass) only when `smooth_landmarks`.
#[derive(Debug, Clone)]
pub struct PoseSmoother {
    smooth_landmarks: bool,
    aux: LandmarksSmoother,
    landmarks: LandmarksSmoother,
    world: LandmarksSmoother,
    visibility: Vec<LowPassFilter>,
    world_visibility: Vec<LowPassFilter>,
}

impl PoseSmoother {
    /// `smooth_landmarks` as the Python solution's option (true by default there, and off in
    /// static-image mode).
    pub fn new(smooth_landmarks: bool) -> Self {
        Self {
            smooth_landmarks,
            aux: LandmarksSmoother::new(OneEuroParams::POSE_AUX),
            landmarks: LandmarksSmoother::new(OneEuroParams::POSE_LANDMARKS),
            world: LandmarksSmoother::new(OneEuroParams::POSE_WORLD),
            visibility: Vec::new(),
            world_visibility: Vec::new(),
        }
    }

    pub fn reset(&mut self) {
        self.aux.reset();
        self.landmarks.reset();
        self.world.reset();
        self.visibility.clear();
        self.world_visibility.clear();
    }

    /// Filters a frame's pose in place (`timestamp_us` must increase); `None` (no pose)
    /// resets.
    pub fn apply(&mut self, pose: Option<&mut PoseLandmarks>, timestamp_us: i64) {
        let Some(p) = pose else {
            self.reset();
            return;
        };
        // OBJECT_SCALE_ROI: alignment rect of the unfiltered auxiliary landmarks, side
        // 2 |aux1 - aux0| in pixels; the scale is the mean of width and height = the side
        let scale = match p.auxiliary.as_slice() {
            [a, b, ..] => Some(2.0 * (b.x - a.x).hypot(b.y - a.y)),
            _ => None,
        };
        let mut aux: Vec<[f64; 3]> = p.auxiliary.iter().map(|l| [l.x, l.y, l.z]).collect();
        self.aux.apply(timestamp_us, scale, &mut aux);
        for (l, a) in p.auxiliary.iter_mut().zip(&aux) {
            (l.x, l.y, l.z) = (a[0], a[1], a[2]);
        }
        if !self.smooth_landmarks {
            return;
        }
        if self.visibility.len() != p.landmarks.len() {
            self.visibility = vec![LowPassFilter::default(); p.landmarks.len()];
        }
        for (l, f) in p.landmarks.iter_mut().zip(&mut self.visibility) {
            l.visibility = f.apply(l.visibility, VISIBILITY_ALPHA);
        }
        let mut pts: Vec<[f64; 3]> = p.landmarks.iter().map(|l| [l.x, l.y, l.z]).collect();
        self.landmarks.apply(timestamp_us, scale, &mut pts);
        for (l, a) in p.landmarks.iter_mut().zip(&pts) {
            (l.x, l.y, l.z) = (a[0], a[1], a[2]);
        }
        if self.world_visibility.len() != p.world.len() {
            self.world_visibility = vec![LowPassFilter::default(); p.world.len()];
        }
        for (l, f) in p.world.iter_mut().zip(&mut self.world_visibility) {
            l.visibility = f.apply(l.visibility, VISIBILITY_ALPHA);
        }
        let mut pts: Vec<[f64; 3]> = p.world.iter().map(|l| [l.x, l.y, l.z]).collect();
        self.world.apply(timestamp_us, None, &mut pts);
        for (l, a) in p.world.iter_mut().zip(&pts) {
            (l.x, l.y, l.z) = (a[0], a[1], a[2]);
        }
    }
}
