"""helpers.train.vit_cache: a frozen ViT's tiles are encoded once, and the step's loss and gradients do not change."""
from __future__ import annotations

import pytest


def _fresh(path):
    from transformers import AutoModel

    import torch

    model = AutoModel.from_pretrained(str(path), trust_remote_code=True, torch_dtype=torch.float32)
    model.vision_model.requires_grad_(False)
    return model.train()  # as in `xtuner train`: training mode, the cache must still be exact


@pytest.mark.parametrize("checkpoint", ["tiny_model_dir", "replica_dir"])
def test_cached_features_equal_the_encoder_and_reach_the_projector(checkpoint, request):
    import torch

    from helpers.train.vit_cache import cache_frozen_vision

    model = _fresh(request.getfixturevalue(checkpoint))
    size = model.config.force_image_size or model.config.vision_config.image_size
    tiles = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    expected = model.extract_feature(tiles).detach()

    cache = cache_frozen_vision(model)
    first = model.extract_feature(tiles)
    assert (cache.hits, cache.misses) == (0, 3)
    # the same tiles again, reordered, one twice, with one new tile: only the new one is encoded
    new = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    again = model.extract_feature(torch.cat([tiles[2:], tiles[:1], tiles[:1], new]))
    assert (cache.hits, cache.misses) == (3, 4)
    torch.testing.assert_close(first.detach(), expected, rtol=0, atol=0)
    torch.testing.assert_close(again[:3].detach(), expected[[2, 0, 0]], rtol=0, atol=0)
    again.sum().backward()  # the projector still learns from cached tokens
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.mlp1.parameters())
    assert "3 of 7 tiles reused" in cache.summary()


def test_an_encoder_that_learns_or_drops_is_not_cached(tiny_model_dir):
    import torch

    from helpers.train.vit_cache import cache_frozen_vision, cacheable_reason

    model = _fresh(tiny_model_dir)
    model.vision_model.embeddings.patch_embedding.weight.requires_grad_(True)
    assert "trainable" in cacheable_reason(model.vision_model)
    assert cache_frozen_vision(model) is None
    model.vision_model.requires_grad_(False)
    model.vision_model.encoder.layers[0].mlp.add_module("drop", torch.nn.Dropout(0.1))
    assert "p=0.1" in cacheable_reason(model.vision_model)


def test_a_full_cache_stops_growing_and_still_answers(tiny_model_dir):
    import torch

    from helpers.train.vit_cache import cache_frozen_vision

    model = _fresh(tiny_model_dir)
    size = model.config.force_image_size
    tiles = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2))
    expected = model.extract_feature(tiles).detach()
    cache = cache_frozen_vision(model, max_bytes=1)  # room for nothing
    for _ in range(2):
        torch.testing.assert_close(model.extract_feature(tiles).detach(), expected, rtol=0, atol=0)
    assert cache.full and not cache.rows and (cache.hits, cache.misses) == (0, 4)


def test_course_model_switch_turns_the_cache_on(tiny_model_dir):
    pytest.importorskip("xtuner")
    import torch.distributed as dist
    from peft import LoraConfig

    from helpers.train.xtuner_compat import FullPrecisionInternVL

    try:
        on = FullPrecisionInternVL(model_path=str(tiny_model_dir), freeze_llm=True, freeze_visual_encoder=True,
                                   activation_checkpointing=False, cache_vision_features=True,
                                   llm_lora=LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, task_type="CAUSAL_LM"))
        assert on.vision_cache is not None and hasattr(on.model.vision_model, "course_cache")
        # a ViT that learns is never cached, whatever the switch says
        learns = FullPrecisionInternVL(model_path=str(tiny_model_dir), freeze_llm=True, freeze_visual_encoder=False,
                                       activation_checkpointing=False, cache_vision_features=True)
        assert learns.vision_cache is None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
