"""Draw the course's synthetic FoodieQA-format food photos.

FoodieQA cannot be bundled (CC-BY-NC-ND, gated, evaluation only), so the default course data
is drawn here: every dish of :mod:`helpers.foods` painted with PIL from its ``looks``
description (skewers are brown cubes on sticks with red chili specks, 肠粉 white translucent
rolls in soy sauce, 麻婆豆腐 white cubes in red oil with green scallions ...), served on a random
plate / bowl / bamboo steamer / tray, on a random wood / tablecloth / stone table, photographed
with random framing, rotation, camera tilt, light, colour temperature, vignette, sensor noise
and JPEG quality, at phone aspect ratios. About one photo in ten is stored the way phones store
portrait shots: sideways pixels plus an EXIF ``Orientation`` tag (6 or 8).

The output is byte-for-byte deterministic for a seed and has exactly FoodieQA's
``sivqa_tidy.json`` format (two questions per photo: cuisine and dish name, 4 choices each).

This module plans the set, saves the photos (with the EXIF turn), writes the questions and
draws contact sheets; the painting lives in :mod:`helpers.data.synth_draw` (table, vessel, light,
:func:`draw_photo`, re-exported here) and :mod:`helpers.data.synth_dishes` (one drawer per dish).

Command line::

    python -m helpers.data.synth [--out DIR] [--per-dish N] [--seed N] [--long-side N] [--sheet PNG]

Example:
    >>> from helpers.data.synth import make_dataset, contact_sheet
    >>> root = make_dataset("/tmp/foodie-synth", per_dish=2)  # doctest: +SKIP
    >>> contact_sheet(root).save("/tmp/sheet.png")            # doctest: +SKIP
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from helpers.foods import CUISINES, DISH_BY_NAME, DISHES, LOCATIONS, Dish
from helpers.data.synth_draw import SUPERSAMPLE, draw_photo

# Phone photo shapes (width, height, weight): mostly 4:3 / 3:4, some 16:9, square, panoramas.
ASPECTS = ((4, 3, 5), (3, 4, 5), (16, 9, 2), (9, 16, 2), (1, 1, 2), (3, 1, 1), (1, 3, 1))
EXIF_SHARE = 0.1  # share of photos stored sideways with an EXIF Orientation tag
MARKER = "SYNTHETIC FoodieQA-format food set"  # first line of README.txt; make_dataset only overwrites sets carrying it
CUISINE_Q = ("图片中的食物通常属于哪个菜系?", "The food in the picture usually belongs to which cuisine?")
NAME_Q = ("图片中的菜叫什么名字?", "What is the name of the dish in the picture?")
UPLOADERS = 4  # FoodieQA groups photos in one folder per volunteer upload; we mimic a few
# CJK fonts first (labels carry Chinese dish names), DejaVu as the Latin-only fallback; a bare
# file name makes PIL search the system font folders itself, the folders cover other XDG setups
_FONTS = ("NotoSansCJK-Regular.ttc", "NotoSansCJKsc-Regular.otf", "wqy-microhei.ttc", "DejaVuSans.ttf")
_FONT_DIRS = ("", "/usr/share/fonts/opentype/noto/", "/usr/share/fonts/truetype/wqy/",
              "/usr/share/fonts/truetype/dejavu/")

__all__ = ["ASPECTS", "CUISINE_Q", "EXIF_SHARE", "MARKER", "NAME_Q", "SUPERSAMPLE", "UPLOADERS", "PhotoPlan",
           "contact_sheet", "draw_photo", "main", "make_dataset", "plan_photos", "save_photo"]


@dataclass(frozen=True)
class PhotoPlan:
    """Everything that decides one photo and its two questions."""

    index: int  # position in the set; also food_meta.id
    dish: Dish  # what is on the plate
    width: int  # upright width in pixels
    height: int  # upright height in pixels
    seed: int  # drawing seed for draw_photo
    orientation: int  # EXIF Orientation stored with the file: 1 upright, 6 or 8 sideways pixels
    quality: int  # JPEG quality
    location: str  # food_meta.food_location
    food_file: str  # path relative to the data root


def _balanced(rng, n, weights):
    """n labels with counts proportional to weights (largest remainder), shuffled."""
    w = np.asarray(weights, dtype=float) / sum(weights)
    counts = np.floor(w * n).astype(int)
    for i in np.argsort(-(w * n - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    labels = np.repeat(np.arange(len(weights)), counts)
    return rng.permutation(labels)


def plan_photos(per_dish: int = 12, seed: int = 0, long_side: int = 896) -> list:
    """Decide every photo of the set (dish, size, seed, EXIF orientation, file name) up front.

    Photos are interleaved dish by dish (photo i shows ``DISHES[i % 16]``), so any prefix of
    the set covers all dishes.

    Args:
        per_dish: photos per dish.
        seed: data-set seed.
        long_side: long side of every photo in pixels.

    Returns:
        A list of :class:`PhotoPlan`.

    Example:
        >>> plans = plan_photos(per_dish=1)
        >>> len(plans), plans[0].dish.key
        (16, 'lamb_skewers')
    """
    if per_dish < 1:
        raise ValueError(f"per_dish must be >= 1, got {per_dish}")
    if long_side < 64:
        raise ValueError(f"long_side must be >= 64, got {long_side}")
    n = per_dish * len(DISHES)
    rng = np.random.default_rng([seed, 20240601])
    aspects = _balanced(rng, n, [a[2] for a in ASPECTS])
    n_exif = round(EXIF_SHARE * n)
    exif = set(rng.permutation(n)[:n_exif].tolist())
    folders = [f"{int(rng.integers(10_000_000, 99_999_999))}_all_synth{seed}" for _ in range(UPLOADERS)]
    plans = []
    for i in range(n):
        aw, ah, _ = ASPECTS[aspects[i]]
        scale = long_side / max(aw, ah)
        d = DISHES[i % len(DISHES)]
        plans.append(PhotoPlan(
            index=i, dish=d, width=round(aw * scale), height=round(ah * scale),
            seed=int(np.random.SeedSequence([seed, i]).generate_state(1)[0]),
            orientation=int(rng.choice([6, 8])) if i in exif else 1, quality=int(rng.integers(82, 96)),
            location=LOCATIONS[int(rng.integers(len(LOCATIONS)))],
            food_file=f"images/{folders[int(rng.integers(UPLOADERS))]}/{i}_{d.key}.jpeg"))
    return plans


def save_photo(image: Image.Image, path, orientation: int = 1, quality: int = 90) -> None:
    """Save an upright photo as JPEG, optionally the way phones do (sideways + EXIF tag).

    Args:
        image: the upright photo.
        path: output ``.jpeg`` path.
        orientation: 1 (upright pixels), 6 or 8 (pixels stored turned; the tag says how to undo it).
        quality: JPEG quality.

    Example:
        >>> save_photo(draw_photo("har_gow", 300, 400), "/tmp/x.jpeg", orientation=6)  # doctest: +SKIP
    """
    exif = Image.Exif()
    if orientation == 6:  # viewer turns 90 deg clockwise, so store the photo turned counter-clockwise
        image = image.transpose(Image.Transpose.ROTATE_90)
    elif orientation == 8:
        image = image.transpose(Image.Transpose.ROTATE_270)
    elif orientation != 1:
        raise ValueError(f"orientation must be 1, 6 or 8, got {orientation}")
    exif[0x0112] = orientation
    image.save(path, "JPEG", quality=quality, exif=exif.tobytes())


def _question(rng, plan, kind, qid):
    d = plan.dish
    if kind == "cuisine_type":
        others = [c for c in CUISINES if c != d.cuisine]
        picks = [d.cuisine] + [others[j] for j in rng.choice(len(others), 3, replace=False)]
        english = [CUISINES[c] for c in picks]
        question = CUISINE_Q
    else:
        others = [o for o in DISHES if o.key != d.key]
        chosen = [d] + [others[j] for j in rng.choice(len(others), 3, replace=False)]
        picks, english = [o.name for o in chosen], [o.name_en for o in chosen]
        question = NAME_Q
    order = rng.permutation(4)
    return {
        "question": question[0],
        "choices": [picks[j] for j in order],
        "answer": str(int(np.argmin(order))),  # where the correct option (index 0) ended up
        "question_type": kind,
        "food_name": d.name,
        "question_id": f"vqa-{qid}",
        "food_meta": {"main_ingredient": list(d.main_ingredient), "id": plan.index, "food_name": d.name,
                      "food_type": d.cuisine, "food_location": plan.location, "food_file": plan.food_file},
        "question_en": question[1],
        "choices_en": [english[j] for j in order],
    }


def _readme(per_dish, seed, long_side, n_images, n_questions):
    return (f"{MARKER}\n\n"
            "Every image here was drawn procedurally by helpers/data/synth.py of the course\n"
            "'InternVL 的部署与微调'. They are not photographs and contain no FoodieQA data; only the\n"
            "layout of sivqa_tidy.json follows FoodieQA (lyan62/FoodieQA, CC-BY-NC-ND-4.0, which is\n"
            "NOT included). The drawings carry no third-party rights; use them like the course code.\n\n"
            f"images: {n_images} ({per_dish} per dish x {len(DISHES)} dishes), questions: {n_questions}\n"
            f"seed: {seed}, long side: {long_side} px, ~{EXIF_SHARE:.0%} stored sideways with EXIF Orientation 6/8\n"
            f"rebuild: python -m helpers.data.synth --out <dir> --per-dish {per_dish} --seed {seed} --long-side {long_side}\n")


def make_dataset(out_dir, per_dish: int = 12, seed: int = 0, long_side: int = 896) -> Path:
    """Draw the synthetic set: ``out_dir/images/...`` and ``out_dir/sivqa_tidy.json``.

    Same arguments, same bytes. An existing set made by this function is replaced; any other
    non-empty folder is refused (so a real FoodieQA copy is never overwritten).

    Args:
        out_dir: the data root to write.
        per_dish: photos per dish (each gets a cuisine and a dish-name question).
        seed: data-set seed.
        long_side: long side of the photos in pixels.

    Returns:
        ``Path(out_dir)``.

    Raises:
        FileExistsError: ``out_dir`` holds something that is not a set made here.

    Example:
        >>> root = make_dataset("/tmp/synth-demo", per_dish=1, long_side=256)  # doctest: +SKIP
        >>> len(json.loads((root / "sivqa_tidy.json").read_text()))           # doctest: +SKIP
        32
    """
    out = Path(out_dir)
    readme = out / "README.txt"
    if out.exists() and any(out.iterdir()):
        if not (readme.is_file() and readme.read_text(encoding="utf-8").startswith(MARKER)):
            raise FileExistsError(f"{out} is not empty and not a synthetic set made by helpers.data.synth "
                                  f"(no {readme.name} starting with {MARKER!r}); refusing to overwrite it")
        shutil.rmtree(out / "images", ignore_errors=True)
        (out / "sivqa_tidy.json").unlink(missing_ok=True)
    plans = plan_photos(per_dish, seed, long_side)
    out.mkdir(parents=True, exist_ok=True)
    # README first: a run that dies half-way still leaves a folder the next run may replace
    readme.write_text(_readme(per_dish, seed, long_side, len(plans), 2 * len(plans)), encoding="utf-8")
    records = []
    for plan in plans:
        path = out / plan.food_file
        path.parent.mkdir(parents=True, exist_ok=True)
        save_photo(draw_photo(plan.dish, plan.width, plan.height, plan.seed), path, plan.orientation, plan.quality)
        qrng = np.random.default_rng([seed, plan.index, 7])
        for kind in ("cuisine_type", "food_name"):
            records.append(_question(qrng, plan, kind, len(records)))
    (out / "sivqa_tidy.json").write_text(json.dumps(records, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return out


def _font(size):
    """(font, whether it has CJK glyphs): the first of ``_FONTS`` found, else PIL's built-in font."""
    for name in _FONTS:
        for folder in _FONT_DIRS:
            try:
                return ImageFont.truetype(folder + name, size), "CJK" in name or "wqy" in name
            except OSError:
                continue
    return ImageFont.load_default(), False


def _label(food_name, cjk):
    """Caption under a thumbnail: Chinese + English name, English only without a CJK font.

    A dish missing from :mod:`helpers.foods` (real FoodieQA has more) keeps its own name.
    """
    d = DISH_BY_NAME.get(food_name)
    return (food_name + " " if cjk or d is None else "") + (d.name_en if d else "")


def contact_sheet(root, n: int = 16, cell: int = 224, columns: int = 4) -> Image.Image:
    """A grid of thumbnails with dish names, one photo per dish first.

    Args:
        root: a data root with ``sivqa_tidy.json`` (synthetic or real FoodieQA).
        n: number of photos.
        cell: thumbnail box in pixels.
        columns: thumbnails per row.

    Returns:
        An RGB PIL image.

    Example:
        >>> contact_sheet("artifacts/data/foodieqa-synth").save("/tmp/sheet.png")  # doctest: +SKIP
    """
    from helpers.tiling import load_image

    root = Path(root)
    records = json.loads((root / "sivqa_tidy.json").read_text(encoding="utf-8"))
    seen, firsts, rest = set(), [], []
    for rec in records:
        meta = rec["food_meta"]
        if meta["food_file"] in seen:
            continue
        seen.add(meta["food_file"])
        (rest if any(m["food_name"] == meta["food_name"] for m in firsts) else firsts).append(meta)
    chosen = (firsts + rest)[:n]
    if not chosen:
        raise ValueError(f"{root / 'sivqa_tidy.json'} lists no images")
    font, cjk = _font(max(10, cell // 15))
    label_h = cell // 7
    rows = math.ceil(len(chosen) / columns)
    sheet = Image.new("RGB", (columns * cell, rows * (cell + label_h)), (250, 250, 248))
    draw = ImageDraw.Draw(sheet)
    for k, meta in enumerate(chosen):
        photo = load_image(root / meta["food_file"])
        photo.thumbnail((cell - 8, cell - 8))
        x0, y0 = (k % columns) * cell, (k // columns) * (cell + label_h)
        sheet.paste(photo, (x0 + (cell - photo.width) // 2, y0 + (cell - photo.height) // 2))
        label = _label(meta["food_name"], cjk)
        while len(label) > 1 and draw.textlength(label, font=font) > cell - 10:
            label = label[:-2] + "…"
        draw.text((x0 + 6, y0 + cell), label, fill=(30, 30, 30), font=font)
    return sheet


def main(argv=None) -> int:
    """``python -m helpers.data.synth``: draw the set where the course settings expect it."""
    from helpers.settings import get_settings

    S = get_settings()
    p = argparse.ArgumentParser(prog="python -m helpers.data.synth", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=None, help=f"data root to write (default {S.data_root})")
    p.add_argument("--per-dish", type=int, default=S.synth_images_per_dish, help="photos per dish")
    p.add_argument("--seed", type=int, default=S.seed, help="data-set seed")
    p.add_argument("--long-side", type=int, default=S.synth_long_side, help="long side of each photo in px")
    p.add_argument("--sheet", type=Path, default=None, help="also save a contact sheet PNG here")
    args = p.parse_args(argv)
    out = args.out
    if out is None:
        if not S.data_is_synthetic:
            p.error(f"FOODIEQA_ROOT points at real data ({S.data_root}); pass --out to draw the synthetic set elsewhere")
        out = S.data_root
    start = time.perf_counter()
    try:
        root = make_dataset(out, args.per_dish, args.seed, args.long_side)
    except (FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n_q = len(json.loads((root / "sivqa_tidy.json").read_text(encoding="utf-8")))
    print(f"drew {n_q // 2} photos / {n_q} questions ({len(DISHES)} dishes, {len(CUISINES)} cuisines) "
          f"into {root} in {time.perf_counter() - start:.1f} s")
    if args.sheet:
        contact_sheet(root).save(args.sheet)
        print(f"contact sheet: {args.sheet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
