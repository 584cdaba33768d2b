"""FoodieQA -> LLaVA JSON for XTuner, dataset statistics, and the data command line.

The conversion is the upstream course's (question + ``<image>`` -> answer text + "，图中的菜是" +
dish name) with three additions: a held-out split *by image* and stratified by dish, EXIF
rotation baked into upright copies (XTuner's loader ignores EXIF), and honest accounting --
every record is either converted or listed as skipped with its index, field and reason.

Command line::

    python -m helpers.data convert [--sivqa FILE --images DIR --out DIR]
    python -m helpers.data check FILE --images DIR [--workers N] [--json]
    python -m helpers.data check-foodieqa FILE --images DIR [--json]

Example:
    >>> from helpers.data import foodieqa_to_llava, load_llava
    >>> rep = foodieqa_to_llava("artifacts/data/foodieqa-synth/sivqa_tidy.json",
    ...                         "artifacts/data/foodieqa-synth", "artifacts/data/llava-synth")  # doctest: +SKIP
    >>> rep.read == rep.converted + rep.skipped  # doctest: +SKIP
    True
"""
from __future__ import annotations

import hashlib
import json
import os
import statistics
import sys
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from helpers.checks import (IMAGE_TOKEN, ImageLimits, Problem, check_foodieqa, check_foodieqa_record,
                            check_llava, find_image_root, inspect_images, read_json_records, safe_image_path)

ANSWER_JOIN = "，图中的菜是"  # upstream course: choices[answer] + this + dish name
# XTuner 0.2.0 InternVL_V1_5_Dataset's InternLM2 prompt (it overrides the internlm2_chat template).
XTUNER_SYSTEM = "<|im_start|>system\n{system}<|im_end|>"
XTUNER_INSTRUCTION = "<|im_start|>user\n{input}<|im_end|><|im_start|>assistant\n"
XTUNER_SUFFIX = "<|im_end|>"
IMAGE_MARKERS = "<img></img>\n"  # wraps the <IMG_CONTEXT> run XTuner puts before the question


@dataclass
class ConvertReport:
    """What :func:`foodieqa_to_llava` did. ``read == converted + skipped`` always holds."""

    sivqa_file: str
    image_root: str
    out_dir: str
    read: int = 0
    converted: int = 0
    skipped: int = 0
    train: int = 0
    val: int = 0
    train_images: int = 0
    val_images: int = 0
    exif_baked: int = 0
    dishes: int = 0
    dishes_in_val: int = 0
    problems: list = field(default_factory=list)  # Problem per reason (skips are severity "error")

    def __str__(self) -> str:
        lines = [f"{self.sivqa_file}: read {self.read} = converted {self.converted} + skipped {self.skipped}",
                 f"  train {self.train} samples / {self.train_images} images, val {self.val} samples / "
                 f"{self.val_images} images; {self.dishes_in_val} of {self.dishes} dishes in val",
                 f"  EXIF-rotated images baked upright: {self.exif_baked}; image root: {self.image_root}",
                 f"  -> {self.out_dir}/train.json, val.json"]
        lines += [f"  {p}" for p in self.problems[:20]]
        if len(self.problems) > 20:
            lines.append(f"  ... {len(self.problems) - 20} more problems")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return asdict(self)


def split_unit(seed: int, food_file: str) -> float:
    """A uniform number in [0, 1) fixed by seed and image path (order-independent split)."""
    digest = hashlib.sha256(f"{seed}\0{food_file}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_images(image_dish: dict, val_fraction: float, seed: int) -> set:
    """Pick the validation images: per dish, ``round(n * val_fraction)`` of its n images.

    A dish with >= 2 images always gets at least one in val and keeps at least one in train; a
    dish with one image goes to val with probability ``val_fraction`` (by its hash).

    Args:
        image_dish: ``{food_file: dish}``.
        val_fraction: share of images held out, in [0, 1).
        seed: split seed.

    Returns:
        The set of validation ``food_file`` paths.

    Example:
        >>> sorted(split_images({"a": "x", "b": "x", "c": "y"}, 0.5, 0))
        ['a', 'c']
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    by_dish = defaultdict(list)
    for path, dish in image_dish.items():
        by_dish[dish].append(path)
    val = set()
    for dish, paths in by_dish.items():
        paths.sort(key=lambda p: (split_unit(seed, p), p))
        if val_fraction == 0:
            continue
        if len(paths) == 1:
            if split_unit(seed + 1, paths[0]) < val_fraction:
                val.add(paths[0])
            continue
        k = min(len(paths) - 1, max(1, round(len(paths) * val_fraction)))
        val.update(paths[:k])
    return val


def _bake_upright(src: Path, dst: Path) -> tuple:
    from PIL import Image, ImageOps

    dst.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as im:
        fmt = im.format
        upright = ImageOps.exif_transpose(im)  # also drops the Orientation tag
        kwargs = {"quality": 95, "exif": upright.getexif().tobytes()} if fmt in ("JPEG", "MPO") else {}
        upright.save(dst, "JPEG" if fmt == "MPO" else fmt, **kwargs)
        return upright.size


def foodieqa_to_llava(sivqa_file, image_root, out_dir, val_fraction: float = 0.25, seed: int = 0,
                      bake_exif: bool = True, strict: bool = False, workers: int | None = None) -> ConvertReport:
    """Convert FoodieQA ``sivqa_tidy.json`` to LLaVA ``train.json`` / ``val.json`` for XTuner.

    Each entry becomes ``{"id", "image", "image_wh": [[w, h]], "conversations": [human:
    question + "\\n<image>", gpt: choices[answer] + "，图中的菜是" + dish], "meta": {...}}``.
    ``meta`` keeps question_type, food_name, cuisine, choices, answer index and the original
    food_file for evaluation (XTuner ignores unknown keys).

    Args:
        sivqa_file: the FoodieQA JSON list.
        image_root: the folder ``food_meta.food_file`` is relative to (``root/images`` is found
            automatically). This is the ``image_folder`` to give XTuner.
        out_dir: where train.json, val.json (and upright/) go.
        val_fraction: share of images (not records) held out, stratified by dish.
        seed: split seed (a hash of seed and food_file; record order does not matter).
        bake_exif: write EXIF-rotated photos upright to ``out_dir/upright/`` and point there
            (absolute path; :func:`helpers.checks.check_llava` allows that folder).
        strict: raise ValueError at the first bad record instead of skipping it.
        workers: image-check processes (None = CPU count).

    Returns:
        A :class:`ConvertReport`.

    Raises:
        ValueError: the file is unreadable, not JSON or not a list (nothing can be converted),
            or ``strict`` and a record is bad.

    Example:
        >>> rep = foodieqa_to_llava("sivqa_tidy.json", "data", "out")  # doctest: +SKIP
        >>> print(rep)  # doctest: +SKIP
    """
    file_problems: list = []
    records = read_json_records(sivqa_file, file_problems)
    if records is None:
        raise ValueError(str(file_problems[0]))
    name, out = str(sivqa_file), Path(out_dir)
    metas = [r.get("food_meta") if isinstance(r, dict) else None for r in records]
    root = find_image_root(image_root, [m.get("food_file") for m in metas if isinstance(m, dict)])
    rep = ConvertReport(name, str(root), str(out), read=len(records))
    bad: dict = defaultdict(list)

    def problem(i, fld, kind, msg, sev="error"):
        p = Problem(name, i, fld, kind, msg, sev)
        if strict and sev == "error":
            raise ValueError(str(p))
        rep.problems.append(p)
        if sev == "error":
            bad[i].append(p)

    paths = {}
    for i, rec in enumerate(records):
        for fld, kind, msg, sev in check_foodieqa_record(rec):
            problem(i, fld, kind, msg, sev)
        if i in bad:
            continue
        path, err = safe_image_path(root, rec["food_meta"]["food_file"])
        if err:
            problem(i, "food_meta.food_file", *err)
        else:
            paths[i] = path
    images = inspect_images(paths.values(), ImageLimits(), workers)
    for i, path in paths.items():
        for kind, msg, sev in images[str(path)]["problems"]:
            problem(i, "food_meta.food_file", kind, f"{path}: {msg}", sev)
    good = [i for i in range(len(records)) if i not in bad]
    image_dish = {}
    for i in good:
        image_dish.setdefault(records[i]["food_meta"]["food_file"], records[i]["food_meta"]["food_name"])
    val_images = split_images(image_dish, val_fraction, seed)

    placed = {}  # food_file -> (record image path, [w, h]) once per image
    for i in good:
        food_file = records[i]["food_meta"]["food_file"]
        if food_file in placed:
            continue
        info = images[str(paths[i])]
        if bake_exif and info["orientation"] in range(2, 9):
            dst = (out / "upright" / food_file).resolve()
            placed[food_file] = (str(dst), list(_bake_upright(paths[i], dst)))
            rep.exif_baked += 1
        else:
            placed[food_file] = (food_file, list(info["size"]))
    splits = {"train": [], "val": []}
    stem = Path(name).stem
    for i in good:
        rec, meta = records[i], records[i]["food_meta"]
        image, wh = placed[meta["food_file"]]
        answer = int(rec["answer"])
        splits["val" if meta["food_file"] in val_images else "train"].append({
            "id": str(rec.get("question_id") or f"{stem}-{i}"),
            "image": image,
            "image_wh": [wh],
            "conversations": [
                {"from": "human", "value": rec["question"] + "\n" + IMAGE_TOKEN},
                {"from": "gpt", "value": rec["choices"][answer] + ANSWER_JOIN + meta["food_name"]},
            ],
            "meta": {"question_type": rec["question_type"], "food_name": meta["food_name"],
                     "cuisine": meta.get("food_type"), "choices": rec["choices"], "answer": answer,
                     "food_file": meta["food_file"], "source_index": i},
        })
    out.mkdir(parents=True, exist_ok=True)
    # train.json last: the notebooks convert again when it is missing, so a conversion killed
    # between the two files never leaves a train.json without its val.json.
    for split in ("val", "train"):
        tmp = out / f".{split}.json.tmp"
        tmp.write_text(json.dumps(splits[split], ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(tmp, out / f"{split}.json")  # readers never see a half-written file
    rep.converted, rep.skipped = len(good), len(bad)
    rep.train, rep.val = len(splits["train"]), len(splits["val"])
    rep.val_images = len(val_images)
    rep.train_images = len(image_dish) - rep.val_images
    rep.dishes = len(set(image_dish.values()))
    rep.dishes_in_val = len({image_dish[p] for p in val_images})
    return rep


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
        raise ValueError(f"{path}: record {bad[0]} is not a JSON object ({len(bad)} such records)")
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
    from helpers.settings import XTUNER_SYSTEM_PROMPT, get_settings

    S = settings or get_settings()
    tile_count, image_tokens = _tiling()
    root = Path(image_root)
    resolved = {}
    for rec in records:
        img = rec.get("image")
        img = img[0] if isinstance(img, list) else img
        if isinstance(img, str) and img not in resolved:
            resolved[img] = Path(img) if os.path.isabs(img) else root / img  # absolute: baked upright copy
    infos = inspect_images([p for p in resolved.values() if p is not None], ImageLimits(), workers)
    tiling = dict(min_num=S.min_dynamic_patch, max_num=S.max_dynamic_patch, image_size=S.image_size,
                  use_thumbnail=S.use_thumbnail)
    images, samples = {}, []
    dish_rows = defaultdict(lambda: {"samples": 0, "images": set(), "cuisine": None})
    cuisine_rows = defaultdict(lambda: {"samples": 0, "images": set()})
    qtypes = Counter()
    markers = _count_tokens(tokenizer, IMAGE_MARKERS, False) if tokenizer is not None else None
    system = XTUNER_SYSTEM.format(system=XTUNER_SYSTEM_PROMPT)
    for rec in records:
        img = rec.get("image")
        img = img[0] if isinstance(img, list) else img
        info = infos.get(str(resolved.get(img)))
        if img not in images and info and info["upright"]:
            w, h = info["upright"]
            images[img] = {"image": img, "width": w, "height": h, "aspect": round(w / h, 4),
                           "tiles": tile_count(w, h, **tiling), "image_tokens": image_tokens(w, h, **tiling)}
        turns = rec.get("conversations", [])
        answer = next((t["value"] for t in turns if t.get("from") == "gpt"), "")
        meta = rec.get("meta") or {}
        dish = meta.get("food_name") or split_answer(answer)[1] or "?"
        cuisine = meta.get("cuisine") or "?"
        for row, key in ((dish_rows[dish], img), (cuisine_rows[cuisine], img)):
            row["samples"] += 1
            row["images"].add(key)
        dish_rows[dish]["cuisine"] = cuisine
        qtypes[meta.get("question_type") or "?"] += 1
        row = {"id": rec.get("id"), "image": img, "answer_chars": len(answer), "answer_tokens": None,
               "text_tokens": None, "image_tokens": images.get(img, {}).get("image_tokens"), "seq_tokens": None}
        if tokenizer is not None:
            row["answer_tokens"] = _count_tokens(tokenizer, answer, False)
            text, first = 0, True
            for t in turns:
                value = t.get("value", "")
                if t.get("from") == "human":
                    prompt = XTUNER_INSTRUCTION.format(input=value.replace(IMAGE_TOKEN, "").strip())
                    text += _count_tokens(tokenizer, (system if first else "") + prompt, first)
                    first = False
                else:
                    text += _count_tokens(tokenizer, value.strip() + XTUNER_SUFFIX, False)
            row["text_tokens"] = text
            if row["image_tokens"] is not None:
                row["seq_tokens"] = text + markers + row["image_tokens"]
        samples.append(row)

    def col(rows, key):
        return [r[key] for r in rows if r[key] is not None]

    img_rows = list(images.values())
    return {
        "n_samples": len(records), "n_images": len(img_rows), "max_length": S.max_length,
        "per_cuisine": sorted(({"cuisine": c, "samples": r["samples"], "images": len(r["images"])}
                               for c, r in cuisine_rows.items()), key=lambda r: (-r["samples"], r["cuisine"])),
        "per_dish": sorted(({"dish": d, "cuisine": r["cuisine"], "samples": r["samples"], "images": len(r["images"])}
                            for d, r in dish_rows.items()), key=lambda r: (-r["samples"], r["dish"])),
        "question_types": [{"question_type": q, "samples": n} for q, n in qtypes.most_common()],
        "answer_chars": _summary(col(samples, "answer_chars")),
        "answer_tokens": _summary(col(samples, "answer_tokens")),
        "image_width": _summary(col(img_rows, "width")), "image_height": _summary(col(img_rows, "height")),
        "aspect": _summary(col(img_rows, "aspect")),
        "tiles_histogram": dict(sorted(Counter(col(img_rows, "tiles")).items())),
        "image_tokens": _summary(col(samples, "image_tokens")),
        "seq_tokens": _summary(col(samples, "seq_tokens")),
        "over_max_length": sum(1 for v in col(samples, "seq_tokens") if v > S.max_length),
        "images": img_rows, "samples": samples,
    }


def main(argv=None) -> int:
    """Command line entry point (``python -m helpers.data --help``)."""
    import argparse

    from helpers.settings import get_settings

    ap = argparse.ArgumentParser(prog="python -m helpers.data", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="check a LLaVA .json/.jsonl file and its images")
    c.add_argument("file")
    c.add_argument("--images", required=True, help="image root (XTuner image_folder)")
    c.add_argument("--workers", type=int, default=None)
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.add_argument("--show", type=int, default=3, help="problems shown per kind")
    f = sub.add_parser("check-foodieqa", help="check a raw FoodieQA sivqa_tidy.json and its images")
    f.add_argument("file")
    f.add_argument("--images", required=True)
    f.add_argument("--workers", type=int, default=None)
    f.add_argument("--json", action="store_true")
    f.add_argument("--show", type=int, default=3)
    v = sub.add_parser("convert", help="FoodieQA -> LLaVA train.json/val.json (defaults: helpers.settings)")
    v.add_argument("--sivqa", default=None)
    v.add_argument("--images", default=None)
    v.add_argument("--out", default=None)
    v.add_argument("--val-fraction", type=float, default=None)
    v.add_argument("--seed", type=int, default=None)
    v.add_argument("--no-bake-exif", action="store_true")
    v.add_argument("--strict", action="store_true")
    args = ap.parse_args(argv)
    if args.cmd == "convert":
        S = get_settings()
        try:
            rep = foodieqa_to_llava(args.sivqa or S.sivqa_file, args.images or S.data_root, args.out or S.llava_dir,
                                    S.synth_val_fraction if args.val_fraction is None else args.val_fraction,
                                    S.seed if args.seed is None else args.seed,
                                    bake_exif=not args.no_bake_exif, strict=args.strict)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(rep)
        return 1 if rep.skipped else 0
    if args.cmd == "check":
        report = check_llava(args.file, args.images, workers=args.workers)
    else:
        report = check_foodieqa(args.file, args.images, workers=args.workers)
    print(json.dumps(report.to_dict(), ensure_ascii=False, indent=1, default=str) if args.json
          else report.format(args.show))
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
