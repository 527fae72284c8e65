//! Every `pipelines/*.pipeline` file runs to end-of-stream through `ikol run` on short generated
//! inputs, with the tiny checkpoint; the RTSP one against a real RTSP server on 127.0.0.1
//! (including the server dropping the connection mid-stream, with and without `--reconnect`).

#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gst_rtsp_server::prelude::*;
use ikol_types::FrameResult;

/// A 200x200 box in the middle of the 320x240 test frames.
const ROI: &str = "60,20,200,200";

fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| gst::init().unwrap());
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn checkpoint() -> String {
    root()
        .join("../elements/backbone/tests/data/ikol24_r34w2.pth")
        .to_str()
        .unwrap()
        .to_owned()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ikol-pipelines-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

/// Output of a finished `ikol` process.
#[derive(Debug)]
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    fn all(&self) -> String {
        format!("--- stdout\n{}--- stderr\n{}", self.stdout, self.stderr)
    }

    /// A number from the summary, e.g. `frames`.
    fn summary(&self, key: &str) -> Option<u64> {
        self.stdout.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key).then(|| v.trim().parse().ok())?
        })
    }
}

/// Starts `ikol` with `args`; returns the child (stdout and stderr piped).
fn spawn(args: &[String]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_ikol"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for the child at most `limit`, killing it after that (a failed test, not a hang).
fn finish(mut child: std::process::Child, limit: Duration) -> Run {
    // Drain the pipes in threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let to = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let te = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let run = Run {
        ok: status.is_some_and(|s| s.success()),
        stdout: to.join().unwrap(),
        stderr: te.join().unwrap(),
    };
    assert!(
        status.is_some(),
        "ikol did not finish within {limit:?}\n{}",
        run.all()
    );
    run
}

fn ikol(args: &[String]) -> Run {
    finish(spawn(args), Duration::from_secs(120))
}

fn run_args(file: &str, vars: &[(&str, String)], extra: &[&str]) -> Vec<String> {
    let mut a = vec!["run".to_owned(), s(&root().join(file))];
    a.extend(vars.iter().map(|(k, v)| format!("{k}={v}")));
    a.extend(extra.iter().map(|x| (*x).to_owned()));
    a
}

/// A 320x240 H.264 MP4 of `frames` frames of a moving ball, in the test folder.
fn ball_clip(name: &str, frames: u64) -> PathBuf {
    let mp4 = tmp(name);
    gst_run(
        &format!(
            "videotestsrc num-buffers={frames} pattern=ball \
             ! video/x-raw,width=320,height=240,framerate=25/1 \
             ! x264enc speed-preset=ultrafast ! mp4mux ! filesink location={}",
            s(&mp4)
        ),
        None,
    );
    mp4
}

/// Runs a gst-launch description in this process to end-of-stream; returns the number of
/// buffers that reached the element named `count` (its sink pad), if given.
fn gst_run(description: &str, count: Option<&str>) -> u64 {
    init();
    let p = gst::parse::launch(description)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let n = Arc::new(AtomicU64::new(0));
    if let Some(name) = count {
        let pad = p.by_name(name).unwrap().static_pad("sink").unwrap();
        let n = n.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            n.fetch_add(1, Ordering::SeqCst);
            gst::PadProbeReturn::Ok
        });
    }
    p.set_state(gst::State::Playing).unwrap();
    let msg = p
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(60),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .unwrap();
    p.set_state(gst::State::Null).unwrap();
    assert!(
        matches!(msg.view(), gst::MessageView::Eos(_)),
        "{description}: {msg:?}"
    );
    n.load(Ordering::SeqCst)
}

/// Decodes a video file back and counts its frames.
fn count_frames(path: &Path) -> u64 {
    gst_run(
        &format!(
            "filesrc location={} ! decodebin ! videoconvert ! fakesink name=count",
            s(path)
        ),
        Some("count"),
    )
}

/// Reads a JSON lines file; every line must be a `FrameResult`.
fn json_lines(path: &Path) -> Vec<FrameResult> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str::<FrameResult>(l)
                .unwrap_or_else(|e| panic!("{}: bad line {l:?}: {e}", path.display()))
        })
        .collect()
}

fn pipeline_files() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".pipeline"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_file_documents_its_variables() {
    let files = pipeline_files();
    assert!(files.len() >= 3, "{files:?}");
    for f in &files {
        let r = ikol(&["run".into(), "--list-vars".into(), s(&root().join(f))]);
        assert!(r.ok, "{f}: {}", r.all());
        let text = std::fs::read_to_string(root().join(f)).unwrap();
        assert!(text.starts_with('#'), "{f}: no header");
        assert!(
            text.contains("# Example"),
            "{f}: no example command in the header"
        );
        // Every variable line of the listing carries a meaning from the header.
        for line in r.stdout.lines().skip_while(|l| *l != "variables:").skip(1) {
            if !line.starts_with("  ") {
                break;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            assert!(words.len() > 3, "{f}: undocumented variable: {line:?}");
        }
    }
}

/// Each file with the variables and inputs for a short run. A new file must be added here.
#[test]
fn every_pipeline_runs_to_eos() {
    let frames = 10u64;
    let mp4 = ball_clip("in.mp4", frames);
    let png_dir = tmp("frames");
    std::fs::create_dir_all(&png_dir).unwrap();
    gst_run(
        &format!(
            "videotestsrc num-buffers=6 ! video/x-raw,width=320,height=240 ! pngenc \
             ! multifilesink location={}/%05d.png",
            s(&png_dir)
        ),
        None,
    );

    for file in pipeline_files() {
        let json = tmp(&format!("{file}.jsonl"));
        match file.as_str() {
            "video-to-overlay.pipeline" => {
                let out = tmp("overlay.mp4");
                let r = ikol(&run_args(
                    &file,
                    &[
                        ("INPUT", s(&mp4)),
                        ("OUTPUT", s(&out)),
                        ("JSON", s(&json)),
                        ("CHECKPOINT", checkpoint()),
                        ("MODEL", "heatmap".into()),
                        ("DETECTOR", "none".into()),
                        ("METHOD", "ikol".into()),
                        ("ROI", ROI.into()),
                        ("BODY_MODEL", "small".into()),
                    ],
                    &[],
                ));
                assert!(r.ok, "{file}: {}", r.all());
                assert_eq!(r.summary("frames"), Some(frames), "{}", r.all());
                assert_eq!(r.summary("frames with people"), Some(frames), "{}", r.all());
                // (How many tracks depends on the tiny random network's joints: at least one.)
                assert!(r.summary("distinct track ids") >= Some(1), "{}", r.all());
                let lines = json_lines(&json);
                assert_eq!(lines.len() as u64, frames);
                for (i, f) in lines.iter().enumerate() {
                    assert_eq!(f.frame, i as u64);
                    assert_eq!(f.people.len(), 1);
                    let p = &f.people[0];
                    assert_eq!((p.joints_3d.len(), p.theta.len()), (24, 24));
                    assert!(p.translation.is_some());
                }
                assert!(std::fs::metadata(&out).unwrap().len() > 0);
                assert_eq!(count_frames(&out), frames);
            }
            "image-sequence.pipeline" => {
                let r = ikol(&run_args(
                    &file,
                    &[
                        ("PATTERN", format!("{}/%05d.png", s(&png_dir))),
                        ("JSON", s(&json)),
                        ("CHECKPOINT", checkpoint()),
                        ("ROI", format!("{ROI};0,0,60,120")),
                        ("MODEL", "heatmap".into()),
                        ("DETECTOR", "none".into()),
                        ("METHOD", "ikol".into()),
                        ("BODY_MODEL", "small".into()),
                    ],
                    &[],
                ));
                assert!(r.ok, "{file}: {}", r.all());
                assert_eq!(r.summary("frames"), Some(6), "{}", r.all());
                assert_eq!(r.summary("people found"), Some(12), "{}", r.all());
                let lines = json_lines(&json);
                assert_eq!(lines.len(), 6);
                assert!(lines.iter().all(|f| f.people.len() == 2));
            }
            // Needs a server: `rtsp_camera_records_until_max_seconds` and the drop tests.
            "rtsp-camera.pipeline" => {
                let r = ikol(&run_args(
                    &file,
                    &[
                        ("URL", "rtsp://127.0.0.1:1/x".into()),
                        ("OUTPUT", "o.mkv".into()),
                        ("JSON", "o.jsonl".into()),
                        ("CHECKPOINT", checkpoint()),
                    ],
                    &["--dry-run"],
                ));
                assert!(r.ok && r.stdout.contains("rtspsrc"), "{}", r.all());
            }
            // The 3DPW fixture tree: 2 test sequences, 9 frames, 12 people with ground truth.
            "3dpw-eval.pipeline" | "3dpw-oracle.pipeline" => {
                let out = tmp(&format!("{file}.out"));
                let mut vars = vec![
                    ("ROOT", s(&root().join("../tests/data/3dpw"))),
                    ("OUT", s(&out)),
                ];
                if file == "3dpw-eval.pipeline" {
                    vars.push(("CHECKPOINT", checkpoint()));
                }
                let r = ikol(&run_args(&file, &vars, &[]));
                assert!(r.ok, "{file}: {}", r.all());
                assert_eq!(r.summary("frames"), Some(9), "{}", r.all());
                assert_eq!(r.summary("people found"), Some(12), "{}", r.all());
                let v: serde_json::Value = serde_json::from_str(
                    &std::fs::read_to_string(out.join("summary.json")).unwrap(),
                )
                .unwrap();
                assert_eq!(v["all"]["samples"].as_u64(), Some(12), "{file}: {v}");
            }
            other => panic!("{other}: add a case for it to every_pipeline_runs_to_eos"),
        }
    }
}

#[test]
fn runner_errors_are_clear() {
    // Missing and unknown variables.
    let r = ikol(&run_args(
        "video-to-overlay.pipeline",
        &[("NOPE", "1".into())],
        &[],
    ));
    assert!(!r.ok, "{}", r.all());
    assert!(
        r.stderr.contains("missing variable(s)")
            && r.stderr.contains("INPUT")
            && r.stderr.contains("unknown variable(s): NOPE"),
        "{}",
        r.all()
    );
    // A parse error names the file and says what GStreamer said.
    let bad = tmp("bad.pipeline");
    std::fs::write(&bad, "# bad\nvideotestsrc ! no-such-element ! fakesink\n").unwrap();
    let r = ikol(&["run".into(), s(&bad)]);
    assert!(!r.ok, "{}", r.all());
    assert!(
        r.stderr.contains("bad.pipeline") && r.stderr.contains("no-such-element"),
        "{}",
        r.all()
    );
    // A runtime error gives GStreamer's text, the element path and the debug info.
    let r = ikol(&run_args(
        "video-to-overlay.pipeline",
        &[
            ("INPUT", "/nonexistent/in.mp4".into()),
            ("OUTPUT", s(&tmp("x.mp4"))),
            ("JSON", s(&tmp("x.jsonl"))),
            ("CHECKPOINT", checkpoint()),
        ],
        &[],
    ));
    assert!(!r.ok, "{}", r.all());
    assert!(
        r.stderr.contains("Resource not found")
            && r.stderr.contains("GstFileSrc:filesrc0")
            && r.stderr.contains("/nonexistent/in.mp4"),
        "{}",
        r.all()
    );
    // A bad checkpoint: the element's error names the file.
    let junk = tmp("junk.pth");
    std::fs::write(&junk, b"not a checkpoint").unwrap();
    let mp4 = tmp("err.mp4");
    gst_run(
        &format!(
            "videotestsrc num-buffers=2 ! video/x-raw,width=320,height=240 ! x264enc \
             ! mp4mux ! filesink location={}",
            s(&mp4)
        ),
        None,
    );
    let r = ikol(&run_args(
        "video-to-overlay.pipeline",
        &[
            ("INPUT", s(&mp4)),
            ("OUTPUT", s(&tmp("y.mp4"))),
            ("JSON", s(&tmp("y.jsonl"))),
            ("CHECKPOINT", s(&junk)),
            ("MODEL", "heatmap".into()),
        ],
        &[],
    ));
    assert!(!r.ok && r.stderr.contains("junk.pth"), "{}", r.all());
    // --set: an unknown element, an unknown property and a bad value are named.
    let vars = [
        ("INPUT", s(&mp4)),
        ("OUTPUT", s(&tmp("z.mp4"))),
        ("JSON", s(&tmp("z.jsonl"))),
    ];
    for (set, says) in [
        ("nosuch.fit-sigma-2d=3", "no element `nosuch`"),
        ("ikolsolver.nosuch=3", "has no property `nosuch`"),
        (
            "ikolsolver.fit-sigma-2d=abc",
            "cannot take the value \"abc\"",
        ),
        ("ikolsolver", "expected ELEMENT.PROPERTY=VALUE"),
        ("ikolsolver.fit-iterations=0", "out of the property's range"),
        ("ikolsolver.fit-sigma-2d=0", "out of the property's range"),
        ("filesink.stats=s", "cannot be set"),
    ] {
        let r = ikol(&run_args(
            "video-to-overlay.pipeline",
            &vars,
            &["--set", set],
        ));
        assert!(!r.ok && r.stderr.contains(says), "{set}: {}", r.all());
    }
}

/// The fit on the heatmap network's joints (the BlazePose case runs in `make demo` and the
/// chain test): every frame passes, a person either gets a finite body or none, and `--set`
/// reaches the solver.
#[test]
fn fit_runs_on_network_joints() {
    let frames = 6u64;
    let mp4 = ball_clip("fit-in.mp4", frames);
    let json = tmp("fit.jsonl");
    let r = ikol(&run_args(
        "video-to-overlay.pipeline",
        &[
            ("INPUT", s(&mp4)),
            ("OUTPUT", s(&tmp("fit.mp4"))),
            ("JSON", s(&json)),
            ("CHECKPOINT", checkpoint()),
            ("MODEL", "heatmap".into()),
            ("DETECTOR", "none".into()),
            ("ROI", ROI.into()),
            ("BODY_MODEL", "small".into()),
        ],
        &["--set", "ikolsolver.fit-iterations=3"],
    ));
    assert!(r.ok, "{}", r.all());
    assert_eq!(r.summary("frames"), Some(frames), "{}", r.all());
    for f in json_lines(&json) {
        for p in &f.people {
            let finite = p.joints_3d.iter().flatten().chain(p.theta.iter().flatten());
            assert!(finite.clone().all(|x| x.is_finite()));
            assert!(p.theta.is_empty() || (p.theta.len() == 24 && p.joints_3d.len() == 24));
        }
    }
}

#[test]
fn max_seconds_ends_a_live_stream_cleanly() {
    let file = tmp("live.pipeline");
    let (mkv, json) = (tmp("live.mkv"), tmp("live.jsonl"));
    std::fs::write(
        &file,
        "# live test\n\
         videotestsrc is-live=true ! video/x-raw,format=RGB,width=160,height=120,framerate=20/1\n\
         ! ikolcrop ! ikolexport location=${JSON} ! videoconvert ! video/x-raw,format=I420\n\
         ! x264enc tune=zerolatency speed-preset=ultrafast ! matroskamux ! filesink location=${OUT}\n",
    )
    .unwrap();
    let r = ikol(&[
        "run".into(),
        s(&file),
        format!("OUT={}", s(&mkv)),
        format!("JSON={}", s(&json)),
        "--max-seconds".into(),
        "1.5".into(),
    ]);
    assert!(r.ok, "{}", r.all());
    assert!(
        r.stdout.contains("counted at:         ikolexport0:src"),
        "{}",
        r.all()
    );
    let frames = r.summary("frames").unwrap();
    assert!((10..=45).contains(&frames), "{}", r.all());
    assert_eq!(json_lines(&json).len() as u64, frames);
    // EOS reached the muxer: the file is complete and decodes to the frames counted.
    assert_eq!(count_frames(&mkv), frames);
}

// ---------------------------------------------------------------------------------------------
// RTSP

/// An RTSP server on 127.0.0.1 (free port) serving H.264 test video at `/cam`, on its own
/// thread and glib main loop.
struct RtspServer {
    server: gst_rtsp_server::RTSPServer,
    ctx: gst::glib::MainContext,
    main_loop: gst::glib::MainLoop,
    thread: Option<std::thread::JoinHandle<()>>,
    url: String,
}

impl RtspServer {
    fn start() -> Self {
        Self::start_with(None)
    }

    /// With `Some(n)`, the stream ends after n frames.
    fn start_with(num_buffers: Option<u32>) -> Self {
        init();
        let ctx = gst::glib::MainContext::new();
        let main_loop = gst::glib::MainLoop::new(Some(&ctx), false);
        let server = gst_rtsp_server::RTSPServer::new();
        server.set_address("127.0.0.1");
        server.set_service("0");
        let factory = gst_rtsp_server::RTSPMediaFactory::new();
        let n = num_buffers.map_or(String::new(), |n| format!("num-buffers={n}"));
        factory.set_launch(&format!(
            "( videotestsrc is-live=true pattern=ball {n} \
               ! video/x-raw,width=320,height=240,framerate=15/1 \
               ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 \
               ! rtph264pay name=pay0 pt=96 config-interval=1 )"
        ));
        server.mount_points().unwrap().add_factory("/cam", factory);
        server.attach(Some(&ctx)).unwrap();
        let port = server.bound_port();
        assert!(port > 0);
        let (l, c) = (main_loop.clone(), ctx.clone());
        let thread = std::thread::spawn(move || {
            c.with_thread_default(|| l.run()).unwrap();
        });
        Self {
            server,
            ctx,
            main_loop,
            thread: Some(thread),
            url: format!("rtsp://127.0.0.1:{port}/cam"),
        }
    }

    /// Closes every client connection (the camera "goes away" for them).
    fn drop_clients(&self) {
        let server = self.server.clone();
        self.ctx.invoke(move || {
            server.client_filter(Some(&mut |_, _| gst_rtsp_server::RTSPFilterResult::Remove));
        });
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        self.drop_clients();
        self.main_loop.quit();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn rtsp_vars(url: &str, out: &Path, json: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("URL", url.to_owned()),
        ("OUTPUT", s(out)),
        ("JSON", s(json)),
        ("CHECKPOINT", checkpoint()),
        ("MODEL", "heatmap".into()),
        ("DETECTOR", "none".into()),
        ("METHOD", "ikol".into()),
        ("ROI", ROI.into()),
        ("BODY_MODEL", "small".into()),
        ("LATENCY", "100".into()),
    ]
}

#[test]
fn rtsp_camera_records_until_max_seconds() {
    let server = RtspServer::start();
    let (mkv, json) = (tmp("rtsp.mkv"), tmp("rtsp.jsonl"));
    let r = ikol(&run_args(
        "rtsp-camera.pipeline",
        &rtsp_vars(&server.url, &mkv, &json),
        &["--max-seconds", "4"],
    ));
    drop(server);
    eprintln!("{}", r.all());
    // An error after the stop was requested (RTSP teardown) is only a warning in the runner.
    assert!(r.ok, "{}", r.all());
    let frames = r.summary("frames").unwrap();
    let lines = json_lines(&json);
    assert!(frames >= 5, "{}", r.all());
    assert_eq!(lines.len() as u64, frames, "{}", r.all());
    assert!(lines.iter().all(|f| f.people.len() == 1));
    assert_eq!(count_frames(&mkv), frames);
}

/// Waits until `path` holds at least `n` lines (or `limit` passes).
fn wait_lines(path: &Path, n: usize, limit: Duration) -> usize {
    let start = Instant::now();
    loop {
        let k = std::fs::read_to_string(path).map_or(0, |t| t.lines().count());
        if k >= n || start.elapsed() > limit {
            return k;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn rtsp_server_going_away_is_an_error_naming_the_source() {
    let server = RtspServer::start();
    let (mkv, json) = (tmp("gone.mkv"), tmp("gone.jsonl"));
    let child = spawn(&run_args(
        "rtsp-camera.pipeline",
        &rtsp_vars(&server.url, &mkv, &json),
        &["--max-seconds", "30"],
    ));
    let seen = wait_lines(&json, 3, Duration::from_secs(30));
    assert!(seen >= 3, "no frames arrived");
    server.drop_clients();
    let r = finish(child, Duration::from_secs(60));
    drop(server);
    eprintln!("{}", r.all());
    assert!(!r.ok, "{}", r.all());
    assert!(r.stderr.contains("rtspsrc"), "{}", r.all());
    assert!(r.summary("frames").unwrap() >= 3, "{}", r.all());
}

#[test]
fn rtsp_reconnects_after_the_server_drops_the_connection() {
    let server = RtspServer::start();
    let (mkv, json) = (tmp("again.mkv"), tmp("again.jsonl"));
    let child = spawn(&run_args(
        "rtsp-camera.pipeline",
        &rtsp_vars(&server.url, &mkv, &json),
        &[
            "--max-seconds",
            "8",
            "--reconnect",
            "1",
            "--reconnect-delay",
            "0.5",
        ],
    ));
    let seen = wait_lines(&json, 3, Duration::from_secs(30));
    assert!(seen >= 3, "no frames arrived");
    server.drop_clients();
    let r = finish(child, Duration::from_secs(60));
    drop(server);
    eprintln!("{}", r.all());
    assert!(r.ok, "{}", r.all());
    assert!(
        r.stderr.contains("rtspsrc") && r.stderr.contains("reconnect"),
        "{}",
        r.all()
    );
    assert_eq!(r.summary("attempts"), Some(2), "{}", r.all());
    // The first attempt's files were kept; the second attempt wrote new ones.
    let first = json_lines(&tmp("again.attempt1.jsonl"));
    let second = json_lines(&json);
    assert!(first.len() >= 3 && !second.is_empty(), "{}", r.all());
    assert_eq!(
        (first.len() + second.len()) as u64,
        r.summary("frames").unwrap(),
        "{}",
        r.all()
    );
    assert!(count_frames(&mkv) > 0);
}

#[test]
fn rtsp_reconnect_gives_up_when_the_server_is_gone() {
    let server = RtspServer::start();
    let (mkv, json) = (tmp("gone-for-good.mkv"), tmp("gone-for-good.jsonl"));
    let child = spawn(&run_args(
        "rtsp-camera.pipeline",
        &rtsp_vars(&server.url, &mkv, &json),
        &[
            "--max-seconds",
            "30",
            "--reconnect",
            "1",
            "--reconnect-delay",
            "0.2",
        ],
    ));
    let seen = wait_lines(&json, 3, Duration::from_secs(30));
    assert!(seen >= 3, "no frames arrived");
    drop(server);
    let r = finish(child, Duration::from_secs(60));
    eprintln!("{}", r.all());
    assert!(!r.ok, "{}", r.all());
    assert!(
        r.stderr.contains("reconnect: starting attempt 2")
            && r.stderr.contains("gave up after 1 reconnect(s)")
            && r.stderr.contains("GstRTSPSrc:rtspsrc0"),
        "{}",
        r.all()
    );
    assert_eq!(r.summary("attempts"), Some(2), "{}", r.all());
}

#[test]
fn rtsp_stream_that_ends_finishes_the_run() {
    let server = RtspServer::start_with(Some(30));
    let (mkv, json) = (tmp("finite.mkv"), tmp("finite.jsonl"));
    // A queue long enough that a busy machine drops no frame (the default leaks after 2).
    let mut vars = rtsp_vars(&server.url, &mkv, &json);
    vars.push(("QUEUE", "1000".into()));
    let r = ikol(&run_args(
        "rtsp-camera.pipeline",
        &vars,
        &["--max-seconds", "20"],
    ));
    drop(server);
    eprintln!("{}", r.all());
    // The server's end of stream reaches the client: a normal end, every frame kept.
    assert!(r.ok, "{}", r.all());
    assert_eq!(r.summary("frames"), Some(30), "{}", r.all());
    assert_eq!(json_lines(&json).len(), 30);
    assert_eq!(count_frames(&mkv), 30);
}

/// Environment variable that turns [`rtsp_server_subprocess_entry`] into a server.
const SERVE_ENV: &str = "IKOL_TEST_RTSP_SERVE";

/// Not a test of its own: the entry point of the RTSP server process that
/// `rtsp_frozen_server_is_a_stall` freezes with SIGSTOP (the server must be another process to
/// be frozen). Without `IKOL_TEST_RTSP_SERVE` it returns at once.
#[test]
fn rtsp_server_subprocess_entry() {
    if std::env::var_os(SERVE_ENV).is_none() {
        return;
    }
    let server = RtspServer::start();
    println!("URL {}", server.url);
    use std::io::Write;
    let _ = std::io::stdout().flush();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// A frozen RTSP server (the process stopped, its socket open) is a stall: after
/// `--stall-timeout` the runner finalises the files written so far and exits non-zero with a
/// clear message (issue 19: it exited 0 after 26 s with a normal summary).
#[test]
fn rtsp_frozen_server_is_a_stall() {
    use std::io::BufRead;
    let mut server = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "rtsp_server_subprocess_entry", "--nocapture"])
        .env(SERVE_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut url = String::new();
    let mut lines = std::io::BufReader::new(server.stdout.take().unwrap()).lines();
    for l in lines.by_ref() {
        if let Some(u) = l.unwrap().strip_prefix("URL ") {
            url = u.to_owned();
            break;
        }
    }
    assert!(url.starts_with("rtsp://"), "the server process gave no URL");
    let signal = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &server.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill {sig}");
    };
    let (mkv, json) = (tmp("frozen.mkv"), tmp("frozen.jsonl"));
    let child = spawn(&run_args(
        "rtsp-camera.pipeline",
        &rtsp_vars(&url, &mkv, &json),
        &["--max-seconds", "60", "--stall-timeout", "2"],
    ));
    let seen = wait_lines(&json, 3, Duration::from_secs(30));
    signal("-STOP");
    let r = finish(child, Duration::from_secs(60));
    signal("-CONT");
    let _ = server.kill();
    let _ = server.wait();
    eprintln!("{}", r.all());
    assert!(seen >= 3, "no frames arrived");
    assert!(!r.ok, "{}", r.all());
    assert!(r.stderr.contains("the stream stalled"), "{}", r.all());
    // The files written so far are complete: the JSON has every counted frame, the MKV plays.
    let frames = r.summary("frames").unwrap();
    assert!(frames >= 3, "{}", r.all());
    assert_eq!(json_lines(&json).len() as u64, frames, "{}", r.all());
    assert!(count_frames(&mkv) >= 3, "{}", r.all());
}
