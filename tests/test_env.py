"""Tests for helpers.env: versions, device, need() with the install hint."""
import pytest

from helpers.env import install_hint, need, quiet_logs, show_versions, versions


def test_need_imports_or_names_the_requirements_file():
    assert need("json").dumps([]) == "[]"
    with pytest.raises(ImportError, match="requirements-xtuner.txt"):
        need("xtuner.definitely_missing_submodule")
    with pytest.raises(ImportError, match="stage 0b needs no_such_module_here"):
        need("no_such_module_here", "stage 0b")
    assert "requirements-lmdeploy.txt" in install_hint("gradio")


def test_versions_name_what_is_missing(capsys):
    info = show_versions(("pytest", "no-such-distribution"))
    assert info["pytest"] == pytest.__version__ and info["no-such-distribution"] is None
    assert set(versions(())) == {"python", "device"}
    assert "另一个环境" in capsys.readouterr().out


def test_quiet_logs_silences_transformers_bars_and_info():
    transformers = pytest.importorskip("transformers")
    level = transformers.logging.get_verbosity()
    try:
        done = quiet_logs()
        assert "transformers" in done
        assert transformers.logging.get_verbosity() == transformers.logging.ERROR
        assert not transformers.utils.logging.is_progress_bar_enabled()
    finally:
        transformers.logging.set_verbosity(level)
        transformers.logging.enable_progress_bar()


@pytest.fixture
def tf32_on():
    """TF32 allowed everywhere (what a library may set), restored afterwards."""
    torch = pytest.importorskip("torch")
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision())
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("high")
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
    torch.set_float32_matmul_precision(saved[2])


def test_full_fp32_matmuls_turns_tf32_off(tf32_on):
    from helpers.env import fp32_matmul_flags, full_fp32_matmuls

    assert fp32_matmul_flags() == {"cuda_matmul_allow_tf32": True, "cudnn_allow_tf32": True,
                                   "float32_matmul_precision": "high"}
    off = {"cuda_matmul_allow_tf32": False, "cudnn_allow_tf32": False, "float32_matmul_precision": "highest"}
    assert full_fp32_matmuls() == off
    assert fp32_matmul_flags() == off  # read back from torch, not only returned


def test_quiet_logs_hides_torch_jit_deprecation_but_not_other_warnings():
    import warnings

    from helpers.env import quiet_logs

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_logs()
        warnings.warn("`torch.jit.script` is deprecated. Please switch to `torch.compile`.", FutureWarning)
        warnings.warn("`torch.jit.interface` is deprecated.", FutureWarning)
        warnings.warn("something else is deprecated", FutureWarning)
    assert [str(w.message) for w in seen] == ["something else is deprecated"]
