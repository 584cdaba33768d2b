"""helpers.train.xtuner_compat.PreparedOnceDataset: every epoch gets XTuner's own samples, prepared once."""
from __future__ import annotations

import copy

import pytest


@pytest.fixture(scope="module")
def llava_with_a_broken_photo(small_llava):
    """16 photos, 32 questions; the photo of record 5 (and of its sibling question) is bytes that are not an image."""
    import json

    data_file, root = small_llava  # this module's own copy (conftest)
    records = json.loads(data_file.read_text(encoding="utf-8"))
    (root / records[5]["image"]).write_bytes(b"not a jpeg")
    broken = [i for i, r in enumerate(records) if r["image"] == records[5]["image"]]
    assert len(broken) == 2
    return data_file, root, records[5]["image"], broken


def _datasets(data_file, image_root, model_dir):
    from xtuner.dataset import InternVL_V1_5_Dataset
    from xtuner.utils import PROMPT_TEMPLATE

    from helpers.train.xtuner_compat import PreparedOnceDataset

    def make(cls):
        return cls(str(model_dir), copy.deepcopy(PROMPT_TEMPLATE.internlm2_chat), [str(data_file)],
                   [str(image_root)], max_length=8192)

    return make(InternVL_V1_5_Dataset), make(PreparedOnceDataset)


def test_every_epoch_gets_xtuners_samples_and_broken_photos_stay_reported(llava_with_a_broken_photo,
                                                                           tiny_model_dir, capsys):
    pytest.importorskip("xtuner")
    import torch

    data_file, root, broken_image, broken = llava_with_a_broken_photo
    xtuner_ds, once = _datasets(data_file, root, tiny_model_dir)
    assert len(once) == len(xtuner_ds) == 32
    for epoch in range(2):
        for i in range(len(once)):
            got, want = once.prepare_data(i), xtuner_ds.prepare_data(i)
            if i in broken:
                assert got is None and want is None, "a photo that fails to load must fail in every epoch"
                continue
            assert got.keys() == want.keys()
            assert got["input_ids"] == want["input_ids"] and got["labels"] == want["labels"], (epoch, i)
            assert torch.equal(got["pixel_values"], want["pixel_values"]), (epoch, i)
    assert capsys.readouterr().out.count(broken_image) >= 8  # XTuner's message: 2 records, 2 datasets, 2 epochs
    # one photo, two questions, one pixel tensor
    assert len(once._prepared) == 30 and len(once._pixels) == 15


def test_the_kept_sample_is_not_changed_by_its_user(llava_with_a_broken_photo, tiny_model_dir):
    pytest.importorskip("xtuner")
    data_file, root, _, _ = llava_with_a_broken_photo
    _, once = _datasets(data_file, root, tiny_model_dir)
    first = once.prepare_data(0)
    first["input_ids"] = []  # a collate function that rebinds a key
    assert once.prepare_data(0)["input_ids"], "the kept sample must not share its dict with a caller"
