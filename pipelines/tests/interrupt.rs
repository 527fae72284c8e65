//! Ctrl-C during `ikol run` ends the stream cleanly: the MP4 being written is finalised and
//! plays back.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use gst::prelude::*;

#[test]
fn sigint_sends_eos_and_the_mp4_is_finalised() {
    let dir = std::env::temp_dir().join(format!("ikol-int-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pipe = dir.join("live.pipeline");
    let out = dir.join("live.mp4");
    std::fs::write(
        &pipe,
        "# A live test source recorded to MP4.\n# Variables:\n#   OUT  output file\n\
         videotestsrc is-live=true ! video/x-raw,width=160,height=120,framerate=30/1\n\
         ! videoconvert ! x264enc tune=zerolatency ! h264parse ! mp4mux ! filesink location=${OUT}\n",
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_ikol"))
        .arg("run")
        .arg(&pipe)
        .arg(format!("OUT={}", out.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let res = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "exit {:?}: {stderr}", res.status);

    // A finalised MP4 has its index (moov): qtdemux reads it back frame by frame.
    gst::init().unwrap();
    let p = gst::parse::launch(&format!(
        "filesrc location={} ! qtdemux ! h264parse ! avdec_h264 ! appsink name=s sync=false",
        out.display()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = p
        .by_name("s")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let mut frames = 0;
    while sink
        .try_pull_sample(gst::ClockTime::from_seconds(10))
        .is_some()
    {
        frames += 1;
    }
    let err = p.bus().unwrap().pop_filtered(&[gst::MessageType::Error]);
    p.set_state(gst::State::Null).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(err.is_none(), "{err:?}");
    assert!(
        frames >= 10,
        "{frames} frames decoded from the interrupted recording"
    );
}
