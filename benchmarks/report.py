"""Render the latest benchmark results (benchmarks/results/*.json) as markdown, into benchmarks/README.md.

Numbers in the README come only from here, never typed: run it after a GPU run has written its JSON.

Usage:
    python benchmarks/report.py            # print the tables
    python benchmarks/report.py --write    # also replace the results section of benchmarks/README.md
    python benchmarks/report.py --publish  # also write docs/measured/finetune-recipes.json (notebook 05's table:
                                           # each course recipe from the newest run that measured it)
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def latest(kind: str, results: Path = HERE / "results") -> Path | None:
    """Newest results file of one benchmark (`serving` or `finetune`), by the timestamp in its name."""
    # <kind>-<date>-<time>-<card>.json only: not "<kind>-profile-..." or "-smoke-" runs
    files = sorted(f for f in results.glob(f"{kind}-*.json") if re.match(rf"{kind}-\d{{8}}-\d{{6}}-", f.name))
    return files[-1] if files else None


def _table(rows: list[dict], cols: list[str]) -> list[str]:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
        return "—" if v is None else str(v)

    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return out


def _env(d: dict) -> str:
    e = d["environment"]
    v = {k: x for k, x in e["versions"].items() if x}
    return f"{e['card']} ({e['gpus']} GPU), Python {e['python']}, " + ", ".join(f"{k} {x}" for k, x in v.items())


def _verdict(value, goal, higher=True) -> str:
    if value is None:
        return "not measured"
    met = value >= goal if higher else value <= goal
    return f"{value:.2f} (goal {'≥' if higher else '≤'} {goal}: {'met' if met else 'not met'})"


def serving_section(path: Path) -> list[str]:
    d = json.loads(path.read_text())
    s, g = d["summary"], d["summary"]["goals"]
    rows = d["rows"]
    by = {(r["engine"], r["variant"]): r for r in rows}
    tf = next((r for r in rows if r["engine"] == "transformers"), None)
    best = max((r for r in rows if r["engine"] == "lmdeploy"), key=lambda r: r["bN_tok_s"] or 0, default=None)
    lines = [f"### Serving — `{path.name}`", "", f"{_env(d)}; {d['requests']} requests, {d['new_tokens']} forced new tokens, "
             f"random weights (speed only).", ""]
    lines += _table(rows, ["engine", "variant", "b1_tok_s", "bN_tok_s", "bN_req_s", "ttft_ms", "decode_tok_s",
                           "decode_ms", "load_s"])
    lines += ["", f"Bandwidth bound: {d['bound']['bytes_per_step'] / 1e9:.2f} GB of LLM weights per decode step at "
              f"{d['copy_bandwidth']['copy_gbps']:,.0f} GB/s (copy measured in the same run) → "
              f"{d['bound']['bound_tok_s']:,.0f} tok/s single-stream.", ""]
    if tf and best:
        lines.append(f"- Best LMDeploy variant (`{best['variant']}`) / transformers at batch {best['batch']}: "
                     + _verdict(best["bN_tok_s"] / tf["bN_tok_s"], g["lmdeploy_vs_transformers_batch"]))
        lines.append(f"- Its single-stream decode / bound (reported with the profile, no longer a goal): "
                     f"{best['decode_tok_s'] / d['bound']['bound_tok_s']:.2f}")
    lines.append(f"- `recommended` variant / transformers at batch N: "
                 + _verdict(s["recommended_vs_transformers_bN_tok_s"], g["lmdeploy_vs_transformers_batch"]))
    lines.append("- w4a16 / bf16 single-stream decode (reported, no longer a goal: LMDeploy lists W4A16 for "
                 "V100/Turing/Ampere/Ada, not Hopper): " + (f"{s['awq_vs_bf16_decode']:.2f}" if s.get(
                     "awq_vs_bf16_decode") else "not measured"))
    params = d.get("config_parameters", {}).get("total")
    if d.get("awq_safetensors_gb") and params:
        # bf16 weight bytes of the same checkpoint: 2 bytes a parameter
        lines.append("- w4a16 checkpoint bytes / bf16 weight bytes (the whole checkpoint as LMDeploy loads it; only the "
                     "decoder's linear layers are 4-bit): " + _verdict(d["awq_safetensors_gb"] * 1e9 / (2 * params),
                                                                       0.35, higher=False))
    if d.get("errors"):
        lines.append(f"- Errors recorded: {d['errors']}")
    return lines


# The card's published dense bf16 tensor-core peak, TFLOP/s. NVIDIA's H100 SXM and H200 datasheets list 1,979
# "with sparsity" (2:4); the dense rate is half of that. A card not listed gets no published-peak column.
PUBLISHED_DENSE_BF16 = {"H100 80GB HBM3": 989.4, "H100 SXM": 989.4, "H200": 989.4}


def published_peak(card: str) -> float | None:
    """The published dense bf16 peak of ``card`` (nvidia-smi / torch name), or None when not listed."""
    return next((v for k, v in PUBLISHED_DENSE_BF16.items() if k in card), None)


def _knobs(batch, accum, checkpointing, fused, aligned, answer_only, liger) -> tuple:
    return (batch, accum, bool(checkpointing), bool(fused), bool(aligned), bool(answer_only), bool(liger))


def course_recipes() -> dict:
    """The knobs of the course's speed recipes as they are defined now (helpers.train.speed_recipes)."""
    import sys

    sys.path.insert(0, str(HERE.parent))
    from helpers.settings import get_settings
    from helpers.train.speed_recipes import SPEED_RECIPES, speed_settings

    full = get_settings("full", model_path=Path("internvl2-2b"))  # knobs only: any path will do
    out = {}
    for name in SPEED_RECIPES:
        S = speed_settings(full, name)
        out[name] = _knobs(S.batch_size, S.accumulative_counts, S.llm_activation_checkpointing, S.fused_adamw,
                           S.aligned_lm_head, S.answer_only_lm_head, S.fused_kernels)
    return out


def _row_knobs(r: dict) -> tuple:
    return _knobs(r["batch"], r["accum"], r["checkpointing"], r.get("fused_adamw"), r.get("aligned_lm_head"),
                  r.get("answer_only_lm_head"), r.get("fused_kernels"))


def load_finetune(path: Path) -> dict:
    """A fine-tuning results file with each row's ``course_recipe``, ``speedup`` and ``mfu_published`` added."""
    d = json.loads(path.read_text())
    rows = d["rows"]
    # a row is one of the course's recipes when its knobs are that recipe's today, whatever the run called it
    current = {knobs: name for name, knobs in course_recipes().items()}
    # each round of a --repeats run is measured against its own upstream (runs before --repeats: one round)
    ups = {r.get("round", 1): r for r in rows if r["recipe"] == "upstream" and r.get("s_per_sample")}
    measured, peak = d["matmul"]["bf16_tflops"], published_peak(d["environment"]["card"])
    for r in rows:
        r.setdefault("round", 1)
        up = ups.get(r["round"])
        r["course_recipe"] = current.get(_row_knobs(r))
        r["speedup"] = up and r.get("s_per_sample") and up["s_per_sample"] / r["s_per_sample"]
        # the same model FLOPs against the card's published dense peak instead of the measured matmul rate
        r["mfu_published"] = r.get("mfu") and peak and r["mfu"] * measured / peak
    return d


def measured_recipes(d: dict) -> list[str]:
    """The course recipes a loaded run (:func:`load_finetune`) measured against an upstream, in row order."""
    return list(dict.fromkeys(r["course_recipe"] for r in d["rows"] if r.get("course_recipe") and r.get("speedup")))


def finetune_cover(results: Path = HERE / "results") -> list[tuple[Path, list[str]]]:
    """The newest fine-tuning runs that together measured every current course recipe, newest first.

    Each recipe comes from the newest run (on the newest run's card) that measured it against that run's
    own upstream, so every ratio is still measured in one run; an older run is used only for a recipe the
    newer ones did not measure.

    Returns:
        ``[(results file, the course recipes taken from it), ...]``.
    """
    files = sorted((f for f in results.glob("finetune-*.json") if re.match(r"finetune-\d{8}-\d{6}-", f.name)), reverse=True)
    need, card, out = set(course_recipes()), None, []
    for f in files:
        d = load_finetune(f)
        card = card or d["environment"]["card"]
        if d["environment"]["card"] != card:
            continue
        taken = [name for name in measured_recipes(d) if name in need]
        if taken:
            out.append((f, taken))
            need -= set(taken)
        if not need:
            break
    return out


def finetune_section(path: Path, recipes=None) -> list[str]:
    d = load_finetune(path)
    rows = d["rows"]
    measured, peak = d["matmul"]["bf16_tflops"], published_peak(d["environment"]["card"])
    sample = d["sample"]
    lines = [f"### Fine-tuning — `{path.name}`", "", f"{_env(d)}; {d['iters']} iterations per recipe "
             f"(median after {d['warmup']}), `--deepspeed {d['deepspeed']}`, {sample['tiles']:.1f} tiles "
             f"({sample['tiles_min']}–{sample['tiles_max']}) and ~{sample['tokens']:,} tokens a sample; bf16 matmul "
             f"measured at {d['matmul']['bf16_tflops']:.0f} TFLOP/s.", ""]
    lines += _table(rows, ["recipe", "round", "course_recipe", "batch", "accum", "checkpointing", "s_per_sample", "speedup",
                           "peak_alloc_gb", "smi_peak_gib", "job_640_min", "mfu", "mfu_published"])
    lines += ["", f"`mfu`: model FLOPs per second / the bf16 matmul rate measured in the run ({measured:.0f} TFLOP/s); "
              f"`mfu_published`: the same / the card's published dense bf16 peak "
              f"({'%.1f TFLOP/s' % peak if peak else 'not listed'}). Model FLOPs count the LM head at every position "
              "for every recipe (the work of the upstream step), so a recipe that skips unlabelled positions does "
              "that work in less time rather than more FLOPs a second.", ""]
    for name, goal in (("recommended", 1.8), ("lean", 1.2)):
        s = recipe_summary(rows, name)
        if s is None or (recipes is not None and name not in recipes):
            continue
        spread = (f" — median of {s['rounds']} rounds, each against its own upstream (range "
                  f"{s['speedup_min']:.2f}–{s['speedup_max']:.2f})" if s["rounds"] > 1 else " — one round: no spread")
        line = f"- {name} (row `{s['row']}`) / upstream samples/s: " + _verdict(s["speedup"], goal) + spread
        if name == "lean":
            line += "; nvidia-smi peak (GiB, highest round): " + _verdict(s["smi_peak_gib"], 20, higher=False)
        lines.append(line)
    return lines


def recipe_summary(rows: list[dict], course_recipe: str) -> dict | None:
    """The rounds of one course recipe in a run (rows from :func:`load_finetune`): median ratio and its range.

    Returns:
        ``row`` (the run's name for it), ``rounds``, ``speedup`` (median of the rounds' ratios), ``speedup_min``,
        ``speedup_max``, ``s_per_sample`` (median), ``smi_peak_gib`` and ``job_640_min`` (the highest round's peak,
        the median round's time); None when no round of that recipe was measured against an upstream.
    """
    got = [r for r in rows if r.get("course_recipe") == course_recipe and r.get("speedup")]
    if not got:
        return None
    ratios = sorted(r["speedup"] for r in got)
    peaks = [r["smi_peak_gib"] for r in got if r.get("smi_peak_gib") is not None]
    jobs = [r["job_640_min"] for r in got if r.get("job_640_min") is not None]
    return dict(row=got[0]["recipe"], rounds=len(got), speedup=statistics.median(ratios), speedup_min=ratios[0],
                speedup_max=ratios[-1], s_per_sample=statistics.median(r["s_per_sample"] for r in got),
                smi_peak_gib=max(peaks) if peaks else None, job_640_min=statistics.median(jobs) if jobs else None)


MEASURED = HERE.parent / "docs" / "measured"  # small committed tables the notebooks show (no lesson reads results/)


def publish_finetune(cover, out: Path = MEASURED / "finetune-recipes.json") -> Path:
    """Write the course recipes as measured on a GPU: the small table notebook 05 shows.

    Args:
        cover: ``[(results file, recipes to take from it), ...]`` as :func:`finetune_cover` gives it, or one
            ``finetune-*.json`` results file (GPU run) to take every course recipe from.
        out: where the table goes (committed with the course).

    Returns:
        ``out``.
    """
    cover = [(cover, None)] if isinstance(cover, Path) else list(cover)
    rows, first_run = [], None
    for path, names in cover:
        d = load_finetune(path)
        first_run = first_run or d
        for name in measured_recipes(d) if names is None else names:
            s = recipe_summary(d["rows"], name)
            first = next(r for r in d["rows"] if r.get("course_recipe") == name)
            rows.append(dict(recipe=name, batch=first["batch"], accum=first["accum"], speedup=round(s["speedup"], 2),
                             speedup_range=[round(s["speedup_min"], 2), round(s["speedup_max"], 2)], rounds=s["rounds"],
                             s_per_sample=s["s_per_sample"], smi_peak_gib=s["smi_peak_gib"],
                             job_640_min=s["job_640_min"], source=path.name))
    if not rows:
        raise SystemExit(f"{', '.join(p.name for p, _ in cover)}: no row has the knobs of a current course recipe; "
                         "nothing to publish")
    order = list(course_recipes())
    rows.sort(key=lambda r: order.index(r["recipe"]))
    d = first_run
    used = dict.fromkeys(r["source"] for r in rows)
    table = dict(source=", ".join(f"benchmarks/results/{n}" for n in used), card=d["environment"]["card"],
                 iters=d["iters"], tiles=d["sample"]["tiles"], tokens=d["sample"]["tokens"], rows=rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(table, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return out


def webui_section(path: Path, title: str = "A class on one GPU") -> list[str]:
    """A class on one GPU: per profile and N, first-token and turn times, failures, and where a turn's time goes."""
    d = json.loads(path.read_text())
    goal, want = d.get("goal_ttft_p95_s", 2.0), 60
    lines = [f"### {title} — `{path.name}`", "",
             f"{_env(d)}; the web UI on LMDeploy, {d['turns']} turns per student, {d['think_time_s']:g} s of reading "
             f"between turns, {d['max_new_tokens']} new tokens, one phone photo (7-13 tiles) per student; random "
             "weights (speed only). Seconds; parts are means over the level's turns.", ""]
    from benchmarks.webui_load import TABLE_COLUMNS, table_rows

    rows = table_rows(d)
    lines += _table(rows, TABLE_COLUMNS)
    probe = d.get("model_probe") or {}
    if probe.get("vision_forward_s") is not None:
        lines += ["", f"Alone on the idle card ({probe.get('kernels')}): vision encoder {probe['vision_forward_s']:.3f} s and "
                  f"LLM prefill {probe['llm_prefill_s']:.3f} s for {probe.get('tiles')} tiles ({probe.get('prefill_tokens')} tokens)."]
    at = [r for r in rows if isinstance(r.get("N"), int) and r["N"] >= want and r.get("TTFT p95") is not None
          and not r["failures"] and r["turns"].split("/")[0] == r["turns"].split("/")[1]]
    best = min((r["TTFT p95"] for r in at if r["N"] == min(x["N"] for x in at)), default=None) if at else None
    lines += ["", f"Goal: one GPU serves a class of {want} at p95 time to first token ≤ {goal:g} s with no failures — "
              + (_verdict(best, goal, higher=False) + f" (the best profile at the smallest measured N ≥ {want})"
                 if best is not None else f"not measured (no level of N ≥ {want} answered every turn)") + "."]
    return lines


def render() -> str:
    parts = []
    for kind, fn in (("serving", serving_section), ("finetune", None), ("webui-load", webui_section)):
        if kind == "finetune":
            # the runs that together measured today's course recipes, newest first; each recipe's verdict where
            # it was taken from
            cover = finetune_cover()
            for p, taken in cover:
                parts += finetune_section(p, recipes=taken) + [""]
            parts += [] if cover else ["_No finetune results yet._", ""]
            continue
        p = latest(kind)
        parts += fn(p) + [""] if p else [f"_No {kind} results yet._", ""]
    # a later run of a few profiles at one N (webui_load.py --variant ...), kept beside the full sweep
    compare = latest("webui-compare")
    if compare:
        parts += webui_section(compare, "Serving profiles side by side") + [""]
    return "\n".join(parts).rstrip() + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--write", action="store_true", help="replace the results section of benchmarks/README.md")
    ap.add_argument("--publish", action="store_true",
                    help=f"also write the course recipes of the newest fine-tuning runs to {MEASURED.relative_to(HERE.parent)}/")
    args = ap.parse_args(argv)
    if args.publish:
        cover = finetune_cover()
        if not cover:
            raise SystemExit("no finetune results to publish")
        print(f"published {publish_finetune(cover).relative_to(HERE.parent)}")
    text = render()
    print(text)
    if args.write:
        readme = HERE / "README.md"
        src = readme.read_text()
        if BEGIN not in src or END not in src:
            raise SystemExit(f"{readme}: markers {BEGIN} / {END} not found")
        head, rest = src.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        readme.write_text(head + BEGIN + "\n" + text + END + tail)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
