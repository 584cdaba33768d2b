"""Stage 0, two plain PyTorch loops: the tiny LLM learns the captions' language, the tiny ViT learns to see the drawn attributes."""
from __future__ import annotations

import math
import random
from pathlib import Path

from helpers.env import need
from helpers.pretrain.scenes import BACKGROUNDS, COLOURS, COUNTS, POSITIONS, SHAPES


def warmup_cosine(step: int, steps: int) -> float:
    """The warm-ups' learning-rate factor: linear warm-up over 10 % of the steps (at least 2), then cosine to 0."""
    warm = max(2, steps // 10)
    return min((step + 1) / warm, 0.5 * (1 + math.cos(math.pi * min(1.0, max(0, step - warm) / max(1, steps - warm)))))


def _uint8_image(path, side=None):
    """An image as a ``(3, H, W)`` uint8 tensor, resized (bicubic) to ``side`` x ``side`` when given."""
    import numpy as np
    import torch
    from helpers.tiling import load_image

    img = load_image(path)
    if side:
        img = img.resize((side, side), 3)  # 3: bicubic
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)


def _stacked(records: list, data_root, size: int, labels: dict):
    """``(uint8 images (N, 3, size, size), {name: class indices})`` of records (``labels``: name -> (field, values))."""
    import torch

    pixels = torch.stack([_uint8_image(Path(data_root) / rec["image"], size) for rec in records])
    return pixels, {name: torch.tensor([values.index(rec[field]) for rec in records])
                    for name, (field, values) in labels.items()}


def _vision_loss(heads, scene_tokens, targets: dict, food_tokens=None, food_targets=None):
    """Mean of the attribute heads' losses on every patch token (and the food head's on the mean token)."""
    import torch

    n_patch = scene_tokens.shape[1]
    parts = {a: torch.nn.functional.cross_entropy(heads[a](scene_tokens).flatten(0, 1), t.repeat_interleave(n_patch))
             for a, t in targets.items()}
    if food_tokens is not None:
        parts["food"] = torch.nn.functional.cross_entropy(heads["food"](food_tokens.mean(1)), food_targets)
    return sum(parts.values()) / len(parts)


def _batch_accuracy(heads, scene_tokens, targets: dict, food_tokens=None, food_targets=None) -> dict:
    """Batch accuracy per attribute head (mean over patch tokens), and of the food head when given."""
    import torch

    with torch.no_grad():
        acc = {a: float((heads[a](scene_tokens).mean(1).argmax(-1) == t).float().mean()) for a, t in targets.items()}
        if food_tokens is not None:
            acc["food"] = float((heads["food"](food_tokens.mean(1)).argmax(-1) == food_targets).float().mean())
    return acc


def language_warmup(model_dir, out_dir, texts, steps: int = 60, batch_size: int = 16, lr: float = 3e-3,
                    seed: int = 0, log_every: int = 5) -> list:
    """Stage 0: train only the language model on ``texts`` (next-token loss on every token).

    Args:
        model_dir: InternVL2 checkpoint to start from (the tiny model).
        out_dir: where the whole checkpoint (ViT and projector unchanged) is written.
        texts: training conversations (:func:`warmup_texts`).
        steps: optimizer steps.
        batch_size: texts per step.
        lr: AdamW peak learning rate (linear warm-up over 10 % of the steps, then cosine).
        seed: sampling seed.
        log_every: print the loss every N steps.

    Returns:
        ``[(step, loss), ...]`` for every step.
    """
    try:
        import torch
    except ImportError as exc:
        raise ImportError("stage 0 needs torch; install requirements-xtuner.txt") from exc
    from helpers.models import load_model

    torch.manual_seed(seed)
    model, tok = load_model(model_dir, dtype=torch.float32)
    llm = model.language_model.train()
    model.vision_model.requires_grad_(False)
    model.mlp1.requires_grad_(False)
    encoded = [tok(t).input_ids for t in texts]  # BOS added by the tokenizer, as in XTuner's data
    opt = torch.optim.AdamW([p for p in llm.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, steps))
    rng = random.Random(seed)
    losses = []
    for step in range(1, steps + 1):
        batch = rng.sample(encoded, min(batch_size, len(encoded)))
        width = max(map(len, batch))
        ids = torch.full((len(batch), width), tok.pad_token_id)
        labels = torch.full((len(batch), width), -100)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, seq in enumerate(batch):
            ids[row, :len(seq)] = torch.tensor(seq)
            labels[row, :len(seq)] = torch.tensor(seq)
            mask[row, :len(seq)] = 1
        loss = llm(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(llm.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append((step, round(float(loss.detach()), 4)))
        if log_every and (step % log_every == 0 or step == 1):
            print(f"stage 0a step {step:>3}/{steps}  loss {float(loss.detach()):.3f}", flush=True)
    _save_checkpoint(model, tok, model_dir, out_dir)
    return losses


def _save_checkpoint(model, tokenizer, src_dir, out_dir) -> None:
    """A complete model dir: bf16 weights (as the checkpoints ship), tokenizer, remote code."""
    import torch

    from helpers.models import copy_remote_code

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    copy_remote_code(out)
    src = Path(src_dir) / "generation_config.json"
    if src.exists():
        (out / "generation_config.json").write_text(src.read_text(encoding="utf-8"), encoding="utf-8")


def vision_warmup(model_dir, out_dir, data_root, scenes, steps: int = 120, batch_size: int = 32,
                  lr: float = 3e-3, size: int = 224, seed: int = 0, log_every: int = 20, foods=None,
                  food_batch: int = 24, small_size: int | None = None, small_share: float = 0.0) -> list:
    """Stage 0b: pre-train InternViT alone, at 224 px, to see the drawn attributes and food.

    The real InternViT-6B arrives pre-trained (at 224 px, by InternVL 1.0's image-text
    training) and InternVL 1.2 only raised it to 448 px. The tiny ViT is random, so it first
    learns here, on small images (4x fewer patches, much cheaper), with a linear head per
    attribute applied to **every** patch token: each token learns to carry the colour, shape,
    count, position and background of a scene. Food photos get one more linear head, on the
    mean of their patch tokens: which of the 16 looks (``Dish.looks``) the photo shows. The
    heads are thrown away; the model dir written is the input model with the new ViT weights.

    With ``small_size``, the first ``small_share`` of the steps see the images at that side
    (progressive resizing: at 112 px a step has 4x fewer patches), the rest at ``size``; one
    optimizer and one learning-rate schedule span both.

    Args:
        model_dir: checkpoint to start from (stage 0a's output).
        out_dir: where to write the checkpoint.
        data_root: folder the scenes' and foods' image paths are relative to.
        scenes: records with ``image`` and the :class:`Scene` fields (``scenes.json``).
        steps: optimizer steps.
        batch_size: images per step (scenes + food photos).
        lr: AdamW peak learning rate (linear warm-up 10 %, then cosine).
        size: image side for this stage (the ViT interpolates its position embeddings).
        seed: sampling seed.
        log_every: print loss and batch accuracy every N steps.
        foods: records with ``image`` and ``dish`` (``foods.json``); None trains on scenes only.
        food_batch: food photos per step when ``foods`` is given.
        small_size: image side of the first steps (None: every step at ``size``).
        small_share: share of the steps at ``small_size``.

    Returns:
        ``[(step, loss), ...]``.
    """
    torch = need("torch", "stage 0b")
    from helpers.models import load_model

    if not scenes:
        raise ValueError("vision_warmup needs at least one scene")
    foods = list(foods or [])
    n_food = min(food_batch, batch_size - 1) if foods else 0
    torch.manual_seed(seed)
    model, tok = load_model(model_dir, dtype=torch.float32)
    vit = model.vision_model.train()
    data = _VisionData(scenes, foods, data_root, size)
    n_small = round(small_share * steps) if small_size else 0
    small = _VisionData(scenes, foods, data_root, small_size) if n_small else None
    heads = _vision_heads(model.config.vision_config.hidden_size)
    params = list(vit.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, steps))
    gen = torch.Generator().manual_seed(seed)

    losses = []
    for step in range(1, steps + 1):
        batch = (small if step <= n_small else data).sample(gen, batch_size - n_food, n_food)
        tokens = vit(pixel_values=batch.pixels).last_hidden_state[:, 1:]  # every patch token, no class token
        scene_tokens, food_tokens = tokens[:batch.n_scenes], tokens[batch.n_scenes:]
        loss = _vision_loss(heads, scene_tokens, batch.targets, *batch.food(food_tokens))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append((step, round(float(loss.detach()), 4)))
        if log_every and (step % log_every == 0 or step == 1):
            acc = _batch_accuracy(heads, scene_tokens, batch.targets, *batch.food(food_tokens))
            print(f"stage 0b step {step:>3}/{steps}  loss {float(loss.detach()):.3f}  batch accuracy "
                  + " ".join(f"{a} {v:.2f}" for a, v in acc.items()), flush=True)
    _save_checkpoint(model, tok, model_dir, out_dir)
    return losses


# The attribute heads of stage 0b, in the order they are created (their initial weights draw from torch's RNG).
VISION_VALUES = {"colour": list(COLOURS), "shape": list(SHAPES), "count": list(COUNTS), "position": list(POSITIONS),
                 "background": list(BACKGROUNDS)}


def _vision_heads(width: int):
    """A linear head per scene attribute on ``width``-wide tokens, then the food head (one class per dish)."""
    import torch

    from helpers.foods import DISHES

    heads = torch.nn.ModuleDict({a: torch.nn.Linear(width, len(v)) for a, v in VISION_VALUES.items()})
    heads["food"] = torch.nn.Linear(width, len(DISHES))
    return heads


class _VisionBatch:
    """One step's images (normalised, scenes first) and labels."""

    def __init__(self, pixels, n_scenes: int, targets: dict, food_targets):
        self.pixels, self.n_scenes, self.targets, self.food_targets = pixels, n_scenes, targets, food_targets

    def food(self, food_tokens) -> tuple:
        """``(food tokens, food labels)`` for the loss, or ``(None, None)`` when the step has no food photo."""
        return (food_tokens, self.food_targets) if self.food_targets is not None else (None, None)


class _VisionData:
    """Stage 0b's images as uint8 tensors in memory, and the draw of each step's batch."""

    def __init__(self, scenes: list, foods: list, data_root, size: int):
        import torch

        from helpers.foods import DISHES
        from helpers.tiling import IMAGENET_MEAN, IMAGENET_STD

        self.n_scenes, self.n_foods = len(scenes), len(foods)
        self.pixels, self.targets = _stacked(scenes, data_root, size, {a: (a, v) for a, v in VISION_VALUES.items()})
        # Whole photos squashed to a square, as a one-tile model sees a phone photo.
        keys = [d.key for d in DISHES]
        self.food_pixels, food = _stacked(foods, data_root, size, {"dish": ("dish", keys)}) if foods else (None, {})
        self.food_targets = food.get("dish")
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def _norm(self, x):
        return (x.float() / 255 - self.mean) / self.std

    def sample(self, gen, n_scene: int, n_food: int) -> _VisionBatch:
        """Draw ``n_scene`` scenes, then ``n_food`` food photos (with replacement, from ``gen``)."""
        import torch

        idx = torch.randint(0, self.n_scenes, (n_scene,), generator=gen)
        fidx = torch.randint(0, self.n_foods, (n_food,), generator=gen) if n_food else None
        batch = [self._norm(self.pixels[idx])] + ([self._norm(self.food_pixels[fidx])] if n_food else [])
        return _VisionBatch(torch.cat(batch), len(idx), {a: self.targets[a][idx] for a in VISION_VALUES},
                            self.food_targets[fidx] if n_food else None)
