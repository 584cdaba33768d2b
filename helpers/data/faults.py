"""A small copy of a LLaVA set with one deliberate fault per record, to watch the checker work.

Notebook 04 shows :func:`helpers.data.checks.check_llava` on clean data (nothing to report) and on
this copy, where every fault is known in advance: each record gets the fault of its row in
:data:`FAULTS`, with its own copy of the image, so the checker's report can be compared line
by line with what was broken (:func:`compare_with_report`). The original files are never
touched.

Example:
    >>> from helpers.data.faults import make_faulty_copy, compare_with_report
    >>> from helpers.data.checks import check_llava
    >>> fc = make_faulty_copy("artifacts/data/llava-synth/train.json",
    ...                       "artifacts/data/foodieqa-synth", "/tmp/faulty")  # doctest: +SKIP
    >>> report = check_llava(fc.file, fc.image_root, workers=1)              # doctest: +SKIP
    >>> all(row["caught"] for row in compare_with_report(fc, report))        # doctest: +SKIP
    True
"""
from __future__ import annotations

import copy
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

# (fault, the problem kind check_llava must report, its severity); None = a clean record.
FAULTS = (
    ("clean", None, None),
    ("image file deleted", "missing_image", "error"),
    ("answer is empty", "empty_answer", "error"),
    ("<image> removed from the question", "no_image_token", "error"),
    ("answer turn before the question", "role_order", "error"),
    ("image path leaves the image root (../)", "path_escape", "error"),
    ("JPEG cut in half (upload interrupted)", "truncated", "error"),
    ("text file saved as .jpeg", "not_an_image", "error"),
    ("image_wh does not match the file", "image_wh_mismatch", "error"),
    ("<image> inside the answer", "image_token_in_answer", "error"),
    ("id of record 0 reused", "duplicate_id", "warning"),
    ("photo stored sideways + EXIF Orientation 6", "exif_rotated", "warning"),
    ("clean", None, None),
)


@dataclass
class FaultyCopy:
    """Where the broken copy is and what was broken in it."""

    file: Path  # the LLaVA JSON with the faulty records
    image_root: Path  # its image folder (give this to the checker)
    faults: list = field(default_factory=list)  # per record: {"index", "id", "fault", "kind", "severity"}

    @property
    def expected_rejected(self) -> int:
        """Records the checker must reject (those with an error-severity fault)."""
        return sum(1 for f in self.faults if f["severity"] == "error")


def _image_of(record: dict, image_root: Path) -> Path:
    image = record.get("image")
    image = image[0] if isinstance(image, list) else image
    return Path(image) if os.path.isabs(image) else image_root / image


def _break(kind: str, rec: dict, img: Path, first_id) -> None:
    """Apply one fault to a record (and its private image copy) in place."""
    from PIL import Image

    human, gpt = rec["conversations"][0], rec["conversations"][1]
    if kind == "missing_image":
        img.unlink()
    elif kind == "empty_answer":
        gpt["value"] = ""
    elif kind == "no_image_token":
        human["value"] = human["value"].replace("<image>", "").strip()
    elif kind == "role_order":
        rec["conversations"] = [gpt, human]
    elif kind == "path_escape":
        rec["image"] = "../" + rec["image"]
    elif kind == "truncated":
        data = img.read_bytes()
        img.write_bytes(data[: len(data) // 2])
    elif kind == "not_an_image":
        img.write_text("this is not a photo\n", encoding="utf-8")
    elif kind == "image_wh_mismatch":
        w, h = rec["image_wh"][0]
        rec["image_wh"] = [[h + 1, w + 1]]
    elif kind == "image_token_in_answer":
        gpt["value"] = gpt["value"] + " <image>"
    elif kind == "duplicate_id":
        rec["id"] = first_id
    elif kind == "exif_rotated":
        with Image.open(img) as im:
            sideways = im.transpose(Image.Transpose.ROTATE_90)  # what a phone stores for a portrait shot
            exif = Image.Exif()
            exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
            sideways.save(img, "JPEG", quality=90, exif=exif.tobytes())
        rec["image_wh"] = [list(sideways.size)]
    elif kind is not None:
        raise ValueError(f"unknown fault kind {kind!r}")


def make_faulty_copy(llava_file, image_root, out_dir, faults=FAULTS) -> FaultyCopy:
    """Copy the first ``len(faults)`` records of a LLaVA file and break each one on purpose.

    Each record gets its own copy of its image under ``out_dir/images/`` (so deleting or
    truncating one touches nothing else), then the fault of its row in ``faults``. The
    output is ``out_dir/faulty.json`` with ``out_dir`` as the image root.

    Args:
        llava_file: a clean LLaVA .json list (e.g. the converter's train.json).
        image_root: the folder its image paths are relative to.
        out_dir: a new or empty folder (it is emptied first when it already holds a copy).
        faults: rows ``(description, problem kind, severity)``; kinds as in :data:`FAULTS`.

    Returns:
        A :class:`FaultyCopy`.

    Raises:
        ValueError: the file has fewer records than ``faults``, or a record lacks
            ``image``/``image_wh``/two turns (it must be a converter output).

    Example:
        >>> fc = make_faulty_copy("train.json", "data", "/tmp/faulty")  # doctest: +SKIP
        >>> fc.expected_rejected  # doctest: +SKIP
        9
    """
    from helpers.data.llava import load_llava

    records = load_llava(llava_file)
    if len(records) < len(faults):
        raise ValueError(f"{llava_file}: {len(records)} records, need {len(faults)} to break one per fault")
    out = Path(out_dir)
    if (out / "faulty.json").exists():
        shutil.rmtree(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows, result = [], FaultyCopy(out / "faulty.json", out)
    for i, (desc, kind, severity) in enumerate(faults):
        rec = copy.deepcopy(records[i])
        for key in ("image", "image_wh", "conversations"):
            if key not in rec:
                raise ValueError(f"{llava_file}: record {i} has no '{key}' (expected the converter's output)")
        if len(rec["conversations"]) != 2:
            raise ValueError(f"{llava_file}: record {i} has {len(rec['conversations'])} turns, expected 2")
        src = _image_of(rec, Path(image_root))
        rel = f"images/{i:02d}_{src.name}"
        shutil.copyfile(src, out / rel)
        rec["image"] = rel
        _break(kind, rec, out / rel, records[0].get("id"))
        rows.append(rec)
        result.faults.append({"index": i, "id": rec.get("id"), "fault": desc, "kind": kind, "severity": severity})
    tmp = out / ".faulty.json.tmp"
    tmp.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, result.file)
    return result


def compare_with_report(faulty: FaultyCopy, report) -> list:
    """Line up each planted fault with what the checker reported for that record.

    Args:
        faulty: from :func:`make_faulty_copy`.
        report: :func:`helpers.data.checks.check_llava` on ``faulty.file``.

    Returns:
        Rows ``{"index", "fault", "expected", "reported", "caught"}``; ``caught`` is True when
        the expected kind was reported (for a clean record: when nothing was reported).

    Example:
        >>> rows = compare_with_report(fc, check_llava(fc.file, fc.image_root))  # doctest: +SKIP
    """
    found: dict = {}
    for p in report.problems:
        found.setdefault(p.index, []).append(p.kind)
    rows = []
    for f in faulty.faults:
        kinds = found.get(f["index"], [])
        caught = (not kinds) if f["kind"] is None else f["kind"] in kinds
        rows.append({"index": f["index"], "fault": f["fault"], "expected": f["kind"] or "-",
                     "reported": ", ".join(kinds) or "-", "caught": caught})
    return rows
