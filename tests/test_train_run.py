"""Tests for helpers.train.train_run with a stand-in ``xtuner train`` that does what XTuner's dataset does
with images (``prepare_data``: print the error, train on another sample) in a few milliseconds."""
from __future__ import annotations

import json
import stat
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from helpers.train import finetune, train_run

FAKE_XTUNER = '''#!{python}
"""Stand-in for `xtuner train CONFIG --work-dir DIR`: XTuner's image handling, log lines, checkpoints."""
import ast, json, os, sys, zipfile
from PIL import Image

config, work = sys.argv[2], sys.argv[sys.argv.index("--work-dir") + 1]
values = {{n.targets[0].id: ast.literal_eval(n.value) for n in ast.parse(open(config).read()).body}}
records = json.load(open(values["data_path"]))
for n in range(1, 5):
    rec = records[(n - 1) % len(records)]
    try:  # xtuner/dataset/internvl_dataset.py prepare_data
        Image.open(os.path.join(values["image_folder"], rec["image"])).convert("RGB")
    except Exception as e:
        print(f"Error: {{e}}", flush=True)  # ... returns None and __getitem__ draws another sample
    print(f"12/07 10:00:0{{n}} - mmengine - INFO - Iter(train) [{{n}}/4]  lr: 1.0e-04  loss: {{1.0 / n:.4f}}",
          flush=True)
    if n % 2 == 0:
        path = os.path.join(work, f"iter_{{n}}.pth")
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/data.pkl", b"x")
        open(os.path.join(work, "last_checkpoint"), "w").write(path)
'''


@pytest.fixture()
def setup(tmp_path, monkeypatch):
    fake = tmp_path / "xtuner"
    fake.write_text(FAKE_XTUNER.format(python=sys.executable))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(finetune, "_xtuner_executable", lambda: fake)
    images = tmp_path / "images"
    images.mkdir()
    for i in range(4):
        Image.new("RGB", (64, 48), (60 * i, 90, 30)).save(images / f"{i}.jpg")
    return tmp_path, images


def config_for(tmp, images, names):
    records = [{"id": str(i), "image": name, "conversations": [{"from": "human", "value": "<image>q"},
                                                              {"from": "gpt", "value": "a"}]}
               for i, name in enumerate(names)]
    (tmp / "train.json").write_text(json.dumps(records))
    config = tmp / "work.py"
    config.write_text(f"data_path = {str(tmp / 'train.json')!r}\nimage_folder = {str(images)!r}\n")
    return config


def test_clean_run_is_ok(setup):
    tmp, images = setup
    run = train_run.launch(config_for(tmp, images, ["0.jpg", "1.jpg", "2.jpg", "3.jpg"]), tmp / "work")
    run.wait(progress=False)
    result = run.result()
    assert result.ok and result.replaced_samples == 0 and result.checkpoint.name == "iter_4.pth"


def test_missing_image_is_surfaced_with_count_and_records(setup, capsys):
    tmp, images = setup
    config = config_for(tmp, images, ["0.jpg", "gone.jpg", "2.jpg", "3.jpg/"])
    run = train_run.launch(config, tmp / "work")
    assert "2 条训练记录的图片 XTuner 打不开" in capsys.readouterr().out
    run.wait(progress=False)
    with pytest.raises(train_run.TrainingFailed, match="replaced 2 samples") as err:
        run.result()
    assert "record 1:" in str(err.value) and "record 3:" in str(err.value)
    kept = run.result(allow_replaced=True)
    assert not kept.ok and kept.replaced_samples == 2
    assert [i for i, _, _ in kept.replaced_records] == [1, 3]


def test_resume_of_a_finished_run_says_it_is_complete(setup, monkeypatch, capsys):
    tmp, images = setup
    config = config_for(tmp, images, ["0.jpg", "1.jpg"])
    run = train_run.launch(config, tmp / "work")
    run.wait(progress=False)
    first = run.result()
    monkeypatch.setattr(train_run.subprocess, "Popen",
                        lambda *a, **k: pytest.fail("xtuner train started for a run that is complete"))
    again = train_run.launch(config, tmp / "work", resume=True)
    assert "训练已经完成" in capsys.readouterr().out
    assert again.wait(progress=False) == 0
    result = again.result()
    assert result.already_complete and result.checkpoint == first.checkpoint and result.max_iters == 4
    assert result.final_loss == pytest.approx(0.25)


def test_resume_without_the_earlier_log_does_not_claim_a_crash(setup, capsys):
    tmp, images = setup
    config = config_for(tmp, images, ["0.jpg"])
    work = tmp / "work"
    work.mkdir()
    ckpt = work / "iter_4.pth"
    with zipfile.ZipFile(ckpt, "w") as z:
        z.writestr("archive/data.pkl", b"x")
    (work / "last_checkpoint").write_text(str(ckpt))
    # a stand-in that, like mmengine resuming at the last iteration, trains and logs nothing
    fake = Path(finetune._xtuner_executable())
    fake.write_text(f"#!{sys.executable}\n")
    run = train_run.launch(config, work, resume=True)
    run.wait(progress=False)
    with pytest.raises(train_run.TrainingFailed, match="already complete") as err:
        run.result()
    assert "crashed" not in str(err.value)
