"""The checker's report: :class:`Problem` (file, record, field, kind, message) and :class:`CheckReport`.

Example:
    >>> p = Problem("train.json", 3, "image", "missing_image", "a.jpg: image file does not exist")
    >>> str(p)
    'train.json: record 3, field image: [missing_image] a.jpg: image file does not exist'
"""
from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field

from helpers.data.image_checks import BLIND_SPOT, inspect_images
from helpers.settings import repo_relative, repo_relative_text


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
        # messages name image paths too: shown, like every path, relative to the repository
        return f"{repo_relative(self.file)}: {where}{fld}: [{self.kind}] {repo_relative_text(self.message)}"


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
    length_check: str = ""  # what the sequence-length check did ("" when it did not run)

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

    def format(self, per_kind: int | None = 3) -> str:
        """Human-readable summary: counts, then the first ``per_kind`` problems of each kind (None: all)."""
        lines = [
            f"{repo_relative(self.file)}: checked {self.checked} = valid {self.valid} + rejected {self.rejected}"
            f" | images {self.images_checked} checked ({self.images_decoded} decoded), {self.images_bad} bad"
            f" | {self.seconds:.2f} s",
        ]
        if self.length_check:
            lines.append(f"  length check: {self.length_check}")
        by_kind = defaultdict(list)
        for p in self.problems:
            by_kind[p.kind].append(p)
        for kind, items in sorted(by_kind.items(), key=lambda kv: -len(kv[1])):
            lines.append(f"  {kind} ({items[0].severity}): {len(items)}")
            shown = items if per_kind is None else items[:per_kind]
            lines += [f"    {p}" for p in shown]
            if len(items) > len(shown):
                lines.append(f"    ... {len(items) - len(shown)} more (--all shows every problem)")
        if self.images_checked:
            lines.append(f"  not seen by this check: {BLIND_SPOT}")
        lines.append("OK" if self.ok else "REJECTED: fix the problems above")
        return "\n".join(lines)


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
