"""helpers.data.faults: each planted fault is reported by the checker, originals stay intact."""
from __future__ import annotations

import hashlib
import json

import pytest

pytest.importorskip("PIL")

from helpers.data.checks import check_llava  # noqa: E402
from helpers.data.faults import FAULTS, compare_with_report, make_faulty_copy  # noqa: E402


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    from helpers.data.llava import foodieqa_to_llava
    from helpers.data.synth import make_dataset

    root = make_dataset(tmp_path_factory.mktemp("synth"), per_dish=1, long_side=448)
    out = tmp_path_factory.mktemp("llava")
    foodieqa_to_llava(root / "sivqa_tidy.json", root, out, val_fraction=0.0, workers=1)
    return out / "train.json", root


def _digest(paths) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.read_bytes())
    return h.hexdigest()


def test_every_fault_is_caught_and_counts_add_up(llava, tmp_path):
    train, root = llava
    before = _digest([train, *root.rglob("*.jpeg")])
    fc = make_faulty_copy(train, root, tmp_path / "faulty")
    assert _digest([train, *root.rglob("*.jpeg")]) == before  # nothing of the source was touched
    report = check_llava(fc.file, fc.image_root, workers=1)
    rows = compare_with_report(fc, report)
    assert [r["caught"] for r in rows] == [True] * len(FAULTS), rows
    assert report.checked == len(FAULTS) == report.valid + report.rejected
    assert report.rejected == fc.expected_rejected == sum(1 for _, _, sev in FAULTS if sev == "error")
    by_index = {}
    for p in report.problems:
        by_index.setdefault(p.index, set()).add((p.kind, p.severity))
    for f in fc.faults:  # exactly the planted problem, with the planted severity, nothing else
        assert by_index.get(f["index"], set()) == ({(f["kind"], f["severity"])} if f["kind"] else set())


def test_a_second_copy_replaces_the_first(llava, tmp_path):
    train, root = llava
    out = tmp_path / "faulty"
    make_faulty_copy(train, root, out)
    fc = make_faulty_copy(train, root, out)
    assert len(json.loads(fc.file.read_text(encoding="utf-8"))) == len(FAULTS)
    assert len(list((out / "images").iterdir())) == len(FAULTS) - 1  # one image was deleted on purpose


def test_compare_notices_a_fault_the_checker_missed(llava, tmp_path):
    train, root = llava
    fc = make_faulty_copy(train, root, tmp_path / "faulty")
    report = check_llava(fc.file, fc.image_root, workers=1)
    report.problems = [p for p in report.problems if p.kind != "truncated"]
    rows = {r["index"]: r for r in compare_with_report(fc, report)}
    missed = [i for i, r in rows.items() if not r["caught"]]
    assert missed == [next(f["index"] for f in fc.faults if f["kind"] == "truncated")]


def test_bad_inputs(llava, tmp_path):
    train, root = llava
    small = tmp_path / "small.json"
    small.write_text(json.dumps(json.loads(train.read_text(encoding="utf-8"))[:3]), encoding="utf-8")
    with pytest.raises(ValueError, match="3 records, need"):
        make_faulty_copy(small, root, tmp_path / "a")
    with pytest.raises(ValueError, match="unknown fault kind 'melted'"):
        make_faulty_copy(train, root, tmp_path / "b", faults=(("oops", "melted", "error"),))
