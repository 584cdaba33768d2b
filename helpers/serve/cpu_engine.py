"""TransformersEngine: LMDeploy's pipeline calls answered by transformers on the CPU (or any device).

It runs the checkpoint's own InternVL code and exposes ``pipe(prompts, gen_config)``, ``pipe.chat`` and
``pipe.stream_infer`` with LMDeploy's result objects, so the same notebook cells run where LMDeploy cannot.
"""
from __future__ import annotations

import itertools
import json
import os
import queue
import threading
from pathlib import Path

from helpers import prompts
from helpers.env import need
from helpers.settings import get_settings, repo_relative
from helpers.prompts import IMG_CONTEXT
from helpers.serve.messages import _is_single, _place_images, _split_prompt
from helpers.serve.generation import ChatSession, _gen_fields, _response_class


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
        torch = need("torch")
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
                f"| model={repo_relative(self.model_path)}")

    def close(self):
        """Drop the model (frees memory)."""
        self.model = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
