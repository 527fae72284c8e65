//! A take: one tracked person's motion over a stretch of video, on one skeleton, in a Y-up world.
//!
//! ## Orientation (handled here once, for every format)
//! The solver's camera frame is OpenCV's: x right, y down, z forward (into the scene). The
//! exported world is the one Blender (after its importers' axis conversion), glTF, BVH viewers
//! and OpenSim expect: **y up**, x to the camera's right, z toward the camera. So
//! `world = W * camera + offset` with `W = diag(1, -1, -1)` (a half turn about x). Gravity is
//! taken as the camera's vertical: a level camera gives an upright body; a tilted camera tilts the
//! world by the same angle (a ground-plane fit would need the feet on the floor in every frame,
//! which a jump or a sit breaks). `offset` puts the floor at y = 0 (the median over the take of
//! the body's lowest vertex in each frame, so a jump does not lift the floor) and the first
//! frame's root above the origin (x = z = 0).
//!
//! ## One skeleton
//! BVH and glTF carry one skeleton per file, so the take has one shape: the mean of the track's
//! per-frame shapes. Every file of a take (joints, markers, meshes) is posed with it.
//!
//! ## Timeline
//! Frame `i` of the take is at `i / fps` seconds after the track's first frame. Frames the track
//! missed (the person occluded, a detection dropped) and a different output rate are filled by
//! interpolating between the neighbouring solved frames: spherical linear for every rotation,
//! linear for the root position.

use ikol_body::nalgebra::{Matrix3, Rotation3, UnitQuaternion, Vector3};
use ikol_body::{Anchor, BodyModel, Posed};
use ikol_types::joints::SMPL_JOINTS;
use ikol_types::rotation::axis_angle_to_matrix;

use crate::ExportError;

/// The camera-to-world rotation: a half turn about x (camera y down, z forward -> world y up,
/// z toward the camera).
pub fn world_from_camera() -> Matrix3<f64> {
    Matrix3::from_diagonal(&Vector3::new(1.0, -1.0, -1.0))
}

/// Most frames one take may hold (an hour at 120 fps): the bound on what a file asks to allocate.
pub const MAX_FRAMES: usize = 432_000;

/// One solved frame of a track, as the solver leaves it (camera frame).
#[derive(Debug, Clone, PartialEq)]
pub struct TrackSample {
    /// Frame index in the stream.
    pub frame: u64,
    /// 24 local rotations, axis-angle, root first (root: global orientation in camera axes).
    pub theta: Vec<[f64; 3]>,
    /// Camera-frame position of the root joint, metres.
    pub translation: [f64; 3],
    /// Shape coefficients (any count; padded or cut to the body model's).
    pub beta: Vec<f64>,
}

/// A named point on the body written as a marker (TRC): a joint or a surface vertex.
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    pub name: String,
    pub anchor: Anchor,
}

/// One person's motion, resampled to a fixed rate, in the Y-up world.
#[derive(Debug, Clone)]
pub struct Take {
    /// The track's id in the stream.
    pub track_id: u64,
    /// Frames per second of the take.
    pub fps: f64,
    /// Stream frame index of the take's first frame.
    pub first_frame: u64,
    /// The stream's frame rate.
    pub source_fps: f64,
    /// Stream frames the take spans (first to last solved frame, inclusive).
    pub source_frames: u64,
    /// The take's shape (mean of the track's), as many coefficients as the body model has.
    pub beta: Vec<f64>,
    /// Rest joints of that shape (model frame: y up, facing +z), metres.
    pub rest_joints: Vec<Vector3<f64>>,
    /// Per frame: 24 local rotations; the root's is its orientation in the world.
    pub rotations: Vec<Vec<Matrix3<f64>>>,
    /// Per frame: the root joint's world position, metres.
    pub root: Vec<Vector3<f64>>,
    /// `world = world_from_camera() * camera + offset` (metres).
    pub offset: Vector3<f64>,
}

/// A solved frame on the take's clock.
struct Key {
    t: f64,
    rot: Vec<UnitQuaternion<f64>>,
    root: Vector3<f64>,
}

fn quat(m: &Matrix3<f64>) -> UnitQuaternion<f64> {
    UnitQuaternion::from_rotation_matrix(&Rotation3::from_matrix_unchecked(*m))
}

/// Shortest-path spherical interpolation; at a half turn apart (no unique path) the nearer key.
fn slerp(a: &UnitQuaternion<f64>, b: &UnitQuaternion<f64>, s: f64) -> UnitQuaternion<f64> {
    let b = if a.coords.dot(&b.coords) < 0.0 {
        UnitQuaternion::new_unchecked(-b.into_inner())
    } else {
        *b
    };
    a.try_slerp(&b, s, 1e-12)
        .unwrap_or(if s < 0.5 { *a } else { b })
}

impl Take {
    /// Builds a take from a track's solved frames. `fps` is the stream's rate; `fps_out` the
    /// take's (None: the stream's). Errors name the track and the problem.
    pub fn new(
        track_id: u64,
        samples: &[TrackSample],
        fps: f64,
        fps_out: Option<f64>,
        model: &BodyModel,
    ) -> Result<Take, ExportError> {
        let bad = |why: String| ExportError::Input(format!("track {track_id}: {why}"));
        if !(fps.is_finite() && fps > 0.0 && fps <= 10_000.0) {
            return Err(bad(format!("frame rate {fps} is not in (0, 10000]")));
        }
        let fps_out = fps_out.unwrap_or(fps);
        if !(fps_out.is_finite() && fps_out > 0.0 && fps_out <= 10_000.0) {
            return Err(bad(format!(
                "output frame rate {fps_out} is not in (0, 10000]"
            )));
        }
        let mut samples: Vec<&TrackSample> = samples.iter().collect();
        samples.sort_by_key(|s| s.frame);
        samples.dedup_by_key(|s| s.frame);
        let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
            return Err(bad("no solved frames".into()));
        };
        let first_frame = first.frame;
        let duration = (last.frame - first_frame) as f64 / fps;
        let frames = (duration * fps_out + 1e-9).floor() as usize + 1;
        if frames > MAX_FRAMES {
            return Err(bad(format!(
                "{frames} frames at {fps_out} fps is more than {MAX_FRAMES}"
            )));
        }
        let nb = model.num_betas;
        let mut beta = vec![0.0; nb];
        let w = world_from_camera();
        let mut keys = Vec::with_capacity(samples.len());
        for s in &samples {
            if s.theta.len() != SMPL_JOINTS {
                return Err(bad(format!(
                    "frame {}: {} rotations, expected {SMPL_JOINTS}",
                    s.frame,
                    s.theta.len()
                )));
            }
            let finite = s
                .theta
                .iter()
                .flatten()
                .chain(&s.translation)
                .chain(&s.beta);
            if finite.clone().any(|v| !v.is_finite()) {
                return Err(bad(format!("frame {}: non-finite pose or shape", s.frame)));
            }
            for (b, v) in beta.iter_mut().zip(&s.beta) {
                *b += v / samples.len() as f64;
            }
            let rot = s
                .theta
                .iter()
                .enumerate()
                .map(|(j, a)| {
                    let m = axis_angle_to_matrix(&Vector3::from(*a));
                    quat(&if j == 0 { w * m } else { m })
                })
                .collect();
            keys.push(Key {
                t: (s.frame - first_frame) as f64 / fps,
                rot,
                root: w * Vector3::from(s.translation),
            });
        }
        // The shape a body model can have (an untrained network's betas are clipped).
        for b in &mut beta {
            *b = b.clamp(-ikol_body::MAX_ABS_BETA, ikol_body::MAX_ABS_BETA);
        }
        let rest_joints = model.rest_joints(&beta)?;
        let mut rotations = Vec::with_capacity(frames);
        let mut root = Vec::with_capacity(frames);
        let mut k = 0;
        for i in 0..frames {
            let t = i as f64 / fps_out;
            while k + 1 < keys.len() && keys[k + 1].t <= t {
                k += 1;
            }
            let a = &keys[k];
            let (rot, r) = match keys.get(k + 1) {
                Some(b) if t > a.t => {
                    let s = ((t - a.t) / (b.t - a.t)).clamp(0.0, 1.0);
                    (
                        a.rot
                            .iter()
                            .zip(&b.rot)
                            .map(|(qa, qb)| slerp(qa, qb, s))
                            .collect::<Vec<_>>(),
                        a.root.lerp(&b.root, s),
                    )
                }
                _ => (a.rot.clone(), a.root),
            };
            rotations.push(
                rot.iter()
                    .map(|q| *q.to_rotation_matrix().matrix())
                    .collect(),
            );
            root.push(r);
        }
        let mut take = Take {
            track_id,
            fps: fps_out,
            first_frame,
            source_fps: fps,
            source_frames: last.frame - first_frame + 1,
            beta,
            rest_joints,
            rotations,
            root,
            offset: Vector3::zeros(),
        };
        take.place_on_floor(model)?;
        Ok(take)
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.root.len()
    }

    /// True when the take has no frame (never, for a take built by [`Take::new`]).
    pub fn is_empty(&self) -> bool {
        self.root.is_empty()
    }

    /// Shifts the world so the floor is y = 0 and the first root is above the origin.
    fn place_on_floor(&mut self, model: &BodyModel) -> Result<(), ExportError> {
        let mut lowest = Vec::with_capacity(self.len());
        for i in 0..self.len() {
            let p = self.posed(model, i)?;
            let y = p
                .vertices
                .iter()
                .map(|v| f64::from(v[1]))
                .fold(f64::MAX, f64::min);
            lowest.push(y);
        }
        lowest.sort_by(f64::total_cmp);
        let floor = lowest[lowest.len() / 2];
        let shift = Vector3::new(-self.root[0].x, -floor, -self.root[0].z);
        for r in &mut self.root {
            *r += shift;
        }
        self.offset += shift;
        Ok(())
    }

    /// The body of frame `i` in the world: vertices and joints (metres).
    pub fn posed(&self, model: &BodyModel, i: usize) -> Result<Posed, ExportError> {
        let mut p = model.forward(&self.beta, &self.rotations[i])?;
        // forward() keeps the root joint at its rest position J_0; move it to the frame's root.
        let d = self.root[i] - self.rest_joints[0];
        let df = [d.x as f32, d.y as f32, d.z as f32];
        for v in &mut p.vertices {
            for c in 0..3 {
                v[c] += df[c];
            }
        }
        for j in &mut p.joints {
            *j += d;
        }
        Ok(p)
    }

    /// The markers' world positions in frame `i`: 24 joints by FK alone when every marker is a
    /// joint, else the skinned body.
    pub fn marker_positions(
        &self,
        model: &BodyModel,
        markers: &[Marker],
        i: usize,
    ) -> Result<Vec<Vector3<f64>>, ExportError> {
        let posed = if markers.iter().all(|m| matches!(m.anchor, Anchor::Joint(_))) {
            let (global, joints) = ikol_body::forward_kinematics(
                &self.rotations[i],
                &self.rest_joints,
                &model.parents,
            );
            let d = self.root[i] - self.rest_joints[0];
            Posed {
                vertices: Vec::new(),
                joints: joints.iter().map(|j| j + d).collect(),
                global_rotations: global,
            }
        } else {
            self.posed(model, i)?
        };
        markers
            .iter()
            .map(|m| match m.anchor {
                Anchor::Joint(j) if j < posed.joints.len() => Ok(m.anchor.on(&posed)),
                Anchor::Vertex(v) if v < posed.vertices.len() => Ok(m.anchor.on(&posed)),
                _ => Err(ExportError::Input(format!(
                    "marker `{}` is not on the body model",
                    m.name
                ))),
            })
            .collect()
    }
}

/// The 24 SMPL joints as markers, by their SMPL names.
pub fn joint_markers() -> Vec<Marker> {
    ikol_types::joints::SMPL24_NAMES
        .iter()
        .enumerate()
        .map(|(j, n)| Marker {
            name: (*n).to_owned(),
            anchor: Anchor::Joint(j),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ikol_body::nalgebra::Vector3;

    fn sample(frame: u64, knee: f64, x: f64) -> TrackSample {
        let mut theta = vec![[0.0; 3]; 24];
        // Upright in the camera: the model's y up is the camera's -y (half turn about x).
        theta[0] = [std::f64::consts::PI, 0.0, 0.0];
        theta[4] = [knee, 0.0, 0.0];
        TrackSample {
            frame,
            theta,
            translation: [x, 0.2, 3.0],
            beta: vec![0.5],
        }
    }

    #[test]
    fn upright_on_the_floor_gaps_interpolated() {
        let model = BodyModel::embedded_small().unwrap();
        let s = [sample(10, 0.0, 0.0), sample(14, 1.0, 0.4)];
        let take = Take::new(3, &s, 20.0, None, &model).unwrap();
        assert_eq!((take.len(), take.first_frame), (5, 10));
        // Upright: the root's world orientation is the identity (camera half turn undone).
        assert!((take.rotations[0][0] - Matrix3::identity()).norm() < 1e-12);
        // First root above the origin; the camera's +x stays +x; depth 3 m turns into z = -3
        // but is re-centred to 0.
        assert!(take.root[0].x.abs() < 1e-12 && take.root[0].z.abs() < 1e-12);
        assert!((take.root[4].x - 0.4).abs() < 1e-12);
        // Halfway through the gap: the knee at half the angle (slerp of a single-axis rotation)
        // and the root halfway.
        let mid = ikol_types::rotation::matrix_to_axis_angle(&take.rotations[2][4]);
        assert!((mid - Vector3::new(0.5, 0.0, 0.0)).norm() < 1e-9, "{mid}");
        assert!((take.root[2].x - 0.2).abs() < 1e-12);
        // Floor: the lowest vertex of the straight-legged first frame is at y = 0.
        let p = take.posed(&model, 0).unwrap();
        let low = p.vertices.iter().map(|v| v[1]).fold(f32::MAX, f32::min);
        assert!(low.abs() < 1e-5, "{low}");
        // The head is above the pelvis.
        assert!(p.joints[15].y > p.joints[0].y + 0.3);
        // Shape: the mean (one sample value), padded to the model's count.
        assert_eq!(take.beta.len(), model.num_betas);
        assert!((take.beta[0] - 0.5).abs() < 1e-12);
    }

    #[test]
    fn resampled_and_refused() {
        let model = BodyModel::embedded_small().unwrap();
        let s = [sample(0, 0.0, 0.0), sample(30, 0.0, 1.0)];
        let take = Take::new(1, &s, 30.0, Some(10.0), &model).unwrap();
        assert_eq!((take.len(), take.fps), (11, 10.0));
        assert!((take.root[5].x - 0.5).abs() < 1e-12);
        let mut nan = sample(1, 0.0, 0.0);
        nan.translation[2] = f64::NAN;
        let e = Take::new(9, &[nan], 30.0, None, &model).unwrap_err();
        assert!(e.to_string().contains("track 9") && e.to_string().contains("non-finite"));
        assert!(Take::new(9, &[], 30.0, None, &model).is_err());
        assert!(Take::new(9, &s, 0.0, None, &model).is_err());
        let mut short = sample(2, 0.0, 0.0);
        short.theta.pop();
        assert!(Take::new(9, &[short], 30.0, None, &model).is_err());
    }
}
