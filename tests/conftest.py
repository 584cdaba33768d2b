"""Shared pytest fixtures for both course environments.

``tiny_model_dir`` builds the tiny InternVL2 checkpoint once (into ``artifacts/``, where the
notebooks also find it) and hands its path to any test that needs a loadable model.
"""
from __future__ import annotations

import os

import pytest

# No model hub exists in this course's world: make an accidental hub call fail at once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir():
    """Path of the tiny checkpoint (``settings.tiny_model_path``), built if missing or outdated."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from helpers.models import build_tiny

    return build_tiny()


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    """(model, tokenizer) of the tiny checkpoint, float32 on CPU, eval mode; shared, do not modify."""
    from helpers.models import load_model

    return load_model(tiny_model_dir, device="cpu")


@pytest.fixture(scope="session")
def replica_dir():
    """The published InternVL2-2B layout at tiny sizes (``helpers.replica``), built if missing or outdated.

    Its model code counts as the checkpoint's own (like OpenGVLab's files), its tokenizer is the
    slow InternLM2 sentencepiece tokenizer, its config carries every published key.
    """
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("sentencepiece")
    from helpers.replica import build_replica

    return build_replica(shapes="tiny")


@pytest.fixture(scope="session")
def replica_model(replica_dir):
    """(model, tokenizer) of the replica through the course's loading rule; shared, do not modify."""
    from helpers.models import load_model

    return load_model(replica_dir, device="cpu")


@pytest.fixture(scope="module")
def small_llava(tmp_path_factory):
    """``(train.json, image root)`` of a small synthetic set: 16 photos, 32 questions, all in train.

    Module scope: each test module gets its own copy, so one may damage its photos.
    """
    from helpers.data.llava import foodieqa_to_llava
    from helpers.data.synth import make_dataset

    root = make_dataset(tmp_path_factory.mktemp("synth"), per_dish=1, long_side=448)
    out = tmp_path_factory.mktemp("llava")
    rep = foodieqa_to_llava(root / "sivqa_tidy.json", root, out, val_fraction=0.0, workers=1)
    assert rep.skipped == 0
    return out / "train.json", root
