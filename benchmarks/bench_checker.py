"""Benchmark of the dataset checker: records/s and images/s on a phone-photo-like LLaVA set.

Builds (in a temp dir) a 10,000-record LLaVA file whose records share 2,000 JPEGs of phone
sizes (4032x3024, 3024x4032, 1920x1440, 1600x1200, ...), then runs
:func:`helpers.data.checks.check_llava` with 1 worker and with all cores, first as shipped (JPEGs
with an end marker are not decoded) and then with ``always_decode=True`` (every JPEG decoded in
draft mode). Every run includes the sequence-length check against ``max_length`` with the
course's tokenizer (``settings.model_path``; every answer differs, so nothing is tokenized only
once by luck) unless ``--no-length``. Prints the numbers; no time assertions (goal: >= 1,000
records/s on 2 cores).

Usage:
    python benchmarks/bench_checker.py [--records 10000] [--images 2000] [--workers N] [--no-length]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.data.checks import LengthCheck, check_llava  # noqa: E402
from helpers.settings import get_settings  # noqa: E402

# (width, height, share of the images): mostly mid-size shares, some full 12 MP phone frames.
SIZES = [(4032, 3024, 0.15), (3024, 4032, 0.10), (1920, 1440, 0.25), (1440, 1920, 0.15),
         (1600, 1200, 0.20), (1280, 960, 0.15)]


def draw_photo(w: int, h: int, rng: random.Random):
    """A smooth colour field with texture, so the JPEG weighs like a photo (~0.3-0.6 bit/px)."""
    import numpy as np
    from PIL import Image

    gen = np.random.default_rng(rng.randrange(1 << 30))
    small = gen.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8)
    base = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
    noise = gen.normal(0, 6, (h, w, 3))
    return Image.fromarray(np.clip(np.asarray(base, dtype=np.float32) + noise, 0, 255).astype("uint8"))


def build(tmp: Path, n_records: int, n_images: int, seed: int = 0) -> tuple:
    rng = random.Random(seed)
    images = tmp / "images"
    images.mkdir(parents=True)
    # Encode one source JPEG per size and copy its bytes: every path is still a distinct file
    # the checker must open and decode; drawing 2,000 big photos would take minutes.
    sources = {}
    for w, h, _ in SIZES:
        path = tmp / f"src_{w}x{h}.jpg"
        draw_photo(w, h, rng).save(path, "JPEG", quality=88)
        sources[(w, h)] = path
    names, total_bytes = [], 0
    weights = [s for *_, s in SIZES]
    for i in range(n_images):
        w, h, _ = rng.choices(SIZES, weights)[0]
        rel = f"{i // 100:03d}/IMG_{i:05d}.jpeg"
        (images / rel).parent.mkdir(exist_ok=True)
        shutil.copyfile(sources[(w, h)], images / rel)
        total_bytes += sources[(w, h)].stat().st_size
        names.append((rel, w, h))
    records = []
    for i in range(n_records):
        rel, w, h = names[i % n_images]
        records.append({"id": f"r{i}", "image": rel, "image_wh": [[w, h]], "conversations": [
            {"from": "human", "value": "图片中的食物通常属于哪个菜系?\n<image>"},
            {"from": "gpt", "value": f"新疆菜，图中的菜是烤羊肉串（第 {i} 份）"}]})
    rng.shuffle(records)
    data = tmp / "train.json"
    data.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return data, images, total_bytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--images", type=int, default=2_000)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--skip-deep", action="store_true", help="skip the always_decode=True runs (~30 s)")
    ap.add_argument("--no-length", action="store_true", help="skip the sequence-length check")
    args = ap.parse_args()
    length = None
    if not args.no_length:
        t0 = time.perf_counter()
        length = LengthCheck.from_settings(get_settings())
        print(f"tokenizer {length.source} loaded in {time.perf_counter() - t0:.1f} s (not in the rates below); "
              f"max_length {length.max_length}")
    with tempfile.TemporaryDirectory(prefix="bench_checker_") as d:
        t0 = time.perf_counter()
        data, images, nbytes = build(Path(d), args.records, args.images)
        print(f"built {args.records} records / {args.images} JPEGs ({nbytes / 1e9:.2f} GB) "
              f"in {time.perf_counter() - t0:.1f} s; {os.cpu_count()} CPUs")
        runs = [(w, False) for w in sorted({1, args.workers})]
        if not args.skip_deep:  # the slow path: every JPEG entropy-decoded (draft mode)
            runs += [(w, True) for w in sorted({1, args.workers})]
        for workers, deep in runs:
            t0 = time.perf_counter()
            rep = check_llava(data, images, workers=workers, always_decode=deep, length=length)
            dt = time.perf_counter() - t0
            assert rep.checked == rep.valid == args.records, rep.format()
            print(f"workers={workers} always_decode={deep} length_check={length is not None}: {rep.checked} records, "
                  f"{rep.images_checked} images ({rep.images_decoded} decoded) in {dt:.2f} s -> "
                  f"{rep.checked / dt:,.0f} records/s, {rep.images_checked / dt:,.0f} images/s, "
                  f"{nbytes / dt / 1e6:,.0f} MB/s")


if __name__ == "__main__":
    main()
