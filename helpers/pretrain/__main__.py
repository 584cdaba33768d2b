"""``python -m helpers.pretrain --out DIR``: build notebook 02's base model and run the notebook's checks, no Jupyter.

For a machine without the notebooks, e.g. a GPU server (where stages 1-2 train on the GPU)::

    PYTHONPATH=. python -m helpers.pretrain --out /tmp/base-check

The base goes to ``DIR/internvl2-tiny-base`` (XTuner's work files to ``DIR/runs``), unless it is
already there from the same inputs; the checks run on the CPU, as in notebook 02. A JSON summary
is printed and written to ``DIR/summary.json``. Exit status: 0 when every check passes, 1 when
one fails, 2 on bad input (no tiny model, ``DIR`` is a file).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m helpers.pretrain", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder for the base model, XTuner's work files and summary.json")
    ap.add_argument("--tiny", default=None, help="the tiny checkpoint to start from (default: the course's)")
    ap.add_argument("--force", action="store_true", help="rebuild even when DIR holds a base built from the same inputs")
    ap.add_argument("--n", type=int, default=12, help="held-out scenes to ask about (notebook 02: 12)")
    return ap


def _settings(out: Path, tiny):
    from helpers.settings import get_settings

    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    extra = {"tiny_model_path": Path(tiny).resolve()} if tiny else {}
    return get_settings("tiny", tiny_base_model_path=out / "internvl2-tiny-base", runs_dir=out / "runs", **extra)


def summarize(settings, info: dict, n: int = 12) -> dict:
    """Load the built base on the CPU and run notebook 02's checks (cells of section 6.1); JSON-ready.

    Args:
        settings: the settings the base was built with.
        info: :func:`helpers.pretrain.build.build_base`'s manifest.
        n: held-out scenes to ask about.

    Returns:
        ``checks`` (name -> passed), ``passed``, the accuracies, fluency and food findings, and the build's record.

    Example:
        >>> summarize(settings, build_base(settings))["passed"]   # doctest: +SKIP
        True
    """
    from helpers.models import load_model
    from helpers.pretrain import checks

    base, tok = load_model(settings.tiny_base_model_path)
    report = checks.attribute_report(base, tok, info["data"]["heldout"], n=n)
    food = checks.food_summary(checks.ask_about_foods(base, tok, info["data"]["heldout_food"], info["data"]["root"]))
    verdicts = checks.base_verdicts(report, food)
    logs = {name: settings.runs_dir / "pretrain" / name / "train.log" for name in ("stage1", "stage2")}
    return dict(passed=all(verdicts.values()), checks=verdicts, base=str(settings.tiny_base_model_path),
                trained_on=settings.device, skipped=info["skipped"], built=info.get("built"),
                precision=info.get("precision"), seconds=info["seconds"],
                # what `xtuner train` itself logged: FullPrecisionInternVL turns TF32 off in that process
                xtuner_full_fp32={n: "Full fp32 matmuls" in p.read_text(encoding="utf-8", errors="replace")
                                  for n, p in logs.items() if p.is_file()},
                accuracy={mode: r["accuracy"] for mode, r in report.items()},
                fluency=round(checks.caption_fluency(report), 3),
                food={k: food[k] for k in ("photos", "exact", "dish_names", "named_counts")})


def main(argv=None) -> int:
    """Build (or reuse) the base into ``--out``, check it, print the JSON summary; the exit status says the verdict."""
    args = _parser().parse_args(argv)
    out = Path(args.out).expanduser().resolve()
    try:
        settings = _settings(out, args.tiny)
        if args.n < 1:
            raise ValueError(f"--n must be at least 1, got {args.n}")
        from helpers.pretrain.build import build_base

        info = build_base(settings, force=args.force, progress=False)
    except (FileNotFoundError, ValueError, ImportError) as exc:
        print(f"python -m helpers.pretrain: {exc}", file=sys.stderr)
        return 2
    summary = summarize(settings, info, n=args.n)
    text = json.dumps(summary, ensure_ascii=False, indent=1)
    (out / "summary.json").write_text(text + "\n", encoding="utf-8")
    print(text)
    if not summary["passed"]:
        print("failed: " + ", ".join(k for k, ok in summary["checks"].items() if not ok), file=sys.stderr)
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
