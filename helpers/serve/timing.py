"""Where a web UI request's time goes: cheap, always-on timers written as one JSON line each to the log.

The web UI times what it does itself (decoding an upload, the EXIF turn and RGB conversion, the
optional downscale; the wait in Gradio's queue; the engine's first streamed piece and the decode
after it) and, with LMDeploy, the engine's own image preprocessing (tiling on the CPU, and how long
a request waited for LMDeploy's preprocessing thread). Each measurement is one log line
``TIMING {...}`` from the logger ``helpers.serve.timing``; a load test reads them back with
:func:`parse_timing_lines`. A ``perf_counter`` pair and one log line cost microseconds, far below
what they measure, so the timers are never switched off.

Example:
    >>> lines = ['x', 'TIMING {"kind": "upload", "decode_s": 0.1}']
    >>> parse_timing_lines("\\n".join(lines))
    [{'kind': 'upload', 'decode_s': 0.1}]
"""
from __future__ import annotations

import hashlib
import json
import logging
import time

log = logging.getLogger("helpers.serve.timing")
PREFIX = "TIMING "


def question_key(text: str) -> str:
    """A short digest that names a question in the log without writing the question itself.

    Example:
        >>> question_key("图中是什么菜？") == question_key("图中是什么菜？")
        True
    """
    return hashlib.sha1(text.strip().encode("utf-8")).hexdigest()[:12]


def log_timing(kind: str, **fields) -> dict:
    """Write one ``TIMING {json}`` line (wall-clock ``t`` added) and return the record.

    Args:
        kind: what was timed: ``"upload"``, ``"turn"``, ``"lmdeploy_preprocess"``.
        **fields: seconds (``*_s``), sizes, counts; JSON-serialisable.

    Returns:
        The record written.

    Example:
        >>> log_timing("upload", decode_s=0.01)["kind"]
        'upload'
    """
    record = {"kind": kind, "t": round(time.time(), 4), **fields}
    # Dropped unless logging is configured (python -m helpers.serve.webui does); cheap either way.
    log.info(PREFIX + json.dumps(record, ensure_ascii=False))
    return record


def parse_timing_lines(text: str) -> list:
    """The records of every ``TIMING`` line in a log, in order (other lines are skipped).

    Args:
        text: a server log.

    Returns:
        ``[dict, ...]``.
    """
    out = []
    for line in text.splitlines():
        at = line.find(PREFIX)
        if at < 0:
            continue
        try:
            record = json.loads(line[at + len(PREFIX):])
        except ValueError:  # a line cut by a crash: the others still count
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def log_timings_to(stream=None) -> logging.Handler:
    """Send the TIMING lines to ``stream`` (default stderr) through their own handler.

    Gradio's server start sets the root handler to ERROR, which would drop these INFO lines;
    a handler of their own keeps them whatever other libraries do to the root logger.

    Returns:
        The handler (added once; later calls return the same one, stream unchanged: use its ``setStream``).

    Example:
        >>> import io
        >>> log_timings_to(io.StringIO()) is log_timings_to()
        True
    """
    import sys

    for handler in log.handlers:
        if getattr(handler, "_course_timing", False):
            return handler
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    handler._course_timing = True
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    return handler


def instrument_lmdeploy_preprocess(pipe, workers: int | None = None) -> bool:
    """Time LMDeploy's image preprocessing (tiling + tensors) per request, optionally on more threads.

    LMDeploy 0.18 runs every request's image preprocessing on one worker thread
    (``vl_encoder.executor``, one worker), so under a burst of image questions they queue there.
    This wraps the vision model's ``preprocess`` to log ``lmdeploy_preprocess`` records
    (``wait_s``: queued for the thread; ``run_s``: tiling and tensors; ``tiles``), and with
    ``workers`` replaces the executor by a pool of that many threads. With the PyTorch engine the
    executor runs nothing else (the vision encoder runs inside the engine's prefill).

    Args:
        pipe: an LMDeploy pipeline from :func:`helpers.serve.pipeline.make_pipeline`.
        workers: threads for preprocessing (None: keep LMDeploy's one).

    Returns:
        True when instrumented; False when this LMDeploy keeps no vision encoder where expected.

    Example:
        >>> instrument_lmdeploy_preprocess(object())   # not an LMDeploy pipeline: nothing to time
        False
    """
    encoder = getattr(getattr(pipe, "async_engine", None), "vl_encoder", None)
    model = getattr(encoder, "model", None)
    if model is None or not hasattr(model, "preprocess") or getattr(model, "_course_timed", False):
        return False
    inner, outer = model.preprocess, encoder.preprocess
    queued: dict = {}

    def timed_preprocess(messages, *args, **kwargs):
        start = time.perf_counter()
        out = inner(messages, *args, **kwargs)
        run = time.perf_counter() - start
        tiles = sum(int(getattr(item.get("pixel_values"), "shape", [0])[0]) for m in out
                    if isinstance(m, dict) and m.get("role") == "preprocess" for item in m.get("content") or [])
        log_timing("lmdeploy_preprocess", wait_s=round(start - queued.pop(id(messages), start), 5),
                   run_s=round(run, 5), tiles=tiles)
        return out

    async def timed_outer(messages, *args, **kwargs):
        queued[id(messages)] = time.perf_counter()  # the request enters the executor's queue now
        return await outer(messages, *args, **kwargs)

    model.preprocess, encoder.preprocess, model._course_timed = timed_preprocess, timed_outer, True
    if workers and workers > 1 and getattr(getattr(pipe, "backend_config", None), "__class__", type).__name__ \
            == "PytorchEngineConfig":
        from concurrent.futures import ThreadPoolExecutor

        encoder.executor = ThreadPoolExecutor(max_workers=int(workers), thread_name_prefix="vl-preprocess")
    return True
