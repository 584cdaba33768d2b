"""Configuration of InternViT, InternVL2's vision encoder.

Field names and defaults follow the official ``intern_vit_6b`` config, because XTuner and
LMDeploy read a checkpoint's ``vision_config`` by those names. The defaults describe
InternViT-300M-448px, the encoder of InternVL2-2B.

Example:
    >>> cfg = InternVisionConfig(hidden_size=64, num_attention_heads=2, num_hidden_layers=2)
    >>> (cfg.image_size // cfg.patch_size) ** 2   # patches per 448 px tile
    1024
"""
from transformers.configuration_utils import PretrainedConfig


class InternVisionConfig(PretrainedConfig):
    """Sizes and options of :class:`~.modeling_intern_vit.InternVisionModel`.

    Args:
        num_channels: image channels (3 for RGB).
        patch_size: side of one square patch in pixels (14).
        image_size: side of one tile in pixels (448); position embeddings are stored for it.
        qkv_bias: whether the fused q/k/v projection has a bias.
        hidden_size: width of every encoder layer.
        num_attention_heads: attention heads per layer.
        intermediate_size: width of the MLP inside each layer.
        qk_normalization: RMS-normalise queries and keys over all heads (InternViT-6B does).
        num_hidden_layers: number of encoder layers.
        use_flash_attn: kept for config compatibility; attention always runs through
            ``torch.nn.functional.scaled_dot_product_attention``.
        hidden_act: activation of the MLP ("gelu").
        norm_type: "layer_norm" (InternViT-300M) or "rms_norm" (InternViT-6B).
        layer_norm_eps: epsilon of the normalisation layers.
        dropout: dropout after attention output and MLP.
        drop_path_rate: stochastic-depth rate of the last layer (linearly increasing).
        attention_dropout: dropout on attention probabilities.
        initializer_range: std of the normal initialisation of weights.
        initializer_factor: initial value of the layer-scale vectors ``ls1``/``ls2``.
    """

    model_type = "intern_vit_6b"
    # transformers 5 instantiates config classes without arguments in a few places; this tells it
    # not to, so a checkpoint's values are never compared against made-up defaults.
    has_no_defaults_at_init = True

    def __init__(
        self,
        num_channels=3,
        patch_size=14,
        image_size=448,
        qkv_bias=True,
        hidden_size=1024,
        num_attention_heads=16,
        intermediate_size=4096,
        qk_normalization=False,
        num_hidden_layers=24,
        use_flash_attn=True,
        hidden_act="gelu",
        norm_type="layer_norm",
        layer_norm_eps=1e-6,
        dropout=0.0,
        drop_path_rate=0.0,
        attention_dropout=0.0,
        initializer_range=0.02,
        initializer_factor=1.0,
        **kwargs,
    ):
        if norm_type not in ("layer_norm", "rms_norm"):
            raise ValueError(f"vision_config.norm_type must be 'layer_norm' or 'rms_norm', got {norm_type!r}")
        if hidden_size % num_attention_heads:
            raise ValueError(
                f"vision_config.hidden_size ({hidden_size}) must be divisible by "
                f"num_attention_heads ({num_attention_heads})"
            )
        self.num_channels = num_channels
        self.patch_size = patch_size
        self.image_size = image_size
        self.qkv_bias = qkv_bias
        self.hidden_size = hidden_size
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.qk_normalization = qk_normalization
        self.num_hidden_layers = num_hidden_layers
        self.use_flash_attn = use_flash_attn
        self.hidden_act = hidden_act
        self.norm_type = norm_type
        self.layer_norm_eps = layer_norm_eps
        self.dropout = dropout
        self.drop_path_rate = drop_path_rate
        self.attention_dropout = attention_dropout
        self.initializer_range = initializer_range
        self.initializer_factor = initializer_factor
        super().__init__(**kwargs)
