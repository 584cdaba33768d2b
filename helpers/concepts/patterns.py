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


def pixel_shuffle(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Merge each ``1/ratio x 1/ratio`` block of neighbouring patch tokens into one token.

    InternVL's token compression: a 32 x 32 grid of ViT tokens becomes 16 x 16 tokens with four
    times the channels, in the channel order (row in block, column in block, channel).

    Args:
        x: ``(n, H, W, C)`` grid of patch features.
        ratio: output/input side ratio (InternVL: 0.5).

    Returns:
        ``(n, H*ratio, W*ratio, C/ratio**2)``.

    Example:
        >>> tuple(pixel_shuffle(torch.zeros(1, 4, 4, 3)).shape)
        (1, 2, 2, 12)
    """
    if x.ndim != 4:
        raise ValueError(f"pixel_shuffle expects (n, H, W, C), got shape {tuple(x.shape)}")
    k = round(1 / ratio)
    if not math.isclose(k * ratio, 1.0):
        raise ValueError(f"ratio must be 1/k for an integer k, got {ratio}")
    n, h, w, c = x.shape
    if h % k or w % k:
        raise ValueError(f"grid {h}x{w} is not divisible into {k}x{k} blocks")
    x = x.reshape(n, h // k, k, w // k, k, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(n, h // k, w // k, k * k * c)


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


# ----------------------------------------------------------------------------- encoders
class ImageEncoder(nn.Module):
    """A small ViT: patchify with a strided convolution, add positions, transformer layers.

    Args:
        image_size: input side in pixels.
        patch_size: patch side (one token per patch).
        dim: token width.
        depth: transformer layers.
        heads: attention heads.

    Example:
        >>> tuple(ImageEncoder(224, 16, 32, 1, 2)(torch.zeros(1, 3, 224, 224)).shape)
        (1, 196, 32)
    """

    def __init__(self, image_size=224, patch_size=16, dim=64, depth=2, heads=4):
        super().__init__()
        self.patchify = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)
        self.num_patches = (image_size // patch_size) ** 2
        self.position = nn.Parameter(torch.zeros(1, self.num_patches, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)

    def forward(self, images):  # (B, 3, H, W) -> (B, patches, dim)
        x = self.patchify(images).flatten(2).transpose(1, 2)
        return self.blocks(x + self.position)


class AudioEncoder(nn.Module):
    """A wav2vec-style encoder: strided 1-D convolutions on the raw waveform, then attention.

    Strides 5 x 8 x 8 = 320 samples per frame: 16 kHz audio becomes 50 frames per second,
    the frame rate of wav2vec 2.0.

    Example:
        >>> tuple(AudioEncoder(dim=32, depth=1, heads=2)(torch.zeros(1, 16000)).shape)
        (1, 50, 32)
    """

    def __init__(self, dim=64, depth=2, heads=4):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, dim, kernel_size=5, stride=5), nn.GELU(),
            nn.Conv1d(dim, dim, kernel_size=8, stride=8), nn.GELU(),
            nn.Conv1d(dim, dim, kernel_size=8, stride=8), nn.GELU(),
        )
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)

    def forward(self, waveform):  # (B, samples) -> (B, frames, dim)
        return self.blocks(self.features(waveform.unsqueeze(1)).transpose(1, 2))


class VideoEncoder(nn.Module):
    """Frames through a shared :class:`ImageEncoder`, 2x2 token pooling, a time embedding.

    Example:
        >>> enc = VideoEncoder(frames=4, image_size=64, patch_size=16, dim=32, depth=1, heads=2)
        >>> tuple(enc(torch.zeros(1, 4, 3, 64, 64)).shape)
        (1, 16, 32)
    """

    def __init__(self, frames=8, image_size=224, patch_size=16, dim=64, depth=2, heads=4):
        super().__init__()
        self.frame_encoder = ImageEncoder(image_size, patch_size, dim, depth, heads)
        self.side = image_size // patch_size
        self.time = nn.Parameter(torch.zeros(1, frames, 1, dim))

    def forward(self, video):  # (B, T, 3, H, W) -> (B, T * patches/4, dim)
        b, t = video.shape[:2]
        x = self.frame_encoder(video.flatten(0, 1))  # (B*T, patches, dim)
        x = x.reshape(b * t, self.side, self.side, -1).permute(0, 3, 1, 2)
        x = nn.functional.avg_pool2d(x, 2).flatten(2).transpose(1, 2)  # 4x fewer tokens
        x = x.reshape(b, t, x.shape[1], -1) + self.time[:, :t]
        return x.flatten(1, 2)


# ----------------------------------------------------------------------------- adapters
class LinearProjector(nn.Module):
    """LLaVA (v1): one linear layer per visual token into the LLM's embedding width."""

    def __init__(self, vis_dim: int, llm_dim: int):
        super().__init__()
        self.proj = nn.Linear(vis_dim, llm_dim)

    def forward(self, vis):  # (B, N, vis_dim) -> (B, N, llm_dim)
        return self.proj(vis)


class MLPProjector(nn.Module):
    """A 2-layer MLP projector; with ``downsample_ratio`` it is InternVL's ``mlp1``.

    Without a ratio this is LLaVA-1.5's ``mlp2x_gelu`` (tokens unchanged). With ratio 0.5 the
    square token grid is first :func:`pixel_shuffle`-d (4x fewer, 4x wider tokens), then
    LayerNorm -> Linear -> GELU -> Linear, exactly the layer layout of InternVL's ``mlp1``.

    Args:
        vis_dim: ViT width.
        llm_dim: LLM embedding width.
        downsample_ratio: None, or the pixel-shuffle ratio (InternVL: 0.5).
    """

    def __init__(self, vis_dim: int, llm_dim: int, downsample_ratio: float | None = None):
        super().__init__()
        self.ratio = downsample_ratio
        in_dim = vis_dim * (round(1 / downsample_ratio) ** 2 if downsample_ratio else 1)
        layers = [nn.LayerNorm(in_dim)] if downsample_ratio else []
        self.mlp = nn.Sequential(*layers, nn.Linear(in_dim, llm_dim), nn.GELU(), nn.Linear(llm_dim, llm_dim))

    def forward(self, vis):  # (B, N, vis_dim) -> (B, N * ratio**2, llm_dim)
        if self.ratio:
            b, n, c = vis.shape
            side = math.isqrt(n)
            if side * side != n:
                raise ValueError(f"pixel shuffle needs a square token grid, got {n} tokens")
            vis = pixel_shuffle(vis.reshape(b, side, side, c), self.ratio).flatten(1, 2)
        return self.mlp(vis)


class QueryResampler(nn.Module):
    """Learned queries read the image by cross-attention (BLIP-2 Q-Former, Flamingo Perceiver).

    Each layer: queries attend to each other, then to the visual tokens, then an MLP. The output
    has ``num_queries`` tokens whatever the number of visual tokens, projected to ``llm_dim``.

    Args:
        vis_dim: visual feature width.
        llm_dim: LLM embedding width.
        num_queries: output tokens (BLIP-2: 32; Flamingo: 64).
        dim: query width (BLIP-2's Q-Former is BERT-base: 768).
        depth: layers.
        heads: attention heads.
    """

    def __init__(self, vis_dim, llm_dim, num_queries=32, dim=64, depth=2, heads=4):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(1, num_queries, dim) * 0.02)
        self.vis_in = nn.Linear(vis_dim, dim)
        self.layers = nn.ModuleList(
            nn.TransformerDecoderLayer(dim, heads, 4 * dim, batch_first=True, norm_first=True)
            for _ in range(depth))
        self.out = nn.Linear(dim, llm_dim)

    def forward(self, vis):  # (B, N, vis_dim) -> (B, num_queries, llm_dim)
        memory = self.vis_in(vis)
        q = self.queries.expand(vis.shape[0], -1, -1)
        for layer in self.layers:  # decoder layer = self-attn + cross-attn(memory) + MLP
            q = layer(q, memory)
        return self.out(q)


class GatedCrossAttention(nn.Module):
    """A Flamingo block inserted before an LLM layer: text positions attend to the image.

    ``x + tanh(a) * xattn(x, vis)`` then ``x + tanh(b) * mlp(x)``. The gates start at 0, so at
    initialisation the frozen LLM computes exactly what it computed before.
    """

    def __init__(self, llm_dim, vis_dim, heads=4):
        super().__init__()
        self.norm = nn.LayerNorm(llm_dim)
        self.xattn = nn.MultiheadAttention(llm_dim, heads, kdim=vis_dim, vdim=vis_dim, batch_first=True)
        self.attn_gate = nn.Parameter(torch.zeros(1))
        self.mlp = nn.Sequential(nn.LayerNorm(llm_dim), nn.Linear(llm_dim, 4 * llm_dim), nn.GELU(),
                                 nn.Linear(4 * llm_dim, llm_dim))
        self.mlp_gate = nn.Parameter(torch.zeros(1))

    def forward(self, x, vis):  # (B, L, llm_dim), (B, N, vis_dim) -> (B, L, llm_dim)
        h = self.norm(x)
        x = x + torch.tanh(self.attn_gate) * self.xattn(h, vis, vis, need_weights=False)[0]
        return x + torch.tanh(self.mlp_gate) * self.mlp(x)


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


def strategy_costs(vis_tokens=1024, vis_dim=1024, llm_dim=2048, llm_layers=24, num_queries=32,
                   resampler_dim=768, resampler_depth=12, xattn_every=4) -> list:
    """Visual tokens and new parameters of each alignment strategy at given model sizes.

    The modules are built on the ``meta`` device: shapes and parameter counts, no memory.
    Defaults: InternVL2-2B's sizes (InternViT-300M: 1024 tokens of width 1024 per 448 px tile;
    InternLM2-1.8B: width 2048, 24 layers) and a BLIP-2-sized resampler (32 queries, width 768,
    12 layers).

    Returns:
        Rows ``{"strategy", "models", "tokens_in_sequence", "params"}``.

    Example:
        >>> rows = strategy_costs(vis_tokens=16, vis_dim=8, llm_dim=16, llm_layers=2,
        ...                       resampler_dim=8, resampler_depth=1, num_queries=4)
        >>> [r["tokens_in_sequence"] for r in rows]
        [16, 16, 4, 4, 0]
    """
    heads = max(1, resampler_dim // 64)
    llm_heads = max(1, llm_dim // 128)
    with torch.device("meta"):
        linear = LinearProjector(vis_dim, llm_dim)
        mlp = MLPProjector(vis_dim, llm_dim)
        internvl = MLPProjector(vis_dim, llm_dim, downsample_ratio=0.5)
        resampler = QueryResampler(vis_dim, llm_dim, num_queries, resampler_dim, resampler_depth, heads)
        xattn = GatedCrossAttention(llm_dim, llm_dim, llm_heads)
    n_xattn = math.ceil(llm_layers / xattn_every)
    return [
        dict(strategy="linear projector", models="LLaVA", tokens_in_sequence=vis_tokens,
             params=count_params(linear)),
        dict(strategy="MLP projector", models="LLaVA-1.5", tokens_in_sequence=vis_tokens,
             params=count_params(mlp)),
        dict(strategy="pixel shuffle + MLP", models="InternVL 1.5 / 2", tokens_in_sequence=vis_tokens // 4,
             params=count_params(internvl)),
        dict(strategy="query resampler", models="BLIP-2 (Q-Former)", tokens_in_sequence=num_queries,
             params=count_params(resampler)),
        dict(strategy=f"cross-attn in LLM (1 per {xattn_every} layers) + resampler",
             models="Flamingo", tokens_in_sequence=0,
             params=count_params(resampler) + n_xattn * count_params(xattn)),
    ]


def internvl_walkthrough(model, tokenizer, image, question: str, max_num: int | None = None) -> dict:
    """Follow one image and one question through an InternVL2 model, stage by stage.

    Recomputes by hand what ``model.chat`` does for the first generated token, checking each
    hand-made step against the model's own method where it has one.

    Args:
        model: a loaded InternVL2 model (``helpers.models.load_model``).
        tokenizer: its tokenizer.
        image: a PIL image.
        question: the user's question.
        max_num: most tiles (default: the checkpoint's ``max_dynamic_patch``).

    Returns:
        ``{"stages": [(name, shape), ...], "num_tiles", "num_image_tokens", "prompt_tokens",
        "next_token_id", "next_token"}``.
    """
    from helpers.prompts import build_query
    from helpers.tiling import to_pixel_values

    max_num = max_num or model.config.max_dynamic_patch
    dtype = next(model.parameters()).dtype
    device = next(model.parameters()).device
    stages = []
    with torch.no_grad():
        pv = to_pixel_values(image, max_num=max_num, image_size=model.config.force_image_size).to(device, dtype)
        stages.append(("pixel_values (tiles, 3, H, W)", tuple(pv.shape)))
        vit = model.vision_model(pixel_values=pv).last_hidden_state
        stages.append(("InternViT output (tiles, 1 + patches, C_vit)", tuple(vit.shape)))
        patches = vit[:, 1:, :]
        side = math.isqrt(patches.shape[1])
        grid = patches.reshape(patches.shape[0], side, side, -1)
        stages.append(("class token dropped, as a grid (tiles, h, w, C_vit)", tuple(grid.shape)))
        shuffled = pixel_shuffle(grid, model.config.downsample_ratio)
        stages.append(("pixel shuffle (tiles, h/2, w/2, 4*C_vit)", tuple(shuffled.shape)))
        tokens = model.mlp1(shuffled.flatten(1, 2))
        stages.append(("mlp1 -> image tokens (tiles, 256, C_llm)", tuple(tokens.shape)))
        torch.testing.assert_close(tokens, model.extract_feature(pv))  # the model's own path agrees
        prompt, _ = build_query(model, question, [pv.shape[0]])  # public attributes only: any InternVL2 model
        ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device)
        stages.append(("prompt token ids (1, L)", tuple(ids.shape)))
        context_id = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
        text = model.language_model.get_input_embeddings()(ids)
        stages.append(("token embeddings (1, L, C_llm)", tuple(text.shape)))
        embeds = splice_visual_tokens(ids, text, tokens, context_id)
        stages.append(("<IMG_CONTEXT> rows replaced by image tokens (1, L, C_llm)", tuple(embeds.shape)))
        logits = model.language_model(inputs_embeds=embeds).logits
        stages.append(("LLM logits (1, L, vocab)", tuple(logits.shape)))
        next_id = int(logits[0, -1].argmax())
        model.img_context_token_id = context_id
        generated = model.generate(pixel_values=pv, input_ids=ids, attention_mask=torch.ones_like(ids),
                                   max_new_tokens=1, do_sample=False)
        if int(generated[0, -1]) != next_id:
            raise AssertionError(f"hand-made next token {next_id} != model.generate's {int(generated[0, -1])}")
    return dict(stages=stages, num_tiles=int(pv.shape[0]), num_image_tokens=int((ids == context_id).sum()),
                prompt_tokens=int(ids.shape[1]), next_token_id=next_id,
                next_token=tokenizer.decode([next_id]))
