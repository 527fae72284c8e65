//! ikolcrop: boxes from the roi property, region metas and upstream meta; tracking by the
//! feedback event; limits; caps; errors.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use gst::prelude::*;
use gstikol::meta::{self, FrameMeta, Person};
use ikol_types::BBox;

fn bx(x: f64, y: f64, w: f64, h: f64) -> BBox {
    BBox { x, y, w, h }
}

#[test]
fn roi_boxes_get_ids_and_the_hybrik_crop() {
    let (mut h, _bus) = harness(
        "ikolcrop",
        &[("roi", "10,20,100,200;200,20,80,100")],
        &rgb_caps(320, 240),
    );
    let out = h.push_and_pull(frame(320, 240, 0, None)).unwrap();
    let m = meta_of(&out);
    assert_eq!(m.stages, ["ikolcrop"]);
    assert_eq!(m.people.len(), 2);
    let p = &m.people[0];
    assert_eq!((p.track_id, p.bbox), (1, bx(10.0, 20.0, 100.0, 200.0)));
    assert_eq!(m.people[1].track_id, 2);
    // The crop is square, side 1.25 x max(w, h) = 250 px, centred on the box: the box centre
    // (60, 120) maps to the crop centre (128, 128) and 250 frame px span the 256 crop px.
    let a = p.crop.unwrap();
    let c = a.apply([60.0, 120.0]);
    assert!(
        (c[0] - 128.0).abs() < 1e-9 && (c[1] - 128.0).abs() < 1e-9,
        "{c:?}"
    );
    let e = a.apply([60.0 + 125.0, 120.0]);
    assert!((e[0] - 256.0).abs() < 1e-9, "{e:?}");
    // Same boxes next frame: same ids.
    let m2 = meta_of(&h.push_and_pull(frame(320, 240, 0, None)).unwrap());
    assert_eq!(
        m2.people.iter().map(|p| p.track_id).collect::<Vec<_>>(),
        [1, 2]
    );
    // After a discontinuity the same boxes are new people.
    let mut d = frame(320, 240, 0, None);
    d.get_mut().unwrap().set_flags(gst::BufferFlags::DISCONT);
    let m3 = meta_of(&h.push_and_pull(d).unwrap());
    assert_eq!(
        m3.people.iter().map(|p| p.track_id).collect::<Vec<_>>(),
        [3, 4]
    );
}

#[test]
fn max_people_and_zero_people() {
    let (mut h, _) = harness(
        "ikolcrop",
        &[("roi", "10,20,100,200;200,20,80,100"), ("max-people", "1")],
        &rgb_caps(320, 240),
    );
    assert_eq!(
        meta_of(&h.push_and_pull(frame(320, 240, 0, None)).unwrap())
            .people
            .len(),
        1
    );
    let (mut h, _) = harness("ikolcrop", &[], &rgb_caps(320, 240));
    let m = meta_of(&h.push_and_pull(frame(320, 240, 0, None)).unwrap());
    assert!(m.people.is_empty() && m.has_stage("ikolcrop"));
}

#[test]
fn feedback_from_downstream_moves_the_track() {
    let (mut h, _) = harness("ikolcrop", &[("roi", "10,20,100,200")], &rgb_caps(640, 240));
    assert_eq!(
        meta_of(&h.push_and_pull(frame(640, 240, 0, None)).unwrap()).people[0].track_id,
        1
    );
    // ikolbackbone found the person 60 px to the right.
    let moved = bx(70.0, 20.0, 100.0, 200.0);
    assert!(h.push_upstream_event(meta::feedback_event(&[(1, moved)])));
    let m = meta_of(&h.push_and_pull(frame(640, 240, 0, None)).unwrap());
    assert_eq!(m.people.len(), 1);
    assert_eq!((m.people[0].track_id, m.people[0].bbox), (1, moved));
    // With tracking off the roi is used again.
    dut(&mut h, "ikolcrop").set_property("tracking", false);
    assert!(h.push_upstream_event(meta::feedback_event(&[(1, moved)])));
    let m = meta_of(&h.push_and_pull(frame(640, 240, 0, None)).unwrap());
    assert_eq!(m.people[0].bbox, bx(10.0, 20.0, 100.0, 200.0));
}

#[test]
fn boxes_from_upstream_metas_take_precedence() {
    let (mut h, _) = harness("ikolcrop", &[("roi", "10,20,100,200")], &rgb_caps(320, 240));
    // A source's meta with its own track ids (e.g. dataset ground truth).
    let given = FrameMeta {
        stages: vec!["ikol3dpwsrc".into()],
        people: vec![Person::new(42, bx(150.0, 10.0, 60.0, 120.0), 0.8)],
        ..Default::default()
    };
    let m = meta_of(&h.push_and_pull(frame(320, 240, 0, Some(&given))).unwrap());
    assert_eq!(m.stages, ["ikol3dpwsrc", "ikolcrop"]);
    assert_eq!(m.people.len(), 1);
    assert_eq!(
        (m.people[0].track_id, m.people[0].bbox),
        (42, bx(150.0, 10.0, 60.0, 120.0))
    );
    assert!(m.people[0].crop.is_some());
    // Overlapping ground-truth people (IoU 0.8) stay two, with their ground truth.
    let mut a = Person::new(1, bx(100.0, 10.0, 60.0, 120.0), 1.0);
    a.gt_beta = vec![0.5; 10];
    let mut b = Person::new(2, bx(106.0, 10.0, 60.0, 120.0), 1.0);
    b.gt_root = Some([0.0, 0.0, 4.0]);
    let given = FrameMeta {
        stages: vec!["ikol3dpwsrc".into()],
        people: vec![a.clone(), b.clone()],
        ..Default::default()
    };
    let m = meta_of(&h.push_and_pull(frame(320, 240, 0, Some(&given))).unwrap());
    assert_eq!(m.people.len(), 2);
    assert_eq!(
        (m.people[0].gt_beta.clone(), m.people[1].gt_root),
        (a.gt_beta, b.gt_root)
    );
    // A region-of-interest meta.
    let mut buf = frame(320, 240, 0, None);
    gst_video::VideoRegionOfInterestMeta::add(buf.get_mut().unwrap(), "person", (5, 6, 70, 140));
    let m = meta_of(&h.push_and_pull(buf).unwrap());
    assert_eq!(m.people.len(), 1);
    assert_eq!(m.people[0].bbox, bx(5.0, 6.0, 70.0, 140.0));
}

#[test]
fn refuses_caps_other_than_rgb_or_i420_and_bad_properties() {
    init();
    let mut h = gst_check::Harness::new("ikolcrop");
    h.set_src_caps_str("video/x-raw,format=NV12,width=320,height=240,framerate=30/1");
    assert_eq!(
        h.push(gst::Buffer::from_mut_slice(vec![0u8; 320 * 240 * 3 / 2])),
        Err(gst::FlowError::NotNegotiated)
    );
    // An unknown detector is refused when the launch line is parsed (`detector` is an enum).
    let err = gst::parse::launch("fakesrc ! ikolcrop detector=yolo ! fakesink").unwrap_err();
    assert!(err.to_string().contains("detector"), "{err}");
    let (e, bus) = element("ikolcrop", &[("roi", "1,2,3")]);
    assert!(e.set_state(gst::State::Paused).is_err());
    let msg = error_text(&bus).unwrap();
    assert!(
        msg.contains("needs 4 numbers") && msg.contains("ikolcrop"),
        "{msg}"
    );
    e.set_state(gst::State::Null).unwrap();
}

#[test]
fn meta_survives_videoconvert_and_videoscale() {
    init();
    let p = gst::parse::launch(
        "videotestsrc num-buffers=3 ! video/x-raw,format=RGB,width=320,height=240 \
         ! ikolcrop roi=10,20,100,200 ! videoconvert ! video/x-raw,format=I420 ! videoscale \
         ! video/x-raw,width=160,height=120 ! appsink name=s sync=false",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = p
        .by_name("s")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let mut n = 0;
    while let Some(s) = sink.try_pull_sample(gst::ClockTime::from_seconds(10)) {
        let m = FrameMeta::read(s.buffer().unwrap()).unwrap().unwrap();
        assert_eq!(m.people[0].bbox, bx(10.0, 20.0, 100.0, 200.0));
        n += 1;
    }
    p.set_state(gst::State::Null).unwrap();
    assert_eq!(n, 3);
}

/// `roi` is bounded: at most 256 boxes, coordinates within 100000 px (issue 19: 1000 boxes with
/// max-people=0 asked for 6.2 GB; a box of 1e30 became a person).
#[test]
fn roi_is_bounded() {
    init();
    let many = vec!["0,0,10,10"; 300].join(";");
    for (roi, expect) in [
        (many.as_str(), "300 boxes, more than 256"),
        ("0,0,1e30,10", "beyond 100000 px"),
    ] {
        let (e, bus) = element("ikolcrop", &[("roi", roi)]);
        assert!(e.set_state(gst::State::Paused).is_err());
        let msg = error_text(&bus).unwrap();
        assert!(msg.contains(expect) && msg.contains("ikolcrop"), "{msg}");
        e.set_state(gst::State::Null).unwrap();
    }
}

/// pose2sim's demo frame (a man in the middle of a 540 x 960 frame), or None, said, where the
/// BlazePose models the detector needs are missing.
fn pose2sim_frame() -> Option<ikol_render::image::RgbImage> {
    let dir = ikol_detect::blazepose_model::models_dir();
    if !dir
        .join(ikol_detect::blazepose_model::DETECTOR_FILE)
        .is_file()
    {
        eprintln!(
            "SKIPPED: BlazePose models not in {} (make models)",
            dir.display()
        );
        return None;
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../elements/detect/tests/data/pose2sim/frame_000.png");
    Some(ikol_render::image::read_image(&path).unwrap())
}

/// The periodic search while someone is followed runs in the background (`background-search`):
/// the frame that starts it does not wait for it, and the people it finds (the real man of
/// pose2sim's demo frame, whom nobody follows yet) join a later frame as new tracks, with the
/// boxes the same search gives at once with `background-search=false`.
#[test]
fn background_search_adds_new_people_on_a_later_frame() {
    let Some(img) = pose2sim_frame() else {
        return;
    };
    let (w, hgt) = (img.width as usize, img.height as usize);
    let person = || gst::Buffer::from_mut_slice(img.pixels.clone());
    // A followed "person" in the top-left corner (the roi, kept by feedback), away from the man.
    let corner = bx(0.0, 0.0, 60.0, 60.0);
    let new_boxes = |m: &FrameMeta| -> Vec<BBox> {
        let mut b: Vec<BBox> = m
            .people
            .iter()
            .filter(|p| p.track_id != 1)
            .map(|p| p.bbox)
            .collect();
        b.sort_by(|a, b| a.x.total_cmp(&b.x));
        b
    };
    let mut at_once = Vec::new();
    for background in [false, true] {
        let (mut h, _) = harness(
            "ikolcrop",
            &[
                ("detector", "blazepose"),
                ("detect-interval", "2"),
                ("roi", "0,0,60,60"),
                (
                    "background-search",
                    if background { "true" } else { "false" },
                ),
            ],
            &rgb_caps(w, hgt),
        );
        // Frame 1: nobody followed, the detector runs on the (black) frame and finds nobody:
        // the roi is the one person.
        let m = meta_of(&h.push_and_pull(frame(w, hgt, 0, None)).unwrap());
        assert_eq!(m.people.len(), 1);
        assert_eq!(m.people[0].bbox, corner);
        let follow = |h: &mut gst_check::Harness| {
            assert!(h.push_upstream_event(meta::feedback_event(&[(1, corner)])));
        };
        // Frame 2: followed, no search due. Frame 3: the search is due (frames 1, 3, 5, ...).
        follow(&mut h);
        assert_eq!(meta_of(&h.push_and_pull(person()).unwrap()).people.len(), 1);
        follow(&mut h);
        let m = meta_of(&h.push_and_pull(person()).unwrap());
        if !background {
            at_once = new_boxes(&m);
            // The man stands in the middle of the 540 x 960 frame.
            assert!(
                at_once.iter().any(|b| {
                    let [cx, cy] = b.center();
                    (150.0..390.0).contains(&cx) && (250.0..710.0).contains(&cy)
                }),
                "the man joins the frame searched: {at_once:?}"
            );
            continue;
        }
        assert_eq!(
            m.people.len(),
            1,
            "the frame that starts the search does not wait"
        );
        // Later frames: the people join once the search is done.
        let mut joined = None;
        for k in 0..400 {
            std::thread::sleep(std::time::Duration::from_millis(50));
            follow(&mut h);
            let m = meta_of(&h.push_and_pull(person()).unwrap());
            if m.people.len() > 1 {
                joined = Some((k, m));
                break;
            }
        }
        let (k, m) = joined.expect("the background search's people never joined");
        eprintln!(
            "the search's people joined {} frames after it started",
            k + 1
        );
        assert_eq!(
            new_boxes(&m),
            at_once,
            "the same people as the search at once"
        );
        assert_eq!(
            m.people.iter().filter(|p| p.track_id == 1).count(),
            1,
            "the followed person is kept once"
        );
    }
}

/// A flush (a flushing seek) drops a background search started before it: the man the search
/// of the pre-flush frame finds never joins the (black) frames after it, though they follow
/// the same corner person and the search has had ample time to finish.
#[test]
fn a_flush_drops_a_running_background_search() {
    let Some(img) = pose2sim_frame() else {
        return;
    };
    let (w, hgt) = (img.width as usize, img.height as usize);
    let corner = bx(0.0, 0.0, 60.0, 60.0);
    for flush in [false, true] {
        let (mut h, _) = harness(
            "ikolcrop",
            &[
                ("detector", "blazepose"),
                ("detect-interval", "2"),
                ("roi", "0,0,60,60"),
            ],
            &rgb_caps(w, hgt),
        );
        let follow = |h: &mut gst_check::Harness| {
            assert!(h.push_upstream_event(meta::feedback_event(&[(1, corner)])));
        };
        // Frames 1-2 black (nobody but the roi), frame 3 the man: the search starts on it.
        assert_eq!(
            meta_of(&h.push_and_pull(frame(w, hgt, 0, None)).unwrap())
                .people
                .len(),
            1
        );
        follow(&mut h);
        assert_eq!(
            meta_of(&h.push_and_pull(frame(w, hgt, 0, None)).unwrap())
                .people
                .len(),
            1
        );
        follow(&mut h);
        let man = gst::Buffer::from_mut_slice(img.pixels.clone());
        assert_eq!(meta_of(&h.push_and_pull(man).unwrap()).people.len(), 1);
        if flush {
            assert!(h.push_event(gst::event::FlushStart::new()));
            assert!(h.push_event(gst::event::FlushStop::new(true)));
            assert!(
                h.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
                    gst::ClockTime,
                >::new()))
            );
        }
        // Black frames, the corner followed; any search after the flush finds nobody.
        let mut joined = false;
        for _ in 0..60 {
            std::thread::sleep(std::time::Duration::from_millis(50));
            follow(&mut h);
            let m = meta_of(&h.push_and_pull(frame(w, hgt, 0, None)).unwrap());
            joined |= m.people.len() > 1;
        }
        assert_eq!(
            joined, !flush,
            "flush {flush}: did the pre-flush search's man join?"
        );
    }
}

/// The periodic search follows stream time: with `detect-period=100` (ms) and timestamps of a
/// 60 fps source, three frames nobody follows (searched at once, the last at 33 ms), then
/// followed frames: the next search is due 100 ms after the last one, at frame 8, not every
/// `detect-interval=2` frames and not 100 ms after the first; without timestamps the interval
/// counts (frame 4); `detect-interval=0` turns the periodic search off whatever the period. The
/// man standing in the frame joins the frame the search runs on.
#[test]
fn the_periodic_search_follows_stream_time() {
    let Some(img) = pose2sim_frame() else {
        return;
    };
    let (w, hgt) = (img.width as usize, img.height as usize);
    let corner = bx(0.0, 0.0, 60.0, 60.0);
    for (timed, interval, expected) in [
        (true, "2", Some(8)),
        (false, "2", Some(4)),
        (true, "0", None),
    ] {
        let (mut h, _) = harness(
            "ikolcrop",
            &[
                ("detector", "blazepose"),
                ("detect-interval", interval),
                ("detect-period", "100"),
                ("roi", "0,0,60,60"),
                ("background-search", "false"),
            ],
            &rgb_caps(w, hgt),
        );
        let stamp = |mut b: gst::Buffer, k: u64| {
            if timed {
                let pts = gst::ClockTime::from_nseconds(k * 1_000_000_000 / 60);
                b.make_mut().set_pts(pts);
            }
            b
        };
        // Frames 0-2, black: nobody followed, the search runs on each and finds nobody: the
        // roi's person.
        for k in 0..3 {
            let m = meta_of(&h.push_and_pull(stamp(frame(w, hgt, 0, None), k)).unwrap());
            assert_eq!(m.people.len(), 1);
        }
        let mut joined = None;
        for k in 3..12 {
            assert!(h.push_upstream_event(meta::feedback_event(&[(1, corner)])));
            let buf = stamp(gst::Buffer::from_mut_slice(img.pixels.clone()), k);
            if meta_of(&h.push_and_pull(buf).unwrap()).people.len() > 1 {
                joined = Some(k);
                break;
            }
        }
        assert_eq!(
            joined, expected,
            "timestamps: {timed}, detect-interval {interval}"
        );
    }
}

/// `buf` (with `caps`) through `videoconvert` to `format`: the output buffer and its caps.
fn convert(buf: gst::Buffer, caps: &str, format: &str) -> (gst::Buffer, gst::Caps) {
    init();
    let mut h = gst_check::Harness::new_parse(&format!(
        "videoconvert ! capsfilter caps=video/x-raw,format={format}"
    ));
    h.set_src_caps_str(caps);
    let out = h.push_and_pull(buf).unwrap();
    let caps = h.sinkpad().unwrap().current_caps().unwrap();
    (out, caps)
}

/// pose2sim's demo frame (a committed PNG) in I420 (converted by `videoconvert`) and back in
/// RGB (`videoconvert` again): the two frames' buffers and caps.
fn pose2sim_i420_and_rgb() -> ((gst::Buffer, gst::Caps), (gst::Buffer, gst::Caps)) {
    init();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../elements/detect/tests/data/pose2sim/frame_000.png");
    let img = ikol_render::image::read_image(&path).unwrap();
    let (w, hgt) = (img.width as usize, img.height as usize);
    let rgb_in = gst::Buffer::from_mut_slice(img.pixels.clone());
    let (i420, i420_caps) = convert(rgb_in, &rgb_caps(w, hgt), "I420");
    let rgb = convert(i420.clone(), &i420_caps.to_string(), "RGB");
    ((i420, i420_caps), rgb)
}

/// I420 frames, as decoders give them, are read as GStreamer's `videoconvert` converts them:
/// pose2sim's demo frame converted to I420 by `videoconvert`, read by the elements' frame
/// mapping, gives the landmark model's input tensor within a few levels of the one from the same
/// I420 frame converted back to RGB by `videoconvert` (GStreamer 1.22's conversion is itself a
/// few levels darker than BT.709's equations: a grey of 128 comes back as 126). Swapped chroma
/// planes or a wrong stride would cost tens of levels.
#[test]
fn i420_frames_read_as_videoconvert_converts_them() {
    let ((i420, i420_caps), (rgb, rgb_caps_back)) = pose2sim_i420_and_rgb();
    let tensor = |buf: &gst::Buffer, caps: &gst::Caps| -> Vec<f32> {
        let info = gst_video::VideoInfo::from_caps(caps).unwrap();
        let frame =
            gst_video::VideoFrameRef::from_buffer_ref_readable(buf.as_ref(), &info).unwrap();
        let image = gstikol::common::front_end_frame("test", &frame, &info).unwrap();
        let roi = ikol_detect::blazepose::RotatedRect {
            cx: 270.0,
            cy: 480.0,
            w: 500.0,
            h: 500.0,
            rotation: 0.2,
        };
        ikol_detect::blazepose::landmark_input(image, &roi)
            .unwrap()
            .data
    };
    assert!(matches!(
        gst_video::VideoInfo::from_caps(&i420_caps)
            .unwrap()
            .format(),
        gst_video::VideoFormat::I420
    ));
    let (ta, tb) = (tensor(&i420, &i420_caps), tensor(&rgb, &rgb_caps_back));
    for c in 0..3 {
        let (mut signed, mut abs) = (0.0f64, 0.0f64);
        for (x, y) in ta
            .iter()
            .skip(c)
            .step_by(3)
            .zip(tb.iter().skip(c).step_by(3))
        {
            let d = f64::from(x - y) * 255.0;
            signed += d;
            abs += d.abs();
        }
        let n = (ta.len() / 3) as f64;
        let (signed, abs) = (signed / n, abs / n);
        assert!(
            signed.abs() < 5.0 && abs < 6.0,
            "channel {c}: mean difference {signed} levels, mean absolute {abs}"
        );
    }
}

/// ... and `ikolcrop`'s detector and `ikolbackbone`'s landmarks find the man of that frame in
/// the same place from either (boxes within 1.5 %, landmarks within 2 px on average).
#[test]
fn i420_frames_give_what_videoconvert_to_rgb_gives() {
    if pose2sim_frame().is_none() {
        return;
    }
    let ((i420, i420_caps), (rgb, rgb_caps_back)) = pose2sim_i420_and_rgb();
    let run = |buf: gst::Buffer, caps: &gst::Caps| -> FrameMeta {
        let mut h = gst_check::Harness::new_parse(
            "ikolcrop detector=blazepose ! ikolbackbone model=blazepose flip-test=false",
        );
        h.set_src_caps(caps.clone());
        meta_of(&h.push_and_pull(buf).unwrap())
    };
    let a = run(i420, &i420_caps);
    let b = run(rgb, &rgb_caps_back);
    assert!(!a.people.is_empty(), "the man is found in the I420 frame");
    assert_eq!(a.people.len(), b.people.len());
    for (p, q) in a.people.iter().zip(&b.people) {
        let (pb, qb) = (p.bbox, q.bbox);
        for (u, v) in [(pb.x, qb.x), (pb.y, qb.y), (pb.w, qb.w), (pb.h, qb.h)] {
            assert!((u - v).abs() < 0.015 * qb.w, "boxes {pb:?} and {qb:?}");
        }
        assert_eq!(p.landmarks_2d.len(), 33);
        let mean = p
            .landmarks_2d
            .iter()
            .zip(&q.landmarks_2d)
            .map(|(u, v)| f64::from((u[0] - v[0]).hypot(u[1] - v[1])))
            .sum::<f64>()
            / 33.0;
        assert!(mean < 2.0, "landmarks differ by {mean} px on average");
    }
}

/// `ikolbackbone flip-test=alternate` on a still picture (the same frame twice): the first
/// frame's landmarks are the single pass's (`flip-test=false`), so the second frame's region is
/// the same in both runs; there the alternating run's landmarks (the mirrored pass averaged
/// with frame 1's) differ from the single pass's by about what the flip test moves them
/// (1.6 px measured; the mirrored pass alone would be about twice as far), and the track is
/// kept. `AlternatingFlip`'s own test (ikol-detect,
/// `blazepose_parity.rs`) checks the mean exactly; this checks the element's wiring.
#[test]
fn alternating_flip_test_on_a_still_picture() {
    if pose2sim_frame().is_none() {
        return;
    }
    let ((i420, caps), _) = pose2sim_i420_and_rgb();
    let run = |flip: &str| -> Vec<FrameMeta> {
        let mut h = gst_check::Harness::new_parse(&format!(
            "ikolcrop detector=blazepose ! ikolbackbone model=blazepose flip-test={flip}"
        ));
        h.set_src_caps(caps.clone());
        (0..2)
            .map(|_| meta_of(&h.push_and_pull(i420.copy()).unwrap()))
            .collect()
    };
    let (alt, single) = (run("alternate"), run("false"));
    let distance = |a: &FrameMeta, b: &FrameMeta| -> f64 {
        assert!(
            !a.people.is_empty() && !b.people.is_empty(),
            "the man is found"
        );
        let (p, q) = (&a.people[0].landmarks_2d, &b.people[0].landmarks_2d);
        p.iter()
            .zip(q)
            .map(|(u, v)| f64::from((u[0] - v[0]).hypot(u[1] - v[1])))
            .sum::<f64>()
            / 33.0
    };
    assert_eq!(alt[0].people[0].track_id, alt[1].people[0].track_id);
    assert_eq!(distance(&alt[0], &single[0]), 0.0, "frame 1: one pass");
    let moved = distance(&alt[1], &single[1]);
    assert!(
        (0.8..2.4).contains(&moved),
        "frame 2 is {moved} px from one pass: not the pair's mean"
    );
}
