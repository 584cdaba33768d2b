"""InternLM2: the decoder-only language model inside InternVL2-2B.

A LLaMA-style decoder whose checkpoint names differ from LLaMA's:

* ``tok_embeddings`` (embedding), ``output`` (untied LM head), ``norm`` (final RMSNorm);
* per layer ``attention_norm`` -> ``attention.wqkv`` (one fused projection) -> rotary
  embedding -> grouped-query attention -> ``attention.wo``, then ``ffn_norm`` ->
  ``feed_forward.w2(silu(w1(x)) * w3(x))`` (SwiGLU).

The rows of ``wqkv`` are grouped per key/value head: for each of the ``num_key_value_heads``
groups come that group's ``heads/kv_heads`` query heads, then its key head, then its value
head (each ``head_dim`` rows). LMDeploy calls this layout "hgd" when it splits the weight.

The key/value cache is a ``transformers.cache_utils.DynamicCache`` (same API in
transformers 4.48 and 5.x), so ``generate`` works in both course environments.

Example:
    >>> import torch
    >>> from .configuration_internlm2 import InternLM2Config
    >>> cfg = InternLM2Config(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
    ...                       num_attention_heads=2, num_key_value_heads=1)
    >>> lm = InternLM2ForCausalLM(cfg)
    >>> lm(torch.tensor([[1, 5, 7]])).logits.shape
    torch.Size([1, 3, 100])
"""
import functools
import logging
import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import PreTrainedModel

from .configuration_internlm2 import InternLM2Config

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=None)
def resolve_attn_implementation(requested: str) -> str:
    """Map the config's ``attn_implementation`` onto a kernel this file has.

    "flash_attention_2" (which XTuner forces) runs through ``torch.nn.functional.
    scaled_dot_product_attention``; on a GPU, PyTorch picks its own FlashAttention kernel there.
    The official code instead imports the flash-attn package and fails without it (e.g. on
    CPU). Cached, so the warning is logged once per process.

    Args:
        requested: "eager", "sdpa" or "flash_attention_2".

    Returns:
        "eager" or "sdpa".
    """
    if requested == "flash_attention_2":
        try:
            import flash_attn  # noqa: F401
        except ImportError:
            logger.warning(
                "attn_implementation='flash_attention_2' but flash_attn is not installed: using PyTorch sdpa instead"
            )
        return "sdpa"
    if requested not in ("eager", "sdpa"):
        raise ValueError(f"unknown attn_implementation {requested!r} (expected eager, sdpa or flash_attention_2)")
    return requested


class InternLM2RMSNorm(nn.Module):
    """RMSNorm, computed in float32 and cast back (as InternLM2 does)."""

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


def rotary_cos_sin(config: InternLM2Config, position_ids, seq_len, dtype):
    """cos/sin tables of the rotary embedding for the given positions.

    Computed on the fly instead of cached in a buffer: it costs next to nothing and leaves the
    model without buffers, which transformers 5 would create on the meta device.

    Args:
        config: supplies head_dim, rope_theta, rope_scaling and max_position_embeddings.
        position_ids: (B, q) absolute positions.
        seq_len: total sequence length seen so far (cache + new), drives dynamic NTK scaling.
        dtype: dtype of the returned tables.

    Returns:
        (cos, sin), each (B, q, head_dim).
    """
    dim = config.hidden_size // config.num_attention_heads
    base = float(config.rope_theta)
    positions = position_ids.to(torch.float32)
    scaling = config.rope_scaling
    if scaling is not None:
        factor = scaling["factor"]
        if scaling["type"] == "linear":
            positions = positions / factor
        elif seq_len > config.max_position_embeddings:  # dynamic NTK: raise the base past the trained length
            max_pos = config.max_position_embeddings
            base = base * ((factor * seq_len / max_pos) - (factor - 1)) ** (dim / (dim - 2))
    exponent = torch.arange(0, dim, 2, dtype=torch.int64, device=position_ids.device).float() / dim
    inv_freq = 1.0 / (base**exponent)
    freqs = positions[..., None] * inv_freq  # (B, q, dim/2)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x):
    """(x1, x2) -> (-x2, x1) over the two halves of the last dimension."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x, cos, sin):
    """Rotate ``x`` (B, heads, q, d) by the angles whose cos/sin are (B, q, d)."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return x * cos + rotate_half(x) * sin


def build_attention_bias(attention_mask, batch, q_len, past_len, dtype, device):
    """Additive (B, 1, q, past+q) mask for causal attention with padding, or None.

    None means "plain causal, no padding", which lets sdpa use ``is_causal`` (or needs no mask
    at all for one new token). Masked places get the dtype's most negative number rather than
    -inf, so a fully padded row (left padding) gives a uniform softmax instead of NaN.
    """
    kv_len = past_len + q_len
    if attention_mask is not None:
        if attention_mask.ndim != 2 or attention_mask.shape != (batch, kv_len):
            raise ValueError(
                f"attention_mask must be (batch, past+new) = ({batch}, {kv_len}), got {tuple(attention_mask.shape)}"
            )
        attention_mask = attention_mask.to(device=device, dtype=torch.bool)
        if bool(attention_mask.all()):
            attention_mask = None
    if attention_mask is None and (q_len == 1 or past_len == 0):
        return None
    q_pos = torch.arange(past_len, kv_len, device=device)[:, None]
    k_pos = torch.arange(kv_len, device=device)[None, :]
    allowed = (k_pos <= q_pos)[None, None]  # (1, 1, q, kv)
    if attention_mask is not None:
        allowed = allowed & attention_mask[:, None, None, :]
    bias = torch.zeros(allowed.shape, dtype=dtype, device=device)
    return bias.masked_fill(~allowed, torch.finfo(dtype).min).expand(batch, 1, q_len, kv_len)


class InternLM2MLP(nn.Module):
    """SwiGLU feed-forward: w2(act(w1(x)) * w3(x))."""

    def __init__(self, config: InternLM2Config):
        super().__init__()
        self.w1 = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.w3 = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.w2 = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x):
        return self.w2(self.act_fn(self.w1(x)) * self.w3(x))


class InternLM2Attention(nn.Module):
    """Grouped-query attention with InternLM2's fused, per-KV-head-grouped ``wqkv``."""

    def __init__(self, config: InternLM2Config, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // self.num_heads
        self.num_key_value_heads = config.num_key_value_heads
        self.num_key_value_groups = self.num_heads // self.num_key_value_heads
        self.wqkv = nn.Linear(
            config.hidden_size, (self.num_heads + 2 * self.num_key_value_heads) * self.head_dim, bias=config.bias
        )
        self.wo = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=config.bias)

    def forward(self, hidden_states, attn_bias, cos, sin, past_key_value=None, output_attentions=False):
        batch, q_len, _ = hidden_states.shape
        groups = self.num_key_value_groups
        qkv = self.wqkv(hidden_states).view(batch, q_len, self.num_key_value_heads, groups + 2, self.head_dim)
        # Query head index = kv_head * groups + g, the same order repeat_interleave gives K/V below.
        q = qkv[..., :groups, :].reshape(batch, q_len, self.num_heads, self.head_dim).transpose(1, 2)
        k = qkv[..., -2, :].transpose(1, 2)  # (B, kv_heads, q, d)
        v = qkv[..., -1, :].transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if past_key_value is not None:
            k, v = past_key_value.update(k, v, self.layer_idx)
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)

        impl = resolve_attn_implementation(self.config.attn_implementation)
        weights = None
        if impl == "eager" or output_attentions:
            scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.head_dim)
            if attn_bias is not None:
                scores = scores + attn_bias
            elif q_len > 1:
                causal = torch.ones(q_len, k.shape[2], dtype=torch.bool, device=q.device).tril(k.shape[2] - q_len)
                scores = scores.masked_fill(~causal, torch.finfo(scores.dtype).min)
            weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
            out = torch.matmul(weights, v)
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_bias, is_causal=attn_bias is None and q_len > 1
            )
        out = out.transpose(1, 2).reshape(batch, q_len, self.num_heads * self.head_dim)
        return self.wo(out), (weights if output_attentions else None)


class InternLM2DecoderLayer(nn.Module):
    """attention_norm -> attention -> residual; ffn_norm -> feed_forward -> residual."""

    def __init__(self, config: InternLM2Config, layer_idx: int):
        super().__init__()
        self.attention = InternLM2Attention(config, layer_idx)
        self.feed_forward = InternLM2MLP(config)
        self.attention_norm = InternLM2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.ffn_norm = InternLM2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, hidden_states, attn_bias, cos, sin, past_key_value=None, output_attentions=False):
        attn_out, weights = self.attention(
            self.attention_norm(hidden_states), attn_bias, cos, sin, past_key_value, output_attentions
        )
        hidden_states = hidden_states + attn_out
        hidden_states = hidden_states + self.feed_forward(self.ffn_norm(hidden_states))
        return hidden_states, weights


class InternLM2PreTrainedModel(PreTrainedModel):
    """Shared weight initialisation and capability flags."""

    config_class = InternLM2Config
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["InternLM2DecoderLayer"]
    _skip_keys_device_placement = "past_key_values"
    _supports_sdpa = True
    _supports_cache_class = True  # transformers 4.4x: lets generate() hand us a DynamicCache

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, InternLM2RMSNorm):
            nn.init.ones_(module.weight)


class InternLM2Model(InternLM2PreTrainedModel):
    """Embedding + decoder layers + final norm; returns hidden states and the cache."""

    def __init__(self, config: InternLM2Config):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList([InternLM2DecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = InternLM2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.tok_embeddings

    def set_input_embeddings(self, value):
        self.tok_embeddings = value

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        inputs_embeds=None,
        use_cache=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if self.gradient_checkpointing and self.training:
            use_cache = False  # recomputation and a growing cache do not mix
        return_dict = True if return_dict is None else return_dict
        if inputs_embeds is None:
            inputs_embeds = self.tok_embeddings(input_ids)
        batch, q_len, _ = inputs_embeds.shape

        if past_key_values is not None and not isinstance(past_key_values, Cache):
            raise TypeError("past_key_values must be a transformers Cache (e.g. DynamicCache)")
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache()
        cache = past_key_values  # a cache passed in is used (and extended) even with use_cache=False
        past_len = cache.get_seq_length() if cache is not None else 0

        if position_ids is None:
            if attention_mask is not None:  # left padding: positions count only real tokens
                pos = attention_mask.long().cumsum(-1) - 1
                position_ids = pos.masked_fill(attention_mask == 0, 1)[:, -q_len:]
            else:
                position_ids = torch.arange(past_len, past_len + q_len, device=inputs_embeds.device)[None]
        position_ids = position_ids.to(inputs_embeds.device).expand(batch, q_len)

        hidden_states = inputs_embeds
        attn_bias = build_attention_bias(attention_mask, batch, q_len, past_len, hidden_states.dtype, hidden_states.device)
        cos, sin = rotary_cos_sin(self.config, position_ids, past_len + q_len, hidden_states.dtype)

        all_hidden = () if output_hidden_states else None
        all_attn = () if output_attentions else None
        for layer in self.layers:
            if output_hidden_states:
                all_hidden += (hidden_states,)
            if self.gradient_checkpointing and self.training:
                # Positional arguments only: reentrant checkpointing does not forward kwargs.
                hidden_states, weights = self._gradient_checkpointing_func(
                    layer.__call__, hidden_states, attn_bias, cos, sin, None, bool(output_attentions)
                )
            else:
                hidden_states, weights = layer(hidden_states, attn_bias, cos, sin, cache, bool(output_attentions))
            if output_attentions:
                all_attn += (weights,)
        hidden_states = self.norm(hidden_states)
        if output_hidden_states:
            all_hidden += (hidden_states,)

        cache = cache if use_cache else None
        if not return_dict:
            return tuple(v for v in (hidden_states, cache, all_hidden, all_attn) if v is not None)
        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states, past_key_values=cache, hidden_states=all_hidden, attentions=all_attn
        )


class InternLM2ForCausalLM(InternLM2PreTrainedModel, GenerationMixin):
    """InternLM2 with its (untied) ``output`` head; ``forward(labels=...)`` returns the LM loss.

    Generation: first step may be ``inputs_embeds`` (how InternVL feeds image features); later
    steps feed only the new tokens, with positions counted from the attention mask.
    """

    def __init__(self, config: InternLM2Config):
        super().__init__(config)
        self.model = InternLM2Model(config)
        self.vocab_size = config.vocab_size
        self.output = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.tok_embeddings

    def set_input_embeddings(self, value):
        self.model.tok_embeddings = value

    def get_output_embeddings(self):
        return self.output

    def set_output_embeddings(self, new_embeddings):
        self.output = new_embeddings

    def get_decoder(self):
        return self.model

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        inputs_embeds=None,
        labels=None,
        use_cache=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ):
        return_dict = True if return_dict is None else return_dict
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.output(outputs.last_hidden_state).float()
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1, :].reshape(-1, self.config.vocab_size),
                labels[:, 1:].reshape(-1).to(logits.device),
                ignore_index=-100,
            )
        if not return_dict:
            rest = tuple(v for v in (outputs.past_key_values, outputs.hidden_states, outputs.attentions) if v is not None)
            return ((loss,) if loss is not None else ()) + (logits,) + rest
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def prepare_inputs_for_generation(
        self, input_ids, past_key_values=None, attention_mask=None, inputs_embeds=None, use_cache=True, **kwargs
    ):
        """Choose what the next forward sees: the prompt (ids or embeddings) once, then new tokens only."""
        past_len = past_key_values.get_seq_length() if isinstance(past_key_values, Cache) else 0
        total = attention_mask.shape[1] if attention_mask is not None else None
        if past_len > 0:
            new = (total - past_len) if total is not None else max(input_ids.shape[1] - past_len, 1)
            model_inputs = {"input_ids": input_ids[:, -max(new, 1):]}
        elif inputs_embeds is not None:
            # No cache yet (first step, or use_cache=False): the prompt embeddings plus the
            # embeddings of every token generated so far. When generation starts from
            # embeddings alone, input_ids holds only the generated tokens.
            n_gen = (total if total is not None else inputs_embeds.shape[1] + input_ids.shape[1]) - inputs_embeds.shape[1]
            if n_gen > 0:
                gen = self.get_input_embeddings()(input_ids[:, -n_gen:]).to(inputs_embeds.dtype)
                inputs_embeds = torch.cat([inputs_embeds, gen], dim=1)
            model_inputs = {"inputs_embeds": inputs_embeds}
        else:
            model_inputs = {"input_ids": input_ids}
        if attention_mask is not None:
            pos = attention_mask.long().cumsum(-1) - 1
            pos = pos.masked_fill(attention_mask == 0, 1)
            seq = next(iter(model_inputs.values())).shape[1]
            model_inputs["position_ids"] = pos[:, -seq:]
        model_inputs.update(
            {"past_key_values": past_key_values, "attention_mask": attention_mask, "use_cache": use_cache}
        )
        return model_inputs
