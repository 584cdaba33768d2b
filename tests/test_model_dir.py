"""helpers.model_dir: whose code runs a checkpoint, views that never write into it, clear refusals."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from helpers import model_dir
from helpers.model_dir import UnsupportedCheckpoint

REPO = Path(__file__).resolve().parent.parent


def _checkpoint(tmp_path, arch="InternLM2ForCausalLM", model_type="internvl_chat", name="ckpt"):
    path = tmp_path / name
    path.mkdir()
    cfg = {"model_type": model_type, "llm_config": {"architectures": [arch]}}
    (path / "config.json").write_text(json.dumps(cfg))
    return path


@pytest.mark.parametrize("arch, words", [("Qwen2ForCausalLM", "InternVL2-1B"), ("Phi3ForCausalLM", "InternVL2-4B"),
                                         ("MysteryLM", "does not implement")])
def test_other_llms_are_refused_with_what_is_supported(tmp_path, arch, words):
    path = _checkpoint(tmp_path, arch)
    with pytest.raises(UnsupportedCheckpoint) as err:
        model_dir.runnable_dir(path, views=tmp_path / "views")
    message = str(err.value)
    assert words in message and "InternLM2ForCausalLM" in message and "InternVL2-8B" in message
    assert str(path / "config.json") in message
    assert not (tmp_path / "views").exists()


def test_internvl2_8b_shaped_config_is_accepted(tmp_path):
    # InternVL2-8B: InternLM2.5-7B, the InternLM2ForCausalLM architecture at other sizes
    path = _checkpoint(tmp_path)
    assert model_dir.check_supported(path)["llm_config"]["architectures"] == ["InternLM2ForCausalLM"]


@pytest.mark.parametrize("content, error", [("{not json", UnsupportedCheckpoint), ("[1, 2]", UnsupportedCheckpoint),
                                            ('{"model_type": "llava"}', UnsupportedCheckpoint),
                                            ("[" * 100_000, UnsupportedCheckpoint), (None, FileNotFoundError)])
def test_broken_or_foreign_configs_get_a_clear_error(tmp_path, content, error):
    path = tmp_path / "m"
    path.mkdir()
    if content is not None:
        (path / "config.json").write_text(content)
    with pytest.raises(error, match="config.json"):
        model_dir.check_supported(path)


def test_code_origin(tiny_model_dir, replica_dir, tmp_path):
    assert model_dir.code_origin(tiny_model_dir) == "course"
    assert model_dir.code_origin(replica_dir) == "checkpoint"
    assert model_dir.code_origin(_checkpoint(tmp_path)) == "none"


def _snapshot(path: Path) -> dict:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns, p.is_symlink()) for p in path.iterdir()}


def test_view_links_the_checkpoint_and_carries_the_course_code(replica_dir, tmp_path):
    before = _snapshot(replica_dir)
    view = model_dir.make_view(replica_dir, tmp_path / "views")
    assert view.parent == tmp_path / "views" and view.name.startswith(replica_dir.name + "-")
    for name in ("model.safetensors", "config.json", "tokenizer.model", "tokenizer_config.json",
                 "tokenization_internlm2.py", "generation_config.json"):
        assert (view / name).is_symlink() and (view / name).resolve() == (replica_dir / name).resolve(), name
    for name in model_dir.REMOTE_CODE_FILES:
        assert not (view / name).is_symlink()
        assert (view / name).read_bytes() == (model_dir.COURSE_CODE / name).read_bytes()
    assert _snapshot(replica_dir) == before  # nothing written into the learner's directory
    info = (view / model_dir.VIEW_INFO).stat().st_mtime_ns
    assert model_dir.make_view(replica_dir, tmp_path / "views") == view
    assert (view / model_dir.VIEW_INFO).stat().st_mtime_ns == info  # reused, not rebuilt


def test_view_follows_changes_of_the_checkpoint(tiny_model_dir, tmp_path):
    import shutil

    src = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, src)
    (src / "modeling_internvl_chat.py").write_text("# someone else's code\n")
    view = model_dir.make_view(src, tmp_path / "views")
    assert not (view / "extra.txt").exists()
    (src / "extra.txt").write_text("new file")
    again = model_dir.make_view(src, tmp_path / "views")
    assert again == view and (view / "extra.txt").is_symlink()
    assert list((tmp_path / "views").glob(".*")) == []  # no half-built views left behind


def test_rule_in_this_environment(tiny_model_dir, replica_dir, tmp_path):
    assert model_dir.runnable_dir(tiny_model_dir, views=tmp_path) == tiny_model_dir  # course code runs everywhere
    chosen = model_dir.runnable_dir(replica_dir, views=tmp_path)
    if model_dir.transformers_major() < 5:
        assert chosen == replica_dir and "可以运行它" in model_dir.describe(replica_dir)
    else:  # OpenGVLab's code was written for transformers 4.37: the course's code over a view
        assert chosen.parent == tmp_path and model_dir.code_origin(chosen) == "course"
        assert "改用课程自己的实现" in model_dir.describe(replica_dir)


def test_course_model_offers_the_published_interface_and_nothing_more(tiny_model):
    from helpers.internvl.modeling_internvl_chat import InternVLChatModel

    model, tok = tiny_model
    own = {n for n, v in vars(InternVLChatModel).items()
           if not n.startswith("_") and callable(v) and not isinstance(v, type)}  # classes: config_class
    assert own <= set(model_dir.PUBLISHED_METHODS), own - set(model_dir.PUBLISHED_METHODS)
    for name in model_dir.PUBLISHED_METHODS + model_dir.PUBLISHED_ATTRIBUTES:
        assert hasattr(model, name), name  # a faithful stand-in for OpenGVLab's class
    assert not hasattr(model, "build_prompt")


def _course_only_members() -> set:
    """Names the course's InternVLChatModel defines (methods, ``self.X =`` in __init__) that OpenGVLab's lacks."""
    import ast

    tree = ast.parse((model_dir.COURSE_CODE / "modeling_internvl_chat.py").read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "InternVLChatModel")
    names = {n.name for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    names |= {t.id for n in cls.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    init = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    names |= {n.attr for n in ast.walk(init) if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store)}
    published = set(model_dir.PUBLISHED_METHODS) | set(model_dir.PUBLISHED_ATTRIBUTES)
    return {n for n in names - published if not (n.startswith("__") and n.endswith("__"))} | {"build_prompt"}


def _course_sources():
    for path in sorted((REPO / "helpers").rglob("*.py")):
        if path.relative_to(REPO / "helpers").parts[0] != "internvl":
            yield path, path.read_text(encoding="utf-8")
    for path in sorted((REPO / "benchmarks").glob("*.py")):
        yield path, path.read_text(encoding="utf-8")
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
        yield path, "\n".join(c for c in code if not c.lstrip().startswith(("%", "!")))


def _model_members(text: str):
    """(line, attribute) of every ``model.X`` / ``<obj>.model.X`` in Python source."""
    import ast

    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Attribute):
            base = node.value
            if (isinstance(base, ast.Name) and base.id == "model") or \
                    (isinstance(base, ast.Attribute) and base.attr == "model"):
                yield node.lineno, node.attr


def test_course_code_uses_no_course_only_member_of_a_model():
    forbidden = _course_only_members()
    assert {"_build_prompt", "_splice", "patch_size"} <= forbidden  # the test can fail
    bad = [f"{path.relative_to(REPO)}:{line}: model.{attr}" for path, text in _course_sources()
           for line, attr in _model_members(text) if attr in forbidden]
    assert not bad, "\n".join(bad)
