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
    >>> from helpers.serve.pipeline import describe_engine, make_pipeline   # doctest: +SKIP
    >>> from helpers.serve.generation import generation_config             # doctest: +SKIP
    >>> pipe = make_pipeline()                                         # doctest: +SKIP
    >>> print(describe_engine(pipe))                                   # doctest: +SKIP
    >>> pipe(("这是什么菜？", "photo.jpg"), gen_config=generation_config(max_new_tokens=32)).text  # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
from pathlib import Path

from helpers.env import need
from helpers.settings import get_settings, repo_relative
from helpers.prompts import internvl2_chat_template
from helpers.serve.cpu_engine import TransformersEngine
from helpers.serve.messages import _keep_images_first


ENGINES = ("lmdeploy", "transformers")


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


def in_running_loop() -> bool:
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


def _build_lmdeploy(model_path, session_len, cache_max_entry_count, tp, system_prompt, engine_options=None,
                    vision_options=None):
    from helpers.model_dir import runnable_dir

    lmdeploy = need("lmdeploy")
    quant = weight_format(model_path)
    fields = dict(session_len=session_len, cache_max_entry_count=cache_max_entry_count, tp=tp,
                  distributed_executor_backend=tp_executor_backend(tp), **({"model_format": quant} if quant else {}))
    backend = lmdeploy.PytorchEngineConfig(**{**fields, **(engine_options or {})})
    template = internvl2_chat_template(system_prompt) if system_prompt else None
    extra = {"vision_config": lmdeploy.VisionConfig(**vision_options)} if vision_options else {}
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded, ever
    # LMDeploy reads the config through the checkpoint's remote code: the course's loading rule
    # (its configuration class pickles by name, which tensor-parallel workers need).
    model_path = runnable_dir(model_path)

    def build():
        # Parts of LMDeploy ask asyncio for "the" loop of the building thread; give it a fresh one.
        asyncio.set_event_loop(asyncio.new_event_loop())
        return lmdeploy.pipeline(str(model_path), backend_config=backend, chat_template_config=template,
                                 trust_remote_code=True, **extra)

    if in_running_loop():
        # Inside Jupyter the kernel's own asyncio loop runs in this thread and LMDeploy may not
        # start or wait on another loop here; build the pipeline on a worker thread instead.
        # (LMDeploy 0.18 then serves all calls from its own event-loop thread.)
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lmdeploy-build") as pool:
            return pool.submit(build).result()
    return lmdeploy.pipeline(str(model_path), backend_config=backend, chat_template_config=template,
                             trust_remote_code=True, **extra)


def make_pipeline(model_path=None, engine: str | None = None, *, session_len: int | None = None,
                  cache_max_entry_count: float | None = None, tp: int | None = None,
                  max_dynamic_patch: int | None = None, system_prompt: str | None = None, settings=None,
                  engine_options: dict | None = None, vision_options: dict | None = None, images_first: bool = True):
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
        engine_options: more ``lmdeploy.PytorchEngineConfig`` fields, over the course's (benchmarks:
            ``max_batch_size``, ``logprobs_mode``, ...).
        vision_options: ``lmdeploy.VisionConfig`` fields (e.g. ``max_batch_size``).
        images_first: put images before the text (InternVL2's training order; False shows LMDeploy's own).

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
                           tp or S.tp, system_prompt, engine_options, vision_options)
    pipe.engine_name = "lmdeploy"
    pipe.model_path = model_path
    if images_first:
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
    model = getattr(pipe, "model_path", None)
    parts.append(f"model={repo_relative(model) if model else '?'}")
    return " | ".join(parts)
