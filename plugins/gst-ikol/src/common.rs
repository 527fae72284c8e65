//! What every ikol element shares: pad templates and reading the frame meta of a buffer.

use gst_video::VideoFormat;
use gst_video::prelude::*;

/// Sink and src "always" templates with `caps`.
pub fn templates(caps: &gst::Caps) -> Vec<gst::PadTemplate> {
    [gst::PadDirection::Src, gst::PadDirection::Sink]
        .into_iter()
        .filter_map(|dir| {
            let name = if dir == gst::PadDirection::Src {
                "src"
            } else {
                "sink"
            };
            gst::PadTemplate::new(name, dir, gst::PadPresence::Always, caps).ok()
        })
        .collect()
}

/// Raw video of any format: the elements that only read and write the meta.
pub fn any_video() -> gst::Caps {
    gst::Caps::builder("video/x-raw").build()
}

/// Raw video in the given packed formats.
pub fn video_formats(formats: &[VideoFormat]) -> gst::Caps {
    gst_video::VideoCapsBuilder::new()
        .format_list(formats.iter().copied())
        .build()
}

/// Parses `"x,y,w,h[;x,y,w,h...]"` into boxes (the `roi` property).
pub fn parse_boxes(s: &str) -> Result<Vec<ikol_types::BBox>, String> {
    use ikol_types::{MAX_BOX_PX, MAX_BOXES};
    let n = s.split(';').filter(|b| !b.trim().is_empty()).count();
    if n > MAX_BOXES {
        return Err(format!("{n} boxes, more than {MAX_BOXES}"));
    }
    s.split(';')
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .map(|b| {
            let v = b
                .split(',')
                .map(|x| x.trim().parse::<f64>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("box `{b}`: {e}"))?;
            let [x, y, w, h] = v[..] else {
                return Err(format!(
                    "box `{b}` needs 4 numbers x,y,w,h, got {}",
                    v.len()
                ));
            };
            let bb = ikol_types::BBox { x, y, w, h };
            if !bb.is_valid() {
                Err(format!("box `{b}` has a non-positive size"))
            } else if [x, y, w, h].iter().any(|v| v.abs() > MAX_BOX_PX) {
                Err(format!(
                    "box `{b}` reaches beyond {MAX_BOX_PX} px (no frame is that large)"
                ))
            } else {
                Ok(bb)
            }
        })
        .collect()
}

/// Locks a mutex of an element, also after another thread panicked while holding it (the data
/// is plain settings or state, still usable).
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The string of a string property value (`None` when unset).
pub fn string_value(value: &gst::glib::Value) -> Option<String> {
    value.get::<Option<String>>().ok().flatten()
}

/// Loads the body model `spec` (`default`, `small` or a file) for `element`, as the error
/// `start()` returns: it names the element, the property and the file's problem.
pub fn body_model(
    element: &str,
    spec: &str,
) -> Result<std::sync::Arc<ikol_body::BodyModel>, gst::ErrorMessage> {
    ikol_body::BodyModel::from_spec(spec).map_err(|e| {
        gst::error_msg!(
            gst::LibraryError::Settings,
            ("{element}: body-model `{spec}`: {e}")
        )
    })
}

/// Poses `model` with rotations and shape as the frame meta stores them (f32 axis-angle, root
/// first; shape padded or cut to the model's count).
pub fn pose_model(
    model: &ikol_body::BodyModel,
    theta: &[[f32; 3]],
    beta: &[f32],
) -> Result<ikol_body::Posed, ikol_body::BodyError> {
    use ikol_types::nalgebra::Vector3;
    let rotations: Vec<_> = theta
        .iter()
        .map(|a| {
            ikol_types::rotation::axis_angle_to_matrix(&Vector3::new(
                f64::from(a[0]),
                f64::from(a[1]),
                f64::from(a[2]),
            ))
        })
        .collect();
    let mut b: Vec<f64> = beta.iter().map(|&x| x.into()).collect();
    b.resize(model.num_betas, 0.0);
    model.forward(&b, &rotations)
}

/// The box around projected points (pixels), its top raised by `top_margin` times its height,
/// clipped to a frame of `frame` (width, height) when known; `None` without points or when
/// nothing of it is inside the frame.
pub fn tight_box(
    points: &[[f64; 2]],
    top_margin: f64,
    frame: Option<(u32, u32)>,
) -> Option<ikol_types::BBox> {
    let (mut x1, mut y1, mut x2, mut y2) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    for p in points
        .iter()
        .filter(|p| p[0].is_finite() && p[1].is_finite())
    {
        x1 = x1.min(p[0]);
        y1 = y1.min(p[1]);
        x2 = x2.max(p[0]);
        y2 = y2.max(p[1]);
    }
    if x1 > x2 {
        return None;
    }
    y1 -= top_margin * (y2 - y1);
    if let Some((w, h)) = frame {
        let (w, h) = (f64::from(w), f64::from(h));
        (x1, y1, x2, y2) = (x1.max(0.0), y1.max(0.0), x2.min(w), y2.min(h));
    }
    if x2 <= x1 || y2 <= y1 {
        return None;
    }
    let b = ikol_types::BBox::from_xyxy(x1, y1, x2, y2);
    b.is_valid().then_some(b)
}

/// The framerate of raw video caps, when it is a positive fraction (`None` for variable rate
/// `0/1` and for caps without one).
pub fn frame_rate(caps: &gst::CapsRef) -> Option<gst::Fraction> {
    caps.structure(0)?
        .get::<gst::Fraction>("framerate")
        .ok()
        .filter(|f| f.numer() > 0 && f.denom() > 0)
}

/// Width and height of raw video caps (`None` for other caps).
pub fn frame_size(caps: &gst::CapsRef) -> Option<(u32, u32)> {
    let s = caps.structure(0)?;
    Some((
        u32::try_from(s.get::<i32>("width").ok()?).ok()?,
        u32::try_from(s.get::<i32>("height").ok()?).ok()?,
    ))
}

/// The formats the front-end elements (`ikolcrop`, `ikolbackbone`) read: packed RGB, and I420
/// as decoders give it (converted only where the networks sample it, see `ikol_detect::frame`).
pub const FRONT_END_FORMATS: [VideoFormat; 2] = [VideoFormat::I420, VideoFormat::Rgb];

/// The YUV <-> RGB matrix of `info`'s colorimetry (its Kr and Kb as GStreamer tabulates them;
/// for a matrix without them GStreamer's default: BT.709 above 576 rows, BT.601 up to it) and
/// range (full only when the caps say 0-255).
pub fn yuv_matrix(info: &gst_video::VideoInfo) -> ikol_types::YuvMatrix {
    let c = info.colorimetry();
    let m = match c.matrix().kr_kb() {
        Ok((kr, kb)) => ikol_types::YuvMatrix {
            kr: kr as f32,
            kb: kb as f32,
            full_range: false,
        },
        Err(_) if info.height() > 576 => ikol_types::YuvMatrix::BT709,
        Err(_) => ikol_types::YuvMatrix::BT601,
    };
    if c.range() == gst_video::VideoColorRange::Range0_255 {
        m.full()
    } else {
        m
    }
}

/// A mapped frame's own row strides, `[plane 0, chroma planes]` (chroma 0 for a packed format):
/// a decoder's pool may pad its rows, so the caps' default strides would be wrong. An I420 frame
/// whose two chroma planes differ in stride is refused (ikol reads them with one).
pub fn frame_strides(frame: &impl VideoFrameExt) -> Result<[usize; 2], String> {
    let at = |i: usize| {
        frame
            .plane_stride()
            .get(i)
            .and_then(|&s| usize::try_from(s).ok())
            .unwrap_or(0)
    };
    if frame.format() == VideoFormat::I420 && at(1) != at(2) {
        return Err(format!(
            "I420 chroma planes with different strides ({} and {})",
            at(1),
            at(2)
        ));
    }
    Ok([at(0), at(1)])
}

/// A mapped RGB or I420 frame as the front end reads it (`element` names the element in the
/// error).
pub fn front_end_frame<'b>(
    element: &str,
    frame: &'b gst_video::VideoFrameRef<&gst::BufferRef>,
    info: &gst_video::VideoInfo,
) -> Result<ikol_detect::Frame<'b>, String> {
    let plane = |i: u32| {
        frame
            .plane_data(i)
            .map_err(|_| format!("{element}: cannot read plane {i} of the video frame"))
    };
    let [stride, uv_stride] = frame_strides(frame).map_err(|e| format!("{element}: {e}"))?;
    let (width, height) = (info.width() as usize, info.height() as usize);
    match info.format() {
        VideoFormat::Rgb => Ok(ikol_detect::Frame::Rgb(ikol_detect::RgbImage {
            data: plane(0)?,
            width,
            height,
            stride,
        })),
        VideoFormat::I420 => {
            let site = info.chroma_site();
            Ok(ikol_detect::Frame::I420(ikol_detect::I420Image {
                y: plane(0)?,
                u: plane(1)?,
                v: plane(2)?,
                y_stride: stride,
                uv_stride,
                width,
                height,
                x0: 0,
                y0: 0,
                colour: yuv_matrix(info),
                h_cosited: site.contains(gst_video::VideoChromaSite::H_COSITED),
                v_cosited: site.contains(gst_video::VideoChromaSite::V_COSITED),
            }))
        }
        f => Err(format!("{element}: video format {f:?} is not RGB or I420")),
    }
}
