"""The parts of the web UI load test: simulated students, their photos, and what one load level measured.

* :func:`session_photos`: one distinct phone-size JPEG per session (drawn in parallel);
* :class:`Session`: one student over ``gradio_client``: upload, then T questions with reading time
  between them; per turn the time to the first streamed text and to the whole answer, and the
  checks that find a failure or another session's words;
* :func:`level_summary`: p50/p95 of one load level, with the server's own ``TIMING`` lines
  (:mod:`helpers.serve.timing`) of that level split into where the time went.

Example:
    >>> pct([1.0, 2.0, 3.0, 4.0], 0.5)
    2.0
"""
from __future__ import annotations

import json
import statistics
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from helpers.serve.handlers import QUEUED, THINKING, WRITING
from helpers.serve.timing import question_key

NO_TEXT = "（模型没有生成文字）"  # helpers.serve.handlers: the turn ended without text


def pct(values, q):
    """The ``q`` quantile (nearest rank) of ``values``; None when empty."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _r(x, nd=3):
    return None if x is None else round(x, nd)


def _one_photo(args):
    from benchmarks.common import PHOTO_SIZES, synthetic_photos

    out, index, sizes = args
    size = (sizes or PHOTO_SIZES)[index % len(sizes or PHOTO_SIZES)]
    return str(synthetic_photos(Path(out) / f"s{index:03d}", 1, seed=1000 + index, sizes=[size])[0])


def session_photos(out_dir, n: int, sizes=None, workers: int = 8) -> list:
    """``n`` distinct phone-size JPEGs (own drawing seed each; sizes cycle through ``PHOTO_SIZES``).

    Args:
        out_dir: folder (reused: photos already drawn are kept).
        n: sessions.
        sizes: ``[(w, h)]`` (default: ``benchmarks.common.PHOTO_SIZES``, 7-13 tiles at 12 tiles max).
        workers: drawing processes.

    Returns:
        ``[Path]`` in session order.
    """
    jobs = [(str(out_dir), i, sizes) for i in range(n)]
    if workers <= 1 or n <= 2:
        return [Path(_one_photo(j)) for j in jobs]
    with ProcessPoolExecutor(min(workers, n)) as pool:
        return [Path(p) for p in pool.map(_one_photo, jobs)]


def texts(chat) -> list:
    """``[(role, text)]`` of a Chatbot value as gradio_client returns it."""
    out = []
    for m in chat or []:
        content = m.get("content") if isinstance(m, dict) else m
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        out.append((m.get("role") if isinstance(m, dict) else "?", str(content)))
    return out


def has_answer_text(chat) -> bool:
    """True when the last message is the assistant's real text (not a queued/thinking/writing note or an error)."""
    if not chat:
        return False
    role, last = chat[-1]
    return (role == "assistant" and bool(last.strip()) and last not in (QUEUED, THINKING, WRITING)
            and "⏳" not in last and not last.startswith("⚠️") and last != NO_TEXT)


def has_first_token(chat) -> bool:
    """True once the model has produced a token: real text, or the UI's "started answering" note."""
    return has_answer_text(chat) or bool(chat) and chat[-1] == ("assistant", WRITING)


class Session(threading.Thread):
    """One simulated student: upload a photo, then ``turns`` questions with ``think`` s of reading between them.

    Per turn it records (wall-clock submit time; seconds to the first token -- the first update with
    text or the UI's "started answering" note --, to the first visible text, and to the whole answer,
    each None when it never came; the question's log key) and checks the conversation it got
    back: its own photo, its own secret in every question, no other session's secret, the
    right number of turns, a real answer.
    """

    def __init__(self, index, url, photo, secret, all_secrets, turns, gen, deadline, think=0.0, stop=None):
        super().__init__(name=f"session-{index}", daemon=True)
        self.index, self.url, self.photo, self.secret = index, url, photo, secret
        self.others = [s for s in all_secrets if s != secret]
        self.turns, self.gen, self.deadline, self.think = turns, gen, deadline, think
        self.stop = stop or threading.Event()
        self.records, self.failures, self.leaks, self.done_turns = [], [], [], 0
        self.upload_s, self.job = None, None

    def check(self, chat, turn):
        text = json.dumps(chat, ensure_ascii=False)
        for other in self.others:
            if other in text:
                self.leaks.append(f"turn {turn}: saw another session's secret {other}")
        if self.photo.name not in chat[0][1]:
            self.failures.append(f"turn {turn}: first message is not about {self.photo.name}: {chat[0][1][:60]}")
        users = [t for r, t in chat if r == "user"]
        if len(users) != turn or not all(self.secret in u for u in users):
            self.failures.append(f"turn {turn}: expected {turn} own questions, got {users}")
        role, last = chat[-1]
        if role != "assistant" or last.startswith("⚠️") or "⏳" in last:
            self.failures.append(f"turn {turn}: bad answer {last[:80]!r}")

    def ask(self, client, question, left):
        """Submit one question and follow its stream; returns (chat, s to first token, s to first text)."""
        t0 = time.perf_counter()
        self.job = job = client.submit(question, *self.gen, api_name="/chat")
        token = text = None
        chat = []
        for output in job:  # every streamed update, as it arrives
            chat, now = texts(output), time.perf_counter() - t0
            token = now if token is None and has_first_token(chat) else token
            text = now if text is None and has_answer_text(chat) else text
            if now > left:
                job.cancel()
                raise TimeoutError(f"no answer within {left:.0f} s")
        return texts(job.result(timeout=max(1.0, left - (time.perf_counter() - t0)))) or chat, token, text

    def run(self):
        from gradio_client import Client, handle_file

        try:
            client = Client(self.url, verbose=False)
            t0 = time.perf_counter()
            chat, _, _ = client.predict(handle_file(str(self.photo)), api_name="/load_image")
            self.upload_s = time.perf_counter() - t0
            chat = texts(chat)
            if "已载入" not in chat[-1][1]:
                self.failures.append(f"upload refused: {chat[-1][1][:80]}")
                return
            for turn in range(1, self.turns + 1):
                if turn > 1 and self.stop.wait(self.think):
                    break
                left = self.deadline - time.monotonic()
                if left <= 0 or self.stop.is_set():
                    self.failures.append(f"turn {turn}: not started before the deadline")
                    return
                question = f"[{self.secret}] 第{turn}问：图中是什么菜？"
                submitted = time.time()
                t0 = time.perf_counter()
                chat, token, text = self.ask(client, question, left)
                self.records.append(dict(q=question_key(question), submitted=submitted, ttft_s=token, text_s=text,
                                         turn_s=time.perf_counter() - t0))
                self.done_turns = turn
                self.check(chat, turn)
            client.close()
        except Exception as exc:  # a failed session is reported, the others go on
            self.failures.append(f"{type(exc).__name__}: {str(exc)[:200]}")


def timings_between(log_path, t0, t1) -> list:
    """The server log's TIMING records written between wall-clock times ``t0`` and ``t1``."""
    from helpers.serve.timing import parse_timing_lines

    if not log_path or not Path(log_path).is_file():
        return []
    return [r for r in parse_timing_lines(Path(log_path).read_text(errors="replace")) if t0 <= r.get("t", 0) <= t1]


def _stats(values, nd=4) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"n": 0}
    return {"n": len(values), "mean": _r(statistics.fmean(values), nd), "p50": _r(pct(values, 0.5), nd),
            "p95": _r(pct(values, 0.95), nd)}


def breakdown(sessions, timings: list) -> dict:
    """Where the time of one load level went, from the client's records and the server's TIMING lines.

    Args:
        sessions: the level's finished :class:`Session` objects.
        timings: the server's records written during the level (:func:`helpers.serve.timing.parse_timing_lines`).

    Returns:
        ``{"cpu": {...}, "queue": {...}, "engine": {...}}``, each part with n/mean/p50/p95 seconds.
        ``queue.gradio_wait_s``: submit -> the queued step starts (client and server clocks are the
        same machine's); ``engine.ttft_s``: the engine call -> its first streamed piece (LMDeploy's
        preprocessing wait and run, the vision encoder and prefill on the GPU, scheduling);
        ``engine.gpu_and_scheduling_s``: that minus the mean preprocessing wait and run.
    """
    by_kind: dict = {}
    for rec in timings:
        by_kind.setdefault(rec.get("kind"), []).append(rec)
    turns = {rec.get("q"): rec for rec in by_kind.get("turn", [])}
    waits = [turns[r["q"]]["entered"] - r["submitted"] for s in sessions for r in s.records
             if r["q"] in turns and turns[r["q"]].get("entered")]
    ups, prep = by_kind.get("upload", []), by_kind.get("lmdeploy_preprocess", [])
    eng = list(turns.values())
    ttft = [t.get("engine_ttft_s") for t in eng]
    prep_mean = (statistics.fmean([p["wait_s"] + p["run_s"] for p in prep]) if prep else 0.0)
    rate = [t["tokens_out"] / t["decode_s"] for t in eng if t.get("tokens_out") and t.get("decode_s")]
    return {
        "cpu": {"jpeg_decode_s": _stats([u.get("decode_s") for u in ups]),
                "exif_convert_s": _stats([u.get("convert_s") for u in ups]),
                "prescale_s": _stats([u.get("prescale_s") for u in ups]),
                "upload_client_s": _stats([s.upload_s for s in sessions]),
                "tiling_s": _stats([p.get("run_s") for p in prep]),
                "tiling_wait_s": _stats([p.get("wait_s") for p in prep]),
                "tiles": _stats([p.get("tiles") for p in prep], 1)},
        "queue": {"gradio_wait_s": _stats(waits)},
        "engine": {"ttft_s": _stats(ttft), "decode_s": _stats([t.get("decode_s") for t in eng]),
                   "gpu_and_scheduling_s": _stats([x - prep_mean for x in ttft if x is not None]),
                   "tokens_in": _stats([t.get("tokens_in") for t in eng], 1),
                   "tokens_out": _stats([t.get("tokens_out") for t in eng], 1),
                   "decode_tok_per_s_per_stream": _stats(rate, 1)},
    }


def level_summary(n, sessions, timings, planned_turns, wall, hung) -> dict:
    """The summary of one load level (``n`` sessions): p50/p95 TTFT and turn time, failures, leaks, parts.

    Args:
        n: sessions.
        sessions: the level's :class:`Session` objects.
        timings: the server's TIMING records of the level.
        planned_turns: turns each session was to ask.
        wall: seconds the level took.
        hung: names of sessions still running at its deadline.

    Returns:
        A JSON-ready dict.
    """
    recs = [r for s in sessions for r in s.records]
    ttft, text = [r["ttft_s"] for r in recs], [r.get("text_s") for r in recs]
    turn = [r["turn_s"] for r in recs]
    failures = [f"{s.name}: {f}" for s in sessions for f in s.failures] + [f"{h}: still running at the deadline"
                                                                           for h in hung]
    return {"sessions": n, "turns_done": sum(s.done_turns for s in sessions), "turns_planned": n * planned_turns,
            "wall_s": _r(wall, 2), "ttft_p50_s": _r(pct(ttft, 0.5)), "ttft_p95_s": _r(pct(ttft, 0.95)),
            "turn_p50_s": _r(pct(turn, 0.5)), "turn_p95_s": _r(pct(turn, 0.95)),
            "first_text_p50_s": _r(pct(text, 0.5)), "first_text_p95_s": _r(pct(text, 0.95)),
            "turns_without_token": sum(1 for x in ttft if x is None),
            "turns_without_text": sum(1 for x in text if x is None),
            "failures": failures, "leaks": [f"{s.name}: {x}" for s in sessions for x in s.leaks],
            "parts": breakdown(sessions, timings)}
