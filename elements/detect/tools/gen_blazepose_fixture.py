#!/usr/bin/env python3
"""Reference BlazePose results on real frames for the Rust parity test (tests/blazepose_parity.rs).

Runs mediapipe's legacy Python solution, exactly as

    mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1, smooth_landmarks=False)

on the PNG frames in elements/detect/tests/data/pose2sim/ and writes
elements/detect/tests/data/blazepose_expected.json with, per frame:

  landmarks  33 x [x * W, y * H, z * W, visibility]  (frame pixels; z on x's scale; the legacy
             solution leaves `presence` unset)
  world      33 x [x, y, z]                                     (metres, hip-centred)
  roi        [x_center * W, y_center * H, width * W, height * H, rotation]  the landmark ROI from
             the detection (graph output `pose_rect_from_detection`; pixels, radians)
  detection  score, box [xmin, ymin, w, h] and the 4 keypoints, in frame pixels

`Pose` does not expose the ROI, so the script runs the same graph (`pose_landmark_cpu.binarypb`)
through `SolutionBase` with the side inputs and calculator parameters `Pose.__init__` passes for
these arguments plus the graph's `pose_detection` and `pose_rect_from_detection` streams, and
checks that its landmarks equal those of `Pose` itself (exactly, or it stops).

Set-up (mediapipe 0.10.21 is the version whose wheel ships the two models, see
fetch_mediapipe_models.sh; it needs numpy < 2; wheels exist for CPython 3.9-3.12):

    python3.11 -m venv /tmp/mpcheck
    /tmp/mpcheck/bin/pip install mediapipe==0.10.21 'numpy<2'
    #   (or the wheel fetch_mediapipe_models.sh keeps:
    #    ~/.cache/ikol/wheels/mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl)
    /tmp/mpcheck/bin/python elements/detect/tools/gen_blazepose_fixture.py

Used here: CPython 3.11.7, mediapipe 0.10.21, numpy 1.26.4, opencv-contrib-python-headless
4.11.0.86 (a mediapipe dependency; it only reads and writes the PNGs).

The frames themselves were made by the same script with `--extract VIDEO` (OpenCV decode of
pose2sim's demo cam01.mp4, 1080x1920, frames 0, 50, 99, resized to 540x960 with INTER_AREA, PNG
level 9); see tests/data/pose2sim/README.md. Re-extracting is only needed to change the frames.
"""

import argparse
import json
import os
import re
import sys

import cv2
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "tests", "data")
FRAMES = (0, 50, 99)
SIZE = (540, 960)  # width, height


def extract(video, out_dir):
    cap = cv2.VideoCapture(video)
    i = 0
    os.makedirs(out_dir, exist_ok=True)
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        if i in FRAMES:
            small = cv2.resize(bgr, SIZE, interpolation=cv2.INTER_AREA)
            path = os.path.join(out_dir, f"frame_{i:03d}.png")
            cv2.imwrite(path, small, [cv2.IMWRITE_PNG_COMPRESSION, 9])
            print(f"{path}: {os.path.getsize(path)} bytes")
        i += 1
    if i <= max(FRAMES):
        sys.exit(f"{video}: only {i} frames")


def r(v, digits=6):
    return round(float(v), digits)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", default=os.path.join(DATA, "pose2sim"))
    ap.add_argument("--out", default=os.path.join(DATA, "blazepose_expected.json"))
    ap.add_argument("--extract", metavar="VIDEO", help="first write the PNG frames from VIDEO")
    args = ap.parse_args()
    if args.extract:
        extract(args.extract, args.frames)

    import mediapipe as mp
    from mediapipe.python.solution_base import SolutionBase
    from mediapipe.python.solutions import pose as mpp

    def with_roi():
        # what Pose(static_image_mode=True, model_complexity=1, smooth_landmarks=False) builds,
        # with two more output streams
        return SolutionBase(
            binary_graph_path=mpp._BINARYPB_FILE_PATH,
            side_inputs={
                "model_complexity": 1,
                "smooth_landmarks": False,
                "enable_segmentation": False,
                "smooth_segmentation": False,
                "use_prev_landmarks": False,
            },
            calculator_params={
                "posedetectioncpu__TensorsToDetectionsCalculator.min_score_thresh": 0.5,
                "poselandmarkbyroicpu__tensorstoposelandmarksandsegmentation__ThresholdingCalculator.threshold": 0.5,
            },
            outputs=[
                "pose_landmarks",
                "pose_world_landmarks",
                "pose_detection",
                "pose_rect_from_detection",
            ],
        )

    pose = mp.solutions.pose.Pose(
        static_image_mode=True, model_complexity=1, smooth_landmarks=False
    )
    full = with_roi()
    names = sorted(f for f in os.listdir(args.frames) if f.endswith(".png"))
    frames = []
    for name in names:
        bgr = cv2.imread(os.path.join(args.frames, name), cv2.IMREAD_COLOR)
        rgb = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        h, w = rgb.shape[:2]
        a = pose.process(rgb)
        b = full.process({"image": rgb})
        if a.pose_landmarks is None or b.pose_landmarks is None:
            sys.exit(f"{name}: no pose found")
        la = [(l.x, l.y, l.z, l.visibility) for l in a.pose_landmarks.landmark]
        lb = [(l.x, l.y, l.z, l.visibility) for l in b.pose_landmarks.landmark]
        if la != lb:
            sys.exit(f"{name}: Pose and the SolutionBase with the ROI outputs disagree")
        d = b.pose_detection
        bb = d.location_data.relative_bounding_box
        rr = b.pose_rect_from_detection
        frames.append(
            {
                "file": name,
                "width": w,
                "height": h,
                "detection": {
                    "score": r(d.score[0]),
                    "box": [r(bb.xmin * w, 3), r(bb.ymin * h, 3), r(bb.width * w, 3), r(bb.height * h, 3)],
                    "keypoints": [
                        [r(k.x * w, 3), r(k.y * h, 3)] for k in d.location_data.relative_keypoints
                    ],
                },
                "roi": [
                    r(rr.x_center * w, 4),
                    r(rr.y_center * h, 4),
                    r(rr.width * w, 4),
                    r(rr.height * h, 4),
                    r(rr.rotation),
                ],
                "landmarks": [
                    [r(l.x * w, 4), r(l.y * h, 4), r(l.z * w, 4), r(l.visibility)]
                    for l in a.pose_landmarks.landmark
                ],
                "world": [[r(l.x), r(l.y), r(l.z)] for l in a.pose_world_landmarks.landmark],
            }
        )
        print(
            f"{name}: {w}x{h}, detection score {d.score[0]:.3f}, roi "
            + ", ".join(f"{v:.2f}" for v in frames[-1]["roi"])
        )
    out = {
        "generator": "elements/detect/tools/gen_blazepose_fixture.py",
        "solution": "mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1, smooth_landmarks=False)",
        "mediapipe": mp.__version__,
        "numpy": np.__version__,
        "frames": frames,
    }
    text = json.dumps(out, indent=1)
    # one number list per line
    text = re.sub(r"\[\s+([-0-9.e, \n]+?)\s+\]", lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text)
    with open(args.out, "w") as f:
        f.write(text + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
