"""How long the web UI takes to decode uploads when a class uploads at once, against the way it decoded before.

The web UI decodes every upload in its own process, beside Gradio's worker threads and LMDeploy's
engine loop. Under the class load of ``benchmarks/webui_load.py`` (docs/gpu-runs.md §12) the
JPEG decode grew from 0.06 s alone to 2.2 s at 64 students. Two things make it grow:

* the strict decode switches Pillow's process-wide ``LOAD_TRUNCATED_IMAGES`` off around each
  decode, under one process-wide lock: concurrent uploads wait for each other;
* Pillow feeds its decoder 64 KiB at a time and takes the GIL back between pieces, so busy Python
  threads make every piece, and with it the time the lock is held, longer.

This benchmark runs ``--uploads`` decodes of a phone-size JPEG at once (one thread each) while
``--busy`` Python threads keep the interpreter busy (standing in for Gradio and the engine loop),
twice in the same run: **baseline** = Pillow's default decode of the file behind one lock, as
before; **course** = :func:`helpers.serve.uploads.load_upload` (the same lock, the whole file in
one decoder call). It prints the mean and p95 per-upload time of each and their ratio.

Usage:
    python benchmarks/upload_decode.py [--uploads 16] [--busy 4] [--repeat 3]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def phone_jpeg(folder: Path) -> Path:
    """A 4032x3024 JPEG with photo-like detail (a drawn course dish, upscaled with noise)."""
    import numpy as np
    from PIL import Image

    from helpers.data.synth_draw import draw_photo
    from helpers.foods import DISHES

    small = np.asarray(draw_photo(DISHES[0], 1008, 756, seed=1), dtype=np.int16)
    big = np.kron(small, np.ones((4, 4, 1), dtype=np.int16))
    big += np.random.default_rng(0).integers(-12, 13, big.shape, dtype=np.int16)
    path = folder / "phone.jpg"
    Image.fromarray(np.clip(big, 0, 255).astype(np.uint8)).save(path, quality=90)
    return path


def baseline_decode(path: Path, lock: threading.Lock):
    """The decode before: the whole decode under one process-wide lock, Pillow's 64 KiB pieces."""
    from PIL import Image

    with lock, Image.open(path) as img:
        img.load()
        return img.convert("RGB")


def timed_wave(decode, n: int) -> list:
    """``n`` decodes started together; each one's seconds."""
    times, start = [0.0] * n, threading.Barrier(n)

    def one(i):
        start.wait()
        t = time.perf_counter()
        decode()
        times[i] = time.perf_counter() - t

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    return times


def busy_threads(k: int):
    """Start ``k`` pure-Python spinning threads; returns a function that stops them."""
    stop = threading.Event()

    def spin():
        x = 0
        while not stop.is_set():
            for _ in range(2000):
                x += 1

    threads = [threading.Thread(target=spin, daemon=True) for _ in range(k)]
    [t.start() for t in threads]
    return lambda: (stop.set(), [t.join() for t in threads])


def summary(times: list) -> dict:
    s = sorted(times)
    return dict(mean=sum(s) / len(s), p95=s[min(len(s) - 1, round(0.95 * (len(s) - 1)))])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--uploads", type=int, default=16, help="decodes started at once")
    ap.add_argument("--busy", type=int, default=4, help="busy Python threads beside them")
    ap.add_argument("--repeat", type=int, default=3, help="waves per way (alternating)")
    args = ap.parse_args(argv)
    if min(args.uploads, args.repeat) < 1 or args.busy < 0:
        ap.error("--uploads and --repeat must be at least 1, --busy at least 0")
    from helpers.serve.uploads import load_upload

    with tempfile.TemporaryDirectory() as tmp:
        path = phone_jpeg(Path(tmp))
        size = path.stat().st_size
        lock = threading.Lock()
        load_upload(path)  # imports and first-call set-up out of the way
        alone = summary(timed_wave(lambda: load_upload(path), 1))["mean"]
        ways = {"baseline": lambda: baseline_decode(path, lock), "course": lambda: load_upload(path)}
        times = {name: [] for name in ways}
        stop = busy_threads(args.busy)
        try:
            for _ in range(args.repeat):
                for name, decode in ways.items():  # alternating: both see the same machine state
                    times[name] += timed_wave(decode, args.uploads)
        finally:
            stop()
    print(f"{args.uploads} uploads at once, {args.busy} busy threads, {args.repeat} waves; "
          f"4032x3024 JPEG of {size / 2**20:.1f} MiB; one decode alone {alone:.3f} s")
    rows = {name: summary(t) for name, t in times.items()}
    for name, r in rows.items():
        print(f"  {name:8s}  mean {r['mean']:.3f} s   p95 {r['p95']:.3f} s")
    print(f"course vs baseline: mean {rows['baseline']['mean'] / rows['course']['mean']:.2f}x faster, "
          f"p95 {rows['baseline']['p95'] / rows['course']['p95']:.2f}x faster")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
