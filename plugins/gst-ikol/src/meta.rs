//! The frame meta shared by the ikol elements: a `GstCustomMeta` named [`META_NAME`], read and
//! written only through [`FrameMeta`] here.
//!
//! Registered with no tags and no transform function, so it is copied through videoconvert,
//! videoscale and encoders (verified on GStreamer 1.22, see the build notes). Any application can
//! read it by name after the plugin is loaded. Its structure (`ikol-frame`) holds:
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `stages` | array of strings | the ikol elements that have processed the frame, in order |
//! | `intrinsics` | array of 4 doubles | fx, fy, cx, cy in pixels (set by `ikolbackbone` or a source) |
//! | `body-model` | string | the `ikolmesher` model spec whose faces fit `vertices` |
//! | `people` | array of `ikol-person` structures | one per person, fields below |
//!
//! Person fields: `track-id` (u64), `score` (double), `bbox` (4 doubles x, y, w, h in frame
//! pixels), `crop` (6 doubles, the 2x3 frame-to-crop affine, row-major), and packed
//! little-endian f32 arrays (`GBytes`): `joints-uvd` (J x 3), `joints-3d` (J x 3, root-relative
//! metres, camera axes), `joints-2d` (J x 2, frame pixels), `root` (3, camera metres, the
//! backbone's root estimate), `confidence` (J), `twist` (23 x 2 cos/sin), `beta`, `leaf` (5 x 4
//! quaternions w, x, y, z), `theta` (24 x 3 axis-angle), `translation` (3, camera metres),
//! `residual` (J metres), `vertices` (V x 3, camera metres), `mesh-joints` (24 x 3, camera
//! metres); ground truth from a dataset source: `gt-theta` (24 x 3 axis-angle, root in camera
//! axes), `gt-beta`, `gt-root` (3, camera metres). Absent fields are simply not set.
//!
//! Dataset sources also set the frame fields `sequence` (string), `frame-id` (u64, the
//! dataset's frame number) and `gt-dropped` (u32, ground-truth people the source could not give a
//! box; `ikoleval` counts them as missing). A source that fills the backbone's fields from the
//! ground truth adds the stage [`GROUND_TRUTH_JOINTS`].

use gst::glib;
use gst::meta::CustomMeta;
use ikol_types::{Affine2, BBox, FrameResult, Intrinsics, PersonResult};

/// The stage a dataset source records when it filled the backbone's fields from the ground truth
/// (so `ikolsolver` may run without `ikolbackbone`).
pub const GROUND_TRUTH_JOINTS: &str = "ground-truth-joints";

/// Name of the custom meta carrying per-frame results.
pub const META_NAME: &str = "IkolFrameMeta";
const FRAME_STRUCT: &str = "ikol-frame";
const PERSON_STRUCT: &str = "ikol-person";

/// Registers the meta once per process; safe to call from every element and reader.
pub fn register() {
    if !CustomMeta::is_registered(META_NAME) {
        CustomMeta::register(META_NAME, &[]);
    }
}

/// A meta that does not have the layout documented above.
#[derive(Debug, thiserror::Error)]
#[error("{META_NAME}: field `{field}`: {problem}")]
pub struct MetaError {
    pub field: String,
    pub problem: String,
}

fn bad(field: &str, problem: impl Into<String>) -> MetaError {
    MetaError {
        field: field.to_owned(),
        problem: problem.into(),
    }
}

/// One person in the meta. Vectors are empty and options `None` until a stage fills them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Person {
    pub track_id: u64,
    pub score: f64,
    pub bbox: BBox,
    /// Frame-to-crop affine of the network input (set by `ikolcrop`).
    pub crop: Option<Affine2>,
    pub joints_uvd: Vec<[f32; 3]>,
    /// Root-relative joints, metres, camera axes.
    pub joints_3d: Vec<[f32; 3]>,
    /// Joints in frame pixels.
    pub joints_2d: Vec<[f32; 2]>,
    /// Camera-frame root position estimated by the backbone, metres.
    pub root: Option<[f32; 3]>,
    pub confidence: Vec<f32>,
    /// (cos, sin) twist of joints 1..23.
    pub twist: Vec<[f32; 2]>,
    pub beta: Vec<f32>,
    /// Leaf rotations (w, x, y, z) of joints 10, 11, 15, 22, 23.
    pub leaf: Vec<[f32; 4]>,
    /// Local rotations, axis-angle, root first.
    pub theta: Vec<[f32; 3]>,
    /// Camera-frame root translation solved by `ikolsolver`, metres.
    pub translation: Option<[f32; 3]>,
    pub residual: Vec<f32>,
    /// Posed vertices in camera metres (set by `ikolmesher` with `output-vertices`).
    pub vertices: Vec<[f32; 3]>,
    /// The 24 joints of the solved body, camera metres (`ikolsolver` by forward kinematics,
    /// `ikolmesher` regressed from the posed mesh).
    pub mesh_joints: Vec<[f32; 3]>,
    /// BlazePose's 33 landmarks: frame pixels x, y and visibility.
    pub landmarks_2d: Vec<[f32; 3]>,
    /// BlazePose's 33 world landmarks: metres, origin between the hips, camera axes (turned from
    /// the crop's view, `ikol_detect::blazepose_model::crop_to_camera`).
    pub landmarks_3d: Vec<[f32; 3]>,
    /// The solved body at the landmarks' anchors on its surface, camera metres.
    pub surface_landmarks: Vec<[f32; 3]>,
    /// The person's tight box (the solved body's projection clipped to the frame).
    pub person_box: Option<BBox>,
    /// Ground-truth local rotations (axis-angle, root in camera axes), from a dataset source.
    pub gt_theta: Vec<[f32; 3]>,
    /// Ground-truth shape coefficients.
    pub gt_beta: Vec<f32>,
    /// Ground-truth camera-frame root joint, metres.
    pub gt_root: Option<[f32; 3]>,
}

/// Everything the ikol elements know about one frame.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FrameMeta {
    pub stages: Vec<String>,
    pub intrinsics: Option<Intrinsics>,
    pub body_model: Option<String>,
    pub people: Vec<Person>,
    /// Dataset sequence name (dataset sources).
    pub sequence: Option<String>,
    /// Dataset frame number (dataset sources).
    pub frame_id: Option<u64>,
    /// Ground-truth people a dataset source dropped (no box); counted as missing.
    pub gt_dropped: u32,
}

fn pack<const K: usize>(rows: &[[f32; K]]) -> glib::Bytes {
    let mut v = Vec::with_capacity(rows.len() * K * 4);
    for r in rows {
        for x in r {
            v.extend_from_slice(&x.to_le_bytes());
        }
    }
    glib::Bytes::from_owned(v)
}

fn unpack<const K: usize>(field: &str, b: &[u8]) -> Result<Vec<[f32; K]>, MetaError> {
    if !b.len().is_multiple_of(4 * K) {
        return Err(bad(
            field,
            format!("{} bytes is not a whole number of {K}-float rows", b.len()),
        ));
    }
    Ok(b.chunks_exact(4 * K)
        .map(|row| {
            let mut a = [0f32; K];
            for (d, c) in a.iter_mut().zip(row.chunks_exact(4)) {
                *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
            a
        })
        .collect())
}

fn doubles(s: &gst::StructureRef, field: &str, n: usize) -> Result<Option<Vec<f64>>, MetaError> {
    if !s.has_field(field) {
        return Ok(None);
    }
    let a = s
        .get::<gst::Array>(field)
        .map_err(|e| bad(field, e.to_string()))?;
    let v = a
        .iter()
        .map(|x| x.get::<f64>().map_err(|e| bad(field, e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    if v.len() != n {
        return Err(bad(field, format!("{} values, expected {n}", v.len())));
    }
    Ok(Some(v))
}

fn rows<const K: usize>(s: &gst::StructureRef, field: &str) -> Result<Vec<[f32; K]>, MetaError> {
    if !s.has_field(field) {
        return Ok(Vec::new());
    }
    let b = s
        .get::<glib::Bytes>(field)
        .map_err(|e| bad(field, e.to_string()))?;
    unpack::<K>(field, &b)
}

fn one<const K: usize>(s: &gst::StructureRef, field: &str) -> Result<Option<[f32; K]>, MetaError> {
    let r = rows::<K>(s, field)?;
    match r.len() {
        0 => Ok(None),
        1 => Ok(Some(r[0])),
        n => Err(bad(field, format!("{n} rows, expected 1"))),
    }
}

fn set_rows<const K: usize>(s: &mut gst::Structure, field: &str, r: &[[f32; K]]) {
    if !r.is_empty() {
        s.set(field, pack(r));
    }
}

fn scalars(v: &[f32]) -> Vec<[f32; 1]> {
    v.iter().map(|&x| [x]).collect()
}

fn flat(v: Vec<[f32; 1]>) -> Vec<f32> {
    v.into_iter().map(|[x]| x).collect()
}

impl Person {
    /// A person found by a detector or given as a region.
    pub fn new(track_id: u64, bbox: BBox, score: f64) -> Self {
        Self {
            track_id,
            bbox,
            score,
            ..Default::default()
        }
    }

    fn to_structure(&self) -> gst::Structure {
        let b = &self.bbox;
        let mut s = gst::Structure::builder(PERSON_STRUCT)
            .field("track-id", self.track_id)
            .field("score", self.score)
            .field("bbox", gst::Array::new([b.x, b.y, b.w, b.h]))
            .build();
        if let Some(a) = &self.crop {
            let m = a.m;
            s.set(
                "crop",
                gst::Array::new([m[0][0], m[0][1], m[0][2], m[1][0], m[1][1], m[1][2]]),
            );
        }
        set_rows(&mut s, "joints-uvd", &self.joints_uvd);
        set_rows(&mut s, "joints-3d", &self.joints_3d);
        set_rows(&mut s, "joints-2d", &self.joints_2d);
        set_rows(&mut s, "root", self.root.as_slice());
        set_rows(&mut s, "confidence", &scalars(&self.confidence));
        set_rows(&mut s, "twist", &self.twist);
        set_rows(&mut s, "beta", &scalars(&self.beta));
        set_rows(&mut s, "leaf", &self.leaf);
        set_rows(&mut s, "theta", &self.theta);
        set_rows(&mut s, "translation", self.translation.as_slice());
        set_rows(&mut s, "residual", &scalars(&self.residual));
        set_rows(&mut s, "vertices", &self.vertices);
        set_rows(&mut s, "mesh-joints", &self.mesh_joints);
        set_rows(&mut s, "landmarks-2d", &self.landmarks_2d);
        set_rows(&mut s, "landmarks-3d", &self.landmarks_3d);
        set_rows(&mut s, "surface-landmarks", &self.surface_landmarks);
        if let Some(b) = &self.person_box {
            s.set("person-box", gst::Array::new([b.x, b.y, b.w, b.h]));
        }
        set_rows(&mut s, "gt-theta", &self.gt_theta);
        set_rows(&mut s, "gt-beta", &scalars(&self.gt_beta));
        set_rows(&mut s, "gt-root", self.gt_root.as_slice());
        s
    }

    fn from_structure(s: &gst::StructureRef) -> Result<Self, MetaError> {
        let bbox = doubles(s, "bbox", 4)?.ok_or_else(|| bad("bbox", "missing"))?;
        let crop = doubles(s, "crop", 6)?.map(|m| Affine2 {
            m: [[m[0], m[1], m[2]], [m[3], m[4], m[5]]],
        });
        Ok(Self {
            track_id: s
                .get::<u64>("track-id")
                .map_err(|e| bad("track-id", e.to_string()))?,
            score: s
                .get::<f64>("score")
                .map_err(|e| bad("score", e.to_string()))?,
            bbox: BBox {
                x: bbox[0],
                y: bbox[1],
                w: bbox[2],
                h: bbox[3],
            },
            crop,
            joints_uvd: rows(s, "joints-uvd")?,
            joints_3d: rows(s, "joints-3d")?,
            joints_2d: rows(s, "joints-2d")?,
            root: one(s, "root")?,
            confidence: flat(rows(s, "confidence")?),
            twist: rows(s, "twist")?,
            beta: flat(rows(s, "beta")?),
            leaf: rows(s, "leaf")?,
            theta: rows(s, "theta")?,
            translation: one(s, "translation")?,
            residual: flat(rows(s, "residual")?),
            vertices: rows(s, "vertices")?,
            mesh_joints: rows(s, "mesh-joints")?,
            landmarks_2d: rows(s, "landmarks-2d")?,
            landmarks_3d: rows(s, "landmarks-3d")?,
            surface_landmarks: rows(s, "surface-landmarks")?,
            person_box: doubles(s, "person-box", 4)?.map(|b| BBox {
                x: b[0],
                y: b[1],
                w: b[2],
                h: b[3],
            }),
            gt_theta: rows(s, "gt-theta")?,
            gt_beta: flat(rows(s, "gt-beta")?),
            gt_root: one(s, "gt-root")?,
        })
    }

    /// The solved body's joints (`mesh_joints`) projected with `k`; `None` when there are none
    /// or one is not in front of the camera.
    pub fn solved_joints_2d(&self, k: &Intrinsics) -> Option<Vec<[f32; 2]>> {
        if self.mesh_joints.is_empty() {
            return None;
        }
        self.mesh_joints
            .iter()
            .map(|m| {
                let v = ikol_types::nalgebra::Vector3::new(m[0].into(), m[1].into(), m[2].into());
                k.project(&v).map(|q| [q[0] as f32, q[1] as f32])
            })
            .collect()
    }

    /// This person as `ikolexport` writes it; `vertices` only when asked. `joints_3d` /
    /// `joints_2d` are the solved body's (projected with `intrinsics`), the front end's joints
    /// go to `targets_3d` / `keypoints_2d`; `bbox` is the tight box (the region looked at goes to
    /// `roi`).
    pub fn to_result(&self, with_vertices: bool, intrinsics: Option<&Intrinsics>) -> PersonResult {
        PersonResult {
            track_id: self.track_id,
            bbox: Some(self.person_box.unwrap_or(self.bbox)),
            roi: Some(self.bbox),
            score: Some(self.score as f32),
            joints_3d: self.mesh_joints.clone(),
            joints_2d: intrinsics
                .and_then(|k| self.solved_joints_2d(k))
                .unwrap_or_default(),
            targets_3d: self.joints_3d.clone(),
            keypoints_2d: self.joints_2d.clone(),
            confidence: self.confidence.clone(),
            landmarks_2d: self.landmarks_2d.clone(),
            landmarks_3d: self.landmarks_3d.clone(),
            surface_landmarks_3d: self.surface_landmarks.clone(),
            theta: self.theta.clone(),
            beta: self.beta.clone(),
            translation: self.translation,
            residual: self.residual.clone(),
            vertices: if with_vertices {
                self.vertices.clone()
            } else {
                Vec::new()
            },
        }
    }
}

impl FrameMeta {
    /// Reads the meta of `buf`: `Ok(None)` when the buffer has none.
    pub fn read(buf: &gst::BufferRef) -> Result<Option<Self>, MetaError> {
        let Ok(m) = CustomMeta::from_buffer(buf, META_NAME) else {
            return Ok(None);
        };
        Self::from_structure(m.structure()).map(Some)
    }

    /// Writes this meta to `buf`, replacing the one already there.
    pub fn write(&self, buf: &mut gst::BufferRef) -> Result<(), MetaError> {
        register();
        if let Ok(m) = CustomMeta::from_mut_buffer(buf, META_NAME) {
            m.remove().map_err(|e| bad("(meta)", e.to_string()))?;
        }
        let mut m = CustomMeta::add(buf, META_NAME).map_err(|e| bad("(meta)", e.to_string()))?;
        let s = m.mut_structure();
        s.set_name(FRAME_STRUCT);
        s.set(
            "stages",
            gst::Array::new(self.stages.iter().map(String::as_str)),
        );
        if let Some(k) = &self.intrinsics {
            s.set("intrinsics", gst::Array::new([k.fx, k.fy, k.cx, k.cy]));
        }
        if let Some(b) = &self.body_model {
            s.set("body-model", b.as_str());
        }
        if let Some(q) = &self.sequence {
            s.set("sequence", q.as_str());
        }
        if let Some(f) = self.frame_id {
            s.set("frame-id", f);
        }
        if self.gt_dropped > 0 {
            s.set("gt-dropped", self.gt_dropped);
        }
        s.set(
            "people",
            gst::Array::new(self.people.iter().map(Person::to_structure)),
        );
        Ok(())
    }

    fn from_structure(s: &gst::StructureRef) -> Result<Self, MetaError> {
        let stages = if s.has_field("stages") {
            s.get::<gst::Array>("stages")
                .map_err(|e| bad("stages", e.to_string()))?
                .iter()
                .map(|v| v.get::<String>().map_err(|e| bad("stages", e.to_string())))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            Vec::new()
        };
        let intrinsics = doubles(s, "intrinsics", 4)?.map(|k| Intrinsics {
            fx: k[0],
            fy: k[1],
            cx: k[2],
            cy: k[3],
        });
        let body_model = if s.has_field("body-model") {
            Some(
                s.get::<String>("body-model")
                    .map_err(|e| bad("body-model", e.to_string()))?,
            )
        } else {
            None
        };
        let people = if s.has_field("people") {
            s.get::<gst::Array>("people")
                .map_err(|e| bad("people", e.to_string()))?
                .iter()
                .map(|v| {
                    let p = v
                        .get::<gst::Structure>()
                        .map_err(|e| bad("people", e.to_string()))?;
                    Person::from_structure(&p)
                })
                .collect::<Result<Vec<_>, _>>()?
        } else {
            Vec::new()
        };
        let sequence = if s.has_field("sequence") {
            Some(
                s.get::<String>("sequence")
                    .map_err(|e| bad("sequence", e.to_string()))?,
            )
        } else {
            None
        };
        let frame_id = if s.has_field("frame-id") {
            Some(
                s.get::<u64>("frame-id")
                    .map_err(|e| bad("frame-id", e.to_string()))?,
            )
        } else {
            None
        };
        let gt_dropped = if s.has_field("gt-dropped") {
            s.get::<u32>("gt-dropped")
                .map_err(|e| bad("gt-dropped", e.to_string()))?
        } else {
            0
        };
        Ok(Self {
            stages,
            intrinsics,
            body_model,
            people,
            sequence,
            frame_id,
            gt_dropped,
        })
    }

    /// Whether the element `stage` (e.g. `"ikolbackbone"`) has processed this frame.
    pub fn has_stage(&self, stage: &str) -> bool {
        self.stages.iter().any(|s| s == stage)
    }

    /// Records that `stage` processed this frame.
    pub fn mark(&mut self, stage: &str) {
        if !self.has_stage(stage) {
            self.stages.push(stage.to_owned());
        }
    }

    /// The frame's results as `ikolexport` writes them.
    pub fn to_result(&self, frame: u64, pts_ns: Option<u64>, with_vertices: bool) -> FrameResult {
        FrameResult {
            frame,
            pts_ns,
            people: self
                .people
                .iter()
                .map(|p| p.to_result(with_vertices, self.intrinsics.as_ref()))
                .collect(),
        }
    }
}

/// The meta of a buffer that an element needs from an upstream element, or the message to post:
/// "`element`: no IkolFrameMeta from `upstream` on the input; put `upstream` before `element`".
pub fn require(buf: &gst::BufferRef, element: &str, upstream: &str) -> Result<FrameMeta, String> {
    require_one_of(buf, element, &[upstream])
}

/// [`require`] satisfied by any of `upstreams` (the first one is named in the message).
pub fn require_one_of(
    buf: &gst::BufferRef,
    element: &str,
    upstreams: &[&str],
) -> Result<FrameMeta, String> {
    let upstream = upstreams.first().copied().unwrap_or("ikolcrop");
    match FrameMeta::read(buf) {
        Ok(Some(m)) if upstreams.iter().any(|u| m.has_stage(u)) => Ok(m),
        Ok(_) => Err(format!(
            "{element}: the input has no results from {upstream}; put {upstream} upstream of {element} \
             (e.g. `... ! {upstream} ! {element} ! ...`)"
        )),
        Err(e) => Err(format!("{element}: {e}")),
    }
}

/// Structure name of the upstream event carrying track boxes measured downstream.
const FEEDBACK_STRUCT: &str = "ikol-track-feedback";

/// The custom upstream event `ikolbackbone` sends after each frame: per track id, the box around
/// the joints it found, so `ikolcrop` tracks people from the previous frame's result.
pub fn feedback_event(tracks: &[(u64, BBox)]) -> gst::Event {
    let s = gst::Structure::builder(FEEDBACK_STRUCT)
        .field("ids", gst::Array::new(tracks.iter().map(|t| t.0)))
        .field(
            "boxes",
            gst::Array::new(tracks.iter().flat_map(|(_, b)| [b.x, b.y, b.w, b.h])),
        )
        .build();
    gst::event::CustomUpstream::new(s)
}

/// The tracks of a feedback event; `None` for any other event or a malformed one.
pub fn parse_feedback(event: &gst::EventRef) -> Option<Vec<(u64, BBox)>> {
    let s = event.structure().filter(|s| s.name() == FEEDBACK_STRUCT)?;
    let ids = s.get::<gst::Array>("ids").ok()?;
    let boxes = s.get::<gst::Array>("boxes").ok()?;
    let v: Vec<f64> = boxes.iter().filter_map(|x| x.get::<f64>().ok()).collect();
    if v.len() != 4 * ids.len() {
        return None;
    }
    ids.iter()
        .zip(v.chunks_exact(4))
        .map(|(id, b)| {
            Some((
                id.get::<u64>().ok()?,
                BBox {
                    x: b[0],
                    y: b[1],
                    w: b[2],
                    h: b[3],
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_every_field() {
        gst::init().unwrap();
        register();
        register(); // idempotent
        let p = Person {
            track_id: 7,
            score: 0.9,
            bbox: BBox {
                x: 1.0,
                y: 2.0,
                w: 30.0,
                h: 40.0,
            },
            crop: Some(Affine2 {
                m: [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]],
            }),
            joints_uvd: vec![[0.1, 0.2, 0.3]; 24],
            joints_3d: vec![[1.5, -2.0, 3.25]; 24],
            joints_2d: vec![[10.0, 20.0]; 24],
            root: Some([0.0, 0.1, 4.0]),
            confidence: vec![0.5; 24],
            twist: vec![[1.0, 0.0]; 23],
            beta: vec![0.25; 10],
            leaf: vec![[1.0, 0.0, 0.0, 0.0]; 5],
            theta: vec![[0.1, 0.2, 0.3]; 24],
            translation: Some([0.1, 0.2, 5.0]),
            residual: vec![0.001; 24],
            vertices: vec![[1.0, 2.0, 3.0]; 100],
            mesh_joints: vec![[0.5, 0.5, 0.5]; 24],
            landmarks_2d: vec![[100.0, 200.0, 0.9]; 33],
            landmarks_3d: vec![[0.1, -0.2, 0.05]; 33],
            surface_landmarks: vec![[0.2, 0.3, 4.0]; 33],
            person_box: Some(BBox {
                x: 5.0,
                y: 6.0,
                w: 20.0,
                h: 30.0,
            }),
            gt_theta: vec![[-0.1, 0.0, 3.0]; 24],
            gt_beta: vec![-1.5; 10],
            gt_root: Some([0.2, -0.3, 4.5]),
        };
        let m = FrameMeta {
            stages: vec!["ikolcrop".into(), "ikolbackbone".into()],
            intrinsics: Some(Intrinsics {
                fx: 500.0,
                fy: 500.0,
                cx: 320.0,
                cy: 240.0,
            }),
            body_model: Some("default".into()),
            people: vec![p.clone(), Person::new(8, p.bbox, 0.5)],
            sequence: Some("downtown_walking_00".into()),
            frame_id: Some(123),
            gt_dropped: 2,
        };
        let mut buf = gst::Buffer::new();
        m.write(buf.get_mut().unwrap()).unwrap();
        // Writing again replaces rather than stacking a second meta.
        m.write(buf.get_mut().unwrap()).unwrap();
        let mut copy = buf.copy();
        CustomMeta::from_mut_buffer(copy.get_mut().unwrap(), META_NAME)
            .unwrap()
            .remove()
            .unwrap();
        assert!(
            CustomMeta::from_buffer(&copy, META_NAME).is_err(),
            "a second meta was stacked"
        );
        let back = FrameMeta::read(&buf).unwrap().unwrap();
        assert_eq!(back, m);
        assert!(require(&buf, "ikolsolver", "ikolbackbone").is_ok());
        let e = require(&buf, "ikolmesher", "ikolsolver").unwrap_err();
        assert!(e.contains("put ikolsolver upstream of ikolmesher"), "{e}");
        let r = back.to_result(3, Some(9), false);
        assert_eq!(r.people[0].theta, p.theta);
        assert!(r.people[0].vertices.is_empty());
        assert_eq!(back.to_result(3, None, true).people[0].vertices.len(), 100);
    }

    #[test]
    fn malformed_meta_is_an_error_not_a_panic() {
        gst::init().unwrap();
        register();
        let mut buf = gst::Buffer::new();
        {
            let b = buf.get_mut().unwrap();
            let mut m = CustomMeta::add(b, META_NAME).unwrap();
            let person = gst::Structure::builder(PERSON_STRUCT)
                .field("track-id", 1u64)
                .field("score", 1.0f64)
                .field("bbox", gst::Array::new([1.0f64, 2.0, 3.0, 4.0]))
                .field("joints-3d", glib::Bytes::from_owned(vec![0u8; 10]))
                .build();
            m.mut_structure().set("people", gst::Array::new([person]));
        }
        let e = FrameMeta::read(&buf).unwrap_err();
        assert_eq!(e.field, "joints-3d");
        assert!(FrameMeta::read(&gst::Buffer::new()).unwrap().is_none());
    }

    #[test]
    fn feedback_event_round_trips() {
        gst::init().unwrap();
        let b = BBox {
            x: 1.0,
            y: 2.0,
            w: 3.0,
            h: 4.0,
        };
        let ev = feedback_event(&[(3, b), (9, b)]);
        assert_eq!(parse_feedback(&ev), Some(vec![(3, b), (9, b)]));
        assert_eq!(parse_feedback(&gst::event::Eos::new()), None);
    }
}
