"""Remember a frozen vision encoder's output per image tile, so each epoch does not encode the same tiles again.

With ``freeze_visual_encoder=True`` and no dropout in InternViT, the encoder maps a tile to the same
tokens in every epoch: a 10-epoch fine-tune encodes every training tile ten times for one result.
:func:`cache_frozen_vision` wraps the ``vision_model`` of an InternVL model (the course's or
OpenGVLab's remote code: both call ``self.vision_model(pixel_values=...)`` from ``extract_feature``)
so that a tile seen before is looked up instead. The projector ``mlp1`` and the LLM run as before,
so the loss and the gradients are those of the encoder run again.

The cache is kept in host memory, keyed by a SHA-256 of the tile's bytes; it stops growing at
``max_bytes`` (then tiles it has not seen are encoded every time, as without it).
"""
from __future__ import annotations

import hashlib
import types

from helpers.env import need

DEFAULT_MAX_BYTES = 4 << 30  # host memory the cached tokens may take


def _torch():
    return need("torch", "the vision-feature cache")


def cacheable_reason(vision_model) -> str | None:
    """Why the outputs of ``vision_model`` can't be reused across steps, or None when they can.

    Args:
        vision_model: the InternViT module of an InternVL model.

    Returns:
        None, or a short reason (it learns, or it draws random numbers in training mode).

    Example:
        >>> cacheable_reason(model.vision_model)   # doctest: +SKIP
    """
    torch = _torch()
    if any(p.requires_grad for p in vision_model.parameters()):
        return "the vision encoder has trainable parameters"
    for name, module in vision_model.named_modules():
        p = getattr(module, "drop_prob", None) or (module.p if isinstance(module, torch.nn.Dropout) else 0)
        if p:
            return f"{name or 'vision_model'} drops activations at random (p={p})"
    cfg = getattr(vision_model, "config", None)
    for key in ("dropout", "attention_dropout", "drop_path_rate"):
        if getattr(cfg, key, 0):
            return f"its config sets {key}={getattr(cfg, key)}"
    return None


class VisionCache:
    """Per-tile outputs of one frozen vision encoder, and how often they were reused.

    Attributes:
        hits: tiles answered from the cache.
        misses: tiles encoded.
        nbytes: host memory held by the cached tokens.
        full: True once ``max_bytes`` stopped the cache from growing.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        self.max_bytes = max_bytes
        self.rows: dict = {}
        self.hits = self.misses = self.nbytes = 0
        self.full = False

    @staticmethod
    def key(tile) -> bytes:
        """A digest of one tile's shape, dtype and bytes (the same pixels give the same key).

        SHA-256 (hardware-accelerated on current x86 CPUs) over the tile's memory, without a copy.
        """
        data = tile.detach().contiguous().cpu()
        h = hashlib.sha256(f"{tuple(data.shape)}{data.dtype}".encode())
        h.update(data.view(-1).view(_torch().uint8).numpy())
        return h.digest()

    def store(self, key: bytes, hidden, pooled) -> None:
        """Keep one tile's ``last_hidden_state`` row and pooled row (copies on the host)."""
        size = hidden.numel() * hidden.element_size() + (pooled.numel() * pooled.element_size() if pooled is not None else 0)
        if self.nbytes + size > self.max_bytes:
            self.full = True
            return
        self.rows[key] = (hidden.detach().cpu().clone(), None if pooled is None else pooled.detach().cpu().clone())
        self.nbytes += size

    def summary(self) -> str:
        """One line: tiles reused and encoded, memory held."""
        total = self.hits + self.misses
        share = self.hits / total if total else 0.0
        return (f"vision cache: {self.hits} of {total} tiles reused ({share:.0%}), {len(self.rows)} tiles held, "
                f"{self.nbytes / 2**20:.0f} MiB" + (" (full)" if self.full else ""))


def cache_frozen_vision(model, max_bytes: int = DEFAULT_MAX_BYTES) -> VisionCache | None:
    """Make ``model.vision_model`` look up the tiles it has encoded before.

    Only plain calls are cached (``output_hidden_states`` off, as ``extract_feature`` makes them when
    ``select_layer`` is -1) and only while gradients would not reach the encoder; anything else runs
    the encoder as usual.

    Args:
        model: an InternVL chat model (``vision_model`` and ``extract_feature``), frozen encoder.
        max_bytes: host memory the cached tokens may take.

    Returns:
        The :class:`VisionCache` (its ``summary()`` says what it saved), or None when the encoder's
        output is not reusable (:func:`cacheable_reason`).

    Example:
        >>> cache = cache_frozen_vision(xtuner_model.model)   # doctest: +SKIP
        >>> cache.summary()                                    # doctest: +SKIP
        'vision cache: 5184 of 5760 tiles reused (90%), 576 tiles held, 288 MiB'
    """
    torch = _torch()
    from transformers.modeling_outputs import BaseModelOutputWithPooling  # what InternViT's forward returns

    vision = model.vision_model
    if cacheable_reason(vision) is not None:
        return None
    cache = VisionCache(max_bytes)
    encode = vision.forward  # the bound method of the module's class

    def forward(self, pixel_values=None, output_hidden_states=None, return_dict=None, **kwargs):
        if (pixel_values is None or output_hidden_states or kwargs.get("pixel_embeds") is not None
                or any(p.requires_grad for p in self.parameters())):
            return encode(pixel_values=pixel_values, output_hidden_states=output_hidden_states,
                          return_dict=return_dict, **kwargs)
        keys = [cache.key(tile) for tile in pixel_values]
        first = {}  # each unseen tile once, even when a batch holds it twice (two questions on one photo)
        for i, k in enumerate(keys):
            if k not in cache.rows:
                first.setdefault(k, i)
        todo = sorted(first.values())
        fresh = {}
        if todo:
            out = encode(pixel_values=pixel_values[todo], output_hidden_states=False, return_dict=True, **kwargs)
            pooled = getattr(out, "pooler_output", None)
            for j, i in enumerate(todo):
                row = (out.last_hidden_state[j], None if pooled is None else pooled[j])
                fresh[keys[i]] = row
                cache.store(keys[i], *row)
        cache.misses += len(todo)
        cache.hits += len(keys) - len(todo)
        device = pixel_values.device
        rows = [fresh.get(k) or cache.rows[k] for k in keys]
        hidden = torch.stack([h.to(device) for h, _ in rows])
        pooled = None if rows[0][1] is None else torch.stack([p.to(device) for _, p in rows])
        if return_dict is False:
            return (hidden, pooled)
        return BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=pooled)

    vision.forward = types.MethodType(forward, vision)
    vision.course_cache = cache
    return cache
