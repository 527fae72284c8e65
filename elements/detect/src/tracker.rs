//! Box tracking across frames: greedy matching by intersection over union (highest IoU pair
//! first), new ids for unmatched boxes that score at least `start_score`, tracks kept for
//! `max_age` frames without a match.

use ikol_types::BBox;

use crate::Detection;

/// Tracking parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackerConfig {
    /// Minimum IoU for a box to continue a track.
    pub iou_threshold: f64,
    /// Frames a track survives without a matching box.
    pub max_age: u32,
    /// At most this many people per frame (highest scores kept); 0 = no limit.
    pub max_people: usize,
    /// A box that continues no track starts one only with at least this score; a track goes on
    /// with weaker boxes (hysteresis). BlazePose's detector keeps boxes from 0.5 (mediapipe's
    /// `min_detection_confidence`); on the pose2sim demo clip its two false tracks (part of the
    /// subject, a shape on the floor) scored 0.54 and 0.54, the two people 0.96 and 0.78.
    pub start_score: f64,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            iou_threshold: 0.3,
            max_age: 5,
            max_people: 4,
            start_score: 0.6,
        }
    }
}

/// One tracked person.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    /// Stable id, from 1.
    pub id: u64,
    pub bbox: BBox,
    pub score: f64,
    /// Frames since the track was last matched to a box.
    pub age: u32,
}

/// Assigns stable ids to boxes frame after frame.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    pub config: TrackerConfig,
    tracks: Vec<Track>,
    next_id: u64,
}

impl Tracker {
    pub fn new(config: TrackerConfig) -> Self {
        Self {
            config,
            tracks: Vec::new(),
            next_id: 1,
        }
    }

    /// Live tracks (including those not matched in the last frame but younger than `max_age`).
    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    /// Replaces the box of track `id` with one measured later (e.g. around the joints found in
    /// the previous frame), so the next frame is matched against where the person really is.
    /// Returns false for an unknown id.
    pub fn refine(&mut self, id: u64, bbox: BBox) -> bool {
        match self.tracks.iter_mut().find(|t| t.id == id) {
            Some(t) if bbox.is_valid() => {
                t.bbox = bbox;
                true
            }
            _ => false,
        }
    }

    /// The people of this frame: each valid detection continues the best-overlapping track or
    /// starts a new one. Returns the matched tracks of this frame, best score first, limited to
    /// `max_people`.
    pub fn update(&mut self, detections: &[Detection]) -> Vec<Track> {
        let mut dets: Vec<&Detection> = detections.iter().filter(|d| d.bbox.is_valid()).collect();
        dets.sort_by(|a, b| b.score.total_cmp(&a.score));
        if self.config.max_people > 0 {
            dets.truncate(self.config.max_people);
        }
        let mut pairs: Vec<(f64, usize, usize)> = Vec::new();
        for (di, d) in dets.iter().enumerate() {
            for (ti, t) in self.tracks.iter().enumerate() {
                let iou = d.bbox.iou(&t.bbox);
                if iou >= self.config.iou_threshold {
                    pairs.push((iou, di, ti));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut det_track = vec![None; dets.len()];
        let mut track_used = vec![false; self.tracks.len()];
        for (_, di, ti) in pairs {
            if det_track[di].is_none() && !track_used[ti] {
                det_track[di] = Some(ti);
                track_used[ti] = true;
            }
        }
        for t in &mut self.tracks {
            t.age += 1;
        }
        let mut out = Vec::with_capacity(dets.len());
        for (d, m) in dets.iter().zip(det_track) {
            let t = match m {
                Some(ti) => &mut self.tracks[ti],
                None if d.score < self.config.start_score => continue,
                None => {
                    self.tracks.push(Track {
                        id: self.next_id,
                        bbox: d.bbox,
                        score: d.score,
                        age: 0,
                    });
                    self.next_id += 1;
                    let last = self.tracks.len() - 1;
                    &mut self.tracks[last]
                }
            };
            t.bbox = d.bbox;
            t.score = d.score;
            t.age = 0;
            out.push(t.clone());
        }
        let max_age = self.config.max_age;
        self.tracks.retain(|t| t.age <= max_age);
        out
    }

    /// Forgets every track (ids keep increasing).
    pub fn clear(&mut self) {
        self.tracks.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x: f64, y: f64, score: f64) -> Detection {
        Detection {
            bbox: BBox {
                x,
                y,
                w: 100.0,
                h: 200.0,
            },
            score,
        }
    }

    #[test]
    fn ids_follow_moving_boxes_and_new_people_get_new_ids() {
        let mut t = Tracker::new(TrackerConfig::default());
        let f1 = t.update(&[det(0.0, 0.0, 0.9), det(300.0, 0.0, 0.8)]);
        assert_eq!(f1.iter().map(|t| t.id).collect::<Vec<_>>(), [1, 2]);
        // Both move 10 px (IoU ~0.82); listed in the other order; a third person appears.
        let f2 = t.update(&[
            det(310.0, 0.0, 0.85),
            det(10.0, 0.0, 0.95),
            det(600.0, 0.0, 0.7),
        ]);
        let ids: Vec<(u64, f64)> = f2.iter().map(|t| (t.id, t.bbox.x)).collect();
        assert_eq!(ids, [(1, 10.0), (2, 310.0), (3, 600.0)]);
    }

    #[test]
    fn weak_boxes_continue_tracks_but_start_none() {
        let mut t = Tracker::new(TrackerConfig::default());
        assert!(t.update(&[det(0.0, 0.0, 0.55)]).is_empty(), "0.55 < 0.6");
        assert!(t.tracks().is_empty());
        assert_eq!(t.update(&[det(0.0, 0.0, 0.6)])[0].id, 1);
        // The same person, now weak; and a weak newcomer elsewhere.
        let f = t.update(&[det(5.0, 0.0, 0.3), det(400.0, 0.0, 0.59)]);
        assert_eq!(
            f.iter().map(|t| (t.id, t.score)).collect::<Vec<_>>(),
            [(1, 0.3)]
        );
    }

    #[test]
    fn max_people_keeps_the_best_and_old_tracks_expire() {
        let mut t = Tracker::new(TrackerConfig {
            max_people: 1,
            max_age: 1,
            ..Default::default()
        });
        let f = t.update(&[det(0.0, 0.0, 0.2), det(300.0, 0.0, 0.9)]);
        assert_eq!((f.len(), f[0].bbox.x), (1, 300.0));
        assert!(t.update(&[]).is_empty());
        assert_eq!(t.tracks().len(), 1, "age 1 survives");
        t.update(&[]);
        assert!(t.tracks().is_empty(), "age 2 > max_age 1");
        // Expired ids are not reused.
        assert_eq!(t.update(&[det(300.0, 0.0, 0.9)])[0].id, 2);
    }

    #[test]
    fn refined_boxes_are_matched_next_frame() {
        let mut t = Tracker::new(TrackerConfig::default());
        t.update(&[det(0.0, 0.0, 0.9)]);
        // The person moved 80 px: IoU with the old box is 0.11, below the threshold...
        assert!(det(80.0, 0.0, 0.9).bbox.iou(&det(0.0, 0.0, 0.9).bbox) < 0.3);
        // ...but the joints of the last frame already put the box there.
        assert!(t.refine(1, det(75.0, 0.0, 0.9).bbox));
        assert_eq!(t.update(&[det(80.0, 0.0, 0.9)])[0].id, 1);
        assert!(!t.refine(99, det(0.0, 0.0, 1.0).bbox));
    }
}
