"""Notebooks 04-06 rerun from the top, or out of order, without corrupting what earlier runs wrote.

Each test makes the helper calls a notebook makes, twice or in another order, and checks the files
of the earlier run afterwards:

* notebook 04/05: converting the dataset again gives the same files; a conversion killed between
  its two files is redone on the next run (``train.json`` is the marker the notebooks test);
* notebook 05: a new launch never trains into a finished run's work dir; converting again never
  replaces a model unless asked, and a failed replacement leaves the old model whole;
* notebook 06: the latest finished run is evaluated, an unfinished or re-recorded older run does not
  take its place, and each evaluation keeps its own files.

No training here: checkpoints are small real ``torch.save`` files and XTuner's conversion step is
replaced by copying the tiny checkpoint's files (the real conversion is covered in test_finetune).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from helpers.train import runs
from helpers.data.llava import foodieqa_to_llava
from helpers.evaluate.evaluation import EvalResult


def _tree(root: Path) -> dict:
    """{relative path: bytes} of every file under root: what 'unchanged' means below."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- dataset (notebooks 04, 05)
def _foodieqa(root: Path) -> Path:
    """Six photos of three dishes (one EXIF-rotated), two questions each, in FoodieQA's format."""
    from PIL import Image

    dishes = [("烤羊肉串", "新疆菜"), ("白切鸡", "粤菜"), ("麻婆豆腐", "川菜")]
    records = []
    for n in range(6):
        dish, cuisine = dishes[n % 3]
        rel = f"{dish}/{n}.jpeg"
        (root / "images" / dish).mkdir(parents=True, exist_ok=True)
        img = Image.new("RGB", (96, 64), (40 * n, 90, 30))
        exif = img.getexif()
        if n == 0:
            exif[0x0112] = 6  # rotated: the converter writes an upright copy
        img.save(root / "images" / rel, "JPEG", exif=exif.tobytes())
        meta = {"food_name": dish, "food_type": cuisine, "food_file": rel, "id": n}
        choices = ["新疆菜", "粤菜", "川菜", "京菜"]
        records.append({"question": "图片中的食物通常属于哪个菜系?", "choices": choices,
                        "answer": str(choices.index(cuisine)), "question_type": "cuisine_type",
                        "food_name": dish, "question_id": f"q{2 * n}", "food_meta": meta})
        records.append({"question": "图片中的菜叫什么?", "choices": [d for d, _ in dishes] + ["北京烤鸭"],
                        "answer": str(n % 3), "question_type": "food_name", "food_name": dish,
                        "question_id": f"q{2 * n + 1}", "food_meta": meta})
    (root / "sivqa_tidy.json").write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return root / "sivqa_tidy.json"


def test_dataset_conversion_is_idempotent_and_redone_after_a_kill(tmp_path, monkeypatch):
    sivqa = _foodieqa(tmp_path / "foodie")
    out = tmp_path / "llava"
    first = foodieqa_to_llava(sivqa, tmp_path / "foodie", out, val_fraction=0.34, seed=0, workers=1)
    assert first.converted == 12 and first.skipped == 0 and first.exif_baked == 1
    before = _tree(out)
    assert {"train.json", "val.json"} <= set(before) and any(k.startswith("upright/") for k in before)

    # rerun (notebook 04 after 05, or a second "run all"): byte for byte the same files
    again = foodieqa_to_llava(sivqa, tmp_path / "foodie", out, val_fraction=0.34, seed=0, workers=1)
    assert _tree(out) == before
    assert (again.train, again.val) == (first.train, first.val)

    # killed after writing its first file: the notebooks' marker (train.json) must not be there
    killed = tmp_path / "killed"
    real_replace = os.replace
    calls = []

    def replace_then_die(src, dst):
        if calls:
            raise KeyboardInterrupt("killed while writing the second split")
        calls.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr("helpers.data.llava.os.replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        foodieqa_to_llava(sivqa, tmp_path / "foodie", killed, val_fraction=0.34, seed=0, workers=1)
    monkeypatch.setattr("helpers.data.llava.os.replace", real_replace)
    assert not (killed / "train.json").exists(), "a half-done conversion looks finished to notebooks 04/05"
    # the notebooks' own test ("if not train.json: convert") redoes it, and the result is the full one
    if not (killed / "train.json").is_file():
        foodieqa_to_llava(sivqa, tmp_path / "foodie", killed, val_fraction=0.34, seed=0, workers=1)
    redone = {k: v.replace(str(killed.resolve()).encode(), str(out.resolve()).encode())  # upright/ paths are absolute
              for k, v in _tree(killed).items()}
    assert redone == before


# --------------------------------------------------------------------------- training runs (notebook 05)
def _checkpoint(path: Path, value: float = 1.0) -> Path:
    torch = pytest.importorskip("torch")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"lora.weight": torch.full((2, 2), value)}}, path)
    return path


def _finished_run(settings, base: Path) -> Path:
    """A run folder as notebook 05 leaves it: config, work dir with checkpoints, merged model, run.json."""
    run_dir = runs.new_run_dir(settings)
    config = run_dir / "work.py"
    config.write_text(f"path = {str(base)!r}\nlr = 1e-3\n", encoding="utf-8")
    _checkpoint(run_dir / "work" / "iter_4.pth", 4.0)
    _checkpoint(run_dir / "work" / "iter_8.pth", 8.0)
    (run_dir / "work" / "last_checkpoint").write_text(str(run_dir / "work" / "iter_8.pth"))
    merged = run_dir / "merged"
    merged.mkdir()
    (merged / "config.json").write_text('{"model": "%s"}' % run_dir.name)
    runs.record_run(run_dir, config=str(config), checkpoint=str(run_dir / "work" / "iter_8.pth"),
                    merged=str(merged), final_loss=0.5)
    return run_dir


def test_a_new_launch_never_trains_into_a_finished_run(tmp_path, monkeypatch):
    from helpers.train import finetune, train_run

    S = SimpleNamespace(runs_dir=tmp_path / "runs")
    first = _finished_run(S, tmp_path / "base")
    kept = _tree(first)
    assert runs.latest_run(S)["run_dir"] == str(first.resolve())

    # notebook 05 from the top: a new folder every time, never the finished one
    second = runs.new_run_dir(S)
    assert second != first and not any(second.iterdir())

    # a launch aimed at the finished run's work dir by hand is refused before anything starts
    monkeypatch.setattr(finetune, "_xtuner_executable", lambda: Path(sys.executable))
    monkeypatch.setattr(train_run.subprocess, "Popen",
                        lambda *a, **k: pytest.fail("xtuner train was started in a finished run's work dir"))
    with pytest.raises(FileExistsError, match="resume=True.*overwrite=True"):
        train_run.launch(first / "work.py", first / "work")
    assert _tree(first) == kept

    # the second run is stopped mid-training (checkpoints, no record): notebook 06 still gets the first
    _checkpoint(second / "work" / "iter_4.pth")
    assert runs.latest_run(S)["run_dir"] == str(first.resolve())
    # it finishes later and becomes the latest; a note added to the older run afterwards does not move it back
    (second / "merged").mkdir()
    (second / "merged" / "config.json").write_text("{}")
    runs.record_run(second, merged=str(second / "merged"))
    runs.record_run(first, note="looked at again in notebook 06")
    assert runs.latest_run(S)["run_dir"] == str(second.resolve())
    assert json.loads((first / "run.json").read_text())["note"] == "looked at again in notebook 06"
    assert [Path(r["run_dir"]).name for r in runs.list_runs(S)] == sorted([first.name, second.name])


def _fake_convert_to_official(model_dir: Path, fail: bool = False):
    """Stands in for ``python -m xtuner...convert_to_official CONFIG CKPT OUT``: writes OUT as it would."""
    def run(cmd, **kwargs):
        out = Path(cmd[-1])
        out.mkdir(parents=True, exist_ok=True)
        if fail:  # dies after writing part of the model, before config.json
            (out / "model.safetensors").write_bytes(b"partial")
            return subprocess.CompletedProcess(cmd, 1, "", "RuntimeError: out of memory")
        for name in ("config.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
                     "model.safetensors"):
            if (model_dir / name).is_file():
                shutil.copy2(model_dir / name, out / name)
        return subprocess.CompletedProcess(cmd, 0, "", "")
    return run


def test_converting_again_never_replaces_a_model_unasked(tmp_path, monkeypatch, tiny_model_dir):
    from helpers.train import convert, finetune

    S = SimpleNamespace(runs_dir=tmp_path / "runs")
    run_dir = _finished_run(S, tiny_model_dir)
    config, checkpoint, merged = run_dir / "work.py", run_dir / "work" / "iter_8.pth", run_dir / "merged"
    shutil.rmtree(merged)
    monkeypatch.setattr(finetune, "_xtuner_executable", lambda: Path(sys.executable))
    monkeypatch.setattr(finetune, "_xtuner_python", lambda xtuner: sys.executable)
    monkeypatch.setattr(convert.subprocess, "run", _fake_convert_to_official(tiny_model_dir))

    out = convert.convert(config, checkpoint, merged)  # notebook 05, first run of its convert cell
    assert (out / "config.json").is_file() and (out / "conversion.json").is_file()
    assert json.loads((out / "conversion.json").read_text())["checkpoint"] == str(checkpoint.resolve())
    model = _tree(merged)

    # the cell run again, with another checkpoint: refused, the model untouched
    with pytest.raises(FileExistsError, match="overwrite=True"):
        convert.convert(config, run_dir / "work" / "iter_4.pth", merged)
    assert _tree(merged) == model

    # asked to overwrite, but the conversion fails halfway: the earlier model is still whole
    monkeypatch.setattr(convert.subprocess, "run", _fake_convert_to_official(tiny_model_dir, fail=True))
    with pytest.raises(RuntimeError, match="convert_to_official failed"):
        convert.convert(config, run_dir / "work" / "iter_4.pth", merged, overwrite=True)
    assert _tree(merged) == model
    assert sorted(p.name for p in run_dir.iterdir()) == ["merged", "run.json", "work", "work.py"]  # no leftovers

    # a conversion killed earlier left its build folder; asked to overwrite, the new model replaces the old
    (run_dir / ".merged.converting").mkdir()
    (run_dir / ".merged.converting" / "model.safetensors").write_bytes(b"stale")
    monkeypatch.setattr(convert.subprocess, "run", _fake_convert_to_official(tiny_model_dir))
    convert.convert(config, run_dir / "work" / "iter_4.pth", merged, overwrite=True)
    assert json.loads((merged / "conversion.json").read_text())["checkpoint"].endswith("iter_4.pth")
    assert sorted(p.name for p in run_dir.iterdir()) == ["merged", "run.json", "work", "work.py"]
    assert runs.latest_run(S)["merged"] == str(merged)  # the run record still points at a loadable model


# --------------------------------------------------------------------------- evaluation (notebook 06)
def _result(name: str, answers: list) -> EvalResult:
    rows = [dict(question_type="cuisine_type", cuisine="川菜", answer=a, reference="川菜，图中的菜是麻婆豆腐",
                 correct=a == "川菜，图中的菜是麻婆豆腐") for a in answers]
    return EvalResult(name=name, model_path="m", mode="course", system_prompt=None, engine="fake", rows=rows)


def test_evaluations_keep_their_own_files(tmp_path, monkeypatch):
    S = SimpleNamespace(runs_dir=tmp_path / "runs")
    base = tmp_path / "base"
    first = _finished_run(S, base)
    # notebook 06 against the first run: results under that run's eval/<time>/ (the notebook's layout)
    eval_a = Path(runs.latest_run(S)["run_dir"]) / "eval" / "20260101-000000"
    _result("fine-tuned", ["川菜，图中的菜是麻婆豆腐", "粤菜"]).save(eval_a / "fine-tuned.json")
    saved_a = _tree(first)

    # notebook 05 again, then notebook 06 again: the new evaluation lands under the new run
    second = _finished_run(S, base)
    eval_b = Path(runs.latest_run(S)["run_dir"]) / "eval" / "20260101-010000"
    assert eval_b.parent.parent == second.resolve()
    _result("fine-tuned", ["粤菜", "粤菜"]).save(eval_b / "fine-tuned.json")
    assert _tree(first) == saved_a
    assert EvalResult.load(eval_a / "fine-tuned.json").accuracy == 0.5
    assert EvalResult.load(eval_b / "fine-tuned.json").accuracy == 0.0

    # one cell rerun and killed while saving: the file of the earlier save stays readable
    real_write = Path.write_text

    def write_half_then_die(self, data, *args, **kwargs):
        real_write(self, data[: len(data) // 2], *args, **kwargs)
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(Path, "write_text", write_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        _result("fine-tuned", ["川菜，图中的菜是麻婆豆腐"] * 2).save(eval_b / "fine-tuned.json")
    monkeypatch.setattr(Path, "write_text", real_write)
    assert EvalResult.load(eval_b / "fine-tuned.json").accuracy == 0.0
    _result("fine-tuned", ["川菜，图中的菜是麻婆豆腐"] * 2).save(eval_b / "fine-tuned.json")  # a finished rerun
    assert EvalResult.load(eval_b / "fine-tuned.json").accuracy == 1.0
