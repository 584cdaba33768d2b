"""Load test of the web UI as a class uses it: N students at once, each with a phone photo and 3 questions.

For every load level N (a sweep, e.g. ``--sessions 8,16,32,64,128``) against one started UI, each
session uploads its own phone-size JPEG (7-13 tiles at ``max_dynamic_patch`` 12), then asks
``--turns`` questions with ``--think-time`` seconds of reading between them. Per turn it measures the
time to the first token (TTFT: the first streamed update with text, or with the UI's "started
answering" note, which a random-weight replica's invisible first tokens show), to the first
visible text, and to the whole answer, and checks the conversation:
its own photo, its own secret in every question, no other session's secret, a real answer.
Per level: p50/p95 TTFT and turn time, failures, cross-session leaks, turns done/planned, and
where the time went, from the server's ``TIMING`` log lines (:mod:`helpers.serve.timing`):
JPEG decode, EXIF/convert, downscale, tiling (CPU), Gradio queue wait, the engine's time to its
first piece and decode. ``--probe`` adds the parts measured alone on the idle machine
(:mod:`benchmarks.load_probe`: vision encoder and prefill on the GPU). ``--variant PROFILE:N,N``
runs a sweep per serving profile (:mod:`helpers.serve.profiles`), restarting the UI for each.
Every level stops by itself (``--per-n-timeout``) and a failed level does not stop the sweep.

Usage:

    python benchmarks/webui_load.py --start --quick --engine transformers --model artifacts/models/internvl2-tiny
    python benchmarks/webui_load.py --start --engine lmdeploy --model REPLICA_2B --probe \\
        --variant class:8,16,32,64,128 --variant baseline:32,64 --json OUT/webui-load.json \\
        --server-log OUT/webui-load.server.log --publish OUT/webui-capacity.json      # scripts/gpu_webui_load.sh
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import environment  # noqa: E402
from benchmarks.load_probe import model_probe, tiling_probe, ui_probe  # noqa: E402
from benchmarks.load_sessions import Session, level_summary, session_photos, timings_between  # noqa: E402
from helpers.procs import stop_group  # noqa: E402
from helpers.settings import get_settings  # noqa: E402

PACKAGES = ("torch", "transformers", "lmdeploy", "gradio", "gradio_client", "PIL")
GOAL_TTFT_P95_S = 2.0  # issue 20: a class of 60 on one H100 at p95 time to first token <= 2 s


def _start_ui(model, port, engine, profile, log_path):
    cmd = [sys.executable, "-m", "helpers.serve.webui", "--host", "127.0.0.1", "--port", str(port)]
    cmd += (["--model", str(model)] if model else []) + (["--engine", engine] if engine else [])
    cmd += ["--profile", profile] if profile else []
    log = open(log_path, "ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(ROOT),
                            start_new_session=True, env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
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


def _serving_facts(log_text: str):
    """The last ``SERVING {...}`` line the UI printed at start (helpers.serve.webui.main)."""
    lines = [ln for ln in log_text.splitlines() if ln.startswith("SERVING ")]
    return json.loads(lines[-1][len("SERVING "):]) if lines else None


def run_level(url, n, photos, args, log_path) -> dict:
    """One load level: ``n`` sessions at once, bounded by ``args.per_n_timeout``; returns its summary."""
    rng = random.Random(1000 + n)
    secrets = [f"口令{n}-{i:03d}-{rng.randrange(16**6):06x}" for i in range(n)]
    gen = (args.max_new_tokens, 0.8, 0.8, False)
    stop, t_wall = threading.Event(), time.time()
    deadline = time.monotonic() + args.per_n_timeout
    sessions = [Session(i, url, photos[i], secrets[i], secrets, args.turns, gen, deadline, args.think_time, stop)
                for i in range(n)]
    t0 = time.perf_counter()
    for s in sessions:
        s.start()
    for s in sessions:
        s.join(max(0.0, deadline - time.monotonic()))
    hung = [s.name for s in sessions if s.is_alive()]
    if hung:  # the level is over: stop its stragglers so they do not load the next one
        stop.set()
        for s in sessions:
            if s.is_alive() and s.job is not None:
                s.job.cancel()
        for s in sessions:
            s.join(5)
    wall = time.perf_counter() - t0
    time.sleep(0.5)  # the last TIMING lines reach the log
    return level_summary(n, sessions, timings_between(log_path, t_wall, time.time()), args.turns, wall, hung)


def run_variant(profile, levels, args, work, photos, log_path, result) -> dict:
    """Start the UI with ``profile`` (or use ``--url``), run every level, stop it; levels go into ``result``."""
    variant = {"profile": profile, "levels": [], "ui_start_s": None, "serving": None, "error": None}
    result["variants"].append(variant)
    proc = log = None
    t0 = time.monotonic()
    if _left(args) < 60 + args.per_n_timeout:  # no time to start a UI and run one level: say so, start nothing
        variant["levels"] = [{"sessions": n, "skipped": "the run's --timeout was near"} for n in levels]
        return variant
    try:
        if args.start:
            from helpers.serve.api_server import free_port

            url = f"http://127.0.0.1:{free_port()}/"
            proc, log = _start_ui(args.model, url.rsplit(":", 1)[1].strip("/"), args.engine, profile, log_path)
            _wait_up(url, proc, min(args.start_timeout, _left(args) - args.per_n_timeout), log_path)
            variant["ui_start_s"] = round(time.monotonic() - t0, 1)
            print(f"[{profile}] web UI up at {url} in {variant['ui_start_s']} s (log {log_path})", flush=True)
        else:
            url = args.url or f"http://127.0.0.1:{get_settings().webui_port}/"
            url = url if url.endswith("/") else url + "/"
            _wait_up(url, None, 30, work / "none")
        variant["serving"] = _serving_facts(Path(log_path).read_text(errors="replace")) if Path(log_path).is_file() \
            else None
        if args.probe and "ui_probe" not in result:
            result["ui_probe"] = {"profile": profile, **ui_probe(url, photos[0], log_path)}
            print(f"[{profile}] idle probe: {json.dumps(result['ui_probe'], ensure_ascii=False)[:600]}", flush=True)
        for n in levels:
            if _left(args) < args.per_n_timeout + 10:  # a level may take per_n_timeout: it would not end in time
                variant["levels"].append({"sessions": n, "skipped": "the run's --timeout was near"})
                continue
            try:
                level = run_level(url, n, photos, args, log_path)
            except Exception as exc:  # a failed level is recorded and the sweep goes on
                level = {"sessions": n, "error": f"{type(exc).__name__}: {exc}"}
            level["profile"] = profile
            variant["levels"].append(level)
            print_level(level)
            _write(args.json, result)
            if args.publish:  # after every level: a run cut short still leaves its capacity file
                _write(args.publish, publishable(result, Path(args.json).name if args.json else "-"))
    except Exception as exc:  # the UI did not start: recorded, and the next variant still runs
        msg = str(exc)  # its first line says what happened, its end (the UI's log) why
        variant["error"] = f"{type(exc).__name__}: " + (msg if len(msg) < 1600 else msg[:300] + " … " + msg[-1200:])
        print(f"[{profile}] FAILED: {variant['error']}", flush=True)
    finally:
        if proc is not None:
            stop_group(proc)
            log.close()
    return variant


def print_level(lv: dict) -> None:
    if "ttft_p95_s" not in lv:
        print(f"[{lv.get('profile')}] N={lv['sessions']}: {lv.get('error') or lv.get('skipped')}", flush=True)
        return
    p = lv["parts"]

    def m(part, key):
        return p[part][key].get("mean")
    print(f"[{lv['profile']}] N={lv['sessions']}: {lv['turns_done']}/{lv['turns_planned']} turns in {lv['wall_s']} s; "
          f"TTFT p50 {lv['ttft_p50_s']} p95 {lv['ttft_p95_s']} s; turn p50 {lv['turn_p50_s']} p95 {lv['turn_p95_s']} s; "
          f"failures {len(lv['failures'])}, leaks {len(lv['leaks'])}; mean parts: decode {m('cpu', 'jpeg_decode_s')} "
          f"convert {m('cpu', 'exif_convert_s')} prescale {m('cpu', 'prescale_s')} tiling {m('cpu', 'tiling_s')} "
          f"(wait {m('cpu', 'tiling_wait_s')}) queue {m('queue', 'gradio_wait_s')} engine TTFT {m('engine', 'ttft_s')} "
          f"decode {m('engine', 'decode_s')} s", flush=True)
    for line in (lv["failures"] + lv["leaks"])[:8]:
        print("    " + line, flush=True)


TABLE_COLUMNS = ["profile", "N", "TTFT p50", "TTFT p95", "text p95", "turn p50", "turn p95", "failures", "leaks", "turns",
                 "JPEG decode", "queue", "tiling", "tiling wait", "engine TTFT", "decode", "note"]


def table_rows(result) -> list:
    """One row per profile and N: the client's times, failures, leaks and the mean parts of a turn (seconds)."""
    rows = []
    for v in result["variants"]:
        for lv in v["levels"]:
            if "ttft_p95_s" not in lv:
                rows.append({"profile": v["profile"], "N": lv["sessions"], "note": lv.get("error") or lv.get("skipped")
                             or v.get("error")})
                continue
            p = lv["parts"]
            rows.append({"profile": v["profile"], "N": lv["sessions"], "TTFT p50": lv["ttft_p50_s"],
                         "TTFT p95": lv["ttft_p95_s"], "text p95": lv.get("first_text_p95_s"),
                         "turn p50": lv["turn_p50_s"], "turn p95": lv["turn_p95_s"],
                         "failures": len(lv["failures"]), "leaks": len(lv["leaks"]),
                         "turns": f"{lv['turns_done']}/{lv['turns_planned']}",
                         "JPEG decode": p["cpu"].get("jpeg_decode_s", {}).get("mean"),
                         "queue": p["queue"]["gradio_wait_s"].get("mean"), "tiling": p["cpu"]["tiling_s"].get("mean"),
                         "tiling wait": p["cpu"]["tiling_wait_s"].get("mean"),
                         "engine TTFT": p["engine"]["ttft_s"].get("mean"), "decode": p["engine"]["decode_s"].get("mean"),
                         "note": ""})
    return rows


def table(result) -> str:
    """Print (and return) :func:`table_rows` as a Markdown table."""
    from benchmarks.common import print_table

    return print_table(table_rows(result), TABLE_COLUMNS)


def publishable(result, source: str) -> dict:
    """The small capacity file notebook 03 renders (helpers.serve.capacity): per profile and N, the headline numbers."""
    env = result["environment"]
    levels = [{"profile": lv["profile"], "sessions": lv["sessions"], "ttft_p50_s": lv["ttft_p50_s"],
               "ttft_p95_s": lv["ttft_p95_s"], "first_text_p95_s": lv["first_text_p95_s"],
               "turn_p50_s": lv["turn_p50_s"], "turn_p95_s": lv["turn_p95_s"],
               "failures": len(lv["failures"]), "leaks": len(lv["leaks"]), "turns_done": lv["turns_done"],
               "turns_planned": lv["turns_planned"]}
              for v in result["variants"] for lv in v["levels"] if "ttft_p95_s" in lv]
    return {"measured": result["started"], "card": env.get("card"), "gpus": env.get("gpus"),
            "versions": env.get("versions"), "model": result["model"], "engine": result["engine"],
            "turns": result["turns"], "think_time_s": result["think_time_s"], "max_new_tokens": result["max_new_tokens"],
            "goal_ttft_p95_s": GOAL_TTFT_P95_S, "source": source, "levels": levels}


def _write(path, data) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n", encoding="utf-8")


def _left(args) -> float:
    return args.deadline - time.monotonic()


def _checkpoint_tiling(model) -> dict:
    cfg = json.loads((Path(model) / "config.json").read_text(encoding="utf-8"))
    return dict(min_num=int(cfg.get("min_dynamic_patch", 1)), max_num=int(cfg.get("max_dynamic_patch", 12)),
                image_size=int(cfg.get("force_image_size") or 448), use_thumbnail=bool(cfg.get("use_thumbnail", True)))


def _parse_args(argv):
    from helpers.serve.profiles import DEFAULT_PROFILE, PROFILES

    S = get_settings()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=None, help=f"running UI (default http://127.0.0.1:{S.webui_port}/)")
    ap.add_argument("--start", action="store_true", help="start `python -m helpers.serve.webui` per variant, stop it after")
    ap.add_argument("--model", default=None, help="model for --start (default: settings.model_path)")
    ap.add_argument("--engine", default=None, choices=("lmdeploy", "transformers"), help="engine for --start")
    ap.add_argument("--sessions", default="8,16,32,64,128", help="load levels N (comma separated)")
    ap.add_argument("--variant", action="append", default=None, metavar="PROFILE:N,N",
                    help=f"a sweep with a serving profile ({', '.join(sorted(PROFILES))}); repeat for several "
                         f"(default: {DEFAULT_PROFILE}:--sessions)")
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--think-time", type=float, default=5.0, help="seconds of reading between two turns")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--per-n-timeout", type=float, default=150, help="seconds one level may take (then it stops)")
    ap.add_argument("--start-timeout", type=float, default=300, help="seconds the UI may take to come up")
    ap.add_argument("--timeout", type=float, default=1800,
                    help="the whole run ends within this many seconds: levels, UIs and the probe that would not fit are skipped")
    ap.add_argument("--probe", action="store_true", help="measure the parts alone too (benchmarks/load_probe.py)")
    ap.add_argument("--quick", action="store_true", help="CI size: levels 2,4; 3 turns, 0.5 s reading, 8 tokens")
    ap.add_argument("--json", default=None, help="write all levels here (rewritten after every level)")
    ap.add_argument("--server-log", default=None, help="the started UI's log (default: a temp folder)")
    ap.add_argument("--publish", default=None, help="also write the capacity file notebook 03 shows here")
    args = ap.parse_args(argv)
    if args.quick:
        args.sessions, args.think_time, args.max_new_tokens = "2,4", 0.5, 8
        args.per_n_timeout = min(args.per_n_timeout, 100)
    specs = args.variant or [f"{DEFAULT_PROFILE}:{args.sessions}"]
    try:
        args.variants = [(p, [int(x) for x in ns.split(",") if x]) for p, ns in (s.split(":", 1) for s in specs)]
    except ValueError:
        ap.error("--variant is PROFILE:N,N,... and --sessions N,N,...")
    for profile, levels in args.variants:
        if profile not in PROFILES or not levels or not all(1 <= n <= 256 for n in levels):
            ap.error(f"bad variant {profile}:{levels}: profiles {sorted(PROFILES)}, N in 1..256")
    if not 1 <= args.turns <= 20:
        ap.error("turns must be 1..20")
    return args


def main(argv=None) -> int:
    args = _parse_args(argv)
    args.deadline = time.monotonic() + args.timeout
    work = Path(tempfile.mkdtemp(prefix="webui-load-"))
    model = args.model or str(get_settings().model_path)
    n_max = max(n for _, levels in args.variants for n in levels)
    t0 = time.perf_counter()
    photos = session_photos(work / "photos", n_max, workers=min(16, os.cpu_count() or 1))
    print(f"{n_max} distinct phone photos drawn in {time.perf_counter() - t0:.1f} s", flush=True)
    result = {"started": dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S"), "environment": environment(PACKAGES),
              "model": model, "engine": args.engine, "turns": args.turns, "think_time_s": args.think_time,
              "max_new_tokens": args.max_new_tokens, "per_n_timeout_s": args.per_n_timeout,
              "goal_ttft_p95_s": GOAL_TTFT_P95_S, "variants": []}
    if args.probe:
        result["tiling_probe"] = [tiling_probe(p, _checkpoint_tiling(model)) for p in photos[:2]]
    base_log = Path(args.server_log) if args.server_log else work / "webui.log"
    base_log.parent.mkdir(parents=True, exist_ok=True)
    for i, (profile, levels) in enumerate(args.variants):
        log_path = base_log if i == 0 else base_log.with_name(f"{base_log.stem}.{profile}{base_log.suffix}")
        run_variant(profile, levels, args, work, photos, log_path, result)
    if args.probe and args.start and _left(args) > 45:
        try:  # after the UIs stopped: the GPU is the probe's alone
            result["model_probe"] = model_probe(model, photos[0], _checkpoint_tiling(model))
        except Exception as exc:  # recorded; the sweep's numbers stand without it
            result["model_probe"] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"model probe: {result['model_probe']}", flush=True)
    _write(args.json, result)
    print(f"\nweb UI load, {result['environment'].get('card')}, engine {args.engine}, {args.turns} turns, "
          f"{args.think_time} s reading, {args.max_new_tokens} new tokens; seconds:")
    table(result)
    if args.publish:
        _write(args.publish, publishable(result, Path(args.json).name if args.json else "-"))
        print(f"capacity file -> {args.publish}")
    levels = [lv for v in result["variants"] for lv in v["levels"]]
    ok = levels and all(v["error"] is None for v in result["variants"]) and all(
        not lv.get("failures") and not lv.get("leaks") and lv.get("turns_done") == lv.get("turns_planned")
        for lv in levels)
    print("OK" if ok else "FAILED (see failures above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
