#!/usr/bin/env bash
# Build or use a wheelhouse for an air-gapped machine (a GPU server with no package registry).
#
#   On a machine WITH a registry (any OS), for the target's Python and platform:
#     bash scripts/wheelhouse.sh download --python 3.12 --platform manylinux_2_28_x86_64 --out wheelhouse
#   Copy the repository and wheelhouse/ to the server, then ON THE SERVER:
#     bash scripts/wheelhouse.sh install --in wheelhouse        # creates both venvs from the wheels only
#     make setup                                                 # finds the venvs ready; builds kernels, tiny model, data
#
# The full package set is resolved here with pip's resolver, then each pin is fetched for the target's Python
# and platform: a wheel where one exists, else the sdist (deepspeed, transformers-stream-generator), which
# builds on the server without a download.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-}; shift || true
PYV=3.12; PLATFORM=manylinux_2_28_x86_64; DIR=wheelhouse
while [ $# -gt 0 ]; do
  case "$1" in
    --python) PYV=$2; shift 2;;
    --platform) PLATFORM=$2; shift 2;;
    --out|--in) DIR=$2; shift 2;;
    *) echo "unknown argument: $1" >&2; exit 2;;
  esac
done

download() {
  mkdir -p "$DIR"
  # pip matches platform tags exactly, so offer every older manylinux tag the target also accepts
  # (manylinux_2_28 accepts wheels built for glibc 2.5 ... 2.28).
  local plat=(--platform "$PLATFORM") arch glibc
  glibc=$(sed -nE 's/^manylinux_2_([0-9]+)_.*/\1/p' <<<"$PLATFORM")
  if [ -n "$glibc" ]; then
    arch=${PLATFORM#manylinux_2_"$glibc"_}
    for ((k = glibc - 1; k >= 5; k--)); do plat+=(--platform "manylinux_2_${k}_$arch"); done
    plat+=(--platform "manylinux2014_$arch" --platform "manylinux2010_$arch" --platform "manylinux1_$arch")
  fi
  # 1. Resolve the full set of packages once, here, with pip's own resolver (a dry run installs nothing).
  #    Cross-platform resolution is not possible with source-only packages in the tree (pip refuses
  #    --platform without --only-binary), so the pins come from this machine and are fetched for the target below.
  local pins report
  pins=$(mktemp)
  for env in xtuner lmdeploy; do
    report=$(mktemp)
    python3 -m pip install --dry-run --ignore-installed --quiet --report "$report" -r "requirements-$env.txt"
    python3 -c 'import json,sys
for i in json.load(open(sys.argv[1]))["install"]:
    print(i["metadata"]["name"] + "==" + i["metadata"]["version"])' "$report" >>"$pins"
    rm -f "$report"
  done
  sort -u -o "$pins" "$pins"
  echo "== $(wc -l <"$pins") packages for Python $PYV, $PLATFORM -> $DIR"
  # 2. Fetch each pin for the target: a wheel when one exists, else the sdist (it builds offline on the server).
  local failed=0 spec
  while read -r spec; do
    spec=${spec%%+*}  # local version labels (torch 2.14.1+cu130) are not on PyPI under that name
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
      "${plat[@]}" -d "$DIR" "$spec" 2>/dev/null \
      || python3 -m pip download --quiet --no-deps --no-binary=:all: -d "$DIR" "$spec" 2>/dev/null \
      || { echo "  not found for the target: $spec"; failed=1; }
  done <"$pins"
  rm -f "$pins"
  echo "wheelhouse: $DIR ($(du -sh "$DIR" | cut -f1)); copy it with the repository to the server"
  return $failed
}

install() {
  test -d "$DIR" || { echo "no wheelhouse at $DIR" >&2; exit 2; }
  for env in xtuner lmdeploy; do
    venv=.venv-$env
    test -x "$venv/bin/python" || python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --no-index --find-links "$DIR" -r "requirements-$env.txt"
    "$venv/bin/python" -m pip install --no-index --no-deps --no-build-isolation -e .
    touch "$venv/.installed"
  done
  echo "both environments installed from $DIR; now run: make setup"
}

case "$mode" in
  download) download;;
  install) install;;
  *) echo "usage: $0 download|install [--python 3.12] [--platform manylinux_2_28_x86_64] [--out|--in DIR]" >&2; exit 2;;
esac
