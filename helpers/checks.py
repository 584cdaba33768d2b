"""Dataset checker: every problem of a LLaVA or FoodieQA file, with record index and field.

XTuner's ``InternVL_V1_5_Dataset`` skips a sample whose image fails to load and silently
draws another one, and it never looks at roles, ``<image>`` markers or empty answers. This
module finds all of that *before* training: it never stops at the first problem, never drops
a record silently (``checked == valid + rejected``) and says which record, which field, why.

Speed: the JSON side is pure Python; images are checked once per distinct path (records
share images); headers are read lazily (size, mode, EXIF without decoding pixels); a JPEG
that ends with its end-of-image marker is complete, and only one without it is decoded, in
draft mode (1/8 scale: every byte is still entropy-decoded, so truncation is caught, but the
inverse DCT is 64x cheaper); other formats are decoded fully; many images go to a process pool.

Example:
    >>> from helpers.checks import check_llava
    >>> report = check_llava("artifacts/data/llava-synth/train.json",
    ...                      "artifacts/data/foodieqa-synth")  # doctest: +SKIP
    >>> report.checked == report.valid + report.rejected  # doctest: +SKIP
    True
"""
from __future__ import annotations

import json
import os
import time
import warnings
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

IMAGE_TOKEN = "<image>"
ROLES = ("human", "gpt")
# FoodieQA's single-image question types as far as the paper and files show, plus the
# synthetic set's; an unknown one is only a warning unless the caller passes its own list.
KNOWN_QUESTION_TYPES = frozenset({
    "cuisine_type", "food_name", "main_ingredient", "ingredients", "flavor", "taste",
    "region", "regional", "present", "cooking_skills", "cooking_method", "food_type",
})
EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class ImageLimits:
    """Thresholds of the image checks (keyword arguments of the check functions)."""

    min_side: int = 32  # shorter side below this is "too_small" (icons, broken thumbnails)
    max_pixels: int = 64_000_000  # more pixels is "too_large" (a 48 MP phone photo still passes)
    max_aspect: float = 10.0  # long/short side above this is "extreme_aspect" (12 tiles max)
    allowed_modes: tuple = ("1", "L", "P", "RGB")  # modes convert("RGB") turns into the same picture
    always_decode: bool = False  # draft-decode every JPEG, not only those without an end marker


@dataclass
class Problem:
    """One finding: which file, which record (0-based; None for the whole file), which field."""

    file: str
    index: int | None
    field: str | None
    kind: str
    message: str
    severity: str = "error"  # "error" rejects the record; "warning" is only reported

    def __str__(self) -> str:
        where = "file" if self.index is None else f"record {self.index}"
        fld = f", field {self.field}" if self.field else ""
        return f"{self.file}: {where}{fld}: [{self.kind}] {self.message}"


@dataclass
class CheckReport:
    """Result of a check. ``checked == valid + rejected`` always holds."""

    file: str
    image_root: str
    checked: int = 0
    valid: int = 0
    rejected: int = 0
    images_checked: int = 0
    images_bad: int = 0
    images_decoded: int = 0  # images whose pixels were decoded (the rest: header + end marker)
    seconds: float = 0.0
    problems: list = field(default_factory=list)

    @property
    def errors(self) -> list:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def counts(self) -> dict:
        """Problems per kind, errors and warnings alike."""
        return dict(Counter(p.kind for p in self.problems).most_common())

    @property
    def ok(self) -> bool:
        """True when nothing was rejected and the file itself was readable."""
        return not self.errors

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(ok=self.ok, counts=self.counts)
        return d

    def format(self, per_kind: int = 3) -> str:
        """Human-readable summary: counts, then the first ``per_kind`` problems of each kind."""
        lines = [
            f"{self.file}: checked {self.checked} = valid {self.valid} + rejected {self.rejected}"
            f" | images {self.images_checked} checked ({self.images_decoded} decoded), {self.images_bad} bad"
            f" | {self.seconds:.2f} s",
        ]
        by_kind = defaultdict(list)
        for p in self.problems:
            by_kind[p.kind].append(p)
        for kind, items in sorted(by_kind.items(), key=lambda kv: -len(kv[1])):
            lines.append(f"  {kind} ({items[0].severity}): {len(items)}")
            lines += [f"    {p}" for p in items[:per_kind]]
            if len(items) > per_kind:
                lines.append(f"    ... {len(items) - per_kind} more")
        lines.append("OK" if self.ok else "REJECTED: fix the problems above")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- images

def inspect_image(path: str, limits: ImageLimits = ImageLimits(), decode: bool = True) -> dict:
    """Check one image file: header for size/mode/EXIF, then truncation (end marker or decode).

    Args:
        path: image file.
        limits: size/mode thresholds.
        decode: run the pixel decode when the header phase says it is needed; False leaves
            that to the caller (``needs_decode`` then says so; see :func:`inspect_images`).

    Returns:
        ``{"size": (w, h) as stored, "upright": (w, h) after EXIF, "mode", "format",
        "orientation", "decoded": bool, "problems": [(kind, message, severity), ...]}``
        (size None if unreadable; plus ``needs_decode`` when ``decode`` is False).

    Example:
        >>> inspect_image("no/such.jpg")["problems"][0][0]
        'missing_image'
    """
    from PIL import Image, JpegImagePlugin, UnidentifiedImageError

    out = {"size": None, "upright": None, "mode": None, "format": None, "orientation": None,
           "decoded": False, "problems": []}
    bad = out["problems"].append
    try:
        if os.path.getsize(path) == 0:
            bad(("empty_file", "image file has zero bytes", "error"))
            return out
    except OSError:
        bad(("missing_image", "image file does not exist", "error"))
        return out
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:  # parses headers only; no pixel is decoded here
                (w, h), mode = im.size, im.mode
                orient = im.getexif().get(EXIF_ORIENTATION, 1)
                transparent = mode == "P" and "transparency" in im.info
                jpeg = isinstance(im, JpegImagePlugin.JpegImageFile)
                out.update(size=(w, h), mode=mode, format=im.format, orientation=orient,
                           upright=(h, w) if orient in (5, 6, 7, 8) else (w, h))
    except Image.DecompressionBombError as e:
        bad(("too_large", f"PIL refuses it as a decompression bomb: {e}", "error"))
        return out
    except UnidentifiedImageError:
        bad(("not_an_image", "not a decodable image (PIL cannot identify it)", "error"))
        return out
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        bad(("corrupt_image", f"header unreadable: {e}", "error"))
        return out
    if mode not in limits.allowed_modes or transparent:
        what = "palette with transparency" if transparent else f"mode {mode}"
        bad(("unsupported_mode", f"{what}: convert('RGB') changes the picture "
             f"(allowed: {', '.join(limits.allowed_modes)} without alpha)", "error"))
    if orient not in range(1, 9):
        bad(("bad_exif_orientation", f"EXIF orientation {orient!r} is not 1..8", "warning"))
    # Never decode a pixel bomb; a JPEG that ends with its end marker was written completely.
    needs = _size_ok(w, h, limits, bad) and (not jpeg or limits.always_decode or not _jpeg_complete(path))
    if needs and decode:
        out["problems"] += decode_problems(path)
        out["decoded"] = True
    elif not decode:
        out["needs_decode"] = needs
    return out


def decode_problems(path: str) -> list:
    """Decode the pixels (JPEG in draft mode) and return ``[(kind, message, severity)]``.

    Draft mode makes libjpeg scale by 1/8 inside the inverse DCT: every byte of the scan is
    still entropy-decoded, so a truncated stream fails, at a fraction of the cost.

    Example:
        >>> decode_problems("no/such.png")[0][0]
        'missing_image'
    """
    from PIL import Image, ImageFile, JpegImagePlugin

    # A caller may have switched this on globally; then PIL pads truncated files with grey.
    saved, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if isinstance(im, JpegImagePlugin.JpegImageFile):
                    im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
                im.load()
    except FileNotFoundError:
        return [("missing_image", "image file does not exist", "error")]
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        kind = "truncated" if "truncat" in str(e).lower() else "corrupt_image"
        return [(kind, f"decoding failed: {e}", "error")]
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved
    return []


def _jpeg_complete(path: str) -> bool:
    """True when the file ends with the JPEG end-of-image marker (FF D9).

    Entropy-coded data byte-stuffs every FF, so FF D9 cannot occur inside a scan: a file that
    ends with it was written to the end. Files without it (cut short, or carrying a trailer
    such as a motion photo's video) get the draft decode, which tells the two apart.
    """
    with open(path, "rb") as f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - 64))
        return f.read().rstrip(b"\x00\r\n\t ").endswith(b"\xff\xd9")


def _size_ok(w: int, h: int, limits: ImageLimits, bad) -> bool:
    if min(w, h) < limits.min_side:
        bad(("too_small", f"{w}x{h}: shorter side < {limits.min_side} px", "error"))
    if w * h > limits.max_pixels:
        bad(("too_large", f"{w}x{h} = {w * h} px > {limits.max_pixels}", "error"))
        return False
    if min(w, h) > 0 and max(w, h) / min(w, h) > limits.max_aspect:
        bad(("extreme_aspect", f"{w}x{h}: aspect ratio > {limits.max_aspect}", "error"))
    return True


def inspect_images(paths, limits: ImageLimits = ImageLimits(), workers: int | None = None) -> dict:
    """:func:`inspect_image` for many paths: headers here, pixel decodes in a process pool.

    Header reads take well under a millisecond and stay in this process (a pool would spend
    more on start-up and pickling); only the images that must be decoded -- JPEGs without an
    end marker, other formats, or all with ``always_decode`` -- are spread over processes.

    Args:
        paths: image paths (duplicates are checked once).
        limits: thresholds.
        workers: processes for decoding; None = CPU count; 1 = all in this process.

    Returns:
        ``{path: result of inspect_image}``.

    Example:
        >>> inspect_images([])
        {}
    """
    results = {p: inspect_image(p, limits, decode=False) for p in dict.fromkeys(str(p) for p in paths)}
    todo = [p for p, r in results.items() if r.pop("needs_decode", False)]
    workers = (os.cpu_count() or 1) if workers is None else max(1, int(workers))
    if workers == 1 or len(todo) < 16:  # spawning costs ~0.2 s a worker
        decoded = [decode_problems(p) for p in todo]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        chunk = max(1, min(32, len(todo) // (workers * 4)))
        # spawn, not fork: callers (notebooks) may hold torch threads, which fork can deadlock.
        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=multiprocessing.get_context("spawn")) as pool:
            decoded = list(pool.map(decode_problems, todo, chunksize=chunk))
    for p, problems in zip(todo, decoded):
        results[p]["problems"] += problems
        results[p]["decoded"] = True
    return results


# ----------------------------------------------------------------------------- paths

def safe_image_path(image_root: Path, rel, extra_roots=()) -> tuple:
    """Join ``rel`` onto ``image_root`` and refuse anything that would leave it.

    Args:
        image_root: folder the paths are relative to (XTuner's ``image_folder``).
        rel: the record's path.
        extra_roots: folders where *absolute* paths are allowed (the converter's ``upright/``).

    Returns:
        ``(path, None)`` or ``(None, (kind, message))``.

    Example:
        >>> safe_image_path(Path("/data"), "../etc/passwd")[1][0]
        'path_escape'
    """
    if not isinstance(rel, str) or not rel.strip():
        return None, ("empty_path", f"image path must be a non-empty string, got {rel!r}")
    if os.path.isabs(rel):
        real = os.path.realpath(rel)
        for root in extra_roots:
            if _inside(real, os.path.realpath(root)):
                return Path(rel), None
        return None, ("absolute_path", f"{rel!r} is absolute; paths must be relative to the image root")
    if ".." in PurePosixPath(rel.replace("\\", "/")).parts:
        return None, ("path_escape", f"{rel!r} contains '..' and may leave the image root")
    path = Path(image_root) / rel
    if not _inside(os.path.realpath(path), os.path.realpath(image_root)):
        return None, ("symlink_escape", f"{rel!r} resolves to {os.path.realpath(path)}, outside the image root")
    return path, None


def find_image_root(root, rel_paths) -> Path:
    """``root`` or ``root/images``: whichever holds more of ``rel_paths``.

    FoodieQA keeps photos in ``images/`` but its ``food_file`` may or may not start with
    ``images/``; this decides once so that XTuner gets one ``image_folder``.

    Example:
        >>> find_image_root("/nonexistent", ["a.jpg"]).name
        'nonexistent'
    """
    root = Path(root)
    sample = [p for p in list(rel_paths)[:200] if isinstance(p, str)]
    here = sum((root / p).is_file() for p in sample)
    below = sum((root / "images" / p).is_file() for p in sample)
    return root / "images" if below > here else root


def _inside(real: str, root: str) -> bool:
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


# ----------------------------------------------------------------------------- files

def read_json_records(file, problems: list) -> list | None:
    """Load a .json list or a .jsonl file; file-level failures go to ``problems``.

    Returns:
        The records (a .jsonl line that is not JSON becomes an ``_InvalidLine`` marker so it
        is still counted and rejected), or None when nothing could be read.
    """
    name = str(file)
    try:
        text = Path(file).read_bytes().decode("utf-8")
    except OSError as e:
        problems.append(Problem(name, None, None, "unreadable_file", f"cannot read: {e}"))
        return None
    except UnicodeDecodeError as e:
        problems.append(Problem(name, None, None, "invalid_json", f"not UTF-8: {e}"))
        return None
    if name.endswith(".jsonl"):
        records = []
        for i, line in enumerate(l for l in text.splitlines() if l.strip()):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                records.append(_InvalidLine(f"line {i + 1} is not JSON: {e}"))
        return records
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        problems.append(Problem(name, None, None, "invalid_json", f"line {e.lineno} col {e.colno}: {e.msg}"))
        return None
    if not isinstance(data, list):
        problems.append(Problem(name, None, None, "wrong_top_level_type",
                                f"top level must be a list of records, got {type(data).__name__}"))
        return None
    return data


class _InvalidLine(str):
    """A .jsonl line that did not parse (kept so the record count stays honest)."""


def _finish(report: CheckReport, records: list, images: dict, t0: float) -> CheckReport:
    report.checked = len(records)
    rejected = {p.index for p in report.problems if p.severity == "error" and p.index is not None}
    report.rejected = len(rejected)
    report.valid = report.checked - report.rejected
    report.images_checked = len(images)
    report.images_decoded = sum(r["decoded"] for r in images.values())
    report.images_bad = sum(any(s == "error" for *_, s in r["problems"]) for r in images.values())
    report.problems.sort(key=lambda p: (-1 if p.index is None else p.index, p.field or ""))
    report.seconds = time.perf_counter() - t0
    return report


def _check_images(report, image_refs, limits, workers):
    """image_refs: [(index, field, path)] -> adds image problems; returns {path: info}."""
    images = inspect_images([p for _, _, p in image_refs], limits, workers)
    for index, fld, path in image_refs:
        for kind, msg, sev in images[str(path)]["problems"]:
            report.problems.append(Problem(report.file, index, fld, kind, f"{path}: {msg}", sev))
    return images


# ----------------------------------------------------------------------------- LLaVA

def check_llava_record(rec, require_image: bool = True) -> list:
    """Structural checks of one LLaVA record (no file access).

    Returns:
        ``[(field, kind, message, severity), ...]``; empty when the record is well formed.

    Example:
        >>> check_llava_record({"image": "a.jpg", "conversations": []})[0][1]
        'empty_conversation'
    """
    if isinstance(rec, _InvalidLine):
        return [(None, "invalid_json", str(rec), "error")]
    if not isinstance(rec, dict):
        return [(None, "wrong_type", f"record must be an object, got {type(rec).__name__}", "error")]
    out = []
    add = lambda f, k, m, s="error": out.append((f, k, m, s))  # noqa: E731
    if "id" in rec and not isinstance(rec["id"], (str, int)):
        add("id", "wrong_type", f"id must be a string or int, got {type(rec['id']).__name__}")
    image = rec.get("image")
    if "image" not in rec or image is None:
        if require_image:
            add("image", "missing_key", "no 'image' (this course trains on image questions)")
    elif isinstance(image, list) and len(image) != 1:
        add("image", "wrong_type", f"one image per sample; got a list of {len(image)}")
    elif not isinstance(image, (str, list)) or (isinstance(image, list) and not isinstance(image[0], str)):
        add("image", "wrong_type", f"image must be a path string, got {type(image).__name__}")
    if "image_wh" in rec and rec["image_wh"] is not None and _wh(rec["image_wh"]) is None:
        add("image_wh", "wrong_type", f"image_wh must be [[w, h]] with positive ints, got {rec['image_wh']!r}")
    if "length" in rec and not (isinstance(rec["length"], int) and rec["length"] > 0):
        add("length", "wrong_type", f"length must be a positive int, got {rec['length']!r}")
    conv = rec.get("conversations")
    if "conversations" not in rec:
        add("conversations", "missing_key", "no 'conversations'")
        return out
    if not isinstance(conv, list):
        add("conversations", "wrong_type", f"conversations must be a list, got {type(conv).__name__}")
        return out
    if not conv:
        add("conversations", "empty_conversation", "conversations is empty")
        return out
    n_tokens, order_reported = 0, False
    for j, turn in enumerate(conv):
        f = f"conversations[{j}]"
        if not isinstance(turn, dict):
            add(f, "wrong_type", f"a turn must be an object, got {type(turn).__name__}")
            continue
        role, value = turn.get("from"), turn.get("value")
        for key in ("from", "value"):
            if key not in turn:
                add(f"{f}.{key}", "missing_key", f"turn has no '{key}'")
        if "value" in turn and not isinstance(value, str):
            add(f"{f}.value", "wrong_type", f"value must be a string, got {type(value).__name__}")
            value = None
        if "from" in turn and role not in ROLES:
            add(f"{f}.from", "bad_role", f"role must be 'human' or 'gpt', got {role!r}")
        elif "from" in turn and role != ROLES[j % 2] and not order_reported:
            order_reported = True
            add(f"{f}.from", "role_order", f"turn {j} is {role!r}; turns must alternate human, gpt, ... starting with human")
        if value is None:
            continue
        count = value.count(IMAGE_TOKEN)
        if role == "gpt":
            if count:
                add(f"{f}.value", "image_token_in_answer", "an answer (gpt turn) contains <image>")
            if not value.strip():
                add(f"{f}.value", "empty_answer", "the answer is empty")
        elif role == "human":
            n_tokens += count
            if count > 1:
                add(f"{f}.value", "extra_image_token", f"{count} <image> markers in one turn; one image per sample")
            if not value.replace(IMAGE_TOKEN, "").strip():
                add(f"{f}.value", "empty_question", "the question is empty apart from <image>")
    if all(isinstance(t, dict) for t in conv) and conv[-1].get("from") == "human" and not order_reported:
        add(f"conversations[{len(conv) - 1}].from", "role_order", "ends with a human turn that has no answer")
    has_image = image is not None and "image" in rec
    if has_image and n_tokens == 0:
        add("conversations[0].value", "no_image_token", "the record has an image but no human turn has <image>")
    elif has_image and n_tokens > 1 and not any(k == "extra_image_token" for _, k, *_ in out):
        add("conversations", "extra_image_token", f"{n_tokens} <image> markers over the turns; one image per sample")
    elif not has_image and n_tokens:
        add("conversations", "image_token_without_image", "<image> in the text but the record has no image")
    return out


def _wh(value):
    wh = value[0] if isinstance(value, list) and value and isinstance(value[0], list) else value
    if isinstance(wh, list) and len(wh) == 2 and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in wh):
        return tuple(wh)
    return None


def check_llava(file, image_root, workers: int | None = None, extra_roots=None,
                require_image: bool = True, **limits) -> CheckReport:
    """Check a LLaVA-format JSON/JSONL file and its images; report every problem.

    Args:
        file: the .json (list) or .jsonl file.
        image_root: the folder image paths are relative to (XTuner's ``image_folder``).
        workers: image-check processes (None = CPU count, 1 = no pool).
        extra_roots: folders where absolute image paths are allowed; None = the ``upright/``
            folder next to ``file`` (where :func:`helpers.data.foodieqa_to_llava` bakes EXIF).
        require_image: a record without ``image`` is an error (the course trains image QA).
        **limits: :class:`ImageLimits` fields (min_side, max_pixels, max_aspect, allowed_modes).

    Returns:
        A :class:`CheckReport`; ``report.exit_code`` is 1 when anything was rejected.

    Example:
        >>> r = check_llava("missing.json", ".")
        >>> r.ok, r.problems[0].kind
        (False, 'unreadable_file')
    """
    t0 = time.perf_counter()
    lim = ImageLimits(**limits)
    root = Path(image_root)
    if extra_roots is None:
        extra_roots = [Path(file).parent / "upright"]
    report = CheckReport(str(file), str(root))
    records = read_json_records(file, report.problems)
    if records is None:
        return _finish(report, [], {}, t0)
    refs, wh_claims, seen_ids, path_cache = [], {}, {}, {}
    for i, rec in enumerate(records):
        for fld, kind, msg, sev in check_llava_record(rec, require_image):
            report.problems.append(Problem(report.file, i, fld, kind, msg, sev))
        if not isinstance(rec, dict):
            continue
        rid = rec.get("id")
        if isinstance(rid, (str, int)):
            if rid in seen_ids:
                report.problems.append(Problem(report.file, i, "id", "duplicate_id",
                                               f"id {rid!r} already used by record {seen_ids[rid]}", "warning"))
            seen_ids.setdefault(rid, i)
        image = rec.get("image")
        image = image[0] if isinstance(image, list) and len(image) == 1 else image
        if not isinstance(image, str):
            continue
        if image not in path_cache:
            path_cache[image] = safe_image_path(root, image, extra_roots)
        path, err = path_cache[image]
        if err:
            report.problems.append(Problem(report.file, i, "image", err[0], err[1]))
            continue
        refs.append((i, "image", path))
        if rec.get("image_wh") is not None and _wh(rec["image_wh"]):
            wh_claims[i] = (_wh(rec["image_wh"]), str(path))
    images = _check_images(report, refs, lim, workers)
    for i, (wh, path) in wh_claims.items():
        info = images[path]
        if info["size"] and tuple(info["size"]) != wh:
            report.problems.append(Problem(report.file, i, "image_wh", "image_wh_mismatch",
                                           f"image_wh {list(wh)} but {path} decodes as {list(info['size'])}"))
    for i, _, path in refs:
        orient = images[str(path)]["orientation"]
        if orient in range(2, 9):
            report.problems.append(Problem(report.file, i, "image", "exif_rotated",
                                           f"{path} has EXIF orientation {orient}; XTuner ignores EXIF and "
                                           "trains on the unrotated pixels (convert with bake_exif=True)", "warning"))
    return _finish(report, records, images, t0)


# ----------------------------------------------------------------------------- FoodieQA

def check_foodieqa_record(rec, question_types=None) -> list:
    """Structural checks of one FoodieQA ``sivqa_tidy.json`` entry (no file access).

    Args:
        rec: the entry.
        question_types: allowed types; None = :data:`KNOWN_QUESTION_TYPES`, and then an
            unknown type is a warning (the real file may use types not listed there).

    Returns:
        ``[(field, kind, message, severity), ...]``.

    Example:
        >>> [k for _, k, _, _ in check_foodieqa_record({"question": "q"})][:2]
        ['missing_key', 'missing_key']
    """
    if not isinstance(rec, dict):
        return [(None, "wrong_type", f"record must be an object, got {type(rec).__name__}", "error")]
    out = []
    add = lambda f, k, m, s="error": out.append((f, k, m, s))  # noqa: E731
    for key, typ in (("question", str), ("choices", list), ("answer", str), ("question_type", str),
                     ("food_meta", dict)):
        if key not in rec:
            add(key, "missing_key", f"no '{key}'")
        elif not isinstance(rec[key], typ):
            add(key, "wrong_type", f"{key} must be {typ.__name__}, got {type(rec[key]).__name__}")
    if isinstance(rec.get("question"), str) and not rec["question"].strip():
        add("question", "empty_question", "question is empty")
    choices = rec.get("choices") if isinstance(rec.get("choices"), list) else None
    if choices is not None:
        if not choices:
            add("choices", "empty_choices", "choices is empty")
        elif len(choices) != 4:
            add("choices", "wrong_choice_count", f"FoodieQA has 4 choices, got {len(choices)}")
        for j, c in enumerate(choices):
            if not isinstance(c, str) or not c.strip():
                add(f"choices[{j}]", "empty_choice", f"choice {j} must be a non-empty string, got {c!r}")
    answer = rec.get("answer")
    if isinstance(answer, str):
        if not answer.strip().isdigit():
            add("answer", "bad_answer", f"answer must be an index string like '2', got {answer!r}")
        elif choices and not int(answer) < len(choices):
            add("answer", "answer_out_of_range", f"answer {answer} but only {len(choices)} choices")
    qtype = rec.get("question_type")
    if isinstance(qtype, str):
        allowed = KNOWN_QUESTION_TYPES if question_types is None else frozenset(question_types)
        if qtype not in allowed:
            add("question_type", "unknown_question_type", f"{qtype!r} not in {sorted(allowed)}",
                "warning" if question_types is None else "error")
    meta = rec.get("food_meta") if isinstance(rec.get("food_meta"), dict) else None
    if meta is not None:
        for key in ("food_file", "food_name"):
            if key not in meta:
                add(f"food_meta.{key}", "missing_key", f"no 'food_meta.{key}'")
            elif not isinstance(meta[key], str) or not meta[key].strip():
                add(f"food_meta.{key}", "wrong_type", f"food_meta.{key} must be a non-empty string, got {meta[key]!r}")
        if "food_type" in meta and not isinstance(meta["food_type"], str):
            add("food_meta.food_type", "wrong_type", "food_meta.food_type (cuisine) must be a string")
    return out


def check_foodieqa(file, image_root, workers: int | None = None, question_types=None, **limits) -> CheckReport:
    """Check a raw FoodieQA ``sivqa_tidy.json`` and the images its entries name.

    Args:
        file: the FoodieQA JSON list.
        image_root: the folder ``food_meta.food_file`` is relative to (``image_root/images``
            is taken instead when it holds the files; see :func:`find_image_root`).
        workers: image-check processes (None = CPU count).
        question_types: allowed ``question_type`` values (see :func:`check_foodieqa_record`).
        **limits: :class:`ImageLimits` fields.

    Returns:
        A :class:`CheckReport`.

    Example:
        >>> check_foodieqa("missing.json", ".").exit_code
        1
    """
    t0 = time.perf_counter()
    lim = ImageLimits(**limits)
    report = CheckReport(str(file), str(image_root))
    records = read_json_records(file, report.problems)
    if records is None:
        return _finish(report, [], {}, t0)
    root = find_image_root(image_root, [r["food_meta"].get("food_file") for r in records
                                        if isinstance(r, dict) and isinstance(r.get("food_meta"), dict)])
    report.image_root = str(root)
    refs = []
    for i, rec in enumerate(records):
        problems = check_foodieqa_record(rec, question_types)
        for fld, kind, msg, sev in problems:
            report.problems.append(Problem(report.file, i, fld, kind, msg, sev))
        meta = rec.get("food_meta") if isinstance(rec, dict) else None
        if not isinstance(meta, dict) or any(f == "food_meta.food_file" for f, *_ in problems):
            continue
        food_file = meta["food_file"]
        path, err = safe_image_path(root, food_file)
        if err:
            report.problems.append(Problem(report.file, i, "food_meta.food_file", *err))
        else:
            refs.append((i, "food_meta.food_file", path))
    images = _check_images(report, refs, lim, workers)
    return _finish(report, records, images, t0)
