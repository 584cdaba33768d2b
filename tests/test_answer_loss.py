"""helpers.train.answer_loss: the head on labelled positions only gives XTuner's loss and gradients."""
from __future__ import annotations

import pytest


def _batch(internvl, vocab: int, seed: int = 0):
    """Two samples of different lengths (1 and 2 tiles), right-padded as XTuner's collate pads them."""
    import torch

    g = torch.Generator().manual_seed(seed)
    n_img = internvl.num_image_token
    ctx = internvl.img_context_token_id
    size = internvl.config.force_image_size or internvl.config.vision_config.image_size
    rows, labels, tiles = [], [], []
    for n_tiles, prompt, answer in ((1, 7, 5), (2, 4, 9)):
        text = torch.randint(3, min(vocab, ctx) - 1, (prompt + answer,), generator=g)
        ids = torch.cat([text[:prompt], torch.full((n_img * n_tiles,), ctx), text[prompt:]])
        lab = ids.clone()
        lab[: prompt + n_img * n_tiles] = -100  # only the answer carries loss
        rows.append(ids)
        labels.append(lab)
        tiles.append(torch.randn(n_tiles, 3, size, size, generator=g))
    length = max(len(r) for r in rows)
    pad = lambda t, v: torch.cat([t, torch.full((length - len(t),), v)])  # noqa: E731
    mask = torch.stack([pad(torch.ones(len(r), dtype=torch.long), 0) for r in rows]).bool()
    return dict(pixel_values=tiles, input_ids=torch.stack([pad(r, 0) for r in rows]),
                labels=torch.stack([pad(x, -100) for x in labels]), attention_mask=mask,
                position_ids=torch.arange(length).expand(len(rows), -1).clone())


@pytest.mark.parametrize("checkpoint", ["tiny_model_dir", "replica_dir"])
def test_answer_only_head_gives_the_same_loss_and_gradients(checkpoint, request):
    pytest.importorskip("xtuner")
    import torch
    import torch.distributed as dist
    from peft import LoraConfig

    from helpers.train.xtuner_compat import CourseInternVL

    path = request.getfixturevalue(checkpoint)
    # target_modules=None as in the course recipe: LoRA on the head too, so its gradient is compared
    model = CourseInternVL(model_path=str(path), freeze_llm=True, freeze_visual_encoder=True,
                           activation_checkpointing=False,
                           llm_lora=LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, task_type="CAUSAL_LM"))
    try:
        model.float()  # fp32: the comparison is about the maths, not bf16 rounding of different GEMM shapes
        torch.manual_seed(0)
        for name, p in model.named_parameters():
            if "lora_B" in name:  # B starts at zero; give LoRA a say
                torch.nn.init.normal_(p, std=0.05)
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        assert any("output" in n and "lora_B" in n for n, _ in trainable), "LoRA must wrap the head"
        data = _batch(model.model, model.model.language_model.config.vocab_size)

        def step(answer_only: bool):
            model.answer_only_lm_head = answer_only
            model.zero_grad(set_to_none=True)
            loss = model(data, mode="loss")["loss"]
            loss.backward()
            return loss.detach(), {n: p.grad.detach().clone() for n, p in trainable if p.grad is not None}

        full_loss, full_grads = step(False)
        fast_loss, fast_grads = step(True)
        assert torch.isfinite(full_loss) and full_loss > 0
        torch.testing.assert_close(fast_loss, full_loss, rtol=1e-5, atol=1e-6)
        assert full_grads.keys() == fast_grads.keys() and len(full_grads) > 4
        for name, grad in full_grads.items():
            torch.testing.assert_close(fast_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
        # and the switch really changes the computation: the fast path returns no logits
        model.answer_only_lm_head = True
        out = model._llm_forward(pixel_values=torch.cat(data["pixel_values"]), labels=data["labels"],
                                 input_ids=data["input_ids"], attention_mask=data["attention_mask"],
                                 position_ids=data["position_ids"],
                                 image_flags=torch.ones(3, dtype=torch.long), use_cache=False)
        assert out.logits is None and torch.isclose(out.loss, fast_loss)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_decoder_of_names_a_foreign_model():
    import torch

    from helpers.train.answer_loss import decoder_of

    with pytest.raises(TypeError, match="no decoder attribute"):
        decoder_of(torch.nn.Linear(2, 2))
