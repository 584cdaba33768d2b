"""Configuration of InternLM2, InternVL2-2B's language model.

Keys follow the official ``internlm2`` config (``wqkv``-style checkpoints), which XTuner and
LMDeploy read by name. Defaults are InternLM2-chat-1.8B, the LLM inside InternVL2-2B.

Example:
    >>> cfg = InternLM2Config(hidden_size=256, num_attention_heads=4, num_key_value_heads=2)
    >>> cfg.hidden_size // cfg.num_attention_heads   # head_dim
    64
"""
from transformers.configuration_utils import PretrainedConfig

ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2")


class InternLM2Config(PretrainedConfig):
    """Sizes and options of :class:`~.modeling_internlm2.InternLM2ForCausalLM`.

    Args:
        vocab_size: rows of the token embedding and of the output head.
        hidden_size: model width.
        intermediate_size: width of the SwiGLU feed-forward layer.
        num_hidden_layers: decoder layers.
        num_attention_heads: query heads.
        num_key_value_heads: key/value heads (grouped-query attention when fewer than query heads).
        hidden_act: activation of the feed-forward gate ("silu").
        max_position_embeddings: context the rotary embedding was trained for; dynamic NTK
            scaling starts beyond it.
        initializer_range: std of the normal initialisation.
        rms_norm_eps: epsilon of the RMSNorm layers.
        use_cache: return a key/value cache from forward by default.
        pad_token_id, bos_token_id, eos_token_id: special token ids.
        tie_word_embeddings: InternLM2 keeps a separate ``output`` head (False).
        bias: whether attention/feed-forward projections have biases (False in InternLM2).
        rope_theta: rotary base.
        rope_scaling: None, ``{"type": "dynamic", "factor": f}`` (NTK-aware, InternVL2-2B uses
            factor 2.0) or ``{"type": "linear", "factor": f}``.
        attn_implementation: "eager", "sdpa" or "flash_attention_2". This is the public field
            XTuner sets; "flash_attention_2" runs on PyTorch's sdpa kernels (see
            ``modeling_internlm2.resolve_attn_implementation``).
    """

    model_type = "internlm2"
    keys_to_ignore_at_inference = ["past_key_values"]
    has_no_defaults_at_init = True
    # transformers 5 maps `rope_scaling` onto `rope_parameters` through a property on the base
    # class; a plain class attribute here keeps the official key name in config.json and makes
    # both transformers 4 and 5 (and LMDeploy, which falls back to `rope_scaling`) read the same.
    rope_scaling = None

    def __init__(
        self,
        vocab_size=92544,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=24,
        num_attention_heads=16,
        num_key_value_heads=8,
        hidden_act="silu",
        max_position_embeddings=32768,
        initializer_range=0.02,
        rms_norm_eps=1e-5,
        use_cache=True,
        pad_token_id=2,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
        bias=False,
        rope_theta=1000000,
        rope_scaling=None,
        attn_implementation="eager",
        **kwargs,
    ):
        if hidden_size % num_attention_heads:
            raise ValueError(
                f"llm_config.hidden_size ({hidden_size}) must be divisible by num_attention_heads ({num_attention_heads})"
            )
        if num_key_value_heads is None:
            num_key_value_heads = num_attention_heads
        if num_attention_heads % num_key_value_heads:
            raise ValueError(
                f"llm_config.num_attention_heads ({num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({num_key_value_heads})"
            )
        self.vocab_size = vocab_size
        self.max_position_embeddings = max_position_embeddings
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.bias = bias
        self.hidden_act = hidden_act
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.use_cache = use_cache
        self.rope_theta = rope_theta
        self.rope_scaling = _check_rope_scaling(rope_scaling)
        self.attn_implementation = attn_implementation or "eager"
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ValueError(
                f"llm_config.attn_implementation must be one of {ATTN_IMPLEMENTATIONS}, got {attn_implementation!r}"
            )
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )

    def to_dict(self):
        """Serialise, keeping ``rope_scaling`` and ``attn_implementation`` under their official keys."""
        out = super().to_dict()
        out.pop("rope_parameters", None)
        out["rope_scaling"] = self.rope_scaling
        out["attn_implementation"] = self.attn_implementation
        return out


def _check_rope_scaling(rope_scaling):
    """Validate ``rope_scaling`` early, so a bad config.json fails at load and not mid-forward."""
    if rope_scaling is None:
        return None
    if not isinstance(rope_scaling, dict):
        raise ValueError(f"llm_config.rope_scaling must be a dict or null, got {rope_scaling!r}")
    kind = rope_scaling.get("type", rope_scaling.get("rope_type"))
    factor = rope_scaling.get("factor")
    if kind not in ("dynamic", "linear"):
        raise ValueError(f"llm_config.rope_scaling.type must be 'dynamic' or 'linear', got {kind!r}")
    if not isinstance(factor, (int, float)) or factor < 1.0:
        raise ValueError(f"llm_config.rope_scaling.factor must be a number >= 1, got {factor!r}")
    return {"type": kind, "factor": float(factor)}
