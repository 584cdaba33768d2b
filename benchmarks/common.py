"""Shared parts of the GPU benchmarks: card and versions, measured ceilings, results JSON, tables.

* :func:`environment`: card name, memory, driver and the versions of the packages that matter.
* :func:`copy_bandwidth` / :func:`matmul_tflops`: the card's own ceilings, measured here
  (device-to-device copy of a large buffer; a large bf16 matmul), so ratios never rely on a
  data-sheet number.
* :func:`write_results`: ``benchmarks/results/<name>-<date>-<card>.json``.
* :func:`print_table`: a Markdown table of result rows.
* :func:`synthetic_photos`: FoodieQA-like phone photos (sizes and aspect ratios that tile to
  7-13 448 px tiles), drawn with :func:`helpers.data.synth_draw.draw_photo`.

Example:
    >>> from benchmarks.common import print_table
    >>> print_table([{"a": 1, "b": 2.5}])
    | a | b |
    |---|---|
    | 1 | 2.5 |
"""
from __future__ import annotations

import datetime as _dt
import importlib
import json
import platform
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS_DIR = ROOT / "benchmarks" / "results"
PACKAGES = ("torch", "transformers", "lmdeploy", "xtuner", "deepspeed", "peft", "mmengine", "triton", "timm")

# Phone-photo frames (width, height): 4:3 and 3:4 at 12 MP, 16:9 / 9:16, 1:1 and a 2:1 panorama.
# With max_dynamic_patch 12 they tile to 7-13 tiles (thumbnail included).
PHOTO_SIZES = [(4032, 3024), (3024, 4032), (4000, 2250), (2250, 4000), (3000, 3000), (4032, 2688),
               (1920, 1440), (1440, 1920)]


def need_cuda(what: str) -> bool:
    """True when CUDA is usable; otherwise print why ``what`` is skipped and return False."""
    try:
        import torch
    except ImportError:
        print(f"[skip] {what}: torch is not installed (requirements-lmdeploy.txt / requirements-xtuner.txt)")
        return False
    if not torch.cuda.is_available():
        print(f"[skip] {what}: no CUDA device on this machine")
        return False
    return True


def _version(name: str):
    try:
        return getattr(importlib.import_module(name), "__version__", "?")
    except Exception as exc:  # noqa: BLE001 - a broken optional package must not stop the benchmark
        return None if isinstance(exc, ImportError) else f"import failed: {type(exc).__name__}"


def environment(packages=PACKAGES) -> dict:
    """Card, driver, Python and package versions of this run.

    Returns:
        A dict; ``card`` is ``"cpu"`` when no CUDA device is visible.
    """
    info = {"python": platform.python_version(), "host": platform.node(), "card": "cpu",
            "versions": {p: _version(p) for p in packages}}
    try:
        import torch

        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            info.update(card=p.name, card_memory_gib=round(p.total_memory / 2**30, 1), gpus=torch.cuda.device_count(),
                        cuda=torch.version.cuda, capability=f"{p.major}.{p.minor}")
    except ImportError:
        pass
    return info


def _cuda_time(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs (CUDA events; one warm-up)."""
    import torch

    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def copy_bandwidth(mib: int = 2048, repeats: int = 20) -> dict | None:
    """Device-to-device copy bandwidth of GPU 0 (read + write bytes per second).

    Args:
        mib: buffer size (large enough to defeat the L2 cache).
        repeats: timed copies (median).

    Returns:
        ``{"copy_gbps": GB/s read + written, "buffer_mib"}`` or None without CUDA. A copy keeps
        memory busy in both directions, so bytes read + written per second is the throughput
        a memory-bound kernel (a decode step reading the weights) can reach.
    """
    if not need_cuda("copy bandwidth"):
        return None
    import torch

    src = torch.empty(mib * 2**20, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    sec = _cuda_time(lambda: dst.copy_(src), repeats)
    moved = 2 * src.numel()  # every byte is read once and written once
    del src, dst
    torch.cuda.empty_cache()
    return {"copy_gbps": round(moved / sec / 1e9, 1), "buffer_mib": mib}


def matmul_tflops(n: int = 8192, repeats: int = 10) -> dict | None:
    """Dense bf16 matmul rate of GPU 0 (``n x n`` by ``n x n``), the ceiling for utilisation.

    Returns:
        ``{"bf16_tflops": ..., "n": n}`` or None without CUDA.
    """
    if not need_cuda("bf16 matmul rate"):
        return None
    import torch

    a = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    sec = _cuda_time(lambda: a @ b, repeats)
    del a, b
    torch.cuda.empty_cache()
    return {"bf16_tflops": round(2 * n**3 / sec / 1e12, 1), "n": n}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "unknown"


def write_results(name: str, data: dict, out_dir=None, path=None, quiet: bool = False) -> Path:
    """Write ``data`` (plus the environment) to ``<out_dir>/<name>-<date>-<card>.json``.

    The benchmarks call it after every engine / recipe with the ``path`` of the first call, so
    a run cut short still leaves the numbers measured so far.

    Args:
        name: benchmark name, e.g. ``"serving"``.
        data: JSON-serialisable results.
        out_dir: default ``benchmarks/results``.
        path: rewrite this file instead of naming a new one.
        quiet: do not print the path.

    Returns:
        The file written.
    """
    env = data.get("environment") or environment()
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    if path is None:
        out = Path(out_dir) if out_dir else RESULTS_DIR
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{name}-{stamp}-{_slug(env['card'])}.json"
    path = Path(path)
    path.write_text(json.dumps({"name": name, "written": stamp, "environment": env, **data}, indent=2,
                               ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    if not quiet:
        print(f"results -> {path}")
    return path


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
    return "-" if v is None else str(v)


def print_table(rows: list, columns: list | None = None) -> str:
    """Print (and return) ``rows`` as a Markdown table; ``columns`` default: keys of the first row."""
    if not rows:
        print("(no rows)")
        return ""
    columns = columns or list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
    text = "\n".join(lines)
    print(text)
    return text


def ratio(a, b):
    """``a / b`` rounded, or None when either is missing or ``b`` is 0."""
    return None if a is None or not b else round(a / b, 3)


def synthetic_photos(out_dir, n: int, seed: int = 0, sizes=PHOTO_SIZES, quality: int = 85) -> list:
    """Draw ``n`` FoodieQA-like food photos at phone sizes as JPEGs (cycling through ``sizes``).

    Args:
        out_dir: folder for the files.
        n: number of photos.
        seed: drawing seed.
        sizes: (width, height) list.
        quality: JPEG quality.

    Returns:
        The paths, in order.
    """
    from PIL import Image

    from helpers.foods import DISHES
    from helpers.data.synth_draw import draw_photo

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        path = out / f"photo_{i:04d}_{w}x{h}.jpg"
        if not path.is_file():
            # Drawn small and scaled up: only the frame size matters for tiling and speed, and
            # drawing 12 MP frames would cost more CPU time than the benchmark itself.
            scale = max(1, max(w, h) // 512)
            image = draw_photo(DISHES[i % len(DISHES)], w // scale, h // scale, seed=seed * 100_003 + i)
            image.resize((w, h), Image.BICUBIC).save(path, quality=quality)
        paths.append(path)
    return paths


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds`` (CUDA-synchronised when CUDA is in use)."""

    def __enter__(self):
        self._sync()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self._sync()
        self.seconds = time.perf_counter() - self.t0

    @staticmethod
    def _sync():
        try:
            import torch

            if torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.cuda.synchronize()
        except ImportError:
            pass
