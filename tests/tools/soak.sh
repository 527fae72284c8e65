#!/usr/bin/env bash
# Memory soak: the demo chain (decode, BlazePose detector + landmarks, fit, mesher, overlay,
# JSON export, x264 encode; the muxer and file replaced by fakesink, as `ikol run --loop` needs)
# over the demo clip played SOAK_LOOPS times in one stream (default 200 x 100 = 20,000 frames),
# sampling the process's resident memory every SOAK_EVERY seconds. Prints the RSS after the
# first play and at the end, and the growth per 1000 frames by a least-squares line over the
# samples after the first 10 %, and the change over the second half (an allocator's one-off
# step shows in the slope but not there; a leak shows in both). Samples in target/soak/rss.csv.
set -euo pipefail
cd "$(dirname "$0")/../.."
LOOPS=${SOAK_LOOPS:-200}
EVERY=${SOAK_EVERY:-10}
CLIP=${DEMO_CLIP:-$HOME/.cache/ikol/media/pose2sim/cam01.mp4}
OUT=target/soak
mkdir -p "$OUT"
[ -f "$CLIP" ] || { echo "soak: $CLIP missing (make demo fetches it)" >&2; exit 1; }
sed -e 's/! h264parse ! mp4mux/! fakesink/' -e '/filesink location=\${OUTPUT}/d' \
  pipelines/video-to-overlay.pipeline > "$OUT/soak.pipeline"
grep -q fakesink "$OUT/soak.pipeline" || { echo "soak: could not derive the pipeline" >&2; exit 1; }
# A previous run's export would be counted as frames before the new process truncates it.
rm -f "$OUT/soak.jsonl"
target/release/ikol run "$OUT/soak.pipeline" INPUT="$CLIP" JSON="$OUT/soak.jsonl" \
  FOCAL=1681.2 PRINCIPAL=533.0,948.1 --loop "$LOOPS" > "$OUT/run.log" 2>&1 &
PID=$!
echo "seconds,frames,rss_kib" > "$OUT/rss.csv"
START=$(date +%s)
while kill -0 "$PID" 2>/dev/null; do
  RSS=$(awk '/^VmRSS/ {print $2}' "/proc/$PID/status" 2>/dev/null || true)
  FRAMES=$( (wc -l < "$OUT/soak.jsonl") 2>/dev/null || echo 0)
  [ -n "$RSS" ] && echo "$(( $(date +%s) - START )),$FRAMES,$RSS" >> "$OUT/rss.csv"
  sleep "$EVERY"
done
wait "$PID"
python3 - "$OUT/rss.csv" <<'PY'
import csv, sys
rows = [(int(r["frames"]), int(r["rss_kib"])) for r in csv.DictReader(open(sys.argv[1]))]
rows = [r for r in rows if r[0] > 0]
if len(rows) < 4:
    sys.exit("soak: too few samples")
n = rows[-1][0]
tail = [r for r in rows if r[0] >= 0.1 * n]
mx = sum(f for f, _ in tail) / len(tail)
my = sum(m for _, m in tail) / len(tail)
slope = sum((f - mx) * (m - my) for f, m in tail) / max(sum((f - mx) ** 2 for f, _ in tail), 1)
first = next(m for f, m in rows if f >= 100)
half = next(m for f, m in rows if f >= 0.5 * n)
print(f"soak: {n} frames; RSS after the first play {first / 1024:.0f} MiB, at the end "
      f"{rows[-1][1] / 1024:.0f} MiB, peak {max(m for _, m in rows) / 1024:.0f} MiB; "
      f"growth {slope * 1000 / 1024:+.2f} MiB per 1000 frames after the first 10 %, "
      f"{(rows[-1][1] - half) / 1024:+.1f} MiB over the second half")
PY
tail -4 "$OUT/run.log"
