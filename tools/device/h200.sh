#!/usr/bin/env bash
# The H200 measurements of issues 12 (matmul speed) and 13 (f16), one stage per device call (each stage
# fits the 10-minute limit of one command; all three take about 15 minutes with the machine's start).
# Prepare with tools/device/prepare.sh; run with carry [".tools/device", ".gl"]:
#   bash tools/device/h200.sh check   # every kernel against its reference at model shapes, f32 and f16;
#                                     # matmul TFLOP/s (4096^3 and the model's products), f32 and f16
#   bash tools/device/h200.sh tune    # tile tables for ViT-B batch 256, f32 and f16 (into $OUT)
#   bash tools/device/h200.sh step    # ViT-B and ViT-T batch 256 steps, f32 and f16, with the tables of
#                                     # `tune` if present in .tools/device/ (copy them there from its $OUT)
#   bash tools/device/h200.sh loss    # 300-step pretraining runs (ViT-T, batch 256, synthetic data) in f32
#                                     # and f16: the losses of the two precisions side by side
#   bash tools/device/h200.sh review  # issue 12's figures in ONE call (about 9 minutes), for a session whose
#                                     # device time allows one: matmul TFLOP/s, the kernel checks, ViT-B
#                                     # batch 256 f32 with the default tiles, a quick tile table, ViT-B and
#                                     # ViT-T with it, ViT-B f16 (REVIEW_MODEL, REVIEW_BATCH, REVIEW_TEACHER
#                                     # shrink it for a dry run on lavapipe)
# Every stage writes its logs and JSON into $OUT, and samples nvidia-smi for the peak GPU memory of each run.
set -uo pipefail
stage=${1:?usage: h200.sh check|tune|step|loss|review|smoke}
# NO_GL=1: the Vulkan loaders are already installed (a dry run on a CPU machine with lavapipe).
if [ "$stage" != smoke ] && [ -z "${NO_GL:-}" ]; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
export VK_DRIVER_FILES=${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}
D=.tools/device
xz -dc $D/deno.xz > /tmp/deno && chmod +x /tmp/deno
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
bench() { /tmp/deno run -A --no-config .tools/device/bench.js --backend webgpu "$@"; }
# Runs a bench with a GPU-memory sampler beside it; $1 names the log, the rest are bench's arguments.
sampled() {
  local name=$1
  shift
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$OUT/$name.mem" 2>/dev/null &
  local sampler=$!
  timeout "${LIMIT:-240}" bash -c "$(declare -f bench); bench $*" > "$OUT/$name.log" 2>&1
  echo "exit $?" >> "$OUT/$name.log"
  kill "$sampler" 2>/dev/null
  echo "$name: peak GPU memory $(sort -n "$OUT/$name.mem" | tail -1) MiB" | tee -a "$OUT/summary.txt"
  grep -E "^step |memory:|checks|FAIL|tune: |error" "$OUT/$name.log" | tee -a "$OUT/summary.txt"
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/summary.txt"
case "$stage" in
  check)
    LIMIT=240 sampled check --check --out "$OUT/check.json"
    LIMIT=90 sampled ops-f32 --ops --model base --batch 32 --only matmul-square,matmul-qkv,matmul-fc1,attn-qk,attn-av --out "$OUT/ops-f32.json"
    LIMIT=90 sampled ops-f16 --ops --model base --batch 32 --only matmul-square,matmul-qkv,matmul-fc1,attn-qk,attn-av --precision f16 --out "$OUT/ops-f16.json"
    ;;
  tune)
    LIMIT=280 sampled tune-f32 --tune --model base --batch 256 --tune-quick --out "$OUT/tiles-f32.json"
    LIMIT=280 sampled tune-f16 --tune --model base --batch 256 --tune-quick --precision f16 --out "$OUT/tiles-f16.json"
    ;;
  step)
    # One table for both precisions: entries are keyed by precision, so the two files are merged first.
    if [ -s $D/tiles-f32.json ] && [ -s $D/tiles-f16.json ]; then
      /tmp/deno eval 'const [a, b] = ["f32", "f16"].map((p) => JSON.parse(Deno.readTextFileSync(`.tools/device/tiles-${p}.json`)));
        a.entries.push(...b.entries); a.tuned += "; " + b.tuned; Deno.writeTextFileSync("/tmp/tiles.json", JSON.stringify(a));'
      export CAEV2_TILE_TABLE=/tmp/tiles.json
    fi
    for model in base tiny; do
      for p in f32 f16; do
        LIMIT=140 sampled "step-$model-$p" --model "$model" --batch 256 --steps 3 --warmup 2 --precision "$p" \
          --out "$OUT/step-$model-$p.json"
      done
    done
    ;;
  loss)
    for p in f32 f16; do
      nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 > "$OUT/loss-$p.mem" 2>/dev/null &
      sampler=$!
      timeout 280 /tmp/deno run -A --no-config $D/pretrain.js --backend webgpu --model tiny --batch-size 256 \
        --steps 300 --workers 8 --log-every 50 --precision "$p" --out "/tmp/run-$p" > "$OUT/loss-$p.log" 2>&1
      echo "exit $?" >> "$OUT/loss-$p.log"
      kill "$sampler" 2>/dev/null
      cp "/tmp/run-$p/metrics.jsonl" "$OUT/loss-$p.metrics.jsonl" 2>/dev/null
      echo "loss-$p: peak GPU memory $(sort -n "$OUT/loss-$p.mem" | tail -1) MiB" | tee -a "$OUT/summary.txt"
      grep -E "done at|error|overflow" "$OUT/loss-$p.log" | tail -3 | tee -a "$OUT/summary.txt"
    done
    ;;
  review)
    # In the order of what matters most, each under its own limit (565 s in all, inside one 600-s call); the
    # kernel checks last, as they print only when all are done.
    m=${REVIEW_MODEL:-base} b=${REVIEW_BATCH:-256} t=${REVIEW_TEACHER:-clip-b16} small=${REVIEW_SMALL:-tiny}
    LIMIT=45 sampled ops-f32 --ops --model "$m" --batch 32 --only matmul-square,matmul-qkv,matmul-fc1,attn-qk,attn-av \
      --out "$OUT/ops-f32.json"
    LIMIT=70 sampled "step-$m-f32-default" --model "$m" --batch "$b" --teacher "$t" --steps 3 --warmup 2 \
      --no-phases --out "$OUT/step-$m-f32-default.json"
    # The products with the most arithmetic first (--max-shapes), so that the table is written in time.
    LIMIT=160 sampled tune-f32 --tune --model "$m" --batch "$b" --teacher "$t" --tune-quick \
      --max-shapes "${REVIEW_SHAPES:-16}" --out "$OUT/tiles-f32.json"
    [ -s "$OUT/tiles-f32.json" ] && export CAEV2_TILE_TABLE="$OUT/tiles-f32.json"
    LIMIT=60 sampled "step-$m-f32-tuned" --model "$m" --batch "$b" --teacher "$t" --steps 3 --warmup 2 \
      --no-phases --no-profile --out "$OUT/step-$m-f32-tuned.json"
    LIMIT=60 sampled "step-$small-f32-tuned" --model "$small" --batch "$b" --teacher "$t" --steps 3 --warmup 2 \
      --no-phases --no-profile --out "$OUT/step-$small-f32-tuned.json"
    LIMIT=70 sampled "step-$m-f16" --model "$m" --batch "$b" --teacher "$t" --steps 3 --warmup 2 --no-phases \
      --no-profile --precision f16 --out "$OUT/step-$m-f16.json"
    LIMIT=100 sampled check --check --out "$OUT/check.json"
    ;;
  smoke)
    # This script's plumbing on any WebGPU adapter (e.g. lavapipe: VK_DRIVER_FILES=<lvp_icd.json>), in seconds.
    LIMIT=300 sampled smoke --model tiny --batch 2 --teacher micro --steps 1 --warmup 1 --no-phases --no-profile \
      --precision f16 --out "$OUT/smoke.json"
    ;;
  *) echo "unknown stage $stage" >&2; exit 2 ;;
esac
