//! The `ikol` command end to end: real files in, real files out, clear errors.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use ikol_body::BodyModel;
use ikol_body::nalgebra::{Matrix3, Vector3};
use ikol_types::rotation::axis_angle_to_matrix;

fn ikol(args: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_ikol"))
        .args(args)
        .output()
        .unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ikol-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn mesh_writes_the_posed_model() {
    let out = tmp("m.obj");
    let png = tmp("m.png");
    let (ok, msg) = ikol(&[
        "mesh",
        "--body-model",
        "small",
        "--output",
        s(&out),
        "--render",
        s(&png),
    ]);
    assert!(ok, "{msg}");
    let obj = std::fs::read_to_string(&out).unwrap();
    let m = BodyModel::embedded_small().unwrap();
    assert_eq!(
        obj.lines().filter(|l| l.starts_with("v ")).count(),
        m.num_vertices()
    );
    assert_eq!(
        obj.lines().filter(|l| l.starts_with("f ")).count(),
        m.faces.len()
    );
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));

    // Pose parameters: a 90 degree left elbow bend moves the left wrist as FK says.
    let params = tmp("p.json");
    let mut theta = vec![[0.0; 3]; 24];
    theta[18] = [0.0, std::f64::consts::FRAC_PI_2, 0.0];
    std::fs::write(
        &params,
        serde_json::json!({ "theta": theta, "translation": [0.0, 0.0, 2.0] }).to_string(),
    )
    .unwrap();
    let (ok, msg) = ikol(&[
        "mesh",
        "--body-model",
        "small",
        "--params",
        s(&params),
        "--output",
        s(&out),
    ]);
    assert!(ok, "{msg}");
    let mut rots = vec![Matrix3::identity(); 24];
    rots[18] = axis_angle_to_matrix(&Vector3::new(0.0, std::f64::consts::FRAC_PI_2, 0.0));
    let expect = m.forward(&[], &rots).unwrap();
    let obj = std::fs::read_to_string(&out).unwrap();
    let v0: Vec<f64> = obj.lines().find(|l| l.starts_with("v ")).unwrap()[2..]
        .split(' ')
        .map(|x| x.parse().unwrap())
        .collect();
    assert!(
        (v0[2] - (f64::from(expect.vertices[0][2]) + 2.0)).abs() < 1e-5,
        "translation applied"
    );
}

#[test]
fn mesh_and_inspect_reject_bad_input() {
    let bad = tmp("bad.json");
    std::fs::write(&bad, r#"{"theta": [[0,0,0]]}"#).unwrap();
    let (ok, msg) = ikol(&[
        "mesh",
        "--body-model",
        "small",
        "--params",
        s(&bad),
        "--output",
        s(&tmp("x.obj")),
    ]);
    assert!(
        !ok && msg.contains("1 rotations, expected 24") && msg.contains("bad.json"),
        "{msg}"
    );
    std::fs::write(&bad, r#"{"thetta": []}"#).unwrap();
    let (ok, msg) = ikol(&["mesh", "--params", s(&bad), "--output", s(&tmp("x.obj"))]);
    assert!(!ok && msg.contains("unknown field"), "{msg}");
    let (ok, msg) = ikol(&["inspect-model", "/nonexistent/model.pkl"]);
    assert!(!ok && msg.contains("/nonexistent/model.pkl"), "{msg}");
    let (ok, msg) = ikol(&[
        "mesh",
        "--body-model",
        "small",
        "--output",
        s(&tmp("x.stl")),
    ]);
    assert!(!ok && msg.contains(".obj or .ply"), "{msg}");
}

#[test]
fn inspect_reports_the_default_model() {
    let (ok, msg) = ikol(&["inspect-model", "default"]);
    assert!(ok, "{msg}");
    assert!(
        msg.contains("vertices:        12272") && msg.contains("left_elbow") && msg.contains("CC0"),
        "{msg}"
    );
}

/// Joints of the small model at a known pose, root-relative: the targets `ikol solve` must explain.
fn targets(beta: &[f64]) -> (Vec<Matrix3<f64>>, Vec<[f64; 3]>) {
    let m = BodyModel::embedded_small().unwrap();
    let mut rots = vec![Matrix3::identity(); 24];
    for (j, aa) in [
        (0, [0.2, 0.5, 0.1]),
        (1, [-0.5, 0.0, 0.1]),
        (4, [0.8, 0.0, 0.0]),
        (16, [0.0, 0.0, -0.6]),
        (18, [0.0, -1.0, 0.0]),
        (3, [0.1, 0.0, 0.0]),
    ] {
        rots[j] = axis_angle_to_matrix(&Vector3::from(aa));
    }
    let p = m.forward(beta, &rots).unwrap();
    let root = p.joints[0];
    (rots, p.joints.iter().map(|j| (j - root).into()).collect())
}

#[test]
fn solve_recovers_a_known_pose() {
    let beta = [0.5, -0.3];
    let (_, joints) = targets(&beta);
    let input = tmp("solve-in.json");
    std::fs::write(
        &input,
        serde_json::json!({ "people": [{ "joints": joints, "beta": beta }] }).to_string(),
    )
    .unwrap();
    // Zero-init IKOL with the fixed damping 0.1 converges linearly (slowest on distal joints):
    // after 100 iterations it is within a tenth of a millimetre, the others are exact.
    for (args, tol_mm) in [
        (vec!["--method", "hybrik"], 1e-3),
        (vec!["--method", "ikol", "--init", "analytic"], 1e-3),
        (vec!["--method", "ikol", "--iterations", "100"], 0.1),
    ] {
        let out = tmp("solve-out.json");
        let mut a = vec![
            "solve",
            "--input",
            s(&input),
            "--output",
            s(&out),
            "--body-model",
            "small",
        ];
        a.extend(args.iter());
        let (ok, msg) = ikol(&a);
        assert!(ok, "{args:?}: {msg}");
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        let p = &v["people"][0];
        let mm = p["mean_residual_mm"].as_f64().unwrap();
        assert!(mm < tol_mm, "{args:?}: mean residual {mm} mm");
        // Independent check: pose the body with the returned theta; joints match the targets.
        let theta: Vec<[f64; 3]> = serde_json::from_value(p["theta"].clone()).unwrap();
        let rots: Vec<Matrix3<f64>> = theta
            .iter()
            .map(|a| axis_angle_to_matrix(&Vector3::from(*a)))
            .collect();
        let posed = BodyModel::embedded_small()
            .unwrap()
            .forward(&beta, &rots)
            .unwrap();
        for (q, t) in posed.joints.iter().zip(&joints) {
            assert!(
                (q - posed.joints[0] - Vector3::from(*t)).norm() < 1e-3 * tol_mm * 20.0,
                "{args:?}"
            );
        }
    }
}

#[test]
fn solve_rejects_bad_input() {
    let input = tmp("solve-bad.json");
    std::fs::write(
        &input,
        serde_json::json!({ "joints": vec![[0.0; 3]; 23] }).to_string(),
    )
    .unwrap();
    let (ok, msg) = ikol(&[
        "solve",
        "--input",
        s(&input),
        "--output",
        s(&tmp("o.json")),
        "--body-model",
        "small",
    ]);
    assert!(
        !ok && msg.contains("23") && msg.contains("solve-bad.json"),
        "{msg}"
    );
    let (_, joints) = targets(&[]);
    let mut joints = joints;
    joints[5][1] = f64::NAN;
    // JSON has no NaN: serde_json writes null, which must be refused as not a number.
    std::fs::write(&input, serde_json::json!({ "joints": joints }).to_string()).unwrap();
    let (ok, msg) = ikol(&["solve", "--input", s(&input), "--output", s(&tmp("o.json"))]);
    assert!(!ok && msg.contains("solve-bad.json"), "{msg}");
    let (ok, msg) = ikol(&[
        "solve",
        "--input",
        s(&input),
        "--output",
        s(&tmp("o.json")),
        "--method",
        "nope",
    ]);
    assert!(!ok && msg.contains("unknown method"), "{msg}");
    let (ok, msg) = ikol(&[
        "solve",
        "--input",
        s(&input),
        "--output",
        s(&tmp("o.json")),
        "--method",
        "hybrik",
        "--iterations",
        "3",
    ]);
    assert!(!ok && msg.contains("ikol only"), "{msg}");
}

#[test]
fn solve_fit_places_the_body_on_its_keypoints() {
    // A known pose 3 m in front of the camera; keypoints by an independent pinhole projection.
    let beta = [0.5, -0.3];
    let (_, joints) = targets(&beta);
    let (f, cx, cy, t) = (1000.0, 320.0, 240.0, [0.1, -0.2, 3.0]);
    let kp: Vec<[f64; 2]> = joints
        .iter()
        .map(|j| {
            let (x, y, z) = (j[0] + t[0], j[1] + t[1], j[2] + t[2]);
            [f * x / z + cx, f * y / z + cy]
        })
        .collect();
    let k = serde_json::json!({"fx": f, "fy": f, "cx": cx, "cy": cy});
    let input = tmp("fit-in.json");
    std::fs::write(
        &input,
        serde_json::json!({ "people": [{ "joints": joints, "beta": beta,
            "keypoints_2d": kp, "intrinsics": k }] })
        .to_string(),
    )
    .unwrap();
    let out = tmp("fit-out.json");
    let args = [
        "solve",
        "--input",
        s(&input),
        "--output",
        s(&out),
        "--body-model",
        "small",
        "--method",
        "fit",
    ];
    let (ok, msg) = ikol(&args);
    assert!(ok, "{msg}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let p = &v["people"][0];
    assert_eq!(v["method"], "fit");
    let tr: [f64; 3] = serde_json::from_value(p["translation"].clone()).unwrap();
    for c in 0..3 {
        assert!((tr[c] - t[c]).abs() < 0.01, "translation {tr:?} vs {t:?}");
    }
    assert!(p["mean_error_2d_px"].as_f64().unwrap() < 1.0, "{p}");
    assert!(p["mean_residual_mm"].as_f64().unwrap() < 5.0, "{p}");
    // Without keypoints, or with none visible: a clear error, non-zero exit.
    for (person, says) in [
        (
            serde_json::json!({ "joints": joints }),
            "needs `keypoints_2d` and `intrinsics`",
        ),
        (
            serde_json::json!({ "joints": joints, "keypoints_2d": kp, "intrinsics": k,
                "confidence": vec![0.0; 24] }),
            "no camera translation",
        ),
    ] {
        std::fs::write(
            &input,
            serde_json::json!({ "people": [person] }).to_string(),
        )
        .unwrap();
        let (ok, msg) = ikol(&args);
        assert!(!ok && msg.contains(says), "{msg}");
    }
}

#[test]
fn run_names_the_valid_values_of_a_mistyped_enum() {
    let file = tmp("typo.pipeline");
    std::fs::write(
        &file,
        "videotestsrc num-buffers=1 ! video/x-raw,format=RGB ! ikolcrop detector=blazpose \
         ! fakesink\n",
    )
    .unwrap();
    let (ok, msg) = ikol(&["run", s(&file)]);
    assert!(!ok, "{msg}");
    assert!(
        msg.contains("detector") && msg.contains("valid values: none, blazepose"),
        "{msg}"
    );
}

/// Levenberg-Marquardt with a tolerance converges from the paper's zero start where the fixed
/// damping does not in 5 iterations; hybrik-2021 solves exact targets; flags of other methods
/// and out-of-range values are refused (issue 19).
#[test]
fn solve_lm_tolerance_2021_and_bounds() {
    let beta = [0.5, -0.3];
    let (_, joints) = targets(&beta);
    let input = tmp("solve-lm.json");
    std::fs::write(
        &input,
        serde_json::json!({ "people": [{ "joints": joints, "beta": beta }] }).to_string(),
    )
    .unwrap();
    let solve = |extra: &[&str]| {
        let out = tmp("solve-lm-out.json");
        let mut a = vec!["solve", "--input", s(&input), "--output", s(&out)];
        a.extend_from_slice(&["--body-model", "small"]);
        a.extend_from_slice(extra);
        let (ok, msg) = ikol(&a);
        let v = ok.then(|| {
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
            (
                v["people"][0]["mean_residual_mm"].as_f64().unwrap(),
                v["people"][0]["iterations"].as_u64().unwrap(),
                v["method"].as_str().unwrap().to_owned(),
            )
        });
        (v, msg)
    };
    let (fixed, msg) = solve(&[]);
    let (fixed_mm, _, _) = fixed.unwrap_or_else(|| panic!("{msg}"));
    let (lm, msg) = solve(&["--lm", "--iterations", "200", "--tolerance", "1e-10"]);
    let (lm_mm, lm_it, _) = lm.unwrap_or_else(|| panic!("{msg}"));
    assert!(
        fixed_mm > 1.0,
        "5 fixed-damping iterations from zero: {fixed_mm} mm"
    );
    assert!(
        lm_mm < 1e-3 && lm_it < 200,
        "LM: {lm_mm} mm after {lm_it} iterations"
    );
    let (h, msg) = solve(&["--method", "hybrik-2021"]);
    let (h_mm, _, name) = h.unwrap_or_else(|| panic!("{msg}"));
    assert!(h_mm < 1e-3 && name == "hybrik-2021", "{h_mm} {name}");
    for (extra, expect) in [
        (
            &["--method", "hybrik", "--init", "analytic"][..],
            "--init applies to --method ikol only",
        ),
        (
            &["--method", "hybrik-2021", "--lm"][..],
            "--lm applies to --method ikol only",
        ),
        (&["--iterations", "1000000000"][..], "must be 1 to 10000"),
        (&["--tolerance=-1"][..], "--tolerance -1"),
        (&["--damping", "inf"][..], "--damping inf"),
    ] {
        let (v, msg) = solve(extra);
        assert!(v.is_none() && msg.contains(expect), "{extra:?}: {msg}");
    }
    // Values no body has: a beta of 1e308, joints 1e300 m away.
    for (person, expect) in [
        (
            serde_json::json!({ "joints": joints, "beta": [1e308] }),
            "beta[0] = 100000000",
        ),
        (
            serde_json::json!({ "joints": vec![[1e300, 0.0, 0.0]; 24] }),
            "farther than 100 m",
        ),
    ] {
        std::fs::write(&input, person.to_string()).unwrap();
        let (v, msg) = solve(&[]);
        assert!(
            v.is_none() && msg.contains(expect) && msg.contains("person 0"),
            "{msg}"
        );
    }
}

/// A closed pipe ends a one-shot command as Unix tools end (SIGPIPE), never with a panic.
#[test]
fn closed_pipe_is_quiet() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ikol"))
        .args(["inspect-model", "default"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("name:"), "{line}");
    // The reader is gone (as after `| head -1`).
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        out.status.success() || out.status.signal() == Some(13),
        "{:?}: {err}",
        out.status
    );
}

/// `--stats` measures what each element spends: an `identity sleep-time=20000` costs 20 ms per
/// buffer (its own sleep), the queue's fill is reported.
#[test]
fn run_stats_times_each_element() {
    let file = tmp("stats.pipeline");
    std::fs::write(
        &file,
        "videotestsrc num-buffers=10 ! video/x-raw,format=RGB,width=64,height=48 \
         ! identity name=slow sleep-time=20000 ! queue ! fakesink\n",
    )
    .unwrap();
    let (ok, msg) = ikol(&["run", s(&file), "--stats"]);
    assert!(ok, "{msg}");
    let row = msg
        .lines()
        .find(|l| l.starts_with("slow "))
        .unwrap_or_else(|| panic!("no row for `slow`:\n{msg}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[1], "10", "{row}");
    let mean: f64 = cols[2].parse().unwrap();
    assert!((19.5..40.0).contains(&mean), "{row}");
    assert!(
        msg.contains("queue0") && msg.contains("fill: mean"),
        "{msg}"
    );
}

#[test]
fn run_loop_plays_a_file_n_times_and_refuses_muxers_and_live_input() {
    // A 12-frame clip, then a pipeline that decodes it into fakesink, played 3 times.
    let clip = tmp("loop.mkv");
    let made = Command::new("gst-launch-1.0")
        .args(["-q", "videotestsrc", "num-buffers=12", "!"])
        .args(["video/x-raw,width=64,height=48,framerate=25/1", "!"])
        .args(["x264enc", "speed-preset=ultrafast", "!", "matroskamux", "!"])
        .args(["filesink", &format!("location={}", s(&clip))])
        .status()
        .unwrap();
    assert!(made.success());
    let file = tmp("loop.pipeline");
    std::fs::write(
        &file,
        "filesrc location=${INPUT} ! decodebin ! videoconvert ! fakesink name=out\n",
    )
    .unwrap();
    let input = format!("INPUT={}", s(&clip));
    let frames = |msg: &str| -> u64 {
        msg.lines()
            .find_map(|l| l.strip_prefix("frames:"))
            .unwrap_or_else(|| panic!("no frame count:\n{msg}"))
            .trim()
            .parse()
            .unwrap()
    };
    let (ok, msg) = ikol(&["run", s(&file), &input]);
    assert!(ok, "{msg}");
    assert_eq!(frames(&msg), 12, "{msg}");
    let (ok, msg) = ikol(&["run", s(&file), &input, "--loop", "3"]);
    assert!(ok, "{msg}");
    assert_eq!(frames(&msg), 36, "{msg}");
    assert!(!msg.contains("CRITICAL"), "{msg}");
    // A container muxer would write a broken file: refused, naming it.
    let muxed = tmp("loop-mux.pipeline");
    std::fs::write(
        &muxed,
        "filesrc location=${INPUT} ! matroskademux ! matroskamux ! fakesink\n",
    )
    .unwrap();
    let (ok, msg) = ikol(&["run", s(&muxed), &input, "--loop", "2"]);
    assert!(!ok);
    assert!(
        msg.contains("matroskamux0 cannot take a looped stream"),
        "{msg}"
    );
    let live = tmp("loop-live.pipeline");
    std::fs::write(
        &live,
        "videotestsrc is-live=true num-buffers=5 ! fakesink\n",
    )
    .unwrap();
    let (ok, msg) = ikol(&["run", s(&live), "--loop", "2"]);
    assert!(!ok);
    assert!(msg.contains("live input cannot be looped"), "{msg}");
}
