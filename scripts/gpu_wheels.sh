#!/usr/bin/env bash
# Build the two wheel folders that scripts/overlay_envs.sh installs on an offline GPU server whose system python3
# (CPython 3.12, x86_64, manylinux_2_28) already holds torch 2.11, transformers 5.17 and the packages of --have:
#   .whl/lmdeploy   lmdeploy 0.18 (TurboMind binaries removed: the course uses the PyTorch engine), gradio 6.31
#                   (no SSR node server, media assets or ffmpeg wasm), gradio_client, openai and what they add
#   .whl/xtuner     xtuner 0.2.0, transformers 4.48 + its tokenizers/huggingface_hub, mmengine, datasets,
#                   deepspeed and transformers-stream-generator as sdists (they build on the server), small deps
#
#   bash scripts/gpu_wheels.sh [--have scripts/gpu-image-packages.txt] [--out .whl] [--only lmdeploy|xtuner]
#
# Each folder: pip's resolver resolves its roots here (a dry run, with requirements-ENV.txt as constraints, so
# the course's pins win), then its dependency tree is walked for Python 3.12 on Linux, without entering the
# packages that are never carried; what the image holds (names from --have, # lines ignored) is left out unless
# the folder must override it; each pin is fetched for the target (a wheel, else the sdist). Rerunning replaces
# the folders. Fails when lmdeploy + xtuner exceed 60 MiB (the device carry limit is 64 MiB).
set -euo pipefail
shopt -s inherit_errexit  # a failure inside $(...) stops the script too
cd "$(dirname "$0")/.."

HAVE=scripts/gpu-image-packages.txt; OUT=.whl; ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --have) HAVE=$2; shift 2;;
    --out) OUT=$2; shift 2;;
    --only) ONLY=$2; shift 2;;
    *) echo "usage: $0 [--have FILE] [--out DIR] [--only lmdeploy|xtuner]" >&2; exit 2;;
  esac
done
case "$ONLY" in ""|lmdeploy|xtuner) ;; *) echo "--only takes lmdeploy or xtuner" >&2; exit 2;; esac
test -f "$HAVE" || { echo "no package list at $HAVE" >&2; exit 2; }

NEVER="ray tilelang rdkit z3-solver torch triton nvidia-*"  # plus transformers for lmdeploy (the image's 5.17 fits)
# pip matches platform tags exactly: offer every manylinux tag a glibc 2.28 x86_64 system accepts
PLAT=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64)
for ((k = 27; k >= 5; k--)); do PLAT+=(--platform "manylinux_2_${k}_x86_64"); done
PLAT+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)

pins() {  # pins REQFILE "NEVER" "OVERRIDE" ROOT... -> NAME==VERSION lines to carry (notes on stderr)
  local req=$1 never=$2 override=$3 report log; shift 3
  report=$(mktemp); log=$(mktemp)
  python3 -m pip install --dry-run --ignore-installed --quiet --report "$report" -c "$req" "$@" 2>"$log" \
    || { grep -v 'is ignored' "$log" >&2; exit 1; }
  python3 - "$report" "$HAVE" "$never" "$override" "$@" <<'PY'
import fnmatch, json, re, sys
from pip._vendor.packaging.requirements import Requirement
report, have, never, override, *roots = sys.argv[1:]
norm = lambda s: re.sub(r"[-_.]+", "-", s).lower()
have = {norm(l.strip()) for l in open(have) if l.strip() and not l.lstrip().startswith("#")}
never, override = never.split(), {norm(n) for n in override.split()}
meta = {norm(i["metadata"]["name"]): i["metadata"] for i in json.load(open(report))["install"]}
py312 = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
         "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython"}
def wanted(r, extras, env):
    return r.marker is None or any(r.marker.evaluate({**env, "extra": e}) for e in extras | {""})
todo, seen, carry, image = [Requirement(r) for r in roots], set(), set(), set()
while todo:  # the tree for Python 3.12; never-carried packages are not entered, so their own deps drop out too
    r = todo.pop(); name = norm(r.name)
    if any(fnmatch.fnmatch(name, p) for p in never) or (name, frozenset(r.extras)) in seen:
        continue
    seen.add((name, frozenset(r.extras)))
    if name not in meta:
        sys.exit(f"{name}: needed on Python 3.12 but not resolved on this Python (a marker differs)")
    (image if name in have and name not in override else carry).add(name)
    for d in map(Requirement, meta[name].get("requires_dist") or []):
        if wanted(d, set(r.extras), {}) != wanted(d, set(r.extras), py312):
            print(f"  note: {meta[name]['name']} requires {d} on 3.11 <> 3.12", file=sys.stderr)
        if wanted(d, set(r.extras), py312):
            todo.append(d)
print(f"  {len(carry)} to carry, {len(image)} on the image", file=sys.stderr)
print("\n".join(sorted(f"{meta[n]['name']}=={meta[n]['version']}" for n in carry)))
PY
  rm -f "$report" "$log"
}

fetch() {  # fetch DIR NAME==VERSION...: a wheel for the target when one exists, else the sdist
  local dir=$1 spec; shift
  for spec in "$@"; do
    python3 -m pip download -q --no-deps --only-binary=:all: "${PLAT[@]}" -d "$dir" "$spec" 2>/dev/null \
      || { echo "  no wheel for the target, sdist: $spec" >&2
           python3 -m pip download -q --no-deps --no-binary=:all: -d "$dir" "$spec" 2>/dev/null; } \
      || { echo "not found for the target: $spec" >&2; exit 1; }
  done
}

repack() {  # repack WHEEL REGEX: drop the matching members and their RECORD lines, keep the file name
  python3 - "$@" <<'PY'
import os, re, sys, zipfile
whl, drop = sys.argv[1], re.compile(sys.argv[2])
tmp = whl + ".tmp"  # members are rewritten one by one, so the 360 MB TurboMind library is never read
with zipfile.ZipFile(whl) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as dst:
    gone = {i.filename for i in src.infolist() if drop.search(i.filename)} or sys.exit(f"{whl}: nothing to drop")
    for info in (i for i in src.infolist() if i.filename not in gone):
        data = src.read(info)
        if re.fullmatch(r"[^/]+\.dist-info/RECORD", info.filename):
            data = b"".join(l for l in data.splitlines(True) if l.decode().split(",")[0] not in gone)
        dst.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
os.replace(tmp, whl)
print(f"  repacked {os.path.basename(whl)}: {len(gone)} files removed, {os.path.getsize(whl) / 2**20:.1f} MiB")
PY
}

build() {  # build NAME REQFILE "NEVER" "OVERRIDE" ROOT...
  local name=$1 req=$2 never=$3 override=$4 tmp list specs; shift 4
  tmp="$OUT/.$name.tmp"; rm -rf "$tmp"; mkdir -p "$tmp"
  echo "== $OUT/$name"
  list=$(pins "$req" "$never" "$override" "$@")
  mapfile -t specs <<<"$list"
  fetch "$tmp" "${specs[@]}"
  if [ "$name" = lmdeploy ]; then
    repack "$tmp"/lmdeploy-*.whl '^lmdeploy/(turbomind/)?(_turbomind[^/]*\.so|lib64/|lib/[^/]*turbomind[^/]*\.so)'
    repack "$tmp"/gradio-6*.whl '^gradio/(templates/node/|media_assets/)|ffmpeg-core\.wasm$'
  fi
  rm -rf "${OUT:?}/$name"; mv "$tmp" "$OUT/$name"
}

mkdir -p "$OUT"
[ "$ONLY" = xtuner ] || build lmdeploy requirements-lmdeploy.txt "$NEVER transformers" "" \
  lmdeploy==0.18.0 gradio==6.31.0 gradio_client==2.7.2 openai==3.57.0
# transformers 4.48 needs tokenizers < 0.22 and huggingface_hub < 1.0, older than the image's (made for 5.17): carry
# them, and peft at the course's pin; opencv-python and bitsandbytes are optional for the course
[ "$ONLY" = lmdeploy ] || build xtuner requirements-xtuner.txt "$NEVER opencv-python bitsandbytes" \
  "transformers tokenizers huggingface-hub peft" \
  xtuner==0.2.0 transformers==4.48.0 tokenizers==0.21.4 mmengine==0.10.6 deepspeed==0.16.2 liger-kernel==0.8.5

total=0
for d in lmdeploy xtuner; do
  [ -d "$OUT/$d" ] || continue
  kib=$(du -sk "$OUT/$d" | cut -f1); total=$((total + kib))
  echo "$OUT/$d: $(du -sh "$OUT/$d" | cut -f1), $(find "$OUT/$d" -type f | wc -l) files"
  [ "$d" != lmdeploy ] || [ "$kib" -le $((40 * 1024)) ] || echo "warning: $OUT/lmdeploy is over 40 MiB" >&2
done
echo "total: $((total / 1024)) MiB (limit 60 MiB)"
[ "$total" -le $((60 * 1024)) ] || { echo "the wheel folders exceed 60 MiB" >&2; exit 1; }
