"""Dataset checker: every problem of a LLaVA or FoodieQA file, with record index and field.

XTuner's ``InternVL_V1_5_Dataset`` skips a sample whose image fails to load and silently
draws another one, cuts samples at ``max_length`` without a word, and never looks at roles,
``<image>`` markers or empty answers. This module finds all of that *before* training: it
never stops at the first problem, never drops a record silently (``checked == valid +
rejected``), never raises on any input, and says which record, which field, why.

The rules live in one place each: reading files in :mod:`helpers.data.jsonio`, image paths in
:mod:`helpers.data.pathsafe`, image files in :mod:`helpers.data.image_checks`, what XTuner can train on
in :mod:`helpers.data.xtuner_rules`. Speed: the JSON side is pure Python; each distinct image is
checked once, from its header (see :mod:`helpers.data.image_checks`); the optional length check
tokenizes each distinct text once, in one batch.

Example:
    >>> from helpers.data.checks import check_llava
    >>> report = check_llava("artifacts/data/llava-synth/train.json",
    ...                      "artifacts/data/foodieqa-synth")  # doctest: +SKIP
    >>> report.checked == report.valid + report.rejected  # doctest: +SKIP
    True
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from helpers.data.check_report import CheckReport, Problem, _check_images, _finish  # noqa: F401  (re-exported)
from helpers.data.foodieqa_checks import (KNOWN_QUESTION_TYPES, check_foodieqa, check_foodieqa_record,
                                          duplicate_question_ids)  # noqa: F401
from helpers.data.image_checks import (BLIND_SPOT, EXIF_ORIENTATION, ImageLimits, decode_problems, inspect_image,
                                       inspect_images)  # noqa: F401  (re-exported)
from helpers.data.jsonio import InvalidRecord, read_json_records  # noqa: F401  (re-exported)
from helpers.data.pathsafe import find_image_root, safe_image_path, short_repr  # noqa: F401  (re-exported)
from helpers.data.xtuner_rules import (IMAGE_TOKEN, ROLES, check_llava_record, length_problems,
                                       reserved_tokens_in, wh_of)  # noqa: F401


# ----------------------------------------------------------------------------- LLaVA

@dataclass(frozen=True)
class LengthCheck:
    """What the sequence-length check needs: the course's tokenizer and XTuner's settings.

    Example:
        >>> from helpers.settings import get_settings              # doctest: +SKIP
        >>> LengthCheck.from_settings(get_settings())              # doctest: +SKIP
    """

    tokenizer: object
    max_length: int
    system: str
    tiling: dict  # helpers.tiling.image_tokens keyword arguments
    source: str = ""  # where the tokenizer came from (shown in the report)

    @classmethod
    def from_settings(cls, settings, tokenizer_path=None, max_length: int | None = None) -> "LengthCheck":
        """Load the tokenizer of ``tokenizer_path`` (default: ``settings.model_path``).

        Raises:
            OSError: no tokenizer there (the message names the folder).
        """
        from transformers import AutoTokenizer

        from helpers.settings import XTUNER_SYSTEM_PROMPT

        path = Path(tokenizer_path or settings.model_path)
        if not (path / "tokenizer_config.json").is_file():
            raise OSError(f"no tokenizer in {path} (tokenizer_config.json missing; `make tiny` builds one)")
        tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=True)
        tiling = dict(min_num=settings.min_dynamic_patch, max_num=settings.max_dynamic_patch,
                      image_size=settings.image_size, use_thumbnail=settings.use_thumbnail)
        return cls(tok, int(max_length or settings.max_length), XTUNER_SYSTEM_PROMPT, tiling, str(path))


def check_llava(file, image_root, workers: int | None = None, extra_roots=None,
                require_image: bool = True, length: LengthCheck | None = None, **limits) -> CheckReport:
    """Check a LLaVA-format JSON/JSONL file and its images; report every problem.

    Args:
        file: the .json (list) or .jsonl file.
        image_root: the folder image paths are relative to (XTuner's ``image_folder``).
        workers: image-check processes (None = CPU count, 1 = no pool).
        extra_roots: folders where absolute image paths are allowed; None = the ``upright/``
            folder next to ``file`` (where :func:`helpers.data.llava.foodieqa_to_llava` bakes EXIF).
        require_image: a record without ``image`` is an error (the course trains image QA).
        length: a :class:`LengthCheck`: also reject samples XTuner would cut at ``max_length``.
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
    refs, wh_claims = _llava_records(report, records, root, extra_roots, require_image)
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
    if length is not None:
        _check_lengths(report, records, refs, images, length)
    return _finish(report, records, images, t0)


def _llava_records(report, records, root, extra_roots, require_image) -> tuple:
    """Record checks and image paths: returns ``([(index, "image", path)], {index: (wh, path)})``."""
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
                                               f"id {short_repr(rid)} already used by record {seen_ids[rid]}",
                                               "warning"))
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
        if rec.get("image_wh") is not None and wh_of(rec["image_wh"]):
            wh_claims[i] = (wh_of(rec["image_wh"]), str(path))
    return refs, wh_claims


def _check_lengths(report, records, refs, images, length: LengthCheck) -> None:
    """Adds too_long / no_answer_left for records that are otherwise sound."""
    from helpers.tiling import image_tokens

    rejected = {p.index for p in report.problems if p.severity == "error"}
    image_of = {i: images[str(path)]["size"] for i, _, path in refs}
    items = []
    for i, rec in enumerate(records):
        if i in rejected:
            continue
        size = image_of.get(i)
        n_image = image_tokens(*size, **length.tiling) if size else 0  # XTuner tiles the stored pixels
        items.append((i, rec["conversations"], n_image))
    for i, kind, msg in length_problems(items, length.tokenizer, length.max_length, length.system):
        report.problems.append(Problem(report.file, i, "conversations", kind, msg))
    report.length_check = (f"max_length {length.max_length}, tokenizer {length.source or type(length.tokenizer).__name__}; "
                           f"{len(items)} sound records measured")
