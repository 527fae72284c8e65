//! `ikol mocap` on the real demo clip, every format read back by independent code: the Khronos
//! glTF validator (npm `gltf-validator`: zero errors) and tests/tools/check_mocap.py (the `bvh`
//! package + numpy forward kinematics, numpy's `np.load` + a numpy transcription of smplx's LBS
//! on the body model's arrays, `pygltflib` + node forward kinematics and skinning, a TRC parser),
//! which checks the files against each other within 1 mm and against the per-frame JSON lines.
//!
//! Needs what `make test` installs: the BlazePose models (`make models`), the clip (`make
//! media`) and the validators (`make validators`; `$IKOL_VALIDATORS`, default
//! ~/.cache/ikol/validators).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn cache(var: &str, sub: &str) -> PathBuf {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(sub))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

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

#[test]
fn mocap_on_the_demo_clip_reads_back_everywhere() {
    let clip = cache("IKOL_MEDIA", ".cache/ikol/media").join("pose2sim/cam01.mp4");
    let validators = cache("IKOL_VALIDATORS", ".cache/ikol/validators");
    let python = validators.join("py/bin/python");
    assert!(
        clip.is_file()
            && python.is_file()
            && validators.join("node_modules/gltf-validator").is_dir(),
        "missing {} or the validators in {}: run `make media validators` (make test does)",
        clip.display(),
        validators.display()
    );
    let dir = std::env::temp_dir().join(format!("ikol-mocap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = |ext: &str| dir.join(format!("take.{ext}")).to_str().unwrap().to_owned();
    let (ok, msg) = ikol(&[
        "mocap",
        clip.to_str().unwrap(),
        "--frames",
        "40",
        "--focal",
        "1681.2",
        "--principal",
        "533.0,948.1",
        "--output",
        &out("bvh"),
        "--output",
        &out("glb"),
        "--output",
        &out("trc"),
        "--output",
        &out("npz"),
        "--output",
        &out("jsonl"),
    ]);
    assert!(ok, "{msg}");
    // The man on the treadmill is track 1 (the observer may be another track).
    let take = |ext: &str| dir.join(format!("take-1.{ext}"));
    for ext in ["bvh", "glb", "trc", "npz"] {
        assert!(take(ext).is_file(), "no {} in:\n{msg}", take(ext).display());
        let line = msg
            .lines()
            .find(|l| l.contains(&format!("take-1.{ext} (track 1, ")))
            .unwrap_or_else(|| panic!("no line for take-1.{ext} in:\n{msg}"));
        let frames: usize = line
            .rsplit(", ")
            .next()
            .and_then(|f| f.strip_suffix(" frames)"))
            .and_then(|f| f.parse().ok())
            .unwrap();
        // --frames 40 sends end of stream after 40 decoded frames; frames the decoder had in
        // flight still arrive.
        assert!((40..=48).contains(&frames), "{line}");
    }
    let node = Command::new("node")
        .env("NODE_PATH", validators.join("node_modules"))
        .arg(repo().join("tests/tools/validate_gltf.cjs"))
        .arg(take("glb"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&node.stdout);
    assert!(
        node.status.success() && report.contains("\"errors\":0"),
        "glTF validator: {report}{}",
        String::from_utf8_lossy(&node.stderr)
    );
    let check = Command::new(&python)
        .arg(repo().join("tests/tools/check_mocap.py"))
        .args(["--trc", take("trc").to_str().unwrap()])
        .args(["--bvh", take("bvh").to_str().unwrap()])
        .args(["--npz", take("npz").to_str().unwrap()])
        .args(["--glb", take("glb").to_str().unwrap()])
        .args(["--jsonl", &out("jsonl"), "--track", "1"])
        .arg("--body-model")
        .arg(repo().join("elements/body/assets/ikol-default.safetensors"))
        .output()
        .unwrap();
    let figures = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "check_mocap: {figures}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    println!("glTF validator: {report}check_mocap: {figures}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mocap_refuses_bad_arguments() {
    let (ok, msg) = ikol(&["mocap", "/nonexistent.mp4", "--output", "x.bvh"]);
    assert!(
        !ok && msg.contains("/nonexistent.mp4: no such file"),
        "{msg}"
    );
    let clip = std::env::current_exe().unwrap();
    let clip = clip.to_str().unwrap();
    let (ok, msg) = ikol(&["mocap", clip, "--output", "x.fbx"]);
    assert!(!ok && msg.contains("the extension must be one of"), "{msg}");
    let (ok, msg) = ikol(&["mocap", clip, "--output", "/no/such/dir/x.bvh"]);
    assert!(!ok && msg.contains("no directory /no/such/dir"), "{msg}");
    let (ok, msg) = ikol(&["mocap", clip, "--output", "x.bvh", "--fps-out", "0"]);
    assert!(!ok && msg.contains("--fps-out 0"), "{msg}");
    let (ok, msg) = ikol(&["mocap", clip, "--output", "x.glb", "--dry-run"]);
    assert!(
        ok && msg.contains("ikolexport format=glb location=\"x.glb\""),
        "{msg}"
    );
    assert!(msg.contains("flip-test=true"), "{msg}");
    let (ok, msg) = ikol(&[
        "mocap",
        clip,
        "--output",
        "x.glb",
        "--dry-run",
        "--no-flip-test",
    ]);
    assert!(ok && msg.contains("flip-test=false"), "{msg}");
}
