"""FoodieQA ``sivqa_tidy.json`` -> LLaVA ``train.json`` / ``val.json`` for XTuner.

The conversion is the upstream course's (question + ``<image>`` -> answer text + "，图中的菜是" +
dish name) with these additions: a held-out split *by image* (one key per file, however its
path is spelled, so no photo is in both splits) and stratified by dish, EXIF rotation baked
into upright copies (XTuner's loader ignores EXIF), and honest accounting -- every record is
either converted or listed as skipped with its index, field and reason; repeated
``question_id``s and questions that already hold ``<image>`` are reported as warnings and
written so that the course's checker accepts them.

Example:
    >>> rep = foodieqa_to_llava("artifacts/data/foodieqa-synth/sivqa_tidy.json",
    ...                         "artifacts/data/foodieqa-synth", "artifacts/data/llava-synth")  # doctest: +SKIP
    >>> rep.read == rep.converted + rep.skipped  # doctest: +SKIP
    True
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from helpers.data.check_report import Problem
from helpers.data.foodieqa_checks import check_foodieqa_record, duplicate_question_ids
from helpers.data.image_checks import ImageLimits, inspect_images
from helpers.data.jsonio import read_json_records
from helpers.data.pathsafe import find_image_root, image_key, safe_image_path
from helpers.data.xtuner_rules import IMAGE_TOKEN

ANSWER_JOIN = "，图中的菜是"  # upstream course: choices[answer] + this + dish name


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

    def format(self, show: int | None = 20) -> str:
        """The summary and the first ``show`` problems (None: every problem).

        Example:
            >>> print(rep.format(show=None))  # doctest: +SKIP
        """
        lines = [f"{self.sivqa_file}: read {self.read} = converted {self.converted} + skipped {self.skipped}",
                 f"  train {self.train} samples / {self.train_images} images, val {self.val} samples / "
                 f"{self.val_images} images; {self.dishes_in_val} of {self.dishes} dishes in val",
                 f"  EXIF-rotated images baked upright: {self.exif_baked}; image root: {self.image_root}",
                 f"  -> {self.out_dir}/train.json, val.json"]
        shown = self.problems if show is None else self.problems[:show]
        lines += [f"  {p}" for p in shown]
        if len(self.problems) > len(shown):
            lines.append(f"  ... {len(self.problems) - len(shown)} more problems (--all shows every one)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()

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
        image_dish: ``{image key: dish}`` (keys from :func:`helpers.data.pathsafe.image_key`).
        val_fraction: share of images held out, in [0, 1).
        seed: split seed.

    Returns:
        The set of validation image keys.

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
    ``meta`` keeps question_type, food_name, cuisine, choices, answer index and the image's
    path for evaluation (XTuner ignores unknown keys). Image paths are written in one
    normalised spelling (``./u/x.jpg`` -> ``u/x.jpg``).

    Args:
        sivqa_file: the FoodieQA JSON list.
        image_root: the folder ``food_meta.food_file`` is relative to (``root/images`` is found
            automatically). This is the ``image_folder`` to give XTuner.
        out_dir: where train.json, val.json (and upright/) go; a folder (created if missing).
        val_fraction: share of images (not records) held out, stratified by dish.
        seed: split seed (a hash of seed and the image; record order does not matter).
        bake_exif: write EXIF-rotated photos upright to ``out_dir/upright/`` and point there
            (absolute path; :func:`helpers.data.checks.check_llava` allows that folder).
        strict: raise ValueError at the first bad record instead of skipping it.
        workers: image-check processes (None = CPU count).

    Returns:
        A :class:`ConvertReport`.

    Raises:
        ValueError: the file is unreadable, not JSON or not a list (nothing can be converted),
            ``out_dir`` is an existing file, or ``strict`` and a record is bad.
        OSError: the output cannot be written.

    Example:
        >>> rep = foodieqa_to_llava("sivqa_tidy.json", "data", "out")  # doctest: +SKIP
        >>> print(rep.format(show=None))  # doctest: +SKIP
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: the output must be a folder, and this is an existing file")
    file_problems: list = []
    records = read_json_records(sivqa_file, file_problems)
    if records is None:
        raise ValueError(str(file_problems[0]))
    name = str(sivqa_file)
    metas = [r.get("food_meta") if isinstance(r, dict) else None for r in records]
    root = find_image_root(image_root, [m.get("food_file") for m in metas if isinstance(m, dict)])
    rep = ConvertReport(name, str(root), str(out), read=len(records))
    good, paths, images = _valid_records(records, root, rep, strict, workers)
    keys = {i: image_key(root, records[i]["food_meta"]["food_file"]) for i in good}
    image_dish = {}
    for i in good:
        image_dish.setdefault(keys[i], records[i]["food_meta"]["food_name"])
    val_images = split_images(image_dish, val_fraction, seed)
    placed = _place_images(good, keys, paths, images, out, bake_exif, rep)
    ids = _unique_ids(records, good, Path(name).stem, rep)
    splits = {"train": [], "val": []}
    for i in good:
        image, wh = placed[keys[i]]
        splits["val" if keys[i] in val_images else "train"].append(_sample(records[i], i, ids[i], image, wh, keys[i]))
    _write_splits(out, splits)
    rep.converted, rep.skipped = len(good), rep.read - len(good)
    rep.train, rep.val = len(splits["train"]), len(splits["val"])
    rep.val_images = len(val_images)
    rep.train_images = len(image_dish) - rep.val_images
    rep.dishes = len(set(image_dish.values()))
    rep.dishes_in_val = len({image_dish[p] for p in val_images})
    return rep


def _valid_records(records, root, rep, strict, workers) -> tuple:
    """Record and image checks; returns (indices of good records, {i: path}, {path: image info})."""
    bad: set = set()

    def problem(i, fld, kind, msg, sev="error"):
        p = Problem(rep.sivqa_file, i, fld, kind, msg, sev)
        if strict and sev == "error":
            raise ValueError(str(p))
        rep.problems.append(p)
        if sev == "error":
            bad.add(i)

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
    return good, paths, images


def _place_images(good, keys, paths, images, out: Path, bake_exif: bool, rep) -> dict:
    """``{image key: (path written into the record, [w, h])}``, baking EXIF rotation once per image."""
    placed = {}
    for i in good:
        key = keys[i]
        if key in placed:
            continue
        info = images[str(paths[i])]
        if bake_exif and info["orientation"] in range(2, 9):
            dst = (out / "upright" / key).resolve()
            placed[key] = (str(dst), list(_bake_upright(paths[i], dst)))
            rep.exif_baked += 1
        else:
            placed[key] = (key, list(info["size"]))
    return placed


def _unique_ids(records, good, stem: str, rep) -> dict:
    """Record ids for the output: the question_id, made unique (and reported) where it repeats."""
    repeats = duplicate_question_ids(records)
    ids = {}
    for i in good:
        qid = str(records[i].get("question_id") or f"{stem}-{i}")
        if i in repeats:
            ids[i] = f"{qid}~{i}"
            rep.problems.append(Problem(rep.sivqa_file, i, "question_id", "duplicate_id",
                                        f"question_id {qid!r} already used by record {repeats[i]}; "
                                        f"written as {ids[i]!r}", "warning"))
        else:
            ids[i] = qid
    return ids


def _sample(rec: dict, i: int, rid: str, image: str, wh: list, key: str) -> dict:
    meta = rec["food_meta"]
    answer = int(rec["answer"])
    question = rec["question"].replace(IMAGE_TOKEN, "").strip()  # exactly one marker, after the question
    return {
        "id": rid,
        "image": image,
        "image_wh": [wh],
        "conversations": [
            {"from": "human", "value": question + "\n" + IMAGE_TOKEN},
            {"from": "gpt", "value": rec["choices"][answer] + ANSWER_JOIN + meta["food_name"]},
        ],
        "meta": {"question_type": rec["question_type"], "food_name": meta["food_name"],
                 "cuisine": meta.get("food_type"), "choices": rec["choices"], "answer": answer,
                 "food_file": key, "source_index": i},
    }


def _write_splits(out: Path, splits: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    # train.json last: the notebooks convert again when it is missing, so a conversion killed
    # between the two files never leaves a train.json without its val.json.
    for split in ("val", "train"):
        tmp = out / f".{split}.json.tmp"
        tmp.write_text(json.dumps(splits[split], ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(tmp, out / f"{split}.json")  # readers never see a half-written file
