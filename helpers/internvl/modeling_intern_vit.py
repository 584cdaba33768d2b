"""InternViT: the vision encoder of InternVL2, as a plain pre-norm ViT.

An image tile (3 x 448 x 448) becomes 32 x 32 = 1024 patch tokens of 14 x 14 pixels plus one
class token. Each encoder layer is

    x = x + ls1 * attn(norm1(x))        # fused qkv projection, optional q/k RMS-norm
    x = x + ls2 * mlp(norm2(x))         # fc1 -> GELU -> fc2

with learned per-channel layer-scale vectors ``ls1``/``ls2``. There is no final norm: the
chat model reads the last layer's tokens directly. Parameter names equal the official
checkpoint's (``embeddings.patch_embedding``, ``encoder.layers.N.attn.qkv``, ...).

Example:
    >>> import torch
    >>> from .configuration_intern_vit import InternVisionConfig
    >>> vit = InternVisionModel(InternVisionConfig(hidden_size=64, num_attention_heads=2,
    ...                                            num_hidden_layers=1, intermediate_size=128))
    >>> vit(torch.zeros(1, 3, 448, 448)).last_hidden_state.shape
    torch.Size([1, 1025, 64])
"""
import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPooling
from transformers.modeling_utils import PreTrainedModel

from .configuration_intern_vit import InternVisionConfig


class InternRMSNorm(nn.Module):
    """RMSNorm computed in float32 (InternViT-6B's norm; also used for q/k normalisation)."""

    def __init__(self, hidden_size, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)


NORM2FN = {"rms_norm": InternRMSNorm, "layer_norm": nn.LayerNorm}


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch for a whole sample with probability ``p``."""

    def __init__(self, p=0.0):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self):
        return f"p={self.p}"


class InternVisionEmbeddings(nn.Module):
    """Patchify with a stride-14 convolution, prepend the class token, add position embeddings."""

    def __init__(self, config: InternVisionConfig):
        super().__init__()
        self.config = config
        self.embed_dim = config.hidden_size
        self.image_size = config.image_size
        self.patch_size = config.patch_size
        self.class_embedding = nn.Parameter(torch.randn(1, 1, self.embed_dim))
        self.patch_embedding = nn.Conv2d(
            config.num_channels, self.embed_dim, kernel_size=self.patch_size, stride=self.patch_size
        )
        self.num_patches = (self.image_size // self.patch_size) ** 2
        self.num_positions = self.num_patches + 1
        self.position_embedding = nn.Parameter(torch.randn(1, self.num_positions, self.embed_dim))

    def _get_pos_embed(self, pos_embed, height, width):
        """Resize the stored (image_size/patch)^2 grid of position embeddings to height x width.

        Always interpolated (bicubic), even at the stored size, exactly like the reference
        implementation does, so features match it bit for bit.
        """
        grid = self.image_size // self.patch_size
        target_dtype = pos_embed.dtype
        pos = pos_embed.float().reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        pos = F.interpolate(pos, size=(height, width), mode="bicubic", align_corners=False)
        return pos.reshape(1, -1, height * width).permute(0, 2, 1).to(target_dtype)

    def forward(self, pixel_values):
        target_dtype = self.patch_embedding.weight.dtype
        patches = self.patch_embedding(pixel_values.to(target_dtype))  # (B, C, H/14, W/14)
        batch_size, _, height, width = patches.shape
        patches = patches.flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(batch_size, 1, -1).to(target_dtype)
        embeddings = torch.cat([cls, patches], dim=1)
        pos = torch.cat(
            [self.position_embedding[:, :1, :], self._get_pos_embed(self.position_embedding[:, 1:, :], height, width)],
            dim=1,
        )
        return embeddings + pos.to(target_dtype)


class InternAttention(nn.Module):
    """Multi-head self-attention with one fused ``qkv`` linear and an output ``proj``."""

    def __init__(self, config: InternVisionConfig):
        super().__init__()
        self.config = config
        self.embed_dim = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = self.embed_dim // self.num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(self.embed_dim, 3 * self.embed_dim, bias=config.qkv_bias)
        self.attn_drop = config.attention_dropout
        self.proj_drop = nn.Dropout(config.dropout)
        self.qk_normalization = config.qk_normalization
        if self.qk_normalization:
            # Normalised over all heads at once (embed_dim), not per head: that is InternViT-6B's choice.
            self.q_norm = InternRMSNorm(self.embed_dim, eps=config.layer_norm_eps)
            self.k_norm = InternRMSNorm(self.embed_dim, eps=config.layer_norm_eps)
        self.proj = nn.Linear(self.embed_dim, self.embed_dim)

    def forward(self, hidden_states):
        batch, seq, _ = hidden_states.shape
        qkv = self.qkv(hidden_states).reshape(batch, seq, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.unbind(2)  # each (B, N, heads, head_dim)
        if self.qk_normalization:
            q = self.q_norm(q.flatten(-2)).view(batch, seq, self.num_heads, self.head_dim)
            k = self.k_norm(k.flatten(-2)).view(batch, seq, self.num_heads, self.head_dim)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            dropout_p=self.attn_drop if self.training else 0.0,
            scale=self.scale,
        )
        out = out.transpose(1, 2).reshape(batch, seq, self.embed_dim)
        return self.proj_drop(self.proj(out))


class InternMLP(nn.Module):
    """fc1 -> activation -> fc2."""

    def __init__(self, config: InternVisionConfig):
        super().__init__()
        self.act = ACT2FN[config.hidden_act]
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states):
        return self.fc2(self.act(self.fc1(hidden_states)))


class InternVisionEncoderLayer(nn.Module):
    """Pre-norm transformer block with layer scale and stochastic depth."""

    def __init__(self, config: InternVisionConfig, drop_path_rate: float):
        super().__init__()
        self.embed_dim = config.hidden_size
        self.norm_type = config.norm_type
        self.attn = InternAttention(config)
        self.mlp = InternMLP(config)
        self.norm1 = NORM2FN[self.norm_type](self.embed_dim, eps=config.layer_norm_eps)
        self.norm2 = NORM2FN[self.norm_type](self.embed_dim, eps=config.layer_norm_eps)
        self.ls1 = nn.Parameter(config.initializer_factor * torch.ones(self.embed_dim))
        self.ls2 = nn.Parameter(config.initializer_factor * torch.ones(self.embed_dim))
        self.drop_path1 = DropPath(drop_path_rate)
        self.drop_path2 = DropPath(drop_path_rate)

    def forward(self, hidden_states):
        hidden_states = hidden_states + self.drop_path1(
            self.attn(self.norm1(hidden_states).to(hidden_states.dtype)) * self.ls1
        )
        hidden_states = hidden_states + self.drop_path2(
            self.mlp(self.norm2(hidden_states).to(hidden_states.dtype)) * self.ls2
        )
        return hidden_states


class InternVisionEncoder(nn.Module):
    """A stack of encoder layers; stochastic depth grows linearly from 0 to drop_path_rate."""

    def __init__(self, config: InternVisionConfig):
        super().__init__()
        self.config = config
        n = config.num_hidden_layers
        rates = [config.drop_path_rate * i / max(n - 1, 1) for i in range(n)]
        self.layers = nn.ModuleList([InternVisionEncoderLayer(config, rates[i]) for i in range(n)])
        self.gradient_checkpointing = False

    def forward(self, inputs_embeds, output_hidden_states=False, return_dict=True):
        all_states = () if output_hidden_states else None
        hidden_states = inputs_embeds
        for layer in self.layers:
            if output_hidden_states:
                all_states = all_states + (hidden_states,)
            if self.gradient_checkpointing and self.training:
                hidden_states = self._gradient_checkpointing_func(layer.__call__, hidden_states)
            else:
                hidden_states = layer(hidden_states)
        if output_hidden_states:
            all_states = all_states + (hidden_states,)
        if not return_dict:
            return tuple(v for v in (hidden_states, all_states) if v is not None)
        return BaseModelOutput(last_hidden_state=hidden_states, hidden_states=all_states)


class InternVisionModel(PreTrainedModel):
    """InternViT encoder.

    ``forward(pixel_values)`` returns ``last_hidden_state`` (B, 1 + patches, C),
    ``pooler_output`` (the class token) and, with ``output_hidden_states=True``, the input
    embeddings plus every layer's output (``num_hidden_layers + 1`` tensors).
    """

    main_input_name = "pixel_values"
    config_class = InternVisionConfig
    _no_split_modules = ["InternVisionEncoderLayer"]
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    def __init__(self, config: InternVisionConfig):
        super().__init__(config)
        self.config = config
        self.embeddings = InternVisionEmbeddings(config)
        self.encoder = InternVisionEncoder(config)
        self.post_init()

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, InternRMSNorm):
            nn.init.ones_(module.weight)
        elif isinstance(module, InternVisionEmbeddings):
            nn.init.normal_(module.class_embedding, std=std)
            nn.init.normal_(module.position_embedding, std=std)
        elif isinstance(module, InternVisionEncoderLayer):
            nn.init.constant_(module.ls1, self.config.initializer_factor)
            nn.init.constant_(module.ls2, self.config.initializer_factor)

    def get_input_embeddings(self):
        return self.embeddings

    def forward(self, pixel_values=None, output_hidden_states=None, return_dict=None, pixel_embeds=None):
        output_hidden_states = bool(output_hidden_states)
        return_dict = True if return_dict is None else return_dict
        if pixel_embeds is not None:
            hidden_states = pixel_embeds
        elif pixel_values is not None:
            if pixel_values.ndim != 4:
                raise ValueError(f"pixel_values must be (tiles, 3, H, W), got shape {tuple(pixel_values.shape)}")
            hidden_states = self.embeddings(pixel_values)
        else:
            raise ValueError("InternVisionModel.forward needs pixel_values or pixel_embeds")
        enc = self.encoder(hidden_states, output_hidden_states=output_hidden_states, return_dict=True)
        last = enc.last_hidden_state
        pooled = last[:, 0, :]
        if not return_dict:
            return (last, pooled) + ((enc.hidden_states,) if output_hidden_states else ())
        return BaseModelOutputWithPooling(last_hidden_state=last, pooler_output=pooled, hidden_states=enc.hidden_states)
