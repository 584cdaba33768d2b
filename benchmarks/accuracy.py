"""Val accuracy of the course's models across engines and weight formats (tiny model, real answers).

Notebook 06 scores the base and the fine-tuned model with one engine. This script scores any
number of model directories with each engine on the same val split, so that a difference
between engines (LMDeploy's PyTorch engine vs the model's own transformers code) or between
where a model was trained (CPU vs GPU) can be told apart, and adds a w4a16 (AWQ) copy of a
model, made with LMDeploy's ``auto_awq`` calibrated offline on course text
(``bench_serving.quantize_awq``), served by LMDeploy next to its bf16 original. Every model is
served with the system prompt it was trained with (``helpers.evaluate.evaluation.trained_system_prompt``).

Unlike the speed benchmarks this one runs on the tiny checkpoints the notebooks train, whose
answers mean something: the goal checked is w4a16 accuracy within 2 points of bf16.

Usage (LMDeploy environment; GPU for the LMDeploy rows):
    python benchmarks/accuracy.py                                   # latest fine-tuned run, both engines, + w4a16
    python benchmarks/accuracy.py --model gpu=runs/a/merged --model cpu=runs/b/merged --engines transformers,lmdeploy
    python benchmarks/accuracy.py --smoke                           # CPU: 8 questions, transformers only
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import environment, need_cuda, print_table, write_results  # noqa: E402
from helpers.settings import get_settings  # noqa: E402

AWQ_GOAL_POINTS = 2.0  # w4a16 accuracy at most this many points below bf16


def parse_models(specs, settings) -> dict:
    """``NAME=PATH`` strings to ``{name: Path}``; none given: the latest fine-tuned run's merged model.

    Example:
        >>> parse_models(["tuned=/tmp/m"], None)
        {'tuned': PosixPath('/tmp/m')}
    """
    if specs:
        out = {}
        for spec in specs:
            name, sep, path = spec.partition("=")
            if not sep or not name or not path:
                raise SystemExit(f"--model {spec!r}: expected NAME=PATH")
            out[name] = Path(path)
        return out
    from helpers.train.runs import latest_run

    try:
        run = latest_run(settings)
    except FileNotFoundError as exc:
        raise SystemExit(f"{exc} (or pass --model NAME=PATH)") from None
    return {"finetuned": Path(run["merged"])}


AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]  # LMDeploy's awq layout: nibble i of a packed int32 holds column order[i]


def unpack_awq(packed):
    """int32 ``(rows, cols / 8)`` packed 4-bit values -> int ``(rows, cols)`` in column order."""
    import torch

    rows, n = packed.shape
    out = torch.empty((rows, n * 8), dtype=torch.int32)
    for i, col in enumerate(AWQ_ORDER):
        out[:, col::8] = (packed >> (4 * i)) & 0xF
    return out


def dequantize_linear(qweight, qzeros, scales):
    """The float weight ``(out, in)`` an AWQ linear stands for: ``(q - zero) * scale`` per group.

    Example:
        >>> import torch
        >>> q = torch.zeros(128, 1, dtype=torch.int32); z = torch.zeros(1, 1, dtype=torch.int32)
        >>> dequantize_linear(q, z, torch.ones(1, 8)).shape
        torch.Size([8, 128])
    """
    import torch

    q, z = unpack_awq(qweight), unpack_awq(qzeros)
    group = q.shape[0] // z.shape[0]
    w = (q - z.repeat_interleave(group, 0)).float() * scales.float().repeat_interleave(group, 0)
    return w.t().contiguous()


def dequantize_checkpoint(awq_dir: Path, out_dir: Path, dtype: str = "bfloat16") -> Path:
    """A plain checkpoint with the w4a16 model's exact weights (its 4-bit values times their scales).

    It lets any engine measure what the 4-bit rounding (and AWQ's smoothing, already folded into
    the saved norms) does to the answers, where an engine cannot load the packed format.
    """
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    for f in awq_dir.iterdir():
        if f.is_file() and f.suffix not in (".safetensors", ".pth") and f.name != "model.safetensors.index.json":
            shutil.copyfile(f, out_dir / f.name)
    tensors = {}
    for shard in sorted(awq_dir.glob("*.safetensors")):
        tensors.update(load_file(str(shard)))
    plain = {}
    for key, t in tensors.items():
        if key.endswith(".qweight"):
            prefix = key[: -len(".qweight")]
            plain[prefix + ".weight"] = dequantize_linear(t, tensors[prefix + ".qzeros"], tensors[prefix + ".scales"])
        elif not key.endswith((".qzeros", ".scales")):
            plain[key] = t
    save_file({k: v.to(getattr(torch, dtype)).contiguous() for k, v in plain.items()}, str(out_dir / "model.safetensors"))
    config = json.loads((out_dir / "config.json").read_text(encoding="utf-8"))
    for part in (config, config.get("llm_config") or {}):
        part.pop("quantization_config", None)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
    return out_dir


def score(model_dir: Path, engine: str, items, settings, batch_size: int) -> dict:
    """Evaluate one model directory with one engine (``helpers.evaluate.evaluation.evaluate_model``); a results-table row."""
    from helpers.serve.pipeline import weight_format
    from helpers.evaluate.evaluation import evaluate_model, trained_system_prompt

    prompt = trained_system_prompt(model_dir)
    t0 = time.perf_counter()
    res = evaluate_model(model_dir, items, name=model_dir.name, system_prompt=prompt, engine=engine,
                         settings=settings, batch_size=batch_size, progress=False)
    total = time.perf_counter() - t0
    return dict(engine=engine, weights=weight_format(model_dir) or "plain",
                accuracy=round(100 * res.accuracy, 1), cuisine=round(100 * res.rate("choice_ok"), 1),
                dish=round(100 * res.rate("dish_ok"), 1), n=len(res.rows), load_s=round(total - res.seconds, 1),
                eval_s=round(res.seconds, 1), trained_prompt=bool(prompt),
                wrong_examples=[w.get("answer") for w in res.wrong()[:5]])


def main(argv=None) -> int:
    S = get_settings()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", action="append", default=None, help="NAME=PATH (repeatable; default: latest run)")
    ap.add_argument("--engines", default="transformers,lmdeploy", help="comma list of transformers,lmdeploy")
    ap.add_argument("--awq", default="first", help="model NAME to add a w4a16 copy of ('first', or '' for none)")
    ap.add_argument("--split", default=None, help="LLaVA JSON (default: the settings' val split)")
    ap.add_argument("--limit", type=int, default=None, help="first N questions only")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--calib-samples", type=int, default=64)
    ap.add_argument("--calib-seqlen", type=int, default=512)
    ap.add_argument("--out-dir", default=None, help="results folder (default benchmarks/results)")
    ap.add_argument("--smoke", action="store_true", help="CPU: 8 questions, transformers only, no w4a16")
    args = ap.parse_args(argv)

    from helpers.evaluate.items import load_split

    models = parse_models(args.model, S)
    for name, path in models.items():
        if not (path / "config.json").is_file():
            raise SystemExit(f"--model {name}: no checkpoint at {path} (config.json missing)")
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if set(engines) - {"transformers", "lmdeploy"}:
        ap.error(f"--engines: unknown {sorted(set(engines) - {'transformers', 'lmdeploy'})}")
    cuda = False if args.smoke else need_cuda("LMDeploy and w4a16 rows")
    if args.smoke:
        engines, args.limit, args.awq = ["transformers"], 8, ""
    elif not cuda:
        engines = [e for e in engines if e != "lmdeploy"]
    items = load_split(Path(args.split) if args.split else S.llava_dir / "val.json", S.data_root, limit=args.limit)
    env = environment()
    rows, errors, extra, saved = [], {}, {}, {}

    def save(final: bool = False):
        saved["path"] = write_results(
            "accuracy-smoke" if args.smoke else "accuracy",
            dict(environment=env, models={k: str(v) for k, v in models.items()}, questions=len(items), rows=rows,
                 errors=errors, complete=final, **extra),
            args.out_dir or (S.artifacts / "bench" / "results" if args.smoke else None), saved.get("path"),
            quiet=not final)

    def run(name: str, path: Path, engine: str):
        try:
            rows.append(dict(model=name, **score(path, engine, items, S, args.batch_size)))
            print_table(rows[-1:], [c for c in rows[-1] if c != "wrong_examples"])
        except Exception as exc:  # noqa: BLE001 - one failing engine must not lose the other rows
            import traceback

            # the last frames: an assertion inside the engine says nothing without them
            errors[f"{name}/{engine}"] = f"{type(exc).__name__}: {exc}\n" + "".join(traceback.format_exc(limit=-4))
            print(f"[error] {name} with {engine}: {errors[f'{name}/{engine}']}")
        save()

    for name, path in models.items():
        for engine in engines:
            run(name, path, engine)
    awq_name = next(iter(models)) if args.awq == "first" else args.awq
    if awq_name and cuda:
        from benchmarks.bench_serving import quantize_awq

        src = models[awq_name]
        out = S.artifacts / "models" / f"{src.parent.name}-{src.name}-w4a16"
        try:
            extra["awq"] = quantize_awq(src, out, args.calib_samples, args.calib_seqlen)
            run(f"{awq_name} w4a16", out, "lmdeploy")
            # The same 4-bit weights unpacked, through each engine: what the rounding costs even
            # where LMDeploy's AWQ loader refuses the shapes (the tiny LLM's single 64-wide KV head).
            deq = dequantize_checkpoint(out, out.parent / f"{out.name}-dequantized")
            for engine in engines:
                run(f"{awq_name} w4a16 dequantized", deq, engine)
        except Exception as exc:  # noqa: BLE001
            errors["awq"] = f"{type(exc).__name__}: {exc}"
            print(f"[error] w4a16: {errors['awq']}")
        for engine in engines:
            bf16 = next((r for r in rows if r["model"] == awq_name and r["engine"] == engine), None)
            for label in (f"{awq_name} w4a16", f"{awq_name} w4a16 dequantized"):
                q = next((r for r in rows if r["model"] == label and r["engine"] == engine), None)
                if bf16 and q:
                    gap = round(bf16["accuracy"] - q["accuracy"], 1)
                    extra.setdefault("awq_points_below_bf16", {})[f"{label} / {engine}"] = gap
                    print(f"{label} {q['accuracy']} % vs bf16 {bf16['accuracy']} % with {engine}: {gap} points "
                          f"below (goal <= {AWQ_GOAL_POINTS})")
    print()
    print_table(rows, [c for c in (rows[0] if rows else {}) if c != "wrong_examples"])
    save(final=True)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
