//! `ikolsolver`'s per-track side of `method=fit` and the body outputs of every method: the
//! fitter of `ikol_solver::fit` on BlazePose's 33 landmarks (or the 24 joints of the heatmap
//! network), warm-started from the track's last body, with the track's last two frames for the
//! acceleration term, its running shape, and a left/right repair of the front end's labels.

use std::collections::{HashMap, VecDeque};

use ikol_body::nalgebra::{Matrix3, Vector3};
use ikol_body::{Anchor, BodyModel};
use ikol_detect::blazepose::landmarks::swap_left_right;
use ikol_detect::landmarks_smpl::{self, LANDMARKS};
use ikol_solver::fit::{self, BodyState, FitInput, FitOptions, Keypoint, Point3, SurfaceModel};
use ikol_types::Intrinsics;
use ikol_types::joints::{SMPL_JOINTS, SMPL24_FLIP_PAIRS};

use crate::meta::Person;

/// Index of the first joint among the anchor points (the 33 landmarks come first).
const JOINT0: usize = LANDMARKS;
/// The landmark hips: the origin of BlazePose's world landmarks.
const LANDMARK_HIPS: [usize; 2] = [23, 24];
/// Frames a track is remembered without being seen.
const FORGET_AFTER: u64 = 30;
/// A labelling is repaired when the swapped one fits the track's labels body this much better...
const SWAP_GAIN: f64 = 0.5;
/// ...and the current one is off by more than this fraction of the body's height (mean over
/// the landmarks). Landmarks within it (as given or swapped) agree with the labels body, and
/// the body fitted to them becomes the next labels body.
const SWAP_MIN_ERROR: f64 = 0.04;
/// Frames the labels body is kept while the landmarks agree with neither labelling. On the
/// pose2sim clip's cam02 (seen from behind) BlazePose turns its labels round over one frame
/// whose landmarks are neither (both shoulders and both wrists in the middle); compared with
/// that frame's body, the next frame's swap did not show, and the repair then carried the
/// swapped labels on after BlazePose had turned them back (57 of 100 frames swapped, against
/// BlazePose's own 27; `multiview-accuracy --view cam02`).
const LABELS_MAX_AGE: u64 = 5;
/// A warm start that ends this far off (mean keypoint error, fraction of the body's height) is
/// retried from the IK solution (after a left/right repair, from the labels body).
const RESTART_ERROR: f64 = 0.03;

/// What one track remembers.
#[derive(Debug, Clone)]
struct Track {
    state: BodyState,
    /// Camera-frame joints of the last frames, oldest first.
    history: VecDeque<Vec<Vector3<f64>>>,
    /// Local rotations of the last frames, oldest first.
    rotation_history: VecDeque<Vec<Matrix3<f64>>>,
    beta_sum: Vec<f64>,
    frames: f64,
    last_frame: u64,
    /// The labels body: the last body fitted to landmarks that agreed with the labels body
    /// before it, and its frame. Left/right labels are repaired against it.
    labels: Option<(BodyState, u64)>,
}

/// What the left/right check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Labels {
    /// The labels were swapped back.
    repaired: bool,
    /// The landmarks (after any repair) agree with the labels body.
    agree: bool,
}

impl Labels {
    /// Nothing to judge against (no landmarks, no recent labels body): kept, and taken as agreeing.
    const UNKNOWN: Self = Self {
        repaired: false,
        agree: true,
    };
}

/// The body model as the fitter and the outputs need it, and the tracks.
#[derive(Debug)]
pub struct Bodies {
    surface: SurfaceModel,
    /// The model has the 33 landmark anchors (a model whose surface the landmark rules cannot
    /// read, e.g. a random test mesh, has only its joints: landmarks are then not used).
    landmarks: bool,
    tracks: HashMap<u64, Track>,
}

/// The result of one person's fit or solve, as [`Bodies::write`] stores it.
#[derive(Debug, Clone)]
pub struct Solved {
    pub state: BodyState,
    /// Swapped labels were repaired this frame.
    pub repaired: bool,
    /// Mean 2D keypoint error of the fit, pixels.
    pub error_2d: f64,
}

fn v3(a: &[f32; 3]) -> Vector3<f64> {
    Vector3::new(a[0].into(), a[1].into(), a[2].into())
}

/// Mean height of a set of pixels (the keypoints' vertical extent), at least one pixel.
fn extent(uv: &[[f64; 2]]) -> f64 {
    let (lo, hi) = uv.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
        (lo.min(p[1]), hi.max(p[1]))
    });
    (hi - lo).max(1.0)
}

impl Bodies {
    /// The bodies of `model`, and why its landmark anchors are missing, if they are.
    pub fn new(model: &BodyModel) -> Result<(Self, Option<String>), String> {
        let (mut anchors, missing) = match landmarks_smpl::anchors(model) {
            Ok(a) => (a.to_vec(), None),
            // Placeholders keep the joint rows at JOINT0; they are never observed.
            Err(e) => (vec![Anchor::Joint(0); LANDMARKS], Some(e)),
        };
        anchors.extend((0..SMPL_JOINTS).map(Anchor::Joint));
        Ok((
            Self {
                surface: SurfaceModel::new(model, &anchors).map_err(|e| e.to_string())?,
                landmarks: missing.is_none(),
                tracks: HashMap::new(),
            },
            missing,
        ))
    }

    /// Forgets every track (a discontinuity).
    pub fn reset(&mut self) {
        self.tracks.clear();
    }

    /// Forgets tracks not seen for a while.
    pub fn forget_old(&mut self, frame: u64) {
        self.tracks
            .retain(|_, t| t.last_frame + FORGET_AFTER >= frame);
    }

    /// Number of shape coefficients of the model.
    pub fn betas(&self) -> usize {
        self.surface.betas()
    }

    /// The keypoints, 3D points and 3D centre of a person: the 33 landmarks when the front end
    /// gave them, else its joints.
    fn observations(&self, p: &Person) -> (Vec<Keypoint>, Vec<Point3>, Vec<usize>) {
        if self.landmarks && p.landmarks_2d.len() == LANDMARKS {
            let kps = p
                .landmarks_2d
                .iter()
                .enumerate()
                .map(|(i, l)| Keypoint {
                    point: i,
                    uv: [l[0].into(), l[1].into()],
                    weight: f64::from(l[2]).clamp(0.0, 1.0),
                })
                .collect();
            let p3 = if p.landmarks_3d.len() == LANDMARKS {
                p.landmarks_3d
                    .iter()
                    .enumerate()
                    .map(|(i, l)| Point3 {
                        point: i,
                        xyz: v3(l),
                        weight: f64::from(p.landmarks_2d[i][2]).clamp(0.0, 1.0),
                    })
                    .collect()
            } else {
                Vec::new()
            };
            return (kps, p3, LANDMARK_HIPS.to_vec());
        }
        let n = p.joints_2d.len().min(SMPL_JOINTS);
        let conf = |j: usize| {
            p.confidence
                .get(j)
                .map_or(1.0, |&c| f64::from(c).clamp(0.0, 1.0))
        };
        let kps = (0..n)
            .map(|j| Keypoint {
                point: JOINT0 + j,
                uv: [p.joints_2d[j][0].into(), p.joints_2d[j][1].into()],
                weight: conf(j),
            })
            .collect();
        let p3 = (0..p.joints_3d.len().min(SMPL_JOINTS))
            .map(|j| Point3 {
                point: JOINT0 + j,
                xyz: v3(&p.joints_3d[j]) - v3(&p.joints_3d[0]),
                weight: conf(j),
            })
            .collect();
        (kps, p3, vec![JOINT0])
    }

    /// Repairs swapped left/right landmark labels against the labels body `reference`.
    fn repair_swap(&self, p: &mut Person, reference: &BodyState, k: &Intrinsics) -> Labels {
        if !self.landmarks || p.landmarks_2d.len() != LANDMARKS {
            return Labels::UNKNOWN;
        }
        let last = self.surface.pose(reference);
        let Some(prev): Option<Vec<[f64; 2]>> = last.points[..LANDMARKS]
            .iter()
            .map(|x| k.project(x))
            .collect()
        else {
            return Labels::UNKNOWN;
        };
        let cost = |order: &[usize]| {
            let (mut e, mut w) = (0.0, 0.0);
            for (i, &src) in order.iter().enumerate() {
                let l = p.landmarks_2d[src];
                let vis = f64::from(l[2].min(p.landmarks_2d[i][2])).max(0.0);
                e += vis * (f64::from(l[0]) - prev[i][0]).hypot(f64::from(l[1]) - prev[i][1]);
                w += vis;
            }
            e / w.max(1e-9)
        };
        let same: Vec<usize> = (0..LANDMARKS).collect();
        let mut swapped = same.clone();
        swap_left_right(&mut swapped);
        let (now, other) = (cost(&same), cost(&swapped));
        let tolerance = SWAP_MIN_ERROR * extent(&prev);
        if other < SWAP_GAIN * now && now > tolerance {
            // The points stay where they are and change labels, in 3D too: BlazePose's world
            // landmarks of a swapped frame are the body the right way round with the labels
            // swapped (a mirror-handed body), not the body mirrored in depth. Measured on the
            // pose2sim clip's cam02, frames 44-65 against the 4-view reference: labels swapped
            // back 124-202 mm, swapped back and mirrored in depth 233-313 mm, as given 436-641.
            swap_left_right(&mut p.landmarks_2d);
            swap_left_right(&mut p.landmarks_3d);
            // The SMPL joints mapped from the landmarks carry the same swap (their supports are
            // left/right symmetric): swap their rows too.
            if p.joints_3d.len() == SMPL_JOINTS {
                for (l, r) in SMPL24_FLIP_PAIRS {
                    p.joints_3d.swap(l, r);
                    if p.joints_2d.len() == SMPL_JOINTS {
                        p.joints_2d.swap(l, r);
                    }
                    if p.confidence.len() == SMPL_JOINTS {
                        p.confidence.swap(l, r);
                    }
                }
            }
            Labels {
                repaired: true,
                agree: other <= tolerance,
            }
        } else {
            Labels {
                repaired: false,
                agree: now <= tolerance,
            }
        }
    }

    /// Fits one person of frame `frame`; `ik` is the IK solution (start of a new track, and the
    /// pose prior). The track's memory is updated.
    /// `ik_translation_known`: whether `ik.translation` was measured (else it is no prior).
    pub fn fit(
        &mut self,
        p: &mut Person,
        ik: &BodyState,
        ik_translation_known: bool,
        k: &Intrinsics,
        frame: u64,
        o: &FitOptions,
    ) -> Result<Solved, String> {
        let track = self.tracks.get(&p.track_id).cloned();
        // Only against a recent body: a body seen a while ago may have turned round.
        let labels = track
            .as_ref()
            .and_then(|t| t.labels.as_ref())
            .filter(|(_, f)| frame.saturating_sub(*f) <= LABELS_MAX_AGE)
            .map_or(Labels::UNKNOWN, |(s, _)| self.repair_swap(p, s, k));
        let repaired = labels.repaired;
        let (kps, p3, centre) = self.observations(p);
        let fresh = |t: &&Track| t.last_frame + 1 == frame;
        let history: Vec<Vec<Vector3<f64>>> = track
            .as_ref()
            .filter(fresh)
            .map(|t| t.history.iter().cloned().collect())
            .unwrap_or_default();
        let rotation_history: Vec<Vec<Matrix3<f64>>> = track
            .as_ref()
            .filter(fresh)
            .map(|t| t.rotation_history.iter().cloned().collect())
            .unwrap_or_default();
        let beta_track: Option<Vec<f64>> = track
            .as_ref()
            .map(|t| t.beta_sum.iter().map(|b| b / t.frames.max(1.0)).collect());
        // The IK solution came from the labels as given: after a repair it is no prior.
        let prior: Option<&[Matrix3<f64>]> = (!repaired).then_some(ik.rotations.as_slice());
        let input = FitInput {
            intrinsics: k,
            keypoints: &kps,
            points_3d: &p3,
            centre: &centre,
            pose_prior: prior,
            beta_track: beta_track.as_deref(),
            // After a repair the IK translation is still right: the labels do not move the root.
            translation_prior: ik_translation_known.then_some(ik.translation),
            history: &history,
            rotation_history: &rotation_history,
        };
        let height = extent(&kps.iter().map(|k| k.uv).collect::<Vec<_>>());
        let start = track.as_ref().map_or(ik, |t| &t.state);
        let mut result = fit::fit(&self.surface, &input, start, o).map_err(|e| e.to_string());
        // A warm start that went astray (the robust keypoint term stops pulling far from the
        // keypoints, and the acceleration term would carry the drift on): fit again from the IK
        // solution without the track's past, and keep whichever fits the keypoints better.
        let astray = match &result {
            Ok(r) => track.is_some() && r.mean_error_2d > RESTART_ERROR * height,
            Err(_) => track.is_some(),
        };
        let mut restarted = false;
        if astray {
            let fresh_input = FitInput {
                history: &[],
                rotation_history: &[],
                beta_track: None,
                ..input
            };
            // After a repair the IK solution (solved from the swapped labels) is a poor start:
            // start from the labels body instead. On cam02 (uncalibrated) 17 of 26 restarts were
            // on repaired frames; from the labels body the fit's accel went 83 -> 71
            // mm/frame^2 and its 2D error 17.4 -> 15.9 px (`multiview-accuracy --view cam02`).
            let from = track
                .as_ref()
                .filter(|_| repaired)
                .and_then(|t| t.labels.as_ref())
                .map_or(ik, |l| &l.0);
            if let Ok(r2) = fit::fit(&self.surface, &fresh_input, from, o)
                && result
                    .as_ref()
                    .map_or(true, |r| r2.mean_error_2d < r.mean_error_2d)
            {
                result = Ok(r2);
                restarted = true;
            }
        }
        let r = result?;
        let t = self.tracks.entry(p.track_id).or_insert_with(|| Track {
            state: r.state.clone(),
            history: VecDeque::new(),
            rotation_history: VecDeque::new(),
            beta_sum: vec![0.0; r.state.beta.len()],
            frames: 0.0,
            last_frame: frame,
            labels: None,
        });
        if t.last_frame + 1 != frame || restarted {
            t.history.clear();
            t.rotation_history.clear();
        }
        t.state = r.state.clone();
        t.history.push_back(r.joints.clone());
        t.rotation_history.push_back(r.state.rotations.clone());
        while t.history.len() > 2 {
            t.history.pop_front();
        }
        while t.rotation_history.len() > 2 {
            t.rotation_history.pop_front();
        }
        // Running shape over the last ~50 frames.
        let keep = if t.frames >= 50.0 { 49.0 / 50.0 } else { 1.0 };
        for (s, b) in t.beta_sum.iter_mut().zip(&r.state.beta) {
            *s = *s * keep + b;
        }
        t.frames = t.frames * keep + 1.0;
        t.last_frame = frame;
        let stale = t
            .labels
            .as_ref()
            .is_none_or(|(_, f)| frame.saturating_sub(*f) >= LABELS_MAX_AGE);
        if labels.agree || stale {
            t.labels = Some((r.state.clone(), frame));
        }
        Ok(Solved {
            state: r.state,
            repaired,
            error_2d: r.mean_error_2d,
        })
    }

    /// Writes a solved body into the person: theta, beta, translation, the body's joints, its
    /// surface at the landmarks (when the front end gave landmarks) and the tight box around its
    /// projection (clipped to `frame`, width x height).
    pub fn write(
        &self,
        p: &mut Person,
        s: &BodyState,
        k: Option<&Intrinsics>,
        frame: Option<(u32, u32)>,
    ) {
        let posed = self.surface.pose(s);
        let f = |v: &Vector3<f64>| [v.x as f32, v.y as f32, v.z as f32];
        p.theta = s
            .rotations
            .iter()
            .map(|r| f(&ikol_types::rotation::matrix_to_axis_angle(r)))
            .collect();
        p.beta = s.beta.iter().map(|&b| b as f32).collect();
        p.translation = Some(f(&s.translation));
        p.mesh_joints = posed.points[JOINT0..].iter().map(f).collect();
        p.surface_landmarks = if self.landmarks && p.landmarks_2d.len() == LANDMARKS {
            posed.points[..LANDMARKS].iter().map(f).collect()
        } else {
            Vec::new()
        };
        if let Some(k) = k {
            let uv: Vec<[f64; 2]> = posed.points.iter().filter_map(|x| k.project(x)).collect();
            p.person_box = crate::common::tight_box(&uv, HEAD_MARGIN, frame);
        }
    }
}

/// The points used for the box stop at the eyes and ears: the top of the head is this fraction
/// of the body's height above them (SMPL: the head top is ~8 % of the height above the eyes).
const HEAD_MARGIN: f64 = 0.08;

#[cfg(test)]
mod tests {
    use super::*;
    use ikol_types::rotation::axis_angle_to_matrix;

    /// A body 3 m in front of the camera, facing it, arms out; its landmarks as the front end
    /// would give them (the anchors projected, visibility 1; world landmarks about the hips).
    fn scene() -> (Bodies, BodyState, Intrinsics, Person) {
        let model = BodyModel::embedded_default().expect("model");
        let (bodies, missing) = Bodies::new(&model).expect("bodies");
        assert_eq!(missing, None);
        let mut rotations = vec![Matrix3::identity(); SMPL_JOINTS];
        rotations[0] = axis_angle_to_matrix(&Vector3::new(std::f64::consts::PI, 0.0, 0.0));
        rotations[16] = axis_angle_to_matrix(&Vector3::new(0.0, 0.0, -0.4));
        rotations[4] = axis_angle_to_matrix(&Vector3::new(0.5, 0.0, 0.0));
        let s = BodyState {
            rotations,
            translation: Vector3::new(0.1, 0.0, 3.0),
            beta: vec![0.0; bodies.betas()],
        };
        let k = Intrinsics {
            fx: 1000.0,
            fy: 1000.0,
            cx: 540.0,
            cy: 960.0,
        };
        let posed = bodies.surface.pose(&s);
        let hips = (posed.points[23] + posed.points[24]) / 2.0;
        let mut p = Person::new(
            1,
            ikol_types::BBox::from_xyxy(0.0, 0.0, 1080.0, 1920.0),
            1.0,
        );
        for x in &posed.points[..LANDMARKS] {
            let uv = k.project(x).expect("in front");
            p.landmarks_2d.push([uv[0] as f32, uv[1] as f32, 1.0]);
            let w = x - hips;
            p.landmarks_3d.push([w.x as f32, w.y as f32, w.z as f32]);
        }
        // The front end's joints: distinct rows, so that a swap of their labels shows.
        p.joints_3d = (0..SMPL_JOINTS).map(|j| [j as f32, 0.0, 0.0]).collect();
        p.joints_2d = (0..SMPL_JOINTS).map(|j| [j as f32, 1.0]).collect();
        (bodies, s, k, p)
    }

    #[test]
    fn swapped_labels_are_repaired_and_true_ones_kept() {
        let (bodies, s, k, p) = scene();
        let mut same = p.clone();
        assert_eq!(
            bodies.repair_swap(&mut same, &s, &k),
            Labels {
                repaired: false,
                agree: true
            },
            "true labels kept"
        );
        assert_eq!(same.landmarks_2d, p.landmarks_2d);
        let mut swapped = p.clone();
        swap_left_right(&mut swapped.landmarks_2d);
        swap_left_right(&mut swapped.landmarks_3d);
        for (l, r) in SMPL24_FLIP_PAIRS {
            swapped.joints_3d.swap(l, r);
            swapped.joints_2d.swap(l, r);
        }
        assert_eq!(
            bodies.repair_swap(&mut swapped, &s, &k),
            Labels {
                repaired: true,
                agree: true
            },
            "swap detected"
        );
        assert_eq!(swapped.landmarks_2d, p.landmarks_2d);
        assert_eq!(swapped.landmarks_3d, p.landmarks_3d);
        // The front end's joints, mapped from the swapped landmarks, are swapped back too.
        assert_eq!(swapped.joints_3d, p.joints_3d);
        assert_eq!(swapped.joints_2d, p.joints_2d);
    }

    #[test]
    fn a_swap_after_a_frame_of_neither_labelling_is_repaired() {
        // BlazePose turning its labels round passes through a frame whose left and right
        // landmarks both lie in the middle; the next frame's swap is judged against the last
        // body whose landmarks agreed, not against that frame's.
        let (mut bodies, s, k, p) = scene();
        let o = FitOptions::default();
        let first = bodies
            .fit(&mut p.clone(), &s, true, &k, 1, &o)
            .expect("fit");
        assert!(!first.repaired);
        let mut middle = p.clone();
        let q = &mut middle.landmarks_2d;
        for (l, r) in ikol_detect::blazepose::landmarks::LEFT_RIGHT_PAIRS {
            let m = [0.5 * (q[l][0] + q[r][0]), 0.5 * (q[l][1] + q[r][1])];
            q[l][..2].copy_from_slice(&m);
            q[r][..2].copy_from_slice(&m);
        }
        let f2 = bodies.fit(&mut middle, &s, true, &k, 2, &o).expect("fit");
        assert!(!f2.repaired);
        let labels = bodies.tracks[&1].labels.as_ref().map(|l| l.1);
        assert_eq!(
            labels,
            Some(1),
            "a frame of neither labelling is no labels body"
        );
        let mut swapped = p.clone();
        swap_left_right(&mut swapped.landmarks_2d);
        swap_left_right(&mut swapped.landmarks_3d);
        let f3 = bodies.fit(&mut swapped, &s, true, &k, 3, &o).expect("fit");
        assert!(f3.repaired, "swap against frame 1's body");
        assert_eq!(swapped.landmarks_2d, p.landmarks_2d);
        assert_eq!(bodies.tracks[&1].labels.as_ref().map(|l| l.1), Some(3));
    }

    #[test]
    fn a_track_is_fitted_and_remembered() {
        let (mut bodies, s, k, mut p) = scene();
        // Start from the body with every joint a little off, as an IK solution would be.
        let mut ik = s.clone();
        for r in ik.rotations.iter_mut().skip(1) {
            *r *= axis_angle_to_matrix(&Vector3::new(0.05, -0.04, 0.03));
        }
        ik.translation += Vector3::new(0.05, 0.0, 0.2);
        let o = FitOptions::default();
        for frame in 1..=3 {
            let f = bodies.fit(&mut p, &ik, true, &k, frame, &o).expect("fit");
            assert!(!f.repaired);
            assert!(f.error_2d < 2.0, "frame {frame}: {} px", f.error_2d);
        }
        let t = &bodies.tracks[&1];
        assert_eq!(
            (t.history.len(), t.rotation_history.len(), t.last_frame),
            (2, 2, 3)
        );
        bodies.write(&mut p, &t.state.clone(), Some(&k), Some((1080, 1920)));
        assert_eq!(
            (
                p.theta.len(),
                p.mesh_joints.len(),
                p.surface_landmarks.len()
            ),
            (24, 24, 33)
        );
        let b = p.person_box.expect("a box");
        assert!(b.x >= 0.0 && b.y >= 0.0 && b.x + b.w <= 1080.0 && b.y + b.h <= 1920.0);
        // A discontinuity forgets the track.
        bodies.reset();
        assert!(bodies.tracks.is_empty());
    }
}
