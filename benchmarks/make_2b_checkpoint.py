"""Build an InternVL2-2B-shaped checkpoint with random weights, for speed benchmarks only.

Shapes are InternVL2-2B's (``helpers.reference_configs.REFERENCE_CONFIGS["InternVL2-2B"]``):
InternViT-300M-448px (24 layers, hidden 1024, 16 heads, MLP 4096) + InternLM2-1.8B (24 layers,
hidden 2048, 16 heads / 8 KV heads, MLP 8192, vocabulary 92,553), max_dynamic_patch 12, bf16,
2.21 B parameters. The model code is the project's own (:mod:`helpers.internvl`, saved as
remote code), the tokenizer files are the tiny checkpoint's (``make tiny``).

The tiny tokenizer has ~8k tokens, fewer than the 92,553 embedding rows: rows past the
tokenizer are never looked up by the input (they still cost memory and the LM head still
computes logits for them, as in the real model), and every special token id (``<|im_end|>``,
``<IMG_CONTEXT>``, ...) stays the tiny tokenizer's, all well inside the table. Weights are
random: use the checkpoint for **speed only**; its answers mean nothing.

Weights are drawn on the GPU (N(0, 0.02), norms 1, biases 0), so the build takes seconds
plus the write of ~4.4 GB.

Usage:
    python benchmarks/make_2b_checkpoint.py --out artifacts/models/internvl2-2b-random
    python benchmarks/make_2b_checkpoint.py --smoke     # CPU, tiny widths, same code path
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from helpers.reference_configs import REFERENCE_CONFIGS  # noqa: E402
from helpers.concepts.architecture import count_parameters
from helpers.models import copy_remote_code, tiny_config  # noqa: E402
from helpers.settings import get_settings  # noqa: E402

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
                   "chat_template.jinja", "tokenizer.model", "added_tokens.json")
SIZE_KEYS_VISION = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
SIZE_KEYS_LLM = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "num_key_value_heads", "vocab_size")
# --smoke: the 2B layout at widths a CPU builds in a second (vocabulary kept at 92,553).
SMOKE_VISION = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2)
SMOKE_LLM = dict(hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1)


def config_2b(tokenizer_vocab: int, smoke: bool = False) -> dict:
    """config.json: the tiny model's keys with InternVL2-2B's sizes (or smoke widths).

    Args:
        tokenizer_vocab: size of the tokenizer that will be shipped (checked < vocab_size).
        smoke: tiny widths for a CPU test of the same code path.

    Returns:
        The config dict.
    """
    ref = REFERENCE_CONFIGS["InternVL2-2B"]
    cfg = tiny_config(tokenizer_vocab)
    cfg["vision_config"].update({k: ref["vision_config"][k] for k in SIZE_KEYS_VISION})
    cfg["llm_config"].update({k: ref["llm_config"][k] for k in SIZE_KEYS_LLM})
    if smoke:
        cfg["vision_config"].update(SMOKE_VISION)
        cfg["llm_config"].update(SMOKE_LLM)
    cfg["max_dynamic_patch"] = ref["max_dynamic_patch"]
    if tokenizer_vocab > cfg["llm_config"]["vocab_size"]:
        raise ValueError(f"tokenizer has {tokenizer_vocab} tokens, more than the 2B embedding "
                         f"table ({cfg['llm_config']['vocab_size']})")
    cfg["random_weights_note"] = ("speed benchmark checkpoint: random weights, tiny tokenizer "
                                  f"({tokenizer_vocab} tokens; embedding rows beyond it are never used)")
    return cfg


def _tokenizer_vocab(tiny: Path) -> int:
    cfg = json.loads((tiny / "config.json").read_text(encoding="utf-8"))
    return int(cfg["llm_config"]["vocab_size"])


def build(out_dir, tiny_dir=None, device: str | None = None, seed: int = 0, smoke: bool = False) -> dict:
    """Build the checkpoint into ``out_dir`` (replaced if it exists).

    Args:
        out_dir: target directory.
        tiny_dir: tiny checkpoint whose tokenizer files are copied (default: settings).
        device: where weights are drawn ("cuda" when available).
        seed: weight seed.
        smoke: tiny widths (CPU test).

    Returns:
        ``{"path", "parameters", "seconds", "bytes"}``.

    Example:
        >>> build("artifacts/models/internvl2-2b-random")   # doctest: +SKIP
    """
    import torch
    from safetensors.torch import save_file

    from helpers.internvl.configuration_internvl_chat import InternVLChatConfig
    from helpers.internvl.modeling_internvl_chat import InternVLChatModel

    t0 = time.perf_counter()
    tiny = Path(tiny_dir) if tiny_dir else get_settings().tiny_model_path
    if not (tiny / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{tiny}/tokenizer.json missing: run `python -m helpers.models build-tiny` first")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    cfg = config_2b(_tokenizer_vocab(tiny), smoke)
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    old_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("meta"):
            model = InternVLChatModel(InternVLChatConfig(**json.loads(json.dumps(cfg))))
    finally:
        torch.set_default_dtype(old_dtype)
    gen = torch.Generator(device=device).manual_seed(seed)
    state = {}
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("ls1", "ls2") or (("norm" in name or "mlp1.0." in name) and leaf == "weight"):
            t = torch.ones(p.shape, dtype=torch.bfloat16, device=device)
        elif leaf == "bias":
            t = torch.zeros(p.shape, dtype=torch.bfloat16, device=device)
        else:
            t = torch.empty(p.shape, dtype=torch.bfloat16, device=device).normal_(0.0, 0.02, generator=gen)
        state[name] = t.cpu()
    n_params = sum(t.numel() for t in state.values())
    expected = count_parameters(cfg)["total"]
    if n_params != expected:
        raise RuntimeError(f"built {n_params} parameters, the config counts {expected}")
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    for name in TOKENIZER_FILES:
        if (tiny / name).is_file():
            shutil.copyfile(tiny / name, out / name)
    copy_remote_code(out)
    size = sum(f.stat().st_size for f in out.iterdir())
    return {"path": str(out), "parameters": n_params, "seconds": round(time.perf_counter() - t0, 1), "bytes": size}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None, help="output dir (default artifacts/models/internvl2-2b-random, "
                                                "or ...-smoke with --smoke)")
    ap.add_argument("--tiny", default=None, help="tiny checkpoint with the tokenizer (default: settings)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="tiny widths on CPU (tests the code path)")
    args = ap.parse_args(argv)
    S = get_settings()
    out = args.out or S.artifacts / "models" / ("internvl2-2b-random-smoke" if args.smoke else "internvl2-2b-random")
    info = build(out, args.tiny, seed=args.seed, smoke=args.smoke)
    print(f"{info['path']}: {info['parameters'] / 1e9:.3f} B parameters, {info['bytes'] / 1e9:.2f} GB, "
          f"{info['seconds']} s (random weights: speed only)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
