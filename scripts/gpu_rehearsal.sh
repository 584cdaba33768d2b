#!/usr/bin/env bash
# Full-profile dress rehearsal of the course on one GPU: the notebooks top to bottom with INTERNVL_MODEL_PATH at a
# 2B-sized replica of the published InternVL2-2B layout (helpers.replica: OpenGVLab's file set and config keys,
# InternLM2's sentencepiece tokenizer, InternVL2-2B's shapes, random weights) and FOODIEQA_ROOT at the synthetic set
# drawn in FoodieQA's layout. The two Jupyter kernels come from scripts/overlay_envs.sh.
#
#   bash scripts/gpu_rehearsal.sh prepare            replica (weights drawn on the GPU), tiny model, synthetic data
#   bash scripts/gpu_rehearsal.sh run OUT NN...      execute notebooks NN (e.g. 03 01 02): OUT/NN.ipynb, and one line
#                                                    per notebook in OUT/rehearsal.jsonl (status, wall time, peak
#                                                    GPU memory from nvidia-smi every 0.5 s)
#
# INTERNVL_SETTINGS (e.g. '{"max_epochs": 1}' when GPU time is short) reaches every notebook.
set -uo pipefail
cd "$(dirname "$0")/.."
ART=${INTERNVL_ARTIFACTS:-$PWD/artifacts}
REPLICA=${REHEARSAL_MODEL:-$ART/models/internvl2-2b-replica-2b}
DATA=$ART/data/foodieqa-synth
export INTERNVL_MODEL_PATH=$REPLICA FOODIEQA_ROOT=$DATA HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1

prepare() {
    python3 -m helpers.replica --shapes 2b --device cuda --out "$REPLICA"
    python3 -m helpers.models build-tiny          # notebook 02 trains its miniature stages on the tiny model
    python3 -m helpers.data.synth --out "$DATA"
}

run_one() {  # run_one OUT NN
    local out=$1 nn=$2 nb
    nb=$(ls notebooks/"$nn"_*.ipynb)
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 >"$out/mem-$nn.log" 2>/dev/null &
    local sampler=$!
    local start status
    start=$(date +%s)
    python3 - "$nb" "$out/$nn.ipynb" <<'PY'
import os, sys, time
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

src, dst = sys.argv[1], sys.argv[2]
nb = nbformat.read(src, as_version=4)
keep_going = os.environ.get("REHEARSAL_ALLOW_ERRORS") == "1"  # run every cell, list the failing ones
client = NotebookClient(nb, timeout=1800, kernel_name=nb.metadata.kernelspec.name, allow_errors=keep_going,
                        resources={"metadata": {"path": "notebooks"}})
try:
    client.execute()
    errors = [(i, o.get("ename"), str(o.get("evalue"))[:300]) for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    print(f"[rehearsal] {src}: all cells ran; failing cells: {errors}")
    code = 1 if errors else 0
except CellExecutionError as err:
    print(f"[rehearsal] {src}: FAILED\n{str(err)[-3000:]}")
    code = 1
nbformat.write(nb, dst)
sys.exit(code)
PY
    status=$?
    kill "$sampler" 2>/dev/null
    local peak
    peak=$(sort -n "$out/mem-$nn.log" 2>/dev/null | tail -1)
    printf '{"notebook": "%s", "ok": %s, "wall_s": %s, "peak_gpu_mib": %s, "finished": "%s"}\n' \
        "$nb" "$([ $status = 0 ] && echo true || echo false)" "$(( $(date +%s) - start ))" "${peak:-null}" \
        "$(date -u +%FT%TZ)" | tee -a "$out/rehearsal.jsonl"
}

case "${1:-}" in
    prepare) prepare ;;
    run) out=${2:?usage: gpu_rehearsal.sh run OUT NN...}; shift 2; mkdir -p "$out"
         for nn in "$@"; do run_one "$out" "$nn"; done ;;
    *) echo "usage: $0 prepare | run OUT NN..." >&2; exit 2 ;;
esac
