#!/usr/bin/env bash
# "A class on one GPU" (issue 20, item 3), in one command on a GPU server with no registry: the lmdeploy overlay from
# wheel folders (as scripts/gpu_rehearsal.sh: scripts/overlay_envs.sh), the InternVL2-2B-shaped replica
# (helpers.replica, random weights), then benchmarks/webui_load.py against the web UI on LMDeploy: the full sweep with
# the `class` serving profile, N = 32, 64 with `baseline`, and the probes. Bounded: it ends by itself within BUDGET
# seconds (default 480); a level or variant that fails is recorded and the rest still runs.
#
#   bash scripts/gpu_webui_load.sh OUT              the GPU run; OUT gets webui-load.json, webui-capacity.json,
#                                                   the two server logs, console.log and gpu-mem.log
#   bash scripts/gpu_webui_load.sh OUT --smoke      the same steps on a CPU: no overlay, the tiny model, the
#                                                   transformers engine, small levels (tests/test_webui_load.py)
#   bash scripts/gpu_webui_load.sh OUT --dry-run    print the commands only
#
# VARIANTS="PROFILE:N,N ..." runs only those (no idle probes); BUDGET (s) bounds the whole run.
# WHEELS (default .whl) holds the folders common, lmdeploy, gradio and gradio2 (scripts/overlay_envs.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: gpu_webui_load.sh OUT [--smoke|--dry-run]}
MODE=${2:-gpu}
BUDGET=${BUDGET:-480}
WHEELS=${WHEELS:-.whl}
PREFIX=${OVERLAY_PREFIX:-/tmp/ov}
ART=${INTERNVL_ARTIFACTS:-$PWD/artifacts}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 GRADIO_ANALYTICS_ENABLED=False
step() { echo "+ $*"; [ "$MODE" = --dry-run ] || "$@"; }

if [ "$MODE" = --smoke ]; then
    MODEL=${SMOKE_MODEL:-$ART/models/internvl2-tiny}
    ARGS=(--engine transformers --quick --variant class:1,2 --variant baseline:1 --probe --timeout 330)
else
    step timeout 120 bash scripts/overlay_envs.sh "$WHEELS" "$PREFIX"
    # gradio 6.31's own dependencies that overlay_envs.sh does not know yet (hf-gradio, httpx2, ...)
    if [ -d "$WHEELS/gradio2" ]; then
        step "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$PREFIX/lmdeploy" "$WHEELS"/gradio2/*.whl
    fi
    [ "$MODE" = --dry-run ] || source "$PREFIX/lmdeploy.env"
    MODEL=$ART/models/internvl2-2b-replica-2b
    step timeout 150 "$PY" -m helpers.replica --shapes 2b --device cuda --out "$MODEL"
    # webui_load.py starts a UI, a level or the model probe only where it fits before its --timeout
    # VARIANTS replaces the sweep (e.g. "baseline:32,64 class:32,64" compares two profiles on one machine)
    read -r -a picked <<<"${VARIANTS:-class:8,16,32,64,128 baseline:32,64}"
    ARGS=(--engine lmdeploy)
    for v in "${picked[@]}"; do ARGS+=(--variant "$v"); done
    [ -n "${VARIANTS:-}" ] || ARGS+=(--probe)
    ARGS+=(--per-n-timeout 70 --max-new-tokens 96 --timeout $((BUDGET - SECONDS - 20)))
    if [ "$MODE" != --dry-run ] && command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv -lms 1000 >"$OUT/gpu-mem.log" 2>&1 &
        SAMPLER=$!
    fi
fi
left=$((BUDGET - SECONDS))
step timeout "$left" "$PY" benchmarks/webui_load.py --start --model "$MODEL" "${ARGS[@]}" \
    --json "$OUT/webui-load.json" --server-log "$OUT/webui-load.server.log" --publish "$OUT/webui-capacity.json" \
    2>&1 | tee "$OUT/console.log"
status=${PIPESTATUS[0]}
[ -n "${SAMPLER:-}" ] && kill "$SAMPLER" 2>/dev/null
echo "webui_load exit status $status; total ${SECONDS} s"
exit "$status"
