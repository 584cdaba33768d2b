"""XTuner checkpoint -> a HuggingFace model directory LMDeploy and transformers load (``xtuner convert``), and its sizes."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from helpers.settings import REPO_ROOT, XTUNER_SYSTEM_PROMPT
from helpers.train.xtuner_config import config_values
from helpers.train.checkpoints import checkpoint_problem
from helpers.train import finetune as ft  # ft._xtuner_executable: one place to find (and, in tests, fake) xtuner


# --------------------------------------------------------------------------- conversion
def chat_template_config(model_name: str = "internvl2-xtuner-lora") -> dict:
    """LMDeploy ``ChatTemplateConfig`` fields for the format XTuner trained with.

    Load it with ``lmdeploy.ChatTemplateConfig.from_json(path)`` or pass the file to
    ``lmdeploy serve api_server --chat-template``.
    """
    return dict(model_name=model_name, system="<|im_start|>system\n",
                meta_instruction=XTUNER_SYSTEM_PROMPT, eosys="<|im_end|>",
                user="<|im_start|>user\n", eoh="<|im_end|>", assistant="<|im_start|>assistant\n",
                eoa="<|im_end|>", separator="", stop_words=["<|im_end|>"])


def convert(config, checkpoint, out_dir, overwrite: bool = False) -> Path:
    """Merge a LoRA checkpoint into a standalone InternVL2 model directory.

    Runs XTuner's ``convert_to_official`` in the XTuner environment, then completes the
    directory: the course's remote-code ``.py`` files, generation config, XTuner's system
    prompt as the default of ``chat()`` and of the tokenizer's chat template,
    ``chat_template_config.json`` (the exact format the model was trained with, for LMDeploy's
    ``--chat-template``) and ``conversion.json`` (provenance; see :func:`sizes`).

    Args:
        config: the training config.
        checkpoint: an ``iter_N.pth`` of that training (e.g. ``TrainResult.checkpoint``).
        out_dir: new model directory.
        overwrite: replace ``out_dir`` when it already exists. The new model is built beside
            it and swapped in only once complete, so a failed or interrupted conversion leaves
            the earlier model as it was.

    Returns:
        ``out_dir``.

    Example:
        >>> convert("runs/lora.py", "runs/lora/iter_48.pth", "runs/merged")  # doctest: +SKIP
        PosixPath('runs/merged')
    """
    config, checkpoint, out_dir = (Path(config).resolve(), Path(checkpoint).resolve(),
                                   Path(out_dir).resolve())
    problem = checkpoint_problem(checkpoint)
    if problem:
        raise ValueError(f"checkpoint {checkpoint} {problem}")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir} exists; pass overwrite=True to replace it")
    base = Path(config_values(config).get("path", ""))
    xtuner = ft._xtuner_executable()
    # Built beside out_dir and renamed into place when complete: a conversion that fails or is
    # killed never leaves a half-written model under the name notebooks and run records use.
    building = out_dir.parent / f".{out_dir.name}.converting"
    shutil.rmtree(building, ignore_errors=True)  # what a killed conversion left
    building.parent.mkdir(parents=True, exist_ok=True)
    cmd = [ft._xtuner_python(xtuner), "-m", "xtuner.configs.internvl.v1_5.convert_to_official",
           str(config), str(checkpoint), str(building)]
    started = time.time()
    try:
        proc = subprocess.run(cmd, cwd=str(REPO_ROOT), env=ft._child_env(xtuner.parent, None),
                              capture_output=True, text=True)
        if proc.returncode != 0 or not (building / "config.json").exists():
            out = (proc.stdout + proc.stderr).splitlines()[-40:]
            raise RuntimeError(f"convert_to_official failed (exit {proc.returncode}):\n"
                               + "\n".join(out))
        copied = _complete_model_dir(building, base)
        for path in building.iterdir():  # safetensors come out 0600; the model is meant to be shared
            path.chmod(0o644)
        record = dict(config=str(config), checkpoint=str(checkpoint),
                      checkpoint_bytes=_bytes(checkpoint), base_model=str(base),
                      system_prompt=XTUNER_SYSTEM_PROMPT, added=copied,
                      convert_s=round(time.time() - started, 1))
        (building / "conversion.json").write_text(json.dumps(record, ensure_ascii=False, indent=2),
                                                  encoding="utf-8")
        if out_dir.exists():  # overwrite=True (or an empty folder): the old model goes only now
            replaced = out_dir.parent / f".{out_dir.name}.replaced"
            shutil.rmtree(replaced, ignore_errors=True)
            os.replace(out_dir, replaced)
            os.replace(building, out_dir)
            shutil.rmtree(replaced)
        else:
            os.replace(building, out_dir)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return out_dir


def _complete_model_dir(out_dir: Path, base: Path) -> list:
    """Add what convert_to_official leaves out; returns what was copied or written."""
    from helpers.models import copy_remote_code, set_system_prompt

    # convert_to_official writes only the configuration_*.py files. The course's InternVL2
    # code (same structure and parameter names as InternVL2-2B's) also honours a
    # `system_message` in config.json, which set_system_prompt writes below.
    added = [p.name for p in copy_remote_code(out_dir)]
    for name in ("generation_config.json", "preprocessor_config.json"):
        if (base / name).is_file() and not (out_dir / name).exists():
            shutil.copy2(base / name, out_dir / name)
            added.append(name)
    if not (out_dir / "tokenizer_config.json").is_file():
        raise RuntimeError(f"convert_to_official wrote no tokenizer into {out_dir}")
    # The merged model was trained with XTuner's system prompt: make it the default of
    # InternVLChatModel.chat (config.json) and of the tokenizer's chat template (LMDeploy).
    set_system_prompt(out_dir, XTUNER_SYSTEM_PROMPT)
    added += ["config.json:system_message", "tokenizer_config.json:chat_template"]
    (out_dir / "chat_template_config.json").write_text(
        json.dumps(chat_template_config(), ensure_ascii=False, indent=2), encoding="utf-8")
    added.append("chat_template_config.json")
    return added


def _bytes(path: Path) -> int:
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def sizes(model_dir) -> dict:
    """Disk sizes of a converted model and the checkpoint it came from.

    Returns:
        ``checkpoint_bytes`` (the iter_N.pth: LoRA + projector, plus AdamW state when saved),
        ``trainable_bytes`` (only the LoRA + projector tensors; None without torch),
        ``model_bytes`` (merged weights in ``model_dir``), and ``ratio`` = model / trainable.

    Example:
        >>> sizes("runs/merged")["model_bytes"] > 0   # doctest: +SKIP
        True
    """
    model_dir = Path(model_dir)
    record = json.loads((model_dir / "conversion.json").read_text(encoding="utf-8"))
    weights = [p for p in model_dir.iterdir() if p.suffix in (".safetensors", ".bin")]
    model_bytes = sum(p.stat().st_size for p in weights)
    trainable = None
    checkpoint = Path(record["checkpoint"])
    # mmengine writes one file; DeepSpeed a folder whose *model_states.pt holds the module's tensors
    weights_file = checkpoint if checkpoint.is_file() else next(iter(sorted(checkpoint.glob("*model_states.pt"))), None)
    if weights_file is not None:
        try:
            import torch
        except ImportError:
            torch = None
        if torch is not None:
            state = torch.load(weights_file, map_location="cpu", weights_only=False, mmap=True)
            state = state.get("state_dict", state.get("module", state))
            trainable = sum(t.numel() * t.element_size() for t in state.values()
                            if torch.is_tensor(t))
    return dict(checkpoint_bytes=record["checkpoint_bytes"], trainable_bytes=trainable,
                model_bytes=model_bytes,
                ratio=round(model_bytes / trainable, 1) if trainable else None)
