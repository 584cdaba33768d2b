"""What this kernel has: library versions, CUDA, :func:`need` (import a module or say how to install it), quiet logs.

Example:
    >>> from helpers.env import need, show_versions
    >>> need("json").__name__
    'json'
    >>> show_versions(("torch",))  # doctest: +SKIP
    >>> quiet_logs()  # doctest: +SKIP
"""
from __future__ import annotations

import importlib
import importlib.metadata
import platform
import warnings

# Which requirements file installs a module (the other one: requirements-lmdeploy.txt).
XTUNER_ONLY = ("xtuner", "mmengine", "deepspeed", "peft", "bitsandbytes")
COURSE_LIBRARIES = ("torch", "transformers", "lmdeploy", "xtuner", "gradio")


def install_hint(module: str) -> str:
    """The requirements file (and environment) that installs ``module``."""
    if module.split(".")[0] in XTUNER_ONLY:
        return "install requirements-xtuner.txt (the XTuner environment, .venv-xtuner)"
    return "install requirements-lmdeploy.txt or requirements-xtuner.txt (pip install -r ...)"


def need(module: str, why: str = ""):
    """``importlib.import_module(module)``, or an ImportError that says what installs it.

    Args:
        module: dotted module name.
        why: who needs it (put at the front of the message).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        who = f"{why} needs {module}" if why else f"{module} is missing"
        raise ImportError(f"{who}: {install_hint(module)} ({exc})") from exc


def version(distribution: str) -> str | None:
    """The installed version of a distribution, or None."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def device() -> str:
    """``"cuda: <GPU name>"`` (with ``x N`` for several), ``"cpu"``, or ``"no torch"``."""
    try:
        import torch
    except ImportError:
        return "no torch"
    if not torch.cuda.is_available():
        return "cpu"
    n = torch.cuda.device_count()
    return f"cuda: {torch.cuda.get_device_name(0)}" + (f" x {n}" if n > 1 else "")


def versions(libraries=COURSE_LIBRARIES) -> dict:
    """``{"python": ..., library: version or None, "device": ...}`` for this kernel."""
    out = {"python": platform.python_version()}
    out.update({lib: version(lib) for lib in libraries})
    out["device"] = device()
    return out


def show_versions(libraries=COURSE_LIBRARIES) -> dict:
    """Print :func:`versions` (libraries that are not installed say so) and return it."""
    info = versions(libraries)
    for key, value in info.items():
        print(f"{key:<13}{value if value is not None else '未安装（另一个环境才有）'}")
    return info


def quiet_logs() -> list:
    """Silence the libraries' own progress bars and info logs, so a saved notebook shows what its cells print.

    transformers draws a "Loading weights" bar per model load and LMDeploy logs every engine start;
    in committed outputs they are noise that changes on each run. Libraries not installed are skipped.

    Returns:
        The libraries that were quietened, e.g. ``["transformers", "lmdeploy"]``.

    Example:
        >>> quiet_logs()  # doctest: +SKIP
        ['transformers', 'lmdeploy']
    """
    # torch 2.14 deprecates torch.jit.script/interface, which DeepSpeed and timm call at import time:
    # a warning per import, naming the venv's path, that the learner can do nothing about.
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
    done = []
    try:
        import transformers
    except ImportError:
        pass
    else:
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        done.append("transformers")
    try:
        from lmdeploy.utils import get_logger
    except ImportError:
        pass
    else:
        get_logger("lmdeploy").setLevel("ERROR")
        done.append("lmdeploy")
    return done


def full_fp32_matmuls() -> dict:
    """Run this process's fp32 matmuls and convolutions in full fp32 on CUDA (no TF32); return the flags.

    PyTorch lets cuDNN convolutions use TF32 by default (``torch.backends.cudnn.allow_tf32`` is
    True; InternViT's patch embedding is a convolution), and a library may switch matmuls to TF32
    too. TF32 keeps 10 mantissa bits, so a small fp32 model trained on an Ampere or newer GPU
    follows another path than on a CPU: notebook 02's pre-training stages call this so the
    miniature learns on a GPU what it learns on a CPU. The flags do nothing on a CPU.

    Returns:
        :func:`fp32_matmul_flags` after the change.

    Example:
        >>> full_fp32_matmuls()["cudnn_allow_tf32"]
        False
    """
    torch = need("torch", "full fp32 matmuls")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    return fp32_matmul_flags()


def fp32_matmul_flags() -> dict:
    """The torch flags that decide whether fp32 matmuls and convolutions may use TF32 on CUDA.

    Returns:
        ``{"cuda_matmul_allow_tf32": bool, "cudnn_allow_tf32": bool, "float32_matmul_precision": str}``.

    Example:
        >>> sorted(fp32_matmul_flags())
        ['cuda_matmul_allow_tf32', 'cudnn_allow_tf32', 'float32_matmul_precision']
    """
    torch = need("torch", "reading the fp32 matmul flags")
    return {"cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
            "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
            "float32_matmul_precision": torch.get_float32_matmul_precision()}
