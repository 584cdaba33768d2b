#!/usr/bin/env bash
# The two course environments on a GPU server whose system python3 already carries torch + CUDA (a lab or
# cloud image) and which has no package registry: instead of two virtualenvs with their own torch, install
# only what each environment adds, from a folder of wheels, into two overlay directories that go first on
# PYTHONPATH, and register the two Jupyter kernels with those paths.
#
#   bash scripts/overlay_envs.sh WHEELS [PREFIX]
#     WHEELS/common/    wheels both environments need (jupyter kernel, nbval)
#     WHEELS/lmdeploy/  what the lmdeploy environment adds (lmdeploy, its server deps; gradio if wanted)
#     WHEELS/xtuner/    what the xtuner environment adds (xtuner, transformers 4.48 + its tokenizers/hub, mmengine,
#                       deepspeed as an sdist: it builds here against the system torch)
#     PREFIX            where the overlays go (default /tmp/internvl-overlays)
#
# Make the wheel folders on a machine with a registry: `bash scripts/gpu_wheels.sh --have LIST` builds
# WHEELS/lmdeploy and WHEELS/xtuner with exactly what an image whose package names are in LIST lacks
# (scripts/wheelhouse.sh download builds the complete set for a server with no torch at all).
# Then, for example:
#   source PREFIX/lmdeploy.env && python3 -m pytest -m gpu tests/test_deploy.py
#   python3 -m pytest --nbval-lax notebooks/03_lmdeploy_deployment.ipynb     # the kernels know their overlay
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=${1:?usage: overlay_envs.sh WHEELS [PREFIX]}
PREFIX=${2:-/tmp/internvl-overlays}
REPO=$(pwd)
PY=${PYTHON:-python3}

install_into() {  # install_into TARGET DIR...
    local target=$1; shift
    local files=()
    for d in "$@"; do
        [ -d "$d" ] && for f in "$d"/*.whl "$d"/*.tar.gz; do [ -e "$f" ] && files+=("$f"); done
    done
    [ ${#files[@]} -gt 0 ] || return 0
    # --no-deps: the folders hold exactly the packages the system python lacks; --no-build-isolation lets
    # an sdist (deepspeed) build against the system torch without fetching build tools.
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --no-build-isolation \
        --upgrade --target "$target" "${files[@]}"
}

mkdir -p "$PREFIX"
install_into "$PREFIX/common" "$WHEELS/common"
for env in lmdeploy xtuner; do
    extra=()
    [ "$env" = lmdeploy ] && extra=("$WHEELS/gradio")
    install_into "$PREFIX/$env" "$WHEELS/$env" "${extra[@]}"
    path="$PREFIX/$env:$PREFIX/common:$REPO"
    # TVM_FFI_DISABLE_TORCH_C_DLPACK: xgrammar's tvm-ffi would otherwise try to JIT-compile a torch extension.
    cat >"$PREFIX/$env.env" <<EOF
export PYTHONPATH=$path
export PATH=$PREFIX/$env/bin:$PREFIX/common/bin:\$PATH
export TVM_FFI_DISABLE_TORCH_C_DLPACK=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
EOF
    # A kernel only where the overlay holds ipykernel (a run with no Jupyter, such as the web UI load test, skips it).
    PYTHONPATH=$path "$PY" -c 'import ipykernel' 2>/dev/null || { echo "overlay $env ready (no Jupyter kernel): source $PREFIX/$env.env"; continue; }
    PYTHONPATH=$path "$PY" -m ipykernel install --user --name "internvl-$env" \
        --display-name "InternVL ($env env)" --env PYTHONPATH "$path" \
        --env TVM_FFI_DISABLE_TORCH_C_DLPACK 1 --env HF_HUB_OFFLINE 1 --env TRANSFORMERS_OFFLINE 1 \
        --env PATH "$PREFIX/$env/bin:$PREFIX/common/bin:$PATH" >/dev/null
    echo "overlay $env ready: source $PREFIX/$env.env"
done
