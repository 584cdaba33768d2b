"""Loading LLaVA data, dataset statistics, and the data command line.

The FoodieQA -> LLaVA conversion lives in :mod:`helpers.data.convert`, the checks in
:mod:`helpers.data.checks`; both are re-exported here.

Command line::

    python -m helpers.data convert [--sivqa FILE --images DIR --out DIR] [--all]
    python -m helpers.data check FILE --images DIR [--workers N] [--json] [--all]
                                 [--tokenizer DIR] [--max-length N] [--no-length]
    python -m helpers.data check-foodieqa FILE --images DIR [--json] [--all]

Example:
    >>> from helpers.data.llava import foodieqa_to_llava, load_llava
    >>> rep = foodieqa_to_llava("artifacts/data/foodieqa-synth/sivqa_tidy.json",
    ...                         "artifacts/data/foodieqa-synth", "artifacts/data/llava-synth")  # doctest: +SKIP
    >>> rep.read == rep.converted + rep.skipped  # doctest: +SKIP
    True
"""
from __future__ import annotations

import json
import os
import statistics
import sys
from collections import Counter, defaultdict
from pathlib import Path

from helpers.data.checks import (ImageLimits, LengthCheck, check_foodieqa, check_llava, find_image_root,
                                 inspect_images, read_json_records)  # noqa: F401  (re-exported)
from helpers.data.jsonio import InvalidRecord
from helpers.data.convert import ANSWER_JOIN, ConvertReport, foodieqa_to_llava, split_images, split_unit  # noqa: F401
from helpers.data.xtuner_rules import IMAGE_MARKERS, IMAGE_TOKEN, XTUNER_INSTRUCTION, XTUNER_SUFFIX, XTUNER_SYSTEM  # noqa: F401


def load_llava(path) -> list:
    """Read a LLaVA .json list or .jsonl file.

    Raises:
        ValueError: the file is unreadable, not JSON, or not a list (the message names it).

    Example:
        >>> train = load_llava("artifacts/data/llava-synth/train.json")  # doctest: +SKIP
    """
    problems: list = []
    records = read_json_records(path, problems)
    if records is None:
        raise ValueError(str(problems[0]))
    bad = [i for i, r in enumerate(records) if not isinstance(r, dict)]
    if bad:
        first = records[bad[0]]
        why = str(first) if isinstance(first, InvalidRecord) else "is not a JSON object"
        raise ValueError(f"{path}: record {bad[0]}: {why} ({len(bad)} such records)")
    return records


def split_answer(text: str) -> tuple:
    """``("answer", "dish")`` from a converted gpt turn (dish is None when the join is absent)."""
    head, sep, dish = text.rpartition(ANSWER_JOIN)
    return (head, dish) if sep else (text, None)


def _summary(values: list) -> dict:
    if not values:
        return {"n": 0}
    vs = sorted(values)
    return {"n": len(vs), "min": vs[0], "max": vs[-1], "mean": round(statistics.fmean(vs), 3),
            "median": statistics.median(vs), "p95": vs[min(len(vs) - 1, int(0.95 * len(vs)))]}


def _tiling():
    try:
        from helpers.tiling import image_tokens, tile_count
    except ImportError as exc:  # the module ships with the package; a missing one is a broken install
        raise ImportError("helpers.tiling is missing: reinstall the package (pip install -e .)") from exc
    return tile_count, image_tokens


def _count_tokens(tokenizer, text: str, special: bool) -> int:
    return len(tokenizer.encode(text, add_special_tokens=special))


def _resolve_images(records: list, image_root) -> dict:
    """``{image field: path}`` of every record's first image (an absolute path is a baked upright copy)."""
    root, resolved = Path(image_root), {}
    for rec in records:
        img = rec.get("image")
        img = img[0] if isinstance(img, list) else img
        if isinstance(img, str) and img not in resolved:
            resolved[img] = Path(img) if os.path.isabs(img) else root / img
    return resolved


def _column(rows: list, key: str) -> list:
    return [r[key] for r in rows if r[key] is not None]


def _text_tokens(tokenizer, turns: list, system: str) -> int:
    """Text tokens of a sample as XTuner's InternVL dataset builds it (system once, each turn in its template)."""
    text, first = 0, True
    for t in turns:
        value = t.get("value", "")
        if t.get("from") == "human":
            prompt = XTUNER_INSTRUCTION.format(input=value.replace(IMAGE_TOKEN, "").strip())
            text += _count_tokens(tokenizer, (system if first else "") + prompt, first)
            first = False
        else:
            text += _count_tokens(tokenizer, value.strip() + XTUNER_SUFFIX, False)
    return text


def dataset_stats(records: list, image_root, tokenizer=None, settings=None, workers: int | None = 1) -> dict:
    """Tables for notebook 04: who is in the set, how big the images are, how long the samples are.

    Sequence length follows XTuner's InternVL dataset: system + user turn (with
    ``<img>``, 256 ``<IMG_CONTEXT>`` per tile, ``</img>``) + answer + ``<|im_end|>``.

    Args:
        records: LLaVA records (from :func:`load_llava`; ``meta`` is used when present).
        image_root: the folder image paths are relative to.
        tokenizer: a Hugging Face tokenizer (text tokens); None leaves token columns None.
        settings: :class:`helpers.settings.Settings` (tiling, max_length); None = get_settings().
        workers: image-header processes.

    Returns:
        Plain dict: ``per_cuisine``, ``per_dish``, ``question_types`` (lists of rows),
        ``answer_chars``/``answer_tokens``/``seq_tokens``/``image_width``/... summaries,
        ``tiles_histogram``, ``images`` and ``samples`` tables, ``over_max_length``.

    Example:
        >>> stats = dataset_stats(load_llava("train.json"), "images", tok)  # doctest: +SKIP
        >>> stats["per_dish"][0]  # doctest: +SKIP
        {'dish': '烤羊肉串', 'cuisine': '新疆菜', 'samples': 18, 'images': 9}
    """
    from helpers.settings import get_settings

    S = settings or get_settings()
    resolved = _resolve_images(records, image_root)
    infos = inspect_images([p for p in resolved.values() if p is not None], ImageLimits(), workers)
    images, samples = {}, []
    tally = _Tally()
    count = _sample_counter(tokenizer)
    for rec in records:
        img = rec.get("image")
        img = img[0] if isinstance(img, list) else img
        info = infos.get(str(resolved.get(img)))
        if img not in images and info and info["upright"]:
            images[img] = _image_row(img, *info["upright"], S)
        tally.add(rec, img)
        samples.append(count(rec, img, images.get(img, {}).get("image_tokens")))
    return _stats_tables(len(records), list(images.values()), samples, tally, S.max_length)


def _image_row(img: str, w: int, h: int, settings) -> dict:
    """One row of the ``images`` table: size, aspect and the tiles and image tokens of the settings' tiling."""
    tile_count, image_tokens = _tiling()
    tiling = dict(min_num=settings.min_dynamic_patch, max_num=settings.max_dynamic_patch,
                  image_size=settings.image_size, use_thumbnail=settings.use_thumbnail)
    return {"image": img, "width": w, "height": h, "aspect": round(w / h, 4),
            "tiles": tile_count(w, h, **tiling), "image_tokens": image_tokens(w, h, **tiling)}


def _answer(rec: dict) -> str:
    return next((t["value"] for t in rec.get("conversations", []) if t.get("from") == "gpt"), "")


class _Tally:
    """Samples and images per dish and per cuisine, and samples per question type."""

    def __init__(self):
        self.dishes = defaultdict(lambda: {"samples": 0, "images": set(), "cuisine": None})
        self.cuisines = defaultdict(lambda: {"samples": 0, "images": set()})
        self.qtypes = Counter()

    def add(self, rec: dict, img) -> None:
        meta = rec.get("meta") or {}
        dish = meta.get("food_name") or split_answer(_answer(rec))[1] or "?"
        cuisine = meta.get("cuisine") or "?"
        for row in (self.dishes[dish], self.cuisines[cuisine]):
            row["samples"] += 1
            row["images"].add(img)
        self.dishes[dish]["cuisine"] = cuisine
        self.qtypes[meta.get("question_type") or "?"] += 1


def _sample_counter(tokenizer):
    """``count(rec, img, image_tokens)`` -> one row of the ``samples`` table (token columns None without a tokenizer)."""
    from helpers.settings import XTUNER_SYSTEM_PROMPT

    markers = _count_tokens(tokenizer, IMAGE_MARKERS, False) if tokenizer is not None else None
    system = XTUNER_SYSTEM.format(system=XTUNER_SYSTEM_PROMPT)

    def count(rec: dict, img, image_tokens) -> dict:
        answer = _answer(rec)
        row = {"id": rec.get("id"), "image": img, "answer_chars": len(answer), "answer_tokens": None,
               "text_tokens": None, "image_tokens": image_tokens, "seq_tokens": None}
        if tokenizer is not None:
            row["answer_tokens"] = _count_tokens(tokenizer, answer, False)
            row["text_tokens"] = text = _text_tokens(tokenizer, rec.get("conversations", []), system)
            if image_tokens is not None:
                row["seq_tokens"] = text + markers + image_tokens
        return row

    return count


def _stats_tables(n_records: int, img_rows: list, samples: list, tally: "_Tally", max_length: int) -> dict:
    """The dict :func:`dataset_stats` returns, from its rows and tallies."""
    col = _column
    return {
        "n_samples": n_records, "n_images": len(img_rows), "max_length": max_length,
        "per_cuisine": sorted(({"cuisine": c, "samples": r["samples"], "images": len(r["images"])}
                               for c, r in tally.cuisines.items()), key=lambda r: (-r["samples"], r["cuisine"])),
        "per_dish": sorted(({"dish": d, "cuisine": r["cuisine"], "samples": r["samples"], "images": len(r["images"])}
                            for d, r in tally.dishes.items()), key=lambda r: (-r["samples"], r["dish"])),
        "question_types": [{"question_type": q, "samples": n} for q, n in tally.qtypes.most_common()],
        "answer_chars": _summary(col(samples, "answer_chars")),
        "answer_tokens": _summary(col(samples, "answer_tokens")),
        "image_width": _summary(col(img_rows, "width")), "image_height": _summary(col(img_rows, "height")),
        "aspect": _summary(col(img_rows, "aspect")),
        "tiles_histogram": dict(sorted(Counter(col(img_rows, "tiles")).items())),
        "image_tokens": _summary(col(samples, "image_tokens")),
        "seq_tokens": _summary(col(samples, "seq_tokens")),
        "over_max_length": sum(1 for v in col(samples, "seq_tokens") if v > max_length),
        "images": img_rows, "samples": samples,
    }


def _parser():
    import argparse

    ap = argparse.ArgumentParser(prog="python -m helpers.data", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="check a LLaVA .json/.jsonl file, its images and its token lengths")
    c.add_argument("file")
    c.add_argument("--images", required=True, help="image root (XTuner image_folder)")
    c.add_argument("--tokenizer", default=None, help="tokenizer folder for the length check (default: the course model)")
    c.add_argument("--max-length", type=int, default=None, help="XTuner max_length (default: settings.max_length)")
    c.add_argument("--no-length", action="store_true", help="skip the sequence-length check")
    f = sub.add_parser("check-foodieqa", help="check a raw FoodieQA sivqa_tidy.json and its images")
    f.add_argument("file")
    f.add_argument("--images", required=True)
    for p in (c, f):
        p.add_argument("--workers", type=int, default=None)
        p.add_argument("--json", action="store_true", help="print the report as JSON")
        p.add_argument("--show", type=int, default=3, help="problems shown per kind")
    v = sub.add_parser("convert", help="FoodieQA -> LLaVA train.json/val.json (defaults: helpers.settings)")
    v.add_argument("--sivqa", default=None)
    v.add_argument("--images", default=None)
    v.add_argument("--out", default=None, help="output folder")
    v.add_argument("--val-fraction", type=float, default=None)
    v.add_argument("--seed", type=int, default=None)
    v.add_argument("--no-bake-exif", action="store_true")
    v.add_argument("--strict", action="store_true")
    v.add_argument("--show", type=int, default=20, help="problems shown")
    for p in (c, f, v):
        p.add_argument("--all", action="store_true", help="print every problem")
    return ap


_LENGTH_CHECKS: dict = {}  # the tokenizer loads once per process (tests call main() many times)


def _length_check(args, S):
    """A LengthCheck for the CLI, or the reason there is none."""
    key = (str(args.tokenizer or S.model_path), args.max_length)
    if key not in _LENGTH_CHECKS:
        try:
            _LENGTH_CHECKS[key] = LengthCheck.from_settings(S, args.tokenizer, args.max_length)
        except (OSError, ValueError, ImportError) as e:
            _LENGTH_CHECKS[key] = f"not run: {e}"
    return _LENGTH_CHECKS[key]


def _run(args) -> int:
    from helpers.settings import get_settings

    S = get_settings()
    if args.cmd == "convert":
        try:
            rep = foodieqa_to_llava(args.sivqa or S.sivqa_file, args.images or S.data_root, args.out or S.llava_dir,
                                    S.synth_val_fraction if args.val_fraction is None else args.val_fraction,
                                    S.seed if args.seed is None else args.seed,
                                    bake_exif=not args.no_bake_exif, strict=args.strict)
        except (ValueError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(rep.format(None if args.all else args.show))
        return 1 if rep.skipped else 0
    if args.cmd == "check":
        length = None if args.no_length else _length_check(args, S)
        note = length if isinstance(length, str) else ""
        report = check_llava(args.file, args.images, workers=args.workers,
                             length=None if isinstance(length, str) else length)
        report.length_check = report.length_check or note or ("not run (--no-length)" if args.no_length else "")
    else:
        report = check_foodieqa(args.file, args.images, workers=args.workers)
    print(json.dumps(report.to_dict(), ensure_ascii=False, indent=1, default=str) if args.json
          else report.format(None if args.all else args.show))
    return report.exit_code


def main(argv=None) -> int:
    """Command line entry point (``python -m helpers.data --help``).

    Exit codes: 0 all good, 1 something rejected or skipped, 2 the input or output cannot be
    used at all, 3 an internal error (reported in one line, never as a traceback).

    Example:
        >>> main(["check", "train.json", "--images", "data", "--all"])  # doctest: +SKIP
        0
    """
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except Exception as e:  # last resort: a learner sees one line naming the input, never a traceback
        print(f"error: internal error while running {args.cmd} ({type(e).__name__}: {e}); "
              "please report it with the input file", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
