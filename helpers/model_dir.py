"""What an InternVL2 checkpoint directory is, and which directory the libraries should load.

The course's loading rule, used by every path that loads a model (transformers engine,
evaluation, web UI, notebooks, benchmarks, LMDeploy, the api_server, AWQ):

1. The weights, ``config.json`` and tokenizer are always the checkpoint's own.
2. The model code is the checkpoint's own where the installed transformers runs it: the
   course's code (the tiny build, a converted fine-tune) runs everywhere; OpenGVLab's code, as
   published with InternVL2-2B, was written for transformers 4.37 and runs under 4.x (the xtuner
   environment) but not under 5.x (the lmdeploy environment: no ``all_tied_weights_keys``,
   uninitialised rotary buffers, no ``generate``, the old tuple KV cache).
3. Where it does not run, the course's own implementation (``helpers/internvl``: the same
   parameter names, config keys and logits) is placed over a *view* of the checkpoint: a folder
   under ``artifacts/model-views/`` of links to the checkpoint's files with the course's seven
   ``.py`` files beside them. The learner's directory (possibly read-only, shared by a class)
   is never written to, and the 4.4 GB of weights are linked, not copied.

Only InternVL2 checkpoints with an InternLM2 LLM are supported (InternVL2-2B, InternVL2-8B's
InternLM2.5 has the same architecture); InternVL2-1B (Qwen2) and InternVL2-4B (Phi-3) get
:class:`UnsupportedCheckpoint`.

Example:
    >>> from helpers.model_dir import runnable_dir, code_origin        # doctest: +SKIP
    >>> code_origin("/root/share/new_models/OpenGVLab/InternVL2-2B")   # doctest: +SKIP
    'checkpoint'
    >>> runnable_dir("/root/share/new_models/OpenGVLab/InternVL2-2B")  # doctest: +SKIP
    PosixPath('artifacts/model-views/InternVL2-2B-1a2b3c4d')
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from helpers.internvl import REMOTE_CODE_FILES

COURSE_CODE = Path(__file__).resolve().parent / "internvl"
SUPPORTED_LLMS = ("InternLM2ForCausalLM",)
# What other InternVL2 sizes use, for the error message (InternVL2 model cards).
OTHER_LLMS = {"Qwen2ForCausalLM": "InternVL2-1B (Qwen2)", "Phi3ForCausalLM": "InternVL2-4B (Phi-3)",
              "LlamaForCausalLM": "InternVL2-40B/76B (Llama-style)"}
# The public interface of OpenGVLab's InternVLChatModel (inference version): the only methods and
# attributes a course path may use on a model the learner brings.
PUBLISHED_METHODS = ("forward", "pixel_shuffle", "extract_feature", "batch_chat", "chat", "generate",
                     "get_input_embeddings", "get_output_embeddings")
PUBLISHED_ATTRIBUTES = ("lm_head", "template", "system_message", "img_context_token_id", "num_image_token",
                        "vision_model", "language_model", "mlp1", "conv_template", "ps_version", "select_layer",
                        "downsample_ratio")
VIEW_INFO = "model_view.json"


class UnsupportedCheckpoint(ValueError):
    """The directory is not an InternVL2 checkpoint this course can run."""


def read_config(path) -> dict:
    """config.json of a checkpoint directory.

    Args:
        path: the checkpoint directory.

    Returns:
        The parsed config.

    Raises:
        FileNotFoundError: no config.json there.
        UnsupportedCheckpoint: config.json is not a JSON object.
    """
    file = Path(path) / "config.json"
    if not file.is_file():
        raise FileNotFoundError(f"no checkpoint at {path} (config.json missing); set INTERNVL_MODEL_PATH to an "
                                "InternVL2 directory or build the tiny one with `python -m helpers.models build-tiny`")
    try:
        cfg = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise UnsupportedCheckpoint(f"{file}: not readable as JSON ({err})") from None
    if not isinstance(cfg, dict):
        raise UnsupportedCheckpoint(f"{file}: expected a JSON object, got {type(cfg).__name__}")
    return cfg


def check_supported(path) -> dict:
    """Raise a clear error unless ``path`` is an InternVL2 checkpoint with an InternLM2 LLM.

    Args:
        path: the checkpoint directory.

    Returns:
        Its config.

    Raises:
        UnsupportedCheckpoint: another model type or LLM, naming what is supported.
    """
    cfg = read_config(path)
    config_file = Path(path) / "config.json"
    if cfg.get("model_type") != "internvl_chat":
        raise UnsupportedCheckpoint(f"{config_file}: model_type is {cfg.get('model_type')!r}, not 'internvl_chat': "
                                    "the course runs InternVL2 checkpoints (InternVL2-2B, InternVL2-8B)")
    llm = cfg.get("llm_config") if isinstance(cfg.get("llm_config"), dict) else {}
    arch = (llm.get("architectures") or [None])[0]
    if arch not in SUPPORTED_LLMS:
        known = OTHER_LLMS.get(arch, "an LLM the course does not implement")
        raise UnsupportedCheckpoint(
            f"{config_file}: llm_config.architectures[0] is {arch!r} ({known}). The course supports InternVL2 "
            f"checkpoints whose LLM is {', '.join(SUPPORTED_LLMS)}: InternVL2-2B (InternLM2-1.8B) and InternVL2-8B "
            "(InternLM2.5-7B); XTuner 0.2.0's InternVL dataset also accepts only InternLM2 and Phi-3.")
    return cfg


def code_origin(path) -> str:
    """Whose model code a checkpoint carries.

    Args:
        path: the checkpoint directory.

    Returns:
        ``"course"`` (the seven files equal ``helpers/internvl``), ``"checkpoint"`` (its own,
        e.g. OpenGVLab's) or ``"none"`` (no ``modeling_internvl_chat.py``).
    """
    path = Path(path)
    if not (path / "modeling_internvl_chat.py").is_file():
        return "none"
    for name in REMOTE_CODE_FILES:
        if not (path / name).is_file() or (path / name).read_bytes() != (COURSE_CODE / name).read_bytes():
            return "checkpoint"
    return "course"


def transformers_major() -> int:
    """Major version of the installed transformers (4 in the xtuner environment, 5 in lmdeploy's)."""
    import transformers

    return int(transformers.__version__.split(".")[0])


def own_code_runs(path) -> bool:
    """Whether the checkpoint's own model code runs under the installed transformers.

    Args:
        path: the checkpoint directory.

    Returns:
        True for the course's code, and for other code under transformers 4.x.
    """
    origin = code_origin(path)
    return origin == "course" or (origin == "checkpoint" and transformers_major() < 5)


def views_root() -> Path:
    """Where views of learners' checkpoints are made (``<artifacts>/model-views``)."""
    from helpers.settings import get_settings

    return get_settings().artifacts / "model-views"


def runnable_dir(path, views=None) -> Path:
    """The directory to hand to transformers or LMDeploy for checkpoint ``path``.

    Args:
        path: the learner's checkpoint directory (never written to).
        views: where views go (default :func:`views_root`).

    Returns:
        ``path`` itself when its own code runs here, else a view with the course's code
        (made once, remade when the checkpoint's files or the course's code change).

    Raises:
        UnsupportedCheckpoint: not an InternVL2 + InternLM2 checkpoint.

    Example:
        >>> runnable_dir("artifacts/models/internvl2-tiny")      # doctest: +SKIP
        PosixPath('artifacts/models/internvl2-tiny')
    """
    path = Path(path)
    check_supported(path)
    if own_code_runs(path):
        return path
    return make_view(path, views)


def _fingerprint(src: Path) -> dict:
    entries = sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in src.iterdir()
                     if p.name not in REMOTE_CODE_FILES)
    code = hashlib.sha256(b"".join((COURSE_CODE / n).read_bytes() for n in REMOTE_CODE_FILES)).hexdigest()
    return dict(source=str(src), entries=[list(e) for e in entries], course_code=code)


def make_view(path, views=None) -> Path:
    """A folder of links to ``path``'s files, with the course's model code in place of its own.

    Args:
        path: the checkpoint directory.
        views: parent folder of the views (default :func:`views_root`).

    Returns:
        The view directory (``<views>/<name>-<8 hex of the source path>``).
    """
    src = Path(path).resolve()
    parent = Path(views) if views is not None else views_root()
    tag = hashlib.sha256(str(src).encode("utf-8", "surrogatepass")).hexdigest()[:8]
    view = parent / f"{src.name}-{tag}"
    info = _fingerprint(src)
    if (view / VIEW_INFO).is_file():
        try:
            if json.loads((view / VIEW_INFO).read_text(encoding="utf-8")) == info:
                return view
        except ValueError:
            pass  # a torn info file: remake the view
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{view.name}-", dir=parent))
    try:
        for entry in src.iterdir():
            if entry.name not in REMOTE_CODE_FILES:
                os.symlink(entry, tmp / entry.name)
        for name in REMOTE_CODE_FILES:
            shutil.copyfile(COURSE_CODE / name, tmp / name)
        (tmp / VIEW_INFO).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
        tmp.chmod(0o755)
        if view.exists():
            shutil.rmtree(view)
        os.replace(tmp, view)  # a parallel loader sees the old view or the new one, never half of one
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return view


def describe(path) -> str:
    """One line for learners: whose code will run this checkpoint here, and why.

    Args:
        path: the checkpoint directory.

    Returns:
        A Chinese sentence naming the code origin and the transformers version.
    """
    import transformers

    origin = code_origin(path)
    version = transformers.__version__
    if origin == "course":
        return f"模型代码：课程自己的实现（检查点自带），transformers {version} 直接加载"
    if own_code_runs(path):
        return f"模型代码：检查点自带的（如 OpenGVLab 发布的），transformers {version} 可以运行它"
    return (f"模型代码：检查点自带的代码不能在 transformers {version} 上运行，改用课程自己的实现"
            f"（参数名与 logits 相同）；权重、config 与 tokenizer 仍是检查点自己的")


def write_json(path, data) -> None:
    """Write a checkpoint's JSON file (config.json, tokenizer_config.json, ...) the way the course writes them all."""
    Path(path).write_text(json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8")
