"""Notebook 01's building blocks as small PyTorch modules: one encoder per modality, three projectors, a resampler, gated cross-attention."""
from __future__ import annotations

import math

try:
    import torch
    from torch import nn
except ImportError as exc:  # the whole module is PyTorch modules
    raise ImportError("helpers.concepts.patterns needs torch; install requirements-xtuner.txt") from exc



# ----------------------------------------------------------------------------- encoders
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
