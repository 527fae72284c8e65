#!/usr/bin/env python3
"""Time mediapipe's Python pose solution on a directory of PNG frames (the reference of
`blazepose-bench`, which runs this script itself after its own timing; issue 7 "Measurements").

Two runs over the frames, each with its own solution object and model_complexity=1 (the
`pose_landmark_full` model ikol runs):

  image   mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1, smooth_landmarks=False)
          (the detector runs on every frame)
  video   mp.solutions.pose.Pose(static_image_mode=False, model_complexity=1)
          (tracking: the detector runs only when no pose is tracked; landmarks smoothed, the
          solution's defaults)

The frames are decoded and converted to RGB before timing; only `process()` is timed, after
`--warmup` calls on the first frame with the same solution object (graph start-up, XNNPACK
set-up; in video mode the tracking then starts from frame 0's pose, as in a continuous stream).
With `--repeat N` the frames are passed N times in a row. mediapipe picks its own thread count
(XNNPACK, all cores here).

Prints one JSON object on the last line of stdout:
  {"mediapipe": version, "frames": n, "width": w, "height": h,
   "image": {"ms": [per-frame ms...], "median_ms", "mean_ms", "fps", "poses"},
   "video": {...}}

    python3.11 -m venv /tmp/mpcheck && /tmp/mpcheck/bin/pip install mediapipe==0.10.21 'numpy<2'
    /tmp/mpcheck/bin/python elements/detect/tools/bench_mediapipe.py DIR [--repeat N]

(same venv as gen_blazepose_fixture.py; used: CPython 3.11.7, mediapipe 0.10.21, numpy 1.26.4)
"""

import argparse
import json
import os
import statistics
import sys
import time

import cv2
import numpy as np


def load_frames(d):
    names = sorted(f for f in os.listdir(d) if f.lower().endswith(".png"))
    if not names:
        sys.exit(f"{d}: no PNG frames")
    out = []
    for n in names:
        bgr = cv2.imread(os.path.join(d, n), cv2.IMREAD_COLOR)
        out.append(np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--repeat", type=int, default=1, help="passes over the frames per mode")
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()

    import mediapipe as mp

    frames = load_frames(args.dir)
    h, w = frames[0].shape[:2]
    modes = {
        "image": dict(static_image_mode=True, model_complexity=1, smooth_landmarks=False),
        "video": dict(static_image_mode=False, model_complexity=1),
    }
    result = {"mediapipe": mp.__version__, "frames": len(frames), "width": w, "height": h}
    for mode, kw in modes.items():
        ms, poses = [], 0
        with mp.solutions.pose.Pose(**kw) as pose:
            for _ in range(args.warmup):
                pose.process(frames[0])
            for _ in range(args.repeat):
                for f in frames:
                    t0 = time.perf_counter()
                    r = pose.process(f)
                    ms.append((time.perf_counter() - t0) * 1e3)
                    poses += r.pose_landmarks is not None
        mean = statistics.fmean(ms)
        result[mode] = {
            "ms": [round(v, 3) for v in ms],
            "median_ms": statistics.median(ms),
            "mean_ms": mean,
            "fps": 1e3 / mean,
            "poses": poses,
        }
        print(
            f"mediapipe {mode}: median {statistics.median(ms):.2f} ms, mean {mean:.2f} ms, "
            f"{1e3 / mean:.1f} fps, pose in {poses} of {len(ms)} frames",
            file=sys.stderr,
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
