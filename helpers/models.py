"""Build, load and prepare InternVL2 checkpoints: the offline tiny model and its tokenizer.

The tiny checkpoint (``make tiny``) has InternVL2-2B's exact structure, parameter names,
config keys, prompt format and special tokens, at widths a 2-core CPU trains in well under a
second per 7-tile sample. Its weights are random (seeded); its tokenizer is a byte-level BPE
trained offline on the course's own Chinese and English text. It is the model code in
:mod:`helpers.internvl`, copied next to the weights as Hugging Face remote code.

CLI::

    python -m helpers.models build-tiny [--out DIR] [--seed N] [--force]

Example:
    >>> from helpers.models import build_tiny, load_model       # doctest: +SKIP
    >>> path = build_tiny()                                      # doctest: +SKIP
    >>> model, tok = load_model(path)                            # doctest: +SKIP
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
import warnings
import zlib
from pathlib import Path

from helpers.env import need
from helpers.internvl import REMOTE_CODE_FILES
from helpers.model_dir import write_json
from helpers.settings import get_settings
from helpers.tokenizer import ADDED_SPECIAL, make_chat_template, train_tokenizer


BUILD_VERSION = 6  # bump when the tiny model's sizes, init, tokenizer or remote code change: old builds are rebuilt


# InternVL2-2B's structure at tiny widths, sized so that one training step on a 7-tile sample
# (7 x 1025 ViT tokens, ~1,800 LLM tokens) takes ~0.3-0.6 s on a 2-core CPU in float32.
# LLM head_dim 64 (128 / 2): LMDeploy's CUDA-graph block table overflows with head_dim 32 on big
# GPUs. 2 query heads share 1 KV head: the same group size (2) as InternVL2-2B's 16/8.
# 3 x 128: the narrowest ViT whose stage-0b features carried the fine-tuned model past 80 % on the val
# photos (2 x 64: 75 %, 4 x 64: 79 %; measured through notebooks 02-06's pipeline on the CPU).
TINY_VISION = dict(hidden_size=128, num_attention_heads=2, intermediate_size=512, num_hidden_layers=3)


TINY_LLM = dict(hidden_size=128, num_attention_heads=2, num_key_value_heads=1, intermediate_size=512,
                num_hidden_layers=2)


TINY_MAX_DYNAMIC_PATCH = 6


# --------------------------------------------------------------------------- config and weights
def tiny_config(vocab_size: int) -> dict:
    """config.json of the tiny model: InternVL2-2B's keys, tiny sizes.

    Args:
        vocab_size: tokenizer size (learned + added tokens).

    Returns:
        The config dict.
    """
    vision = dict(architectures=["InternVisionModel"], model_type="intern_vit_6b", num_channels=3, patch_size=14,
                  image_size=448, qkv_bias=True, qk_normalization=False, norm_type="layer_norm", layer_norm_eps=1e-6,
                  hidden_act="gelu", use_flash_attn=False, dropout=0.0, attention_dropout=0.0, drop_path_rate=0.0,
                  initializer_range=0.02, initializer_factor=1.0, torch_dtype="bfloat16", **TINY_VISION)
    llm = dict(architectures=["InternLM2ForCausalLM"], model_type="internlm2",
               auto_map={"AutoConfig": "configuration_internlm2.InternLM2Config",
                         "AutoModel": "modeling_internlm2.InternLM2ForCausalLM",
                         "AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM"},
               vocab_size=vocab_size, hidden_act="silu", max_position_embeddings=32768, rms_norm_eps=1e-5,
               initializer_range=0.02, rope_theta=1000000, rope_scaling={"type": "dynamic", "factor": 2.0},
               bias=False, attn_implementation="sdpa", use_cache=True, tie_word_embeddings=False,
               bos_token_id=1, eos_token_id=2, pad_token_id=2, torch_dtype="bfloat16", **TINY_LLM)
    return dict(
        architectures=["InternVLChatModel"], model_type="internvl_chat",
        auto_map={"AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
                  "AutoModel": "modeling_internvl_chat.InternVLChatModel",
                  "AutoModelForCausalLM": "modeling_internvl_chat.InternVLChatModel"},
        template="internlm2-chat", force_image_size=448, downsample_ratio=0.5, ps_version="v2", select_layer=-1,
        dynamic_image_size=True, use_thumbnail=True, min_dynamic_patch=1, max_dynamic_patch=TINY_MAX_DYNAMIC_PATCH,
        use_backbone_lora=0, use_llm_lora=0, tie_word_embeddings=False, torch_dtype="bfloat16",
        vision_config=vision, llm_config=llm,
    )


def seeded_state_dict(model, seed: int) -> dict:
    """Deterministic random weights for every parameter of ``model``, in bfloat16.

    Each tensor draws from its own generator seeded by (seed, parameter name), so values do not
    depend on module construction order. Norm weights and layer scales are 1, biases 0,
    everything else N(0, 0.02).
    """
    import torch

    out = {}
    for name, p in sorted(model.named_parameters()):
        leaf = name.rsplit(".", 1)[-1]
        is_norm = any(k in name for k in ("norm", "mlp1.0."))
        if leaf in ("ls1", "ls2") or (is_norm and leaf == "weight"):
            t = torch.ones(p.shape)
        elif leaf == "bias":
            t = torch.zeros(p.shape)
        else:
            g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
            t = torch.randn(p.shape, generator=g) * 0.02
        out[name] = t.to(torch.bfloat16).contiguous()
    return out


def copy_remote_code(dst_dir) -> list:
    """Copy the InternVL2 remote-code files into a checkpoint directory.

    Use it on any directory that must load with ``trust_remote_code=True``: the tiny build and
    XTuner's ``convert_to_official`` output (which lacks the modeling files).

    Args:
        dst_dir: checkpoint directory (must exist).

    Returns:
        The copied paths.

    Example:
        >>> copy_remote_code("artifacts/runs/tiny/merged")           # doctest: +SKIP
    """
    dst = Path(dst_dir)
    if not dst.is_dir():
        raise FileNotFoundError(f"copy_remote_code: {dst} is not a directory")
    src = Path(__file__).resolve().parent / "internvl"
    return [Path(shutil.copyfile(src / name, dst / name)) for name in REMOTE_CODE_FILES]


def set_system_prompt(model_dir, system_prompt: str) -> None:
    """Make a checkpoint default to ``system_prompt`` in both engines.

    Writes ``system_message`` into config.json (read by ``InternVLChatModel.system_message``)
    and the default of the chat template in tokenizer_config.json (used by LMDeploy). A model
    fine-tuned with XTuner should be served with ``XTUNER_SYSTEM_PROMPT``.

    Args:
        model_dir: checkpoint directory with config.json and tokenizer_config.json.
        system_prompt: the new default system prompt.
    """
    model_dir = Path(model_dir)
    for name in ("config.json", "tokenizer_config.json"):
        if not (model_dir / name).is_file():
            raise FileNotFoundError(f"set_system_prompt: {model_dir / name} does not exist")
    cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    cfg["system_message"] = system_prompt
    write_json(model_dir / "config.json", cfg)
    template = make_chat_template(system_prompt)
    tok_cfg = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    tok_cfg["chat_template"] = template
    write_json(model_dir / "tokenizer_config.json", tok_cfg)
    if (model_dir / "chat_template.jinja").is_file():  # transformers 5 saves it there, and prefers it
        (model_dir / "chat_template.jinja").write_text(template, encoding="utf-8")


def _build_into(tmp: Path, seed: int) -> None:
    torch = need("torch")
    safetensors_torch = need("safetensors.torch")
    vocab = train_tokenizer(tmp)
    cfg_dict = tiny_config(vocab)
    write_json(tmp / "config.json", cfg_dict)
    im_end = vocab - len(ADDED_SPECIAL) + ADDED_SPECIAL.index("<|im_end|>")
    write_json(tmp / "generation_config.json", dict(bos_token_id=1, eos_token_id=[im_end, 2], pad_token_id=2))
    copy_remote_code(tmp)
    from helpers.internvl.configuration_internvl_chat import InternVLChatConfig
    from helpers.internvl.modeling_internvl_chat import InternVLChatModel

    with torch.device("meta"):  # shapes only; values come from seeded_state_dict
        model = InternVLChatModel(InternVLChatConfig(**cfg_dict))
    state = seeded_state_dict(model, seed)
    safetensors_torch.save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    write_json(tmp / "tiny_build.json", dict(build_version=BUILD_VERSION, seed=seed))
    tmp.chmod(0o755)  # mkdtemp makes it private; the checkpoint is meant to be shared
    for f in tmp.iterdir():
        f.chmod(0o644)


def build_tiny(out_dir=None, seed: int = 0, overwrite: bool = False) -> Path:
    """Build the tiny InternVL2 checkpoint (deterministic from ``seed``; same seed, same bytes).

    Args:
        out_dir: target directory (default: ``get_settings().tiny_model_path``).
        seed: weight seed.
        overwrite: rebuild even when a current build with this seed is there.

    Returns:
        The checkpoint directory.

    Raises:
        FileExistsError: out_dir holds something that is not a tiny build and overwrite is False.

    Example:
        >>> path = build_tiny()                                      # doctest: +SKIP
        >>> sorted(p.name for p in path.iterdir())[:3]               # doctest: +SKIP
        ['config.json', 'configuration_intern_vit.py', 'configuration_internlm2.py']
    """
    out = Path(out_dir) if out_dir is not None else get_settings().tiny_model_path
    out.parent.mkdir(parents=True, exist_ok=True)
    # Both course environments may ask for the model at once (e.g. two pytest runs): one builds,
    # the other waits and then finds the finished build.
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        try:
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)
        except ImportError:  # not POSIX: no lock, the atomic rename below still applies
            pass
        return _build_locked(out, seed, overwrite)


def _build_locked(out: Path, seed: int, overwrite: bool) -> Path:
    info_file = out / "tiny_build.json"
    if out.exists() and not overwrite:
        if info_file.is_file():
            info = json.loads(info_file.read_text())
            if info == dict(build_version=BUILD_VERSION, seed=seed) and (out / "model.safetensors").is_file():
                _refresh_remote_code(out)
                return out
        elif any(out.iterdir()):
            raise FileExistsError(f"{out} exists and is not a tiny build; pass overwrite=True (--force) to replace it")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        _build_into(tmp, seed)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)  # atomic: a parallel reader sees the old or the new build, never half of one
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _refresh_remote_code(out: Path) -> None:
    """Keep a build's model code in step with helpers/internvl (code fixes need no weight rebuild)."""
    src = Path(__file__).resolve().parent / "internvl"
    for name in REMOTE_CODE_FILES:
        if not (out / name).is_file() or (out / name).read_bytes() != (src / name).read_bytes():
            copy_remote_code(out)
            return


def load_model(path=None, device: str = "cpu", dtype=None):
    """Load an InternVL2 checkpoint (tiny, converted or the published InternVL2-2B) with its tokenizer.

    Follows the course's loading rule (:mod:`helpers.model_dir`): the checkpoint's weights,
    config and tokenizer; its own model code where the installed transformers runs it, else the
    course's implementation through a view under ``artifacts/model-views/``.

    Args:
        path: checkpoint directory (default: ``get_settings().model_path``).
        device: "cpu" or "cuda".
        dtype: torch dtype; default float32 on CPU, bfloat16 on CUDA.

    Returns:
        (model in eval mode with ``img_context_token_id`` set, tokenizer).

    Raises:
        FileNotFoundError: no config.json at ``path``.
        helpers.model_dir.UnsupportedCheckpoint: not InternVL2 with an InternLM2 LLM.

    Example:
        >>> model, tok = load_model("artifacts/models/internvl2-tiny")   # doctest: +SKIP
        >>> model.chat(tok, None, "你好", dict(max_new_tokens=8))          # doctest: +SKIP
    """
    from helpers.model_dir import runnable_dir

    torch = need("torch")
    transformers = need("transformers")
    path = runnable_dir(Path(path) if path is not None else get_settings().model_path)
    if dtype is None:
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    dtype_key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    with warnings.catch_warnings():
        # timm, imported by InternViT's remote code, warns about torch.jit.interface at import: nothing a
        # learner can act on, and the warning line names the environment's absolute path
        warnings.filterwarnings("ignore", message=".*torch.jit.interface", category=FutureWarning)
        model = transformers.AutoModel.from_pretrained(str(path), trust_remote_code=True, low_cpu_mem_usage=True,
                                                       **{dtype_key: dtype})
    model = model.to(device).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), trust_remote_code=True)
    model.img_context_token_id = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    return model, tokenizer


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.models", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build-tiny", help="build the tiny InternVL2 checkpoint")
    b.add_argument("--out", default=None, help="output directory (default: settings.tiny_model_path)")
    b.add_argument("--seed", type=int, default=get_settings().seed)
    b.add_argument("--force", action="store_true", help="rebuild even if a current build exists")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    path = build_tiny(args.out, seed=args.seed, overwrite=args.force)
    print(f"{path}  {_dir_size(path) / 2**20:.1f} MiB  {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
