"""helpers/serve/profiles.py: what each serving profile hands LMDeploy's engine."""
from __future__ import annotations

from helpers.serve.profiles import DEFAULT_PROFILE, PROFILES, get_profile


def test_class_mp_is_class_with_the_model_in_a_child_process():
    cls, mp = get_profile("class"), get_profile("class_mp")
    assert mp.engine_options() == {**cls.engine_options(), "distributed_executor_backend": "mp"}
    assert "distributed_executor_backend" not in cls.engine_options()
    # everything else (uploads, Gradio queue, KV cache share) is the class profile's
    same = {k: v for k, v in vars(cls).items() if k not in ("name", "executor")}
    assert same == {k: v for k, v in vars(mp).items() if k not in ("name", "executor")}


def test_default_profile_exists_and_baseline_sets_nothing():
    assert DEFAULT_PROFILE in PROFILES
    assert get_profile("baseline").engine_options() == {}
