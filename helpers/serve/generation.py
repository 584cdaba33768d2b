"""Generation settings, responses and chat sessions: the request and result types every engine shares (LMDeploy's names and defaults)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass
class GenerationConfig:
    """LMDeploy-compatible sampling settings, for machines without LMDeploy.

    Same field names and defaults as ``lmdeploy.GenerationConfig`` (0.18): greedy unless
    ``do_sample=True``; ``top_p``/``top_k``/``temperature`` only matter when sampling.
    Use :func:`generation_config` to get LMDeploy's own class whenever it is importable.

    Example:
        >>> GenerationConfig(max_new_tokens=16).do_sample
        False
    """

    max_new_tokens: int = 512  # most tokens to generate
    do_sample: bool = False  # greedy decoding unless True (LMDeploy's default)
    top_p: float = 1.0  # nucleus sampling mass
    top_k: int = 50  # keep the k most likely tokens when sampling
    temperature: float = 0.8  # sampling temperature
    repetition_penalty: float = 1.0  # >1 discourages repeats
    random_seed: int | None = None  # seed for sampling (None: not reseeded)


def generation_config(**fields):
    """A GenerationConfig both engines accept: LMDeploy's class when importable, else ours.

    Args:
        **fields: any of max_new_tokens, do_sample, top_p, top_k, temperature,
            repetition_penalty, random_seed.

    Returns:
        ``lmdeploy.GenerationConfig`` or :class:`GenerationConfig`.

    Example:
        >>> generation_config(max_new_tokens=8).max_new_tokens
        8
    """
    try:
        from lmdeploy import GenerationConfig as LMDeployGenerationConfig
    except ImportError:
        return GenerationConfig(**fields)
    return LMDeployGenerationConfig(**fields)


@dataclass
class Response:
    """One answer (or one streamed piece of it); same fields as ``lmdeploy.Response``."""

    text: str  # the answer; in streaming, only the new piece
    generate_token_len: int  # tokens generated so far
    input_token_len: int  # prompt tokens, image tokens included
    finish_reason: str | None = None  # "stop" (end token), "length" (max_new_tokens) or None (streaming)
    token_ids: list = field(default_factory=list)  # generated token ids (new ones when streaming)
    index: int = 0  # position of the prompt in the batch

    def extend(self, other: "Response") -> "Response":
        """Append a streamed piece (as ``lmdeploy.Response.extend`` does)."""
        self.text += other.text
        self.token_ids += list(other.token_ids)
        self.generate_token_len, self.input_token_len = other.generate_token_len, other.input_token_len
        self.finish_reason, self.index = other.finish_reason, other.index
        return self


def _response_class():
    try:
        from lmdeploy.messages import Response as LMDeployResponse
    except ImportError:
        return Response
    return LMDeployResponse


_GEN_DEFAULTS = dataclasses.asdict(GenerationConfig())


def _gen_fields(gen_config) -> dict:
    """Read the fields we use from our GenerationConfig, LMDeploy's, a dict, or None."""
    if gen_config is None:
        return dict(_GEN_DEFAULTS)
    if isinstance(gen_config, dict):
        unknown = set(gen_config) - set(_GEN_DEFAULTS)
        if unknown:
            raise ValueError(f"gen_config: unknown fields {sorted(unknown)}; known: {sorted(_GEN_DEFAULTS)}")
        return {**_GEN_DEFAULTS, **gen_config}
    return {name: getattr(gen_config, name, default) for name, default in _GEN_DEFAULTS.items()}


class ChatSession:
    """A conversation with :class:`TransformersEngine` (mirrors LMDeploy's ``Session``).

    Attributes:
        session_id: running number.
        history: ``[(prompt, answer_text), ...]``; a prompt is a str or ``(str, image(s))``.
        response: the last :class:`Response` (full text).
        prompt: the last prompt.
    """

    def __init__(self, session_id: int):
        self.session_id = session_id
        self.history: list = []
        self.response = None
        self.prompt = None
        self.gen_config = None

    def update(self, **kwargs):
        """Set prompt / response / gen_config (LMDeploy's Session has the same method)."""
        for key in ("prompt", "response", "gen_config"):
            if key in kwargs:
                setattr(self, key, kwargs[key])

    def reset(self):
        """Forget the conversation; keep the id."""
        self.history, self.response, self.prompt, self.gen_config = [], None, None, None

    def close(self):
        """End the session (nothing to free here; LMDeploy frees its cache slot)."""
        self.reset()

    def __repr__(self):
        return f"ChatSession(session_id={self.session_id}, history_len={len(self.history)})"
