"""Load test of the web UI: N concurrent sessions x T turns with images, over gradio_client.

Each session uploads its own photo and asks questions carrying its own secret word; after every
turn it checks the conversation it got back: its own photo, its own secret in every question, no
other session's secret anywhere, the right number of turns, a real answer (no error, no leftover
"queued" note). Prints p50/p95 latency per turn and exits 1 on any failure or leak. Runs are
bounded in sessions, turns and seconds and stop by themselves.

Usage (against a running UI, or let the script start and stop one):

    python -m helpers.serve.webui --model artifacts/models/internvl2-tiny --port 7860 &
    python benchmarks/webui_load.py --url http://127.0.0.1:7860/
    python benchmarks/webui_load.py --start --quick          # CI: < 2 min on a 2-core CPU, tiny model
    python benchmarks/webui_load.py --start --engine lmdeploy --model artifacts/models/internvl2-tiny \
        --json benchmarks/results/webui-load.json --server-log benchmarks/results/webui-load.server.log   # GPU
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.procs import stop_group  # noqa: E402
from helpers.settings import get_settings  # noqa: E402


def _photo(path: Path, index: int):
    """A distinct 1-tile photo per session (own colours and shape position)."""
    from PIL import Image, ImageDraw

    rng = random.Random(index)
    img = Image.new("RGB", (320, 240), tuple(rng.randrange(40, 220) for _ in range(3)))
    x, y = rng.randrange(10, 160), rng.randrange(10, 100)
    ImageDraw.Draw(img).ellipse((x, y, x + 140, y + 120), fill=tuple(rng.randrange(0, 255) for _ in range(3)))
    img.save(path)
    return path


def _texts(chat) -> list:
    out = []
    for m in chat or []:
        content = m.get("content") if isinstance(m, dict) else m
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        out.append((m.get("role") if isinstance(m, dict) else "?", str(content)))
    return out


class Session(threading.Thread):
    """One simulated user: upload, then ``turns`` questions, checking each reply."""

    def __init__(self, index, url, photo, secret, all_secrets, turns, gen, deadline):
        super().__init__(name=f"session-{index}", daemon=True)
        self.index, self.url, self.photo, self.secret = index, url, photo, secret
        self.others = [s for s in all_secrets if s != secret]
        self.turns, self.gen, self.deadline = turns, gen, deadline
        self.latencies, self.failures, self.leaks, self.done_turns = [], [], [], 0

    def _check(self, chat, turn):
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

    def run(self):
        from gradio_client import Client, handle_file

        try:
            client = Client(self.url, verbose=False)
            chat, _, _ = client.predict(handle_file(str(self.photo)), api_name="/load_image")
            chat = _texts(chat)
            if "已载入" not in chat[-1][1]:
                self.failures.append(f"upload refused: {chat[-1][1][:80]}")
                return
            for turn in range(1, self.turns + 1):
                left = self.deadline - time.monotonic()
                if left <= 0:
                    self.failures.append(f"turn {turn}: not started before the deadline")
                    return
                question = f"[{self.secret}] 第{turn}问：图中是什么菜？"
                t0 = time.perf_counter()
                job = client.submit(question, *self.gen, api_name="/chat")
                chat = _texts(job.result(timeout=left))
                self.latencies.append(time.perf_counter() - t0)
                self.done_turns = turn
                self._check(chat, turn)
            client.close()
        except Exception as exc:  # a failed session is reported, the others go on
            self.failures.append(f"{type(exc).__name__}: {exc}")


def _start_ui(model, port, engine, log_path):
    cmd = [sys.executable, "-m", "helpers.serve.webui", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--model", str(model)] if model else []
    cmd += ["--engine", engine] if engine else []
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, cwd=str(Path(__file__).resolve().parent.parent),
                            env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    return proc, log


def _wait_up(url, proc, timeout, log_path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"web UI exited with {proc.returncode}:\n{Path(log_path).read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "gradio_api/info", timeout=5) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"web UI at {url} not up after {timeout} s")


def _pct(values, q):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main(argv=None) -> int:
    S = get_settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None, help=f"running UI (default http://127.0.0.1:{S.webui_port}/)")
    parser.add_argument("--start", action="store_true", help="start `python -m helpers.serve.webui` here and stop it after")
    parser.add_argument("--model", default=None, help="model for --start (default: settings.model_path)")
    parser.add_argument("--engine", default=None, choices=("lmdeploy", "transformers"), help="engine for --start")
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=900, help="whole run, seconds (then it stops)")
    parser.add_argument("--quick", action="store_true", help="CI size: 4 sessions x 3 turns, 8 tokens, 100 s")
    parser.add_argument("--json", default=None, help="also write the summary here")
    parser.add_argument("--server-log", default=None, help="keep the started UI's log here (default: a temp folder)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sessions, args.turns, args.max_new_tokens, args.timeout = 4, 3, 8, min(args.timeout, 100)
    if not 1 <= args.sessions <= 256 or not 1 <= args.turns <= 20:
        parser.error("sessions must be 1..256 and turns 1..20")

    work = Path(tempfile.mkdtemp(prefix="webui-load-"))
    proc = log = None
    server_log = Path(args.server_log) if args.server_log else work / "webui.log"
    t_start = time.monotonic()
    started_s = None
    try:
        if args.start:
            from helpers.serve.api_server import free_port

            port = free_port()
            url = f"http://127.0.0.1:{port}/"
            server_log.parent.mkdir(parents=True, exist_ok=True)
            proc, log = _start_ui(args.model, port, args.engine, server_log)
            _wait_up(url, proc, 240, server_log)
            started_s = round(time.monotonic() - t_start, 1)
            print(f"started web UI at {url} in {started_s} s (log {server_log})")
        else:
            url = args.url or f"http://127.0.0.1:{S.webui_port}/"
            url = url if url.endswith("/") else url + "/"
            _wait_up(url, None, 30, work / "none")
        rng = random.Random(1234)
        secrets = [f"口令{i:02d}-{rng.randrange(16**6):06x}" for i in range(args.sessions)]
        gen = (args.max_new_tokens, 0.8, 0.8, False)
        deadline = time.monotonic() + args.timeout
        sessions = [Session(i, url, _photo(work / f"session{i:02d}.png", i), secrets[i], secrets, args.turns, gen,
                            deadline) for i in range(args.sessions)]
        t0 = time.perf_counter()
        for s in sessions:
            s.start()
        for s in sessions:
            s.join(max(0.0, deadline - time.monotonic()) + 5)
        wall = time.perf_counter() - t0
        hung = [s.name for s in sessions if s.is_alive()]
    finally:
        if proc is not None:
            stop_group(proc)
            log.close()

    latencies = [x for s in sessions for x in s.latencies]
    failures = [f"{s.name}: {f}" for s in sessions for f in s.failures] + [f"{h}: still running at the deadline"
                                                                           for h in hung]
    leaks = [f"{s.name}: {x}" for s in sessions for x in s.leaks]
    turns_done = sum(s.done_turns for s in sessions)
    # The UI prints "engine: X; models: [...]; concurrency N" when it starts (helpers.serve.webui.main).
    served = re.search(r"engine: (\w+);.*concurrency (\d+)",
                       server_log.read_text(errors="replace") if server_log.is_file() else "")
    summary = {
        "url": url, "engine": served.group(1) if served else None,
        "concurrency": int(served.group(2)) if served else None, "ui_start_s": started_s,
        "sessions": args.sessions, "turns_per_session": args.turns, "max_new_tokens": args.max_new_tokens,
        "turns_done": turns_done, "turns_planned": args.sessions * args.turns, "wall_s": round(wall, 2),
        "p50_s": round(_pct(latencies, 0.50), 3), "p95_s": round(_pct(latencies, 0.95), 3),
        "max_s": round(max(latencies), 3) if latencies else None,
        "mean_s": round(statistics.fmean(latencies), 3) if latencies else None,
        "turns_per_s": round(turns_done / wall, 3) if wall else None,
        "failures": failures, "leaks": leaks,
    }
    print(f"{args.sessions} sessions x {args.turns} turns ({args.max_new_tokens} new tokens, "
          f"engine {summary['engine']}, concurrency {summary['concurrency']}): "
          f"{turns_done}/{args.sessions * args.turns} turns in {wall:.1f} s")
    print(f"latency per turn (queue wait included): p50 {summary['p50_s']} s, p95 {summary['p95_s']} s, "
          f"max {summary['max_s']} s; {summary['turns_per_s']} turns/s")
    print(f"failures: {len(failures)}, cross-session leaks: {len(leaks)}")
    for line in (failures + leaks)[:20]:
        print("  " + line)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    ok = not failures and not leaks and turns_done == args.sessions * args.turns
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
