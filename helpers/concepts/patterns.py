"""How a multimodal LLM connects its senses to its language model (notebook 01).

Every modern MLLM has the same parts: a pre-trained LLM as the backbone, one encoder per
modality (ViT/CLIP for images, a wav2vec-style convolution stack for audio, a ViT over frames
for video), an *adapter* that maps encoder features into the LLM's embedding space, a *fusion*
step, and ordinary next-token decoding. Models differ mostly in the adapter and the fusion:

* projector (LLaVA: linear or 2-layer MLP; InternVL: pixel shuffle + MLP) -> the visual tokens
  are spliced into the text sequence, one LLM position per token;
* query-based resampler (BLIP-2 Q-Former, Flamingo Perceiver Resampler) -> a fixed, small
  number of learned queries read the image by cross-attention;
* cross-attention layers inside the LLM (Flamingo) -> the text sequence does not grow; new
  gated layers let text positions look at the image.

Each strategy is a small runnable module here, so the notebook can print shapes and count
parameters. :func:`strategy_costs` builds them at InternVL2-2B's sizes on the ``meta`` device
(no memory, no weights) to compare what each costs in visual tokens and parameters.

Example:
    >>> import torch
    >>> from helpers.concepts.blocks import MLPProjector, pixel_shuffle
    >>> x = torch.zeros(2, 32, 32, 8)
    >>> tuple(pixel_shuffle(x).shape)
    (2, 16, 16, 32)
    >>> proj = MLPProjector(vis_dim=8, llm_dim=16, downsample_ratio=0.5)
    >>> tuple(proj(torch.zeros(2, 1024, 8)).shape)
    (2, 256, 16)
"""
from __future__ import annotations

import math

try:
    import torch
    from torch import nn
except ImportError as exc:  # the whole module is PyTorch modules
    raise ImportError("helpers.concepts.patterns needs torch; install requirements-xtuner.txt") from exc

from helpers.concepts.blocks import AudioEncoder, GatedCrossAttention, ImageEncoder, MLPProjector, VideoEncoder


def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of a module (works on the ``meta`` device too).

    Args:
        module: any ``nn.Module``.
        trainable_only: count only parameters with ``requires_grad``.

    Returns:
        ``sum(p.numel())``.

    Example:
        >>> count_params(nn.Linear(3, 2))
        8
    """
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def trace_shapes(module: nn.Module, *inputs, depth: int = 1, **kwargs) -> list:
    """Run ``module`` once and record the output shape of every submodule down to ``depth``.

    Args:
        module: the module to run.
        *inputs: positional inputs of its forward.
        depth: how deep to hook (1: direct children).
        **kwargs: keyword inputs of its forward.

    Returns:
        ``[(name, output_shape), ...]`` in call order, ending with ``("output", shape)``.

    Example:
        >>> trace_shapes(nn.Sequential(nn.Linear(4, 3), nn.ReLU()), torch.zeros(2, 4))
        [('0', (2, 3)), ('1', (2, 3)), ('output', (2, 3))]
    """
    rows, hooks = [], []

    def shape_of(out):
        if isinstance(out, (tuple, list)):
            out = out[0]
        return tuple(out.shape) if torch.is_tensor(out) else None

    for name, sub in module.named_modules():
        if name and name.count(".") < depth:
            hooks.append(sub.register_forward_hook(
                lambda _m, _i, out, name=name: rows.append((name, shape_of(out)))))
    try:
        with torch.no_grad():
            out = module(*inputs, **kwargs)
    finally:
        for h in hooks:
            h.remove()
    rows.append(("output", shape_of(out)))
    return rows


def format_trace(rows: list) -> str:
    """One line per ``(name, shape)`` row of :func:`trace_shapes`, aligned."""
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {tuple(shape) if shape else '-'}" for name, shape in rows)


class TinyDecoder(nn.Module):
    """A causal decoder-only LM; with ``xattn_every`` it gets Flamingo cross-attention blocks.

    Args:
        vocab: vocabulary size.
        dim: width.
        depth: decoder layers.
        heads: attention heads.
        xattn_every: insert a :class:`GatedCrossAttention` before every k-th layer (None: none).
        vis_dim: width of the visual tokens the cross-attention reads.
    """

    def __init__(self, vocab=1000, dim=64, depth=4, heads=4, xattn_every=None, vis_dim=None):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, heads, 4 * dim, batch_first=True, norm_first=True)
            for _ in range(depth))
        self.xattn = nn.ModuleDict({
            str(i): GatedCrossAttention(dim, vis_dim or dim, heads)
            for i in range(depth) if xattn_every and i % xattn_every == 0})
        self.norm = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)

    def forward(self, input_ids=None, inputs_embeds=None, vision=None):  # -> (B, L, vocab)
        x = self.embed(input_ids) if inputs_embeds is None else inputs_embeds
        causal = nn.Transformer.generate_square_subsequent_mask(x.shape[1], device=x.device)
        for i, layer in enumerate(self.layers):
            if str(i) in self.xattn:
                if vision is None:
                    raise ValueError("this decoder has cross-attention layers: pass vision=")
                x = self.xattn[str(i)](x, vision)
            x = layer(x, src_mask=causal, is_causal=True)
        return self.lm_head(self.norm(x))


def splice_visual_tokens(input_ids, text_embeds, visual_tokens, placeholder_id: int):
    """Put visual tokens where the prompt holds placeholder tokens (InternVL's ``<IMG_CONTEXT>``).

    Args:
        input_ids: ``(B, L)`` token ids.
        text_embeds: ``(B, L, D)`` their embeddings.
        visual_tokens: ``(M, D)`` or ``(B, M', D)`` projected visual tokens, in prompt order.
        placeholder_id: the placeholder token id.

    Returns:
        A copy of ``text_embeds`` whose placeholder rows are the visual tokens.

    Raises:
        ValueError: the number of placeholders differs from the number of visual tokens.

    Example:
        >>> ids = torch.tensor([[5, 9, 9, 6]])
        >>> out = splice_visual_tokens(ids, torch.zeros(1, 4, 2), torch.ones(2, 2), 9)
        >>> out[0, :, 0].tolist()
        [0.0, 1.0, 1.0, 0.0]
    """
    vis = visual_tokens.reshape(-1, visual_tokens.shape[-1])
    mask = input_ids == placeholder_id
    if int(mask.sum()) != vis.shape[0]:
        raise ValueError(f"the prompt has {int(mask.sum())} placeholder tokens (id {placeholder_id}) "
                         f"but {vis.shape[0]} visual tokens were given")
    out = text_embeds.clone()
    out[mask] = vis.to(out.dtype)
    return out


class MiniMLLM(nn.Module):
    """The common MLLM pattern end to end: encoders -> adapters -> spliced prompt -> LLM.

    One encoder and one MLP adapter per modality; each modality has its own placeholder token
    id, repeated in the prompt once per token its adapter produces.

    Args:
        vocab: vocabulary size of the tiny LLM.
        dim: LLM width.
        enc_dim: encoder width.
        placeholders: ``{"image": id, "audio": id, "video": id}`` placeholder token ids.

    Example:
        >>> m = MiniMLLM(vocab=50, dim=32, enc_dim=16, placeholders={"audio": 3})
        >>> ids = torch.tensor([[1] + [3] * 50 + [2]])
        >>> tuple(m(ids, {"audio": torch.zeros(1, 16000)}).shape)
        (1, 52, 50)
    """

    ENCODERS = {"image": lambda d: ImageEncoder(224, 16, d, 1, 2),
                "audio": lambda d: AudioEncoder(d, 1, 2),
                "video": lambda d: VideoEncoder(4, 112, 16, d, 1, 2)}

    def __init__(self, vocab=1000, dim=64, enc_dim=32, placeholders=None):
        super().__init__()
        self.placeholders = dict(placeholders or {"image": 5, "audio": 6, "video": 7})
        unknown = set(self.placeholders) - set(self.ENCODERS)
        if unknown:
            raise ValueError(f"unknown modalities {sorted(unknown)}; known: {sorted(self.ENCODERS)}")
        self.encoders = nn.ModuleDict({m: self.ENCODERS[m](enc_dim) for m in self.placeholders})
        self.adapters = nn.ModuleDict({m: MLPProjector(enc_dim, dim) for m in self.placeholders})
        self.llm = TinyDecoder(vocab, dim, depth=2, heads=4)

    def forward(self, input_ids, media: dict):  # -> (B, L, vocab) next-token logits
        embeds = self.llm.embed(input_ids)
        for modality, x in media.items():
            tokens = self.adapters[modality](self.encoders[modality](x))
            embeds = splice_visual_tokens(input_ids, embeds, tokens, self.placeholders[modality])
        return self.llm(inputs_embeds=embeds)
