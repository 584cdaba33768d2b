"""Serving speed: LMDeploy (recommended PytorchEngineConfig, defaults, w4a16) vs transformers.

One run, one checkpoint (default: the InternVL2-2B-shaped random checkpoint of
``make_2b_checkpoint.py``), the same requests for every engine: each request is one 448 px
food photo (one tile, 256 image tokens) + a short question, and exactly ``--new-tokens`` new
tokens (``min_new_tokens`` / ``ignore_eos``), greedy.

Measured per engine:

* batch 1: the requests one after another -> output tokens/s, requests/s;
* batch N (default 64): all requests in one call -> output tokens/s, requests/s;
* time to first token and single-stream decode tokens/s (median over a few streamed requests:
  LMDeploy from the stream's token timestamps; transformers from ``generate`` with 1 and with
  ``--new-tokens`` new tokens);
* the bandwidth bound of single-stream decode: bytes read per step (LLM weights without the
  embedding table, which is only indexed, plus the KV cache) over the card's copy bandwidth
  measured in the same run.

Engines (``--engines``): ``transformers`` (the model's own ``generate`` in bf16, sdpa, KV
cache: the baseline), ``lmdeploy`` (one run per ``--variant``), ``awq`` (w4a16: LMDeploy's
``auto_awq`` calibrated offline on course text, then served with the first variant's knobs).
Random weights: the numbers are speed only, never quality.

Usage (GPU):
    python benchmarks/bench_serving.py                       # transformers + LMDeploy default + recommended
    python benchmarks/bench_serving.py --engines lmdeploy,awq --variant recommended
    python benchmarks/bench_serving.py --variant "try:cache_max_entry_count=0.6,max_batch_size=256"
    python benchmarks/bench_serving.py --smoke                # CPU: tiny shapes, 2 requests
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (copy_bandwidth, environment, need_cuda, print_table, ratio,  # noqa: E402
                               synthetic_photos, write_results)
from helpers.concepts.architecture import count_parameters  # noqa: E402
from helpers.concepts.memory import kv_cache_bytes_per_token  # noqa: E402
from helpers.settings import INTERNVL2_SYSTEM_PROMPT, get_settings  # noqa: E402

# The project's recommended PytorchEngineConfig for InternVL2-2B on one 80 GB card: a KV cache
# that holds 64 x 8k-token sessions with room to spare (0.8 took 130 GiB on an H200 for nothing),
# every request of a batch of 64 scheduled at once, and prefill chunks large enough for 64
# prompts of ~420 tokens in two steps. CUDA graphs stay on (eager_mode=False is the default).
RECOMMENDED = dict(cache_max_entry_count=0.5, max_batch_size=128, max_prefill_token_num=16384, block_size=64,
                   eager_mode=False, session_len=8192)
DEFAULT = dict(session_len=8192)  # LMDeploy's own defaults (session_len only so 8k prompts fit)
VARIANTS = {"default": DEFAULT, "recommended": RECOMMENDED}
QUESTIONS = ["这道菜叫什么名字？", "这道菜属于哪个菜系？", "图中的菜是用什么食材做的？", "请描述这张照片里的食物。",
             "What dish is shown in the photo?", "Which region of China is this dish from?",
             "这道菜一般在什么场合吃？", "这道菜的口味是怎样的？"]
GOALS = {"lmdeploy_vs_transformers_batch": 4.0, "decode_vs_bound": 0.45, "awq_vs_bf16_decode": 1.8}


def parse_variant(text: str) -> tuple:
    """``"name"`` (a built-in) or ``"name:key=value,key=value"`` -> (name, PytorchEngineConfig kwargs).

    Values are parsed as JSON where they can be (numbers, true/false, null), else kept as text;
    a named built-in is the base the given keys override.

    Example:
        >>> parse_variant("try:cache_max_entry_count=0.6,eager_mode=true")
        ('try', {'session_len': 8192, 'cache_max_entry_count': 0.6, 'eager_mode': True})
    """
    name, _, rest = text.partition(":")
    name = name.strip()
    if not name:
        raise ValueError(f"--variant {text!r}: give a name, e.g. 'recommended' or 'mine:max_batch_size=256'")
    knobs = dict(VARIANTS.get(name, DEFAULT))
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"--variant {text!r}: {item!r} is not key=value")
        try:
            knobs[key.strip()] = json.loads(value.lower() if value.lower() in ("true", "false", "null") else value)
        except json.JSONDecodeError:
            knobs[key.strip()] = value
    return name, knobs


def make_requests(n: int, photo_dir) -> list:
    """``n`` (question, 448x448 photo path) pairs: one tile each, questions cycled."""
    photos = synthetic_photos(photo_dir, min(n, 16), sizes=[(448, 448)])
    return [(QUESTIONS[i % len(QUESTIONS)], photos[i % len(photos)]) for i in range(n)]


def bandwidth_bound(config: dict, context_tokens: int, hbm_gbps: float | None, weight_bytes: float = 2.0) -> dict:
    """Bytes one single-stream decode step must read, and the tokens/s that caps.

    Args:
        config: checkpoint config.json dict.
        context_tokens: tokens in the KV cache during decode (prompt + half the answer).
        hbm_gbps: measured copy bandwidth (bytes read + written per second / 1e9).
        weight_bytes: bytes per LLM weight (2 for bf16).

    Returns:
        ``{"bytes_per_step", "bound_ms", "bound_tok_s"}`` (bound fields None without a bandwidth).
    """
    lc = config["llm_config"]
    embed = lc["vocab_size"] * lc["hidden_size"]  # only one row per token is read
    weights = (count_parameters(config)["language_model"] - embed) * weight_bytes
    kv = kv_cache_bytes_per_token(config) * context_tokens
    step = weights + kv
    if not hbm_gbps:
        return {"bytes_per_step": step, "bound_ms": None, "bound_tok_s": None}
    sec = step / (hbm_gbps * 1e9)
    return {"bytes_per_step": step, "bound_ms": round(sec * 1e3, 3), "bound_tok_s": round(1 / sec, 1)}


# --------------------------------------------------------------------------------- transformers
def run_transformers(model_path: Path, requests: list, new_tokens: int, batch: int, batch1_n: int,
                     stream_n: int, device: str) -> dict:
    """The baseline: the model's own ``generate`` (bf16 on CUDA, sdpa, KV cache)."""
    import torch

    from helpers.models import load_model
    from helpers.prompts import build_query
    from helpers.tiling import load_image, to_pixel_values

    t0 = time.perf_counter()
    model, tok = load_model(model_path, device=device)
    load_s = time.perf_counter() - t0
    dtype = next(model.parameters()).dtype
    pixels = {p: to_pixel_values(load_image(p), max_num=1).to(device, dtype) for _, p in requests}
    tok.padding_side = "left"

    def generate(items, n_new):
        prompts = [build_query(model, q, [1])[0] for q, _ in items]
        enc = tok(prompts, return_tensors="pt", padding=True).to(device)
        pv = torch.cat([pixels[p] for _, p in items])
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = model.generate(pixel_values=pv, input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                             max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False)
        if device == "cuda":
            torch.cuda.synchronize()
        sec = time.perf_counter() - start
        if out.shape[1] != n_new:
            raise RuntimeError(f"transformers generated {out.shape[1]} tokens, expected {n_new}")
        return sec, out.shape[0] * n_new, int(enc["attention_mask"][0].sum())

    # Warm-up at both batch shapes (the first call at a new shape pays for attention plans).
    generate(requests[:1], 2)
    generate(requests[:batch], 2)
    ttft = [generate([r], 1)[0] for r in requests[:stream_n]]
    full = []
    b1_sec = b1_tokens = 0
    for i, r in enumerate(requests[:batch1_n]):
        sec, n, prompt_len = generate([r], new_tokens)
        b1_sec, b1_tokens = b1_sec + sec, b1_tokens + n
        if i < stream_n:
            full.append(sec)
    bN_sec = bN_tokens = 0
    for i in range(0, len(requests), batch):
        sec, n, _ = generate(requests[i:i + batch], new_tokens)
        bN_sec, bN_tokens = bN_sec + sec, bN_tokens + n
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    t_first, t_full = statistics.median(ttft), statistics.median(full)
    decode = (new_tokens - 1) / max(t_full - t_first, 1e-9)
    del model
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return dict(engine="transformers", variant="bf16 sdpa", load_s=round(load_s, 1), prompt_tokens=prompt_len,
                b1_requests=batch1_n, b1_tok_s=round(b1_tokens / b1_sec, 1), b1_req_s=round(batch1_n / b1_sec, 3),
                batch=batch, bN_tok_s=round(bN_tokens / bN_sec, 1), bN_req_s=round(len(requests) / bN_sec, 2),
                ttft_ms=round(t_first * 1e3, 1), decode_tok_s=round(decode, 1),
                decode_ms=round(1e3 / decode, 2), peak_alloc_gib=round(peak, 1) if peak else None)


# ------------------------------------------------------------------------------------- lmdeploy
def _lmdeploy():
    try:
        import lmdeploy
    except ImportError as exc:
        raise ImportError("LMDeploy is missing: pip install -r requirements-lmdeploy.txt") from exc
    return lmdeploy


def profile_stream(pipe, prompt, gen) -> dict:
    """One streamed request under ``torch.profiler``: kernel time per generated token vs wall time.

    CUPTI records the kernels of every thread of the process (LMDeploy's engine loop included) and
    those replayed inside CUDA graphs, so ``gpu_busy`` says how much of a decode step the GPU works.
    """
    import torch

    from helpers.train.profiling import format_summary, summarize

    acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    n = 0
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=acts) as prof:
        t0 = time.perf_counter()
        for resp in pipe.stream_infer([prompt], gen_config=gen):
            n = max(n, resp.generate_token_len)
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    s = summarize(prof.key_averages(), wall, max(1, n))  # "per iteration" = per generated token
    print(f"profile of one streamed request ({n} tokens, per token):")
    print(format_summary(s))
    return {"tokens": n, **{k: s[k] for k in ("wall_ms_per_iter", "kernel_ms_per_iter", "gpu_busy", "categories",
                                               "top_kernels")}}


def run_lmdeploy(model_path: Path, requests: list, new_tokens: int, batch1_n: int, stream_n: int,
                 name: str, knobs: dict, profile: bool = False) -> dict:
    """One LMDeploy pipeline with ``knobs`` (PytorchEngineConfig fields, plus vision_max_batch_size).

    ``profile``: also one streamed request under ``torch.profiler`` (:func:`profile_stream`).
    """
    import torch
    from PIL import Image

    from helpers.serve.pipeline import make_pipeline

    lmdeploy = _lmdeploy()
    knobs = dict(knobs)
    vision = {"max_batch_size": int(knobs.pop("vision_max_batch_size"))} if "vision_max_batch_size" in knobs else None
    free_before = torch.cuda.mem_get_info()[0] / 2**30
    t0 = time.perf_counter()
    # The course's pipeline; the variant's knobs replace its engine fields (LMDeploy's defaults for the rest:
    # cache_max_entry_count falls back to LMDeploy's 0.8 as before, not the course setting).
    knobs.setdefault("cache_max_entry_count", 0.8)
    pipe = make_pipeline(model_path, "lmdeploy", system_prompt=INTERNVL2_SYSTEM_PROMPT, engine_options=knobs,
                         vision_options=vision)
    build_s = time.perf_counter() - t0
    used_gib = free_before - torch.cuda.mem_get_info()[0] / 2**30
    images = {p: Image.open(p).convert("RGB") for _, p in requests}
    prompts = [(q, images[p]) for q, p in requests]
    gen = lmdeploy.GenerationConfig(max_new_tokens=new_tokens, min_new_tokens=new_tokens, ignore_eos=True,
                                    do_sample=False)
    try:
        pipe(prompts[:2], gen_config=lmdeploy.GenerationConfig(max_new_tokens=4, ignore_eos=True))  # warm-up
        ttft, decode, prompt_len = [], [], None
        for p in prompts[:stream_n]:
            start, stamps, n = time.perf_counter(), [], 0
            for resp in pipe.stream_infer([p], gen_config=gen):
                if resp.generate_token_len > n:
                    n = resp.generate_token_len
                    stamps.append((time.perf_counter(), n))
                prompt_len = getattr(resp, "input_token_len", prompt_len)
            if not stamps:
                raise RuntimeError("LMDeploy's stream_infer yielded no tokens")
            ttft.append(stamps[0][0] - start)
            (t1, n1), (t2, n2) = stamps[0], stamps[-1]
            # One chunk only (nothing to time between): fall back to the whole request's rate.
            decode.append((n2 - n1) / max(t2 - t1, 1e-9) if n2 > n1 else n2 / max(t2 - start, 1e-9))
        prof = profile_stream(pipe, prompts[0], gen) if profile else None
        b1_sec = b1_tokens = 0
        for p in prompts[:batch1_n]:
            start = time.perf_counter()
            out = pipe([p], gen_config=gen)
            b1_sec += time.perf_counter() - start
            b1_tokens += sum(r.generate_token_len for r in out)
        start = time.perf_counter()
        out = pipe(prompts, gen_config=gen)
        bN_sec = time.perf_counter() - start
        bN_tokens = sum(r.generate_token_len for r in out)
        if any(r.generate_token_len != new_tokens for r in out):
            raise RuntimeError(f"LMDeploy answered {sorted({r.generate_token_len for r in out})} tokens, "
                               f"expected {new_tokens} each")
    finally:
        if hasattr(pipe, "close"):
            pipe.close()
        del pipe
        gc.collect()
        torch.cuda.empty_cache()
    dec = statistics.median(decode)
    return dict(engine="lmdeploy", variant=name, knobs=knobs | ({"vision_config": str(vision)} if vision else {}),
                load_s=round(build_s, 1), prompt_tokens=prompt_len, gpu_used_gib=round(used_gib, 1),
                b1_requests=batch1_n, b1_tok_s=round(b1_tokens / b1_sec, 1), b1_req_s=round(batch1_n / b1_sec, 3),
                batch=len(prompts), bN_tok_s=round(bN_tokens / bN_sec, 1), bN_req_s=round(len(prompts) / bN_sec, 2),
                ttft_ms=round(statistics.median(ttft) * 1e3, 1), decode_tok_s=round(dec, 1),
                decode_ms=round(1e3 / dec, 2), **({"decode_profile": prof} if prof else {}))


# ------------------------------------------------------------------------------------------ AWQ
def calibration_text(path) -> Path:
    """Write a calibration text file from the course's own text (questions, dish names, notes).

    The text is the tokenizer corpus of :func:`helpers.tokenizer.tokenizer_corpus` plus the
    questions and answers of the LLaVA training file when ``make data`` has run.
    """
    from helpers.tokenizer import tokenizer_corpus

    S = get_settings()
    parts = list(tokenizer_corpus())
    train = S.llava_dir / "train.json"
    if train.is_file():
        for rec in json.loads(train.read_text(encoding="utf-8")):
            parts += [turn.get("value", "").replace("<image>", "") for turn in rec.get("conversations", [])]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(p for p in parts if p.strip()), encoding="utf-8")
    return path


def local_calib_loader(text_file):
    """A replacement for LMDeploy's ``get_calib_loaders`` that reads a local text file.

    LMDeploy 0.18's ``lite.apis.calibrate.calibrate`` only accepts dataset names
    (wikitext2, c4, ...) and loads them with ``datasets.load_dataset`` (a download); it calls
    the module-level ``get_calib_loaders(name, tokenizer, nsamples, seqlen)``, which returns a
    list of ``(1, seqlen)`` token-id tensors. Patching that one name keeps everything else of
    ``auto_awq`` as shipped.
    """
    def loader(name, tokenizer, nsamples=128, seed=0, seqlen=2048):
        import random

        import torch

        ids = tokenizer(Path(text_file).read_text(encoding="utf-8"), return_tensors="pt").input_ids
        while ids.shape[1] < seqlen + 1:  # short corpus: repeat it (the statistics are per channel)
            ids = torch.cat([ids, ids], dim=1)
        rng = random.Random(seed)
        return [ids[:, i:i + seqlen] for i in (rng.randint(0, ids.shape[1] - seqlen) for _ in range(nsamples))]
    return loader


def quantize_awq(model_path: Path, out_dir: Path, calib_samples: int, calib_seqlen: int, device: str = "cuda",
                 dtype: str = "auto") -> dict:
    """w4a16 (AWQ, group 128) with LMDeploy's ``auto_awq``, calibrated offline on course text."""
    import shutil

    _lmdeploy()
    from lmdeploy.lite.apis import auto_awq as awq_mod
    from lmdeploy.lite.apis import calibrate as calib_mod

    from helpers.models import copy_remote_code

    text = calibration_text(out_dir.parent / f"{out_dir.name}-calib.txt")
    calib_mod.get_calib_loaders = local_calib_loader(text)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    t0 = time.perf_counter()
    awq_mod.auto_awq(str(runnable_dir(model_path)), work_dir=str(out_dir), calib_dataset="wikitext2", calib_samples=calib_samples,
                     calib_seqlen=calib_seqlen, w_bits=4, w_group_size=128, device=device, dtype=dtype, trust_remote_code=True)
    copy_remote_code(out_dir)  # the course's model code, so the quantized dir loads like the original
    for f in model_path.iterdir():
        if f.is_file() and not (out_dir / f.name).exists() and not f.name.endswith(".safetensors"):
            shutil.copyfile(f, out_dir / f.name)
    size = sum(f.stat().st_size for f in out_dir.rglob("*.safetensors"))
    return {"awq_dir": str(out_dir), "awq_seconds": round(time.perf_counter() - t0, 1),
            "awq_safetensors_gb": round(size / 1e9, 2), "calibration_text": str(text)}


# ----------------------------------------------------------------------------------------- main
def summarise(rows: list, bound: dict, quiet: bool = False) -> dict:
    """The goal ratios from the measured rows."""
    tf = next((r for r in rows if r["engine"] == "transformers"), None)
    lm = [r for r in rows if r["engine"] == "lmdeploy"]
    best = max(lm, key=lambda r: r["bN_tok_s"], default=None)
    rec = next((r for r in lm if r["variant"] == "recommended"), best)
    awq = next((r for r in rows if r["engine"] == "awq"), None)
    bf16_ref = next((r for r in lm if awq and r["variant"] == awq["variant"].removeprefix("w4a16 ")), rec)
    out = {
        "recommended_vs_transformers_bN_tok_s": ratio(rec and rec["bN_tok_s"], tf and tf["bN_tok_s"]),
        "recommended_decode_vs_bound": ratio(rec and rec["decode_tok_s"], bound["bound_tok_s"]),
        "transformers_decode_vs_bound": ratio(tf and tf["decode_tok_s"], bound["bound_tok_s"]),
        "awq_vs_bf16_decode": ratio(awq and awq["decode_tok_s"], bf16_ref and bf16_ref["decode_tok_s"]),
        "goals": GOALS,
    }
    if quiet:
        return out
    print("\nratios (goals: LMDeploy/transformers >= 4x at batch N; bf16 decode >= 45 % of the bound; "
          "w4a16/bf16 decode >= 1.8x)")
    for k, v in out.items():
        if k != "goals":
            print(f"  {k}: {v if v is not None else 'not measured'}")
    return out


def main(argv=None) -> int:
    S = get_settings()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="checkpoint (default artifacts/models/internvl2-2b-random)")
    ap.add_argument("--engines", default="transformers,lmdeploy", help="comma list of transformers,lmdeploy,awq")
    ap.add_argument("--variant", action="append", default=None,
                    help="LMDeploy variant: 'default', 'recommended' or 'name:key=value,...' (repeatable; "
                         "default: default + recommended). Keys: PytorchEngineConfig fields + vision_max_batch_size")
    ap.add_argument("--requests", type=int, default=64, help="requests (= the batch of the batch-N run)")
    ap.add_argument("--batch1-requests", type=int, default=64, help="requests run one at a time")
    ap.add_argument("--stream-requests", type=int, default=5, help="requests timed for TTFT / decode rate")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--awq-dir", default=None, help="where the w4a16 checkpoint goes (default <model>-w4a16)")
    ap.add_argument("--calib-samples", type=int, default=64)
    ap.add_argument("--calib-seqlen", type=int, default=1024)
    ap.add_argument("--out-dir", default=None, help="results folder (default benchmarks/results)")
    ap.add_argument("--profile", action="store_true",
                    help="also profile one streamed request per LMDeploy run (kernel vs wall time per token)")
    ap.add_argument("--smoke", action="store_true", help="CPU test: tiny checkpoint, 2 requests, 8 tokens")
    args = ap.parse_args(argv)

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = set(engines) - {"transformers", "lmdeploy", "awq"}
    if unknown:
        ap.error(f"--engines: unknown {sorted(unknown)}")
    variants = [parse_variant(v) for v in (args.variant or ["default", "recommended"])]
    if args.smoke:
        from benchmarks.make_2b_checkpoint import build

        model_path = S.artifacts / "models" / "internvl2-2b-random-smoke"
        if not (model_path / "config.json").is_file():
            build(model_path, smoke=True)
        args.requests, args.batch1_requests, args.stream_requests, args.new_tokens = 2, 2, 1, 8
    else:
        model_path = Path(args.model) if args.model else S.artifacts / "models" / "internvl2-2b-random"
    if not (model_path / "config.json").is_file():
        raise SystemExit(f"{model_path}/config.json missing: run python benchmarks/make_2b_checkpoint.py first")
    config = json.loads((model_path / "config.json").read_text(encoding="utf-8"))
    cuda = need_cuda("GPU ceilings and LMDeploy") if not args.smoke else False
    if args.smoke:
        print("[skip] LMDeploy and AWQ runs: --smoke runs on CPU (LMDeploy's PyTorch engine needs CUDA)")
    env = environment()
    bw = copy_bandwidth() if cuda else None
    requests = make_requests(args.requests, S.artifacts / "bench" / "serving-photos")
    rows, errors, extra = [], {}, {}
    saved = {}

    def save(final: bool = False) -> dict:
        # Rewritten after every engine: a run cut short keeps what it measured.
        context = (rows[0].get("prompt_tokens") or 0) + args.new_tokens // 2 if rows else args.new_tokens
        bound = bandwidth_bound(config, context, bw and bw["copy_gbps"])
        summary = summarise(rows, bound, quiet=not final)
        saved["path"] = write_results(
            "serving-smoke" if args.smoke else ("serving-profile" if args.profile else "serving"),
            dict(environment=env, model=str(model_path), config_parameters=count_parameters(config),
                 requests=args.requests, new_tokens=args.new_tokens, copy_bandwidth=bw, bound=bound,
                 variants={n: k for n, k in variants}, rows=rows, summary=summary, errors=errors,
                 complete=final, random_weights=True, **extra),
            args.out_dir or (S.artifacts / "bench" / "results" if args.smoke else None), saved.get("path"),
            quiet=not final)
        return bound
    if "transformers" in engines:
        rows.append(run_transformers(model_path, requests, args.new_tokens, args.requests,
                                     min(args.batch1_requests, args.requests), args.stream_requests,
                                     "cuda" if cuda else "cpu"))
        print_table(rows[-1:], [c for c in rows[-1] if c != "knobs"])
        save()
    if cuda and "lmdeploy" in engines:
        for name, knobs in variants:
            try:
                rows.append(run_lmdeploy(model_path, requests, args.new_tokens, args.batch1_requests,
                                         args.stream_requests, name, knobs, args.profile))
                print_table(rows[-1:], [c for c in rows[-1] if c not in ("knobs", "decode_profile")])
            except Exception as exc:  # noqa: BLE001 - one failing variant must not lose the others' numbers
                errors[f"lmdeploy:{name}"] = f"{type(exc).__name__}: {exc}"
                print(f"[error] LMDeploy variant {name}: {errors[f'lmdeploy:{name}']}")
            save()
    if "awq" in engines:
        awq_dir = Path(args.awq_dir) if args.awq_dir else model_path.parent / f"{model_path.name}-w4a16"
        if args.smoke:
            # The whole offline calibration + quantization runs on CPU in fp16 at smoke size;
            # serving the result needs CUDA.
            extra.update(quantize_awq(model_path, awq_dir, 2, 64, device="cpu", dtype="float16"))
            print(f"[smoke] w4a16 checkpoint written to {awq_dir}; serving it needs CUDA (skipped)")
        elif cuda:
            try:
                extra.update(quantize_awq(model_path, awq_dir, args.calib_samples, args.calib_seqlen))
                name, knobs = variants[0] if args.variant else ("recommended", RECOMMENDED)
                row = run_lmdeploy(awq_dir, requests, args.new_tokens, args.batch1_requests, args.stream_requests,
                                   f"w4a16 {name}", dict(knobs, model_format="awq"), args.profile)
                row["engine"] = "awq"
                rows.append(row)
                print_table(rows[-1:], [c for c in rows[-1] if c not in ("knobs", "decode_profile")])
            except Exception as exc:  # noqa: BLE001
                errors["awq"] = f"{type(exc).__name__}: {exc}"
                print(f"[error] w4a16: {errors['awq']}")
    cols = ["engine", "variant", "b1_tok_s", "b1_req_s", "bN_tok_s", "bN_req_s", "ttft_ms", "decode_tok_s",
            "decode_ms", "load_s"]
    print()
    print_table(rows, cols)
    bound = save(final=True)
    print(f"single-stream bound: {bound['bytes_per_step'] / 1e9:.2f} GB read per step at "
          f"{bw and bw['copy_gbps']} GB/s -> {bound['bound_tok_s']} tok/s")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
