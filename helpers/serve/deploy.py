"""Deploy InternVL2: one small inference API on LMDeploy (GPU) or transformers (CPU), and the api_server.

The notebooks call :func:`make_pipeline` and then use what LMDeploy's ``pipeline`` offers:
``pipe(prompts, gen_config)``, ``pipe.chat(prompt, session=...)`` and ``pipe.stream_infer(...)``.
On a CUDA machine with LMDeploy that *is* LMDeploy's pipeline (PyTorch engine). Where CUDA or
LMDeploy is missing (a laptop, CI) :class:`TransformersEngine` answers instead: it runs the
checkpoint's own InternVL code through transformers and exposes the same calls and the same
result objects, so the same notebook cells run on both. Every engine carries ``engine_name``
and :func:`describe_engine` says which one answered.

:class:`ApiServer` runs ``lmdeploy serve api_server`` as a managed background process and
:func:`openai_chat` talks to it with the ``openai`` client.

Example:
    >>> from helpers.serve.deploy import make_pipeline, generation_config   # doctest: +SKIP
    >>> pipe = make_pipeline()                                         # doctest: +SKIP
    >>> print(describe_engine(pipe))                                   # doctest: +SKIP
    >>> pipe(("这是什么菜？", "photo.jpg"), gen_config=generation_config(max_new_tokens=32)).text  # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import base64
import atexit
import concurrent.futures
import dataclasses
import itertools
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from helpers import prompts
from helpers.settings import get_settings

ENGINES = ("lmdeploy", "transformers")
from helpers.prompts import IMG_CONTEXT


def _need(module: str, requirements: str = "requirements-lmdeploy.txt"):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{module} is missing: install {requirements} (pip install -r {requirements})") from exc


# --------------------------------------------------------------------------- generation config / results


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


# --------------------------------------------------------------------------- prompts


def _split_prompt(prompt) -> tuple:
    """``str | (str, image|[images]) | (image|[images], str)`` -> ``(text, [images])``."""
    if isinstance(prompt, str):
        return prompt, []
    if isinstance(prompt, tuple) and len(prompt) == 2:
        text, images = prompt
        if not isinstance(text, str):  # LMDeploy also takes (image, text)
            text, images = images, text
        if isinstance(text, str):
            images = list(images) if isinstance(images, (list, tuple)) else [images]
            return text, images
    raise TypeError(
        "a prompt is a str, (str, image), (str, [images]) or (image, str); images are PIL images or "
        f"file paths; got {type(prompt).__name__}: {str(prompt)[:80]!r}"
    )


def images_first(prompt):
    """A ``(text, image(s))`` prompt as ``(image(s), text)`` with PIL images: LMDeploy then puts them first.

    LMDeploy 0.18 turns a ``(text, image)`` pair into a user turn with the text *before* the
    image (``question<img>...</img>``) and only an ``(image, text)`` pair into image-first
    (it also takes a local path only in the first form: it sees no image in a path string).
    InternVL's own ``chat()`` and XTuner's training data put the image first
    (``<img>...</img>\nquestion``); a model fine-tuned on that format answers far worse the
    other way round (the course's tiny model: 12 % instead of 75 % on the val split, the same
    weights under transformers). Anything else (str, OpenAI messages, image-first pairs) is
    returned unchanged.

    Args:
        prompt: one prompt as LMDeploy takes it.

    Returns:
        The prompt in image-first form.

    Example:
        >>> from PIL import Image
        >>> img = Image.new("RGB", (8, 8))
        >>> images_first(("这是什么菜？", img))[1]
        '这是什么菜？'
        >>> images_first("你好")
        '你好'
    """
    from helpers.tiling import load_image

    if not (isinstance(prompt, tuple) and len(prompt) == 2 and isinstance(prompt[0], str)
            and not prompt[0].startswith(("http", "data:image"))):
        return prompt
    text, images = prompt

    def pil(img):
        return load_image(img) if isinstance(img, (str, os.PathLike)) and not str(img).startswith(("http", "data:")) \
            else img
    images = [pil(i) for i in images] if isinstance(images, (list, tuple)) else pil(images)
    return (images, text)


def _keep_images_first(pipe) -> None:
    """Make an LMDeploy pipeline's infer / stream_infer / chat put images before the text."""
    infer, stream_infer, chat = pipe.infer, pipe.stream_infer, pipe.chat

    def fix(prompts):
        return [images_first(p) for p in prompts] if isinstance(prompts, list) else images_first(prompts)

    pipe.infer = lambda prompts, *args, **kwargs: infer(fix(prompts), *args, **kwargs)
    pipe.stream_infer = lambda prompts, *args, **kwargs: stream_infer(fix(prompts), *args, **kwargs)
    pipe.chat = lambda prompt, *args, **kwargs: chat(images_first(prompt), *args, **kwargs)


def _is_single(prompts) -> bool:
    return isinstance(prompts, (str, tuple))


def _place_images(text: str, n_images: int) -> str:
    """Put one ``<image>`` placeholder per image, the way InternVL's own chat code expects them."""
    found = text.count("<image>")
    if found == n_images:
        return text
    if found:
        raise ValueError(f"prompt has {found} <image> placeholders but {n_images} images were given: {text[:80]!r}")
    if n_images == 1:
        return "<image>\n" + text
    # InternVL's multi-image convention: label each image so the question can refer to it.
    return "".join(f"Image-{i + 1}: <image>\n" for i in range(n_images)) + text


class _CancelFlag:
    """A transformers StoppingCriteria that ends generation when a consumer walks away."""

    def __init__(self):
        self.event = threading.Event()

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class _DeltaStreamer:
    """Receives generated tokens from ``generate`` (batch rows) and queues text deltas as Responses.

    Deltas are cut from the decoded, whitespace-stripped answer so that joining them gives exactly
    the non-streaming answer; a piece ending in an unfinished UTF-8 character waits for the next token.
    """

    def __init__(self, tokenizer, stop_ids, input_lens: list, out: queue.Queue, response_cls, offset: int = 0):
        self.tokenizer, self.stop_ids, self.input_lens = tokenizer, set(stop_ids), input_lens
        self.out, self.response_cls, self.offset = out, response_cls, offset
        n = len(input_lens)
        self.ids = [[] for _ in range(n)]
        self.emitted = [""] * n
        self.pending = [[] for _ in range(n)]  # token ids not yet handed out with a piece
        self.done = [False] * n
        self.seen_prompt = False

    def _emit(self, row: int, finish_reason=None):
        text = self.tokenizer.decode(self.ids[row], skip_special_tokens=True).strip()
        if finish_reason is None and text.endswith("\ufffd"):
            return
        delta = text[len(self.emitted[row]):] if text.startswith(self.emitted[row]) else ""
        if not delta and finish_reason is None:
            return
        self.emitted[row] += delta
        new_ids, self.pending[row] = self.pending[row], []
        self.out.put(self.response_cls(text=delta, generate_token_len=len(self.ids[row]),
                                       input_token_len=self.input_lens[row], finish_reason=finish_reason,
                                       token_ids=new_ids, index=self.offset + row))

    def put(self, value):
        if not self.seen_prompt:  # generate() first hands over the prompt ids
            self.seen_prompt = True
            return
        tokens = value.reshape(len(self.ids), -1).tolist()
        for row, row_tokens in enumerate(tokens):
            for tok in row_tokens:
                if self.done[row]:
                    break
                if tok in self.stop_ids:
                    self.done[row] = True
                    self._emit(row, "stop")
                else:
                    self.ids[row].append(tok)
                    self.pending[row].append(tok)
                    self._emit(row)

    def end(self):
        for row in range(len(self.ids)):
            if not self.done[row]:
                self.done[row] = True
                self._emit(row, "length")


# --------------------------------------------------------------------------- transformers engine


class TransformersEngine:
    """InternVL through transformers, with the call surface of LMDeploy's pipeline.

    Args:
        model_path: an InternVL2 checkpoint directory (the tiny one or InternVL2-2B).
        max_dynamic_patch: most tiles per image (default: the checkpoint's config).
        system_prompt: system message (default: the model's own ``system_message``).
        device: "cuda" or "cpu" (default: cuda when available).
        max_batch_size: prompts per ``generate`` call; longer lists are cut into chunks.

    Example:
        >>> eng = TransformersEngine("artifacts/models/internvl2-tiny")          # doctest: +SKIP
        >>> eng([("图中是什么菜？", img1), ("图中是什么菜？", img2)])              # doctest: +SKIP
        >>> s = eng.chat(("这是什么菜？", img)); s = eng.chat("哪个菜系？", session=s)  # doctest: +SKIP
    """

    engine_name = "transformers"
    max_concurrency = 1  # generate() calls are serialised; the web UI queues the rest

    def __init__(self, model_path=None, *, max_dynamic_patch: int | None = None, system_prompt: str | None = None,
                 device: str | None = None, max_batch_size: int = 16):
        torch = _need("torch")
        from helpers.models import load_model

        self.model_path = Path(model_path or get_settings().model_path)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.model, self.tokenizer = load_model(self.model_path, device=self.device, dtype=self.dtype)
        cfg = self.model.config
        self.max_dynamic_patch = int(max_dynamic_patch or getattr(cfg, "max_dynamic_patch", 12))
        self.min_dynamic_patch = int(getattr(cfg, "min_dynamic_patch", 1))
        self.use_thumbnail = bool(getattr(cfg, "use_thumbnail", True))
        self.image_size = int(getattr(cfg, "force_image_size", None) or cfg.vision_config.image_size)
        self.system_prompt = system_prompt if system_prompt is not None else self.model.system_message
        self.max_batch_size = max_batch_size
        self.model.img_context_token_id = self.tokenizer.convert_tokens_to_ids(IMG_CONTEXT)
        # Stop where the model's own chat() stops: at the turn separator <|im_end|>, or at EOS.
        self.template = getattr(self.model, "template", None) or prompts.TEMPLATE
        self.stop_ids = prompts.stop_token_ids(self.tokenizer, self.template)
        if self.tokenizer.pad_token_id is None:  # left padding for batches needs some pad id
            self.tokenizer.pad_token = self.tokenizer.unk_token or self.tokenizer.eos_token
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._response_cls = _response_class()

    # ---- prompt building: helpers.prompts, from the model's public attributes (any InternVL2 model)
    def _load(self, image):
        from PIL import Image

        from helpers.tiling import load_image

        if isinstance(image, Image.Image):
            return image if image.mode == "RGB" else image.convert("RGB")
        if isinstance(image, (str, os.PathLike)):
            return load_image(image)
        raise TypeError(f"an image is a PIL image or a file path, got {type(image).__name__}")

    def _query(self, turns: list) -> tuple:
        """``[(prompt, answer|None), ...]`` -> (query text, [pixel_values per image])."""
        from helpers.tiling import to_pixel_values

        tiles, rendered = [], []
        for prompt, answer in turns:
            text, images = _split_prompt(prompt)
            rendered.append((_place_images(text, len(images)), answer))
            for image in images:
                tiles.append(to_pixel_values(self._load(image), max_num=self.max_dynamic_patch,
                                             image_size=self.image_size, use_thumbnail=self.use_thumbnail,
                                             min_num=self.min_dynamic_patch))
        query = prompts.render(rendered, self.system_prompt, self.template)
        query = prompts.expand_images(query, [pv.shape[0] for pv in tiles], self.model.num_image_token)
        return query, tiles

    def _hf_kwargs(self, gen: dict) -> dict:
        kwargs = dict(max_new_tokens=int(gen["max_new_tokens"]), do_sample=bool(gen["do_sample"]),
                      eos_token_id=list(self.stop_ids), pad_token_id=self.tokenizer.pad_token_id)
        if gen["do_sample"]:  # transformers warns about sampling fields in greedy mode
            kwargs.update(top_p=float(gen["top_p"]), top_k=int(gen["top_k"]), temperature=float(gen["temperature"]))
        if gen["repetition_penalty"] != 1.0:
            kwargs["repetition_penalty"] = float(gen["repetition_penalty"])
        return kwargs

    def _generate(self, conversations: list, gen_config, streamer_queue=None, offset=0, cancel=None) -> list:
        """Run one left-padded batch through the model's generate(); return Responses."""
        import torch
        from transformers import StoppingCriteriaList

        gen = _gen_fields(gen_config)
        built = [self._query(turns) for turns in conversations]
        queries = [q for q, _ in built]
        tiles = [pv for _, pvs in built for pv in pvs]
        with self._lock:
            side = self.tokenizer.padding_side
            self.tokenizer.padding_side = "left"  # generation continues from the right end of every row
            try:
                enc = self.tokenizer(queries, return_tensors="pt", padding=True)
            finally:
                self.tokenizer.padding_side = side
            input_lens = enc["attention_mask"].sum(dim=1).tolist()
            kwargs = self._hf_kwargs(gen)
            if streamer_queue is not None:
                kwargs["streamer"] = _DeltaStreamer(self.tokenizer, self.stop_ids, input_lens, streamer_queue,
                                                    self._response_cls, offset)
            if cancel is not None:
                kwargs["stopping_criteria"] = StoppingCriteriaList([cancel])
            if gen["do_sample"] and gen["random_seed"] is not None:
                torch.manual_seed(int(gen["random_seed"]))
            pixel_values = torch.cat(tiles).to(self.device, self.dtype) if tiles else None
            with torch.inference_mode():
                out = self.model.generate(pixel_values=pixel_values, input_ids=enc["input_ids"].to(self.device),
                                          attention_mask=enc["attention_mask"].to(self.device), **kwargs)
        results = []
        for row, ids in enumerate(out.tolist()):
            finish = "length"
            stops = [i for i, tok in enumerate(ids) if tok in self.stop_ids]
            if stops:
                ids, finish = ids[:stops[0]], "stop"
            text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
            results.append(self._response_cls(text=text, generate_token_len=len(ids), input_token_len=input_lens[row],
                                              finish_reason=finish, token_ids=ids, index=offset + row))
        return results

    # ---- LMDeploy-style public calls
    def __call__(self, prompts, gen_config=None, **kwargs):
        """Answer one prompt or a batch (LMDeploy ``pipe(prompts, gen_config)``).

        Args:
            prompts: ``str``, ``(str, image)``, ``(str, [images])`` or a list of those. A list goes
                through the model's batch path (left padding), ``max_batch_size`` prompts at a time.
            gen_config: GenerationConfig (ours or LMDeploy's), a dict, a list of them (one per
                prompt), or None for greedy with LMDeploy's defaults.

        Returns:
            One Response for a single prompt, else a list in prompt order.
        """
        return self.infer(prompts, gen_config=gen_config, **kwargs)

    def infer(self, prompts, gen_config=None, **kwargs):
        """Same as calling the engine (LMDeploy's ``Pipeline.infer``)."""
        single = _is_single(prompts)
        items = [prompts] if single else list(prompts)
        configs = gen_config if isinstance(gen_config, list) else [gen_config] * len(items)
        if len(configs) != len(items):
            raise ValueError(f"{len(items)} prompts but {len(configs)} gen_configs")
        results = [None] * len(items)
        # Prompts that share a generation config are batched together.
        groups: dict = {}
        for i, cfg in enumerate(configs):
            groups.setdefault(json.dumps(_gen_fields(cfg), sort_keys=True, default=str), []).append(i)
        for indices in groups.values():
            for start in range(0, len(indices), self.max_batch_size):
                chunk = indices[start:start + self.max_batch_size]
                outs = self._generate([[(items[i], None)] for i in chunk], configs[chunk[0]])
                for i, res in zip(chunk, outs):
                    res.index = i
                    results[i] = res
        return results[0] if single else results

    def stream_infer(self, prompts, sessions=None, gen_config=None, **kwargs):
        """Yield Responses piece by piece as tokens arrive (LMDeploy ``stream_infer``).

        Each yielded Response carries only the new text (``.index`` says which prompt); the last
        one for a prompt has ``finish_reason`` set. Generation runs on a worker thread; closing
        the iterator early stops it.

        Args:
            prompts: as in :meth:`__call__`; a list is streamed as one batch.
            sessions: ignored unless a ChatSession per prompt (its history is prepended).
            gen_config: one GenerationConfig for all prompts.

        Returns:
            An iterator of Responses.
        """
        items = [prompts] if _is_single(prompts) else list(prompts)
        sessions = sessions if isinstance(sessions, list) else [sessions] * len(items)
        conversations = [list(s.history if s is not None else []) + [(p, None)] for p, s in zip(items, sessions)]
        return self._stream(conversations, gen_config)

    def _stream(self, conversations, gen_config):
        out: queue.Queue = queue.Queue()
        cancel = _CancelFlag()
        failure = []

        def work():
            try:
                for start in range(0, len(conversations), self.max_batch_size):
                    self._generate(conversations[start:start + self.max_batch_size], gen_config,
                                   streamer_queue=out, offset=start, cancel=cancel)
            except BaseException as exc:  # handed to the consumer thread below
                failure.append(exc)
            finally:
                out.put(None)

        worker = threading.Thread(target=work, name="TransformersEngine.stream", daemon=True)
        worker.start()
        try:
            while (item := out.get()) is not None:
                yield item
        finally:
            cancel.event.set()
            worker.join()
        if failure:
            raise failure[0]

    def session(self) -> ChatSession:
        """A new, empty conversation."""
        return ChatSession(next(self._ids))

    def chat(self, prompt, session=None, gen_config=None, stream_response=False, **kwargs):
        """One conversation turn (LMDeploy ``pipe.chat``).

        Args:
            prompt: ``str`` or ``(str, image(s))``; images of earlier turns stay in the conversation.
            session: a ChatSession from an earlier turn, or None for a new conversation.
            gen_config: GenerationConfig or None.
            stream_response: if True return an iterator of Response pieces; the session is updated
                when it is exhausted.

        Returns:
            The session (``.response.text`` is the answer, ``.history`` grows by one turn), or an
            iterator when streaming.
        """
        session = session if session is not None else self.session()
        session.update(prompt=prompt, response=None, gen_config=gen_config)
        conversation = list(session.history) + [(prompt, None)]
        if stream_response:
            return self._chat_stream(session, prompt, conversation, gen_config)
        response = self._generate([conversation], gen_config)[0]
        session.response = response
        session.history.append((prompt, response.text))
        return session

    def _chat_stream(self, session, prompt, conversation, gen_config):
        total = None
        for piece in self._stream([conversation], gen_config):
            total = self._response_cls(text="", generate_token_len=0, input_token_len=0) if total is None else total
            total.extend(piece)
            yield piece
        session.response = total
        session.history.append((prompt, total.text if total else ""))

    def describe(self) -> str:
        """One line: engine, device, dtype, checkpoint."""
        import transformers

        return (f"engine=transformers {transformers.__version__} (model's own InternVL code) | device={self.device} "
                f"| dtype={str(self.dtype).replace('torch.', '')} | max_dynamic_patch={self.max_dynamic_patch} "
                f"| model={self.model_path}")

    def close(self):
        """Drop the model (frees memory)."""
        self.model = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --------------------------------------------------------------------------- LMDeploy pipeline


def internvl2_chat_template(system_prompt: str, template: str = "internlm2-chat"):
    """LMDeploy ChatTemplateConfig that renders InternVL2's own prompt with a given system prompt.

    The markers come from InternVL2's conversation template (``helpers.internvl.conversation``,
    the same file the checkpoint's remote code uses), so LMDeploy builds byte-for-byte the prompt
    that ``model.chat()`` builds: ``<|im_start|>system\n{system}<|im_end|><|im_start|>user\n...``.

    Args:
        system_prompt: the system message.
        template: conversation template name (``config.template``).

    Returns:
        ``lmdeploy.ChatTemplateConfig``.

    Example:
        >>> internvl2_chat_template("你是美食助手。").meta_instruction  # doctest: +SKIP
        '你是美食助手。'
    """
    lmdeploy = _need("lmdeploy")
    from helpers.internvl.conversation import get_conv_template

    conv = get_conv_template(template)
    system_prefix = conv.system_template.split("{system_message}")[0]
    user, assistant = conv.roles
    return lmdeploy.ChatTemplateConfig(
        model_name="base",  # LMDeploy's plain template class, filled with InternVL2's markers
        system=system_prefix, meta_instruction=system_prompt, eosys=conv.sep,
        user=user, eoh=conv.sep, assistant=assistant, eoa=conv.sep, separator="",
        stop_words=list(conv.stop_str) or [conv.sep],
    )


def _in_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def tp_executor_backend(tp: int) -> str | None:
    """How LMDeploy's PyTorch engine should start its ``tp`` GPU workers here (None: LMDeploy decides).

    LMDeploy 0.18 starts the workers of ``tp > 1`` with Ray on CUDA unless told otherwise
    (``distributed_executor_backend``), but Ray is a large optional package that offline GPU
    servers often lack. Without it the engine is told to use ``"mp"`` (Python multiprocessing,
    one process per GPU on this machine). ``LMDEPLOY_EXECUTOR_BACKEND`` in the environment
    always wins (LMDeploy reads it itself).

    Args:
        tp: tensor-parallel GPUs.

    Returns:
        None (one GPU, Ray installed, or the environment variable set) or ``"mp"``.

    Example:
        >>> tp_executor_backend(1) is None
        True
    """
    import importlib.util

    if int(tp or 1) <= 1 or os.environ.get("LMDEPLOY_EXECUTOR_BACKEND"):
        return None
    return None if importlib.util.find_spec("ray") is not None else "mp"


def weight_format(model_path) -> str | None:
    """``"awq"`` for a checkpoint quantised by LMDeploy's ``lite auto_awq``, else None (plain weights).

    LMDeploy writes the ``quantization_config`` into the LLM's part of an InternVL config.

    Example:
        >>> weight_format("artifacts/models/internvl2-tiny")  # doctest: +SKIP
    """
    path = Path(model_path) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for part in (config, config.get("llm_config") or {}):
        method = (part.get("quantization_config") or {}).get("quant_method")
        if method:
            return str(method).lower()
    return None


def _build_lmdeploy(model_path, session_len, cache_max_entry_count, tp, system_prompt):
    from helpers.model_dir import runnable_dir

    lmdeploy = _need("lmdeploy")
    quant = weight_format(model_path)
    backend = lmdeploy.PytorchEngineConfig(session_len=session_len, cache_max_entry_count=cache_max_entry_count, tp=tp,
                                           distributed_executor_backend=tp_executor_backend(tp),
                                           **({"model_format": quant} if quant else {}))
    template = internvl2_chat_template(system_prompt) if system_prompt else None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded, ever
    # LMDeploy reads the config through the checkpoint's remote code: the course's loading rule
    # (its configuration class pickles by name, which tensor-parallel workers need).
    model_path = runnable_dir(model_path)

    def build():
        # Parts of LMDeploy ask asyncio for "the" loop of the building thread; give it a fresh one.
        asyncio.set_event_loop(asyncio.new_event_loop())
        return lmdeploy.pipeline(str(model_path), backend_config=backend, chat_template_config=template,
                                 trust_remote_code=True)

    if _in_running_loop():
        # Inside Jupyter the kernel's own asyncio loop runs in this thread and LMDeploy may not
        # start or wait on another loop here; build the pipeline on a worker thread instead.
        # (LMDeploy 0.18 then serves all calls from its own event-loop thread.)
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lmdeploy-build") as pool:
            return pool.submit(build).result()
    return lmdeploy.pipeline(str(model_path), backend_config=backend, chat_template_config=template,
                             trust_remote_code=True)


def make_pipeline(model_path=None, engine: str | None = None, *, session_len: int | None = None,
                  cache_max_entry_count: float | None = None, tp: int | None = None,
                  max_dynamic_patch: int | None = None, system_prompt: str | None = None, settings=None):
    """Build the inference pipeline the notebooks use.

    Args:
        model_path: checkpoint directory (default: ``settings.model_path``).
        engine: "lmdeploy" or "transformers" (default: ``settings.engine``: LMDeploy on a CUDA
            machine that has it, else transformers).
        session_len: LMDeploy max tokens of one conversation (default: settings).
        cache_max_entry_count: LMDeploy share of free GPU memory for the KV cache (default: settings).
        tp: LMDeploy tensor-parallel GPUs (default: settings).
        max_dynamic_patch: most tiles per image (default: the checkpoint's config).
        system_prompt: system message (default: each engine's default).
        settings: a Settings (default: ``get_settings()``).

    Returns:
        LMDeploy's ``Pipeline`` or a :class:`TransformersEngine`; both have ``engine_name``.
        An AWQ checkpoint (:func:`weight_format`) is served by LMDeploy with ``model_format="awq"``.

    Example:
        >>> pipe = make_pipeline(engine="transformers")   # doctest: +SKIP
        >>> pipe.engine_name                               # doctest: +SKIP
        'transformers'
    """
    S = settings or get_settings()
    engine = engine or S.engine
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    model_path = Path(model_path or S.model_path)
    if not (model_path / "config.json").is_file():
        raise FileNotFoundError(f"no checkpoint at {model_path} (config.json missing)")
    if engine == "transformers":
        if weight_format(model_path):
            raise ValueError(f"{model_path}: {weight_format(model_path)} weights (config.json quantization_config); "
                             "serve them with engine='lmdeploy'")
        return TransformersEngine(model_path, max_dynamic_patch=max_dynamic_patch, system_prompt=system_prompt)
    ok, reason = server_available()
    if not ok:
        raise RuntimeError(f"engine 'lmdeploy' cannot run here: {reason}; use engine='transformers'")
    pipe = _build_lmdeploy(model_path, session_len or S.session_len,
                           cache_max_entry_count if cache_max_entry_count is not None else S.cache_max_entry_count,
                           tp or S.tp, system_prompt)
    pipe.engine_name = "lmdeploy"
    pipe.model_path = model_path
    _keep_images_first(pipe)  # (text, image) prompts in the order the model was trained on
    # LMDeploy batches concurrent requests itself (max_batch_size defaults to hundreds on big GPUs);
    # the web UI lets this many in at once and queues the rest.
    pipe.max_concurrency = min(int(getattr(pipe.backend_config, "max_batch_size", None) or 8), 32)
    if max_dynamic_patch:
        # LMDeploy's InternVL preprocessing reads the tile limit from the checkpoint config it holds.
        vl_config = getattr(getattr(getattr(pipe.async_engine, "vl_encoder", None), "model", None), "config", None)
        if vl_config is None:
            raise RuntimeError("this LMDeploy version keeps no vision config to set max_dynamic_patch on")
        vl_config.max_dynamic_patch = int(max_dynamic_patch)
    return pipe


def describe_engine(pipe) -> str:
    """One line saying which engine answers, on what, with which checkpoint.

    Args:
        pipe: what :func:`make_pipeline` returned.

    Returns:
        e.g. ``"engine=lmdeploy 0.18.0 (PyTorch engine) | device=cuda ..."``.

    Example:
        >>> print(describe_engine(pipe))  # doctest: +SKIP
    """
    if isinstance(pipe, TransformersEngine):
        return pipe.describe()
    import lmdeploy

    import torch

    cfg = getattr(pipe, "backend_config", None)
    parts = [f"engine=lmdeploy {lmdeploy.__version__} ({type(cfg).__name__ if cfg else '?'})",
             f"device=cuda ({torch.cuda.get_device_name()})"]
    for name in ("tp", "session_len", "cache_max_entry_count", "max_batch_size"):
        if cfg is not None and getattr(cfg, name, None) is not None:
            parts.append(f"{name}={getattr(cfg, name)}")
    parts.append(f"model={getattr(pipe, 'model_path', '?')}")
    return " | ".join(parts)


# --------------------------------------------------------------------------- api_server


def server_available() -> tuple:
    """Whether ``lmdeploy serve api_server`` can run here.

    Returns:
        ``(True, "")`` or ``(False, reason)``.

    Example:
        >>> ok, reason = server_available()
    """
    import importlib.util

    if importlib.util.find_spec("lmdeploy") is None:
        return False, "lmdeploy is not installed (requirements-lmdeploy.txt)"
    try:
        import torch
    except ImportError:
        return False, "torch is not installed (requirements-lmdeploy.txt)"
    if not torch.cuda.is_available():
        return False, "no CUDA GPU: LMDeploy's PyTorch engine needs one"
    return True, ""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _live_group_members(pgid: int) -> list:
    """PIDs in process group ``pgid`` that have not exited (zombies count as gone); Linux /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


_LIVE_SERVERS: "weakref.WeakSet" = weakref.WeakSet()


@atexit.register
def _stop_live_servers():
    for server in list(_LIVE_SERVERS):
        server.stop()


class ApiServer:
    """``lmdeploy serve api_server`` as a managed background process.

    The server runs in its own process group with its output in a log file; :meth:`stop` ends
    the whole group (LMDeploy starts helper processes). Servers still running when Python exits
    are stopped too.

    Args:
        model_path: checkpoint directory (default: settings.model_path).
        port: TCP port (default: settings.api_port; 0 picks a free one).
        host: bind address (default 127.0.0.1; never all interfaces unless you say so).
        api_keys: a key or list of keys; requests without one are refused (HTTP 401).
        tp: tensor-parallel GPUs.
        session_len: max tokens of one conversation (default: settings).
        backend: "pytorch" (TurboMind is not part of this course).
        cache_max_entry_count: share of free GPU memory for the KV cache (default: settings).
        system_prompt: system message, passed as a ``--chat-template`` JSON file.
        extra_args: more command-line arguments for api_server.
        log_path: log file (default: ``<runs_dir>/api_server/api_server-<port>.log``).
        command: run this argv instead of api_server (tests use a stand-in server).
        env: extra environment variables.

    Example:
        >>> with ApiServer(model_path, port=23333, api_keys="sk-course") as srv:   # doctest: +SKIP
        ...     srv.wait_ready(timeout=300)
        ...     print(openai_chat(srv.url, "sk-course", "这是什么菜？", "photo.jpg"))
    """

    def __init__(self, model_path=None, port: int | None = None, host: str | None = None, api_keys=None, tp: int = 1,
                 session_len: int | None = None, backend: str = "pytorch", cache_max_entry_count: float | None = None,
                 system_prompt: str | None = None, extra_args=(), log_path=None, command=None, env=None,
                 settings=None):
        S = settings or get_settings()
        self.model_path = Path(model_path or S.model_path)
        self.host = host or S.server_host
        self.port = S.api_port if port is None else (port or free_port(self.host))
        self.api_keys = [api_keys] if isinstance(api_keys, str) else list(api_keys or [])
        self.log_path = Path(log_path or S.runs_dir / "api_server" / f"api_server-{self.port}.log")
        self.env = dict(env or {})
        if command is not None:
            self.command = [str(c) for c in command]
        else:
            from helpers.model_dir import runnable_dir

            # The loading rule where the checkpoint is there; a path that is not (yet) there stays as
            # written, and api_server names it when it starts.
            served = runnable_dir(self.model_path) if (self.model_path / "config.json").is_file() else self.model_path
            if backend != "pytorch":
                raise ValueError(f"backend {backend!r}: this course serves with LMDeploy's PyTorch engine only")
            self.command = [
                sys.executable, "-m", "lmdeploy", "serve", "api_server", str(served),
                "--backend", backend, "--trust-remote-code",
                "--server-name", self.host, "--server-port", str(self.port),
                "--session-len", str(session_len or S.session_len),
                "--cache-max-entry-count", str(cache_max_entry_count if cache_max_entry_count is not None
                                               else S.cache_max_entry_count),
            ]
            if tp and tp > 1:
                self.command += ["--tp", str(tp)]
                if tp_executor_backend(tp):  # no Ray here: one process per GPU (see tp_executor_backend)
                    self.command += ["--distributed-executor-backend", tp_executor_backend(tp)]
            if self.api_keys:
                self.command += ["--api-keys", *self.api_keys]
            if system_prompt:
                template_file = self.log_path.with_suffix(".chat_template.json")
                template_file.parent.mkdir(parents=True, exist_ok=True)
                internvl2_chat_template(system_prompt).to_json(str(template_file))
                self.command += ["--chat-template", str(template_file)]
            self.command += [str(a) for a in extra_args]
        self.proc = None
        self._log = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:23333`` (the OpenAI API is under ``/v1``)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> "ApiServer":
        """Launch the process (returns at once; see :meth:`wait_ready`)."""
        if self.running:
            return self
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self._log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} $ {' '.join(self.command)}\n".encode())
        self._log.flush()
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **self.env}
        self.proc = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        _LIVE_SERVERS.add(self)
        return self

    def _get(self, path: str, key: str | None, timeout: float = 5.0):
        request = urllib.request.Request(self.url + path)
        if key:
            request.add_header("Authorization", f"Bearer {key}")
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, json.loads(reply.read() or b"null")

    def wait_ready(self, timeout: float = 300.0, interval: float = 1.0) -> list:
        """Poll ``/v1/models`` until the server answers.

        Args:
            timeout: seconds to wait (LMDeploy needs ~50 s on a GPU: import, weights, Triton compile).
            interval: seconds between polls.

        Returns:
            The served model ids.

        Raises:
            RuntimeError: the process exited first (the message holds the log tail).
            TimeoutError: not ready in time (the message holds the log tail).
        """
        if self.proc is None:
            self.start()
        deadline = time.monotonic() + timeout
        key = self.api_keys[0] if self.api_keys else None
        while True:
            code = self.proc.poll()
            if code is not None:
                raise RuntimeError(f"api_server exited with code {code} before it was ready; "
                                   f"log {self.log_path}:\n{self.logs(40)}")
            try:
                status, body = self._get("/v1/models", key)
                if status == 200:
                    return [m.get("id") for m in (body or {}).get("data", [])]
            except urllib.error.HTTPError as exc:
                if exc.code == 401:
                    raise RuntimeError(f"api_server at {self.url} refused our API key (HTTP 401)") from exc
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError):
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise TimeoutError(f"api_server at {self.url} not ready after {timeout:.0f} s; "
                                   f"log {self.log_path}:\n{self.logs(40)}")
            time.sleep(interval)

    def logs(self, tail: int = 50) -> str:
        """The last ``tail`` lines of the server log."""
        if not self.log_path.exists():
            return ""
        lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(lines[-tail:])

    def stop(self, timeout: float = 20.0) -> int | None:
        """End the server and every process it started (SIGTERM, then SIGKILL).

        Returns:
            The exit code, or None when it was never started.
        """
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=timeout)
                    break
                except subprocess.TimeoutExpired:
                    continue
        try:  # helpers left in the group after the leader exited
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        deadline = time.monotonic() + timeout
        while _live_group_members(self.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)  # SIGKILL is delivered asynchronously; return once the group is really gone
        if self._log is not None:
            self._log.close()
            self._log = None
        _LIVE_SERVERS.discard(self)
        return self.proc.returncode

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self):
        state = "running" if self.running else "stopped"
        return f"ApiServer({self.url}, {state}, log={self.log_path})"


def image_data_url(image_path) -> str:
    """A ``data:image/...;base64,...`` URL of an image file (what the OpenAI API takes inline).

    Example:
        >>> image_data_url("photo.jpg")[:23]   # doctest: +SKIP
        'data:image/jpeg;base64,'
    """
    from PIL import Image

    path = Path(image_path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            mime = Image.MIME.get(img.format, "image/jpeg")
    except Exception as exc:
        raise ValueError(f"{path} is not an image Pillow can read") from exc
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def openai_chat(base_url: str, api_key: str | None, prompt: str, image_path=None, model: str | None = None,
                max_tokens: int = 128, temperature: float = 0.0, timeout: float = 120.0) -> str:
    """Ask LMDeploy's OpenAI-compatible server one question about one image.

    Args:
        base_url: server URL, with or without ``/v1``.
        api_key: the key the server was started with (None when it has none).
        prompt: the question.
        image_path: an image file, sent inline as a base64 data URL (None: text only).
        model: model id (default: the first one ``/v1/models`` lists).
        max_tokens: answer length limit.
        temperature: 0 for greedy.
        timeout: seconds for the request.

    Returns:
        The answer text.

    Example:
        >>> openai_chat("http://127.0.0.1:23333", "sk-course", "这是什么菜？", "photo.jpg")  # doctest: +SKIP
    """
    openai = _need("openai")
    url = base_url.rstrip("/")
    url = url if url.endswith("/v1") else url + "/v1"
    client = openai.OpenAI(base_url=url, api_key=api_key or "none", timeout=timeout, max_retries=0)
    if model is None:
        model = client.models.list().data[0].id
    content = [{"type": "text", "text": prompt}]
    if image_path is not None:
        # image first: LMDeploy keeps the order of the content parts (see images_first)
        content.insert(0, {"type": "image_url", "image_url": {"url": image_data_url(image_path)}})
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}],
                                           max_tokens=max_tokens, temperature=temperature)
    return reply.choices[0].message.content
