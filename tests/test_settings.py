"""helpers.settings: paths printed relative to the repository; the INTERNVL_SETTINGS overrides of a whole run."""
from __future__ import annotations

import dataclasses

import pytest

from helpers.settings import REPO_ROOT, get_settings, repo_relative


def test_env_overrides_apply_and_are_recorded(monkeypatch):
    monkeypatch.setenv("INTERNVL_SETTINGS", '{"max_epochs": 1, "lr": 0.002}')
    S = get_settings("tiny")
    assert (S.max_epochs, S.lr) == (1, 0.002)
    assert S.extra["from_env"] == ["lr", "max_epochs"] and "INTERNVL_SETTINGS: lr, max_epochs" in S.describe()
    assert get_settings("tiny", max_epochs=3).max_epochs == 3  # an explicit argument still wins


@pytest.mark.parametrize("raw, words", [("{oops", "not JSON"), ("[1]", "JSON object"),
                                        ('{"model_path": "/x"}', "cannot set"), ('{"nope": 1}', "unknown settings")])
def test_bad_env_overrides_are_named(monkeypatch, raw, words):
    monkeypatch.setenv("INTERNVL_SETTINGS", raw)
    with pytest.raises((ValueError, TypeError), match=words):
        get_settings("tiny")


def test_env_override_of_a_folder_is_a_path(tmp_path, monkeypatch):
    # JSON carries text: a path field must still be a Path (notebook 05 joins it with "/")
    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setenv("INTERNVL_SETTINGS", '{"tiny_base_model_path": "%s"}' % tmp_path)
    S = get_settings("tiny")
    assert S.tiny_base_model_path == tmp_path and S.base_model_path == tmp_path


def test_no_env_overrides_by_default(monkeypatch):
    monkeypatch.delenv("INTERNVL_SETTINGS", raising=False)
    assert get_settings("tiny").extra == {}


def test_printed_paths_are_relative_to_the_repository(tmp_path, monkeypatch):
    monkeypatch.delenv("INTERNVL_ARTIFACTS", raising=False)
    assert repo_relative(REPO_ROOT / "artifacts" / "x") == "artifacts/x"
    assert repo_relative(tmp_path) == str(tmp_path)  # outside the repository: as it is
    text = get_settings("tiny").describe()
    assert str(REPO_ROOT) not in text and "model=artifacts/models/" in text


def test_an_artifacts_folder_outside_the_repository_is_shown_by_its_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERNVL_ARTIFACTS", str(tmp_path / "arts"))
    shown = repo_relative(tmp_path / "arts" / "models" / "tiny")
    assert shown == "$INTERNVL_ARTIFACTS/models/tiny" and str(tmp_path) not in shown
    assert str(tmp_path) not in get_settings("tiny").describe()
    assert repo_relative(REPO_ROOT / "notebooks") == "notebooks"


def test_repo_relative_text_shortens_only_paths_in_the_repository(tmp_path):
    from helpers.settings import repo_relative_text

    text = f"xtuner train {REPO_ROOT}/artifacts/runs/a.py --work-dir {tmp_path}/w\npath = '{REPO_ROOT}/artifacts/m'"
    assert repo_relative_text(text) == f"xtuner train artifacts/runs/a.py --work-dir {tmp_path}/w\npath = 'artifacts/m'"
    assert repo_relative_text("no path here") == "no path here"


def test_the_tiny_recipe_is_the_same_on_a_cpu_and_a_gpu_but_for_the_optimizer_wrapper(monkeypatch):
    # one miniature everywhere (docs/course-development.md): a CPU runs the stage 2 measured on the H100
    # (docs/gpu-runs.md §14); only AMP needs a GPU
    import helpers.settings as settings

    monkeypatch.delenv("INTERNVL_SETTINGS", raising=False)
    monkeypatch.setattr(settings, "_cuda", lambda: False)
    cpu = dataclasses.asdict(get_settings("tiny"))
    monkeypatch.setattr(settings, "_cuda", lambda: True)
    gpu = dataclasses.asdict(get_settings("tiny"))
    differ = {k for k in cpu if cpu[k] != gpu[k]}
    assert differ == {"optim_wrapper"}, differ
    assert (cpu["pretrain_question_share"], cpu["pretrain_stage2_epochs"]) == (1.0, 3)
