"""A replica of the published InternVL2-2B directory, built offline: its file set, keys and tokens.

A learner's ``INTERNVL_MODEL_PATH`` points at OpenGVLab's InternVL2-2B: OpenGVLab's remote code,
InternLM2's sentencepiece tokenizer, and config keys the course's tiny build lacks
(``attn_implementation: flash_attention_2``, ``use_flash_attn: true``, the generic
``PretrainedConfig`` keys). This module builds a directory of that layout so that tests and
GPU rehearsals exercise what a learner's copy exercises:

* ``config.json`` with every key and value InternVL2-2B publishes, sizes ``tiny`` (the course's
  CPU widths) or ``2b`` (InternVL2-2B's shapes); vocabulary 92,553 in both;
* ``generation_config.json``, ``special_tokens_map.json``, ``added_tokens.json``,
  ``tokenizer_config.json`` naming ``InternLM2Tokenizer`` through ``auto_map``;
* ``tokenizer.model``: a sentencepiece BPE model trained here on the course's text, padded to
  InternLM2's 92,544 pieces so that every special token has its published id
  (``<|im_end|>`` 92542, ``<IMG_CONTEXT>`` 92546, ...);
* the course's ``tokenization_internlm2.py`` and its seven model-code files, each marked as the
  replica's own: the loading rule (:mod:`helpers.model_dir`) treats them as a checkpoint's own
  code, exactly as it treats OpenGVLab's;
* random weights (seeded), bf16 ``model.safetensors``.

CLI::

    python -m helpers.replica [--out DIR] [--shapes tiny|2b] [--device cuda]

Example:
    >>> from helpers.replica import build_replica            # doctest: +SKIP
    >>> path = build_replica()                               # doctest: +SKIP
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import struct
import tempfile
import time
from pathlib import Path

from helpers.internvl import REMOTE_CODE_FILES
from helpers.settings import get_settings

REPLICA_VERSION = 1  # bump when the layout, tokenizer or weights change: old replicas are rebuilt
SP_VOCAB = 92544  # InternLM2's sentencepiece pieces; the image tokens come after them
LEARNED_PIECES = 6000  # what the course text supports; the rest are unused fillers
CHAT_SPECIALS = ("<|plugin|>", "<|interpreter|>", "<|action_end|>", "<|action_start|>", "<|im_end|>", "<|im_start|>")
IMAGE_SPECIALS = ("<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>")
VOCAB_SIZE = SP_VOCAB + len(IMAGE_SPECIALS)  # 92,553
MARK = "# Replica of the published InternVL2-2B layout: this checkpoint's own copy of the course's code.\n"
# Generic PretrainedConfig keys that transformers 4.37 wrote into every sub-config of InternVL2-2B.
GENERIC_KEYS = dict(
    add_cross_attention=False, bad_words_ids=None, begin_suppress_tokens=None, chunk_size_feed_forward=0,
    cross_attention_hidden_size=None, decoder_start_token_id=None, diversity_penalty=0.0, do_sample=False,
    early_stopping=False, encoder_no_repeat_ngram_size=0, exponential_decay_length_penalty=None,
    finetuning_task=None, forced_bos_token_id=None, forced_eos_token_id=None,
    id2label={"0": "LABEL_0", "1": "LABEL_1"}, is_decoder=False, is_encoder_decoder=False,
    label2id={"LABEL_0": 0, "LABEL_1": 1}, length_penalty=1.0, max_length=20, min_length=0,
    no_repeat_ngram_size=0, num_beam_groups=1, num_beams=1, num_return_sequences=1, output_attentions=False,
    output_hidden_states=False, output_scores=False, prefix=None, problem_type=None, pruned_heads={},
    remove_invalid_values=False, repetition_penalty=1.0, return_dict=True, return_dict_in_generate=False,
    sep_token_id=None, suppress_tokens=None, task_specific_params=None, temperature=1.0, tf_legacy_loss=False,
    tie_encoder_decoder=False, tokenizer_class=None, top_k=50, top_p=1.0, torchscript=False,
    typical_p=1.0, use_bfloat16=False, transformers_version="4.37.2",
)


# --------------------------------------------------------------------------- tokenizer
def _piece(text: str, score: float, kind: int) -> bytes:
    """One ``ModelProto.pieces`` entry, serialised (field 1 of ModelProto, a SentencePiece message)."""
    raw = text.encode("utf-8")
    body = b"\x0a" + _varint(len(raw)) + raw + b"\x15" + struct.pack("<f", score) + b"\x18" + _varint(kind)
    return b"\x0a" + _varint(len(body)) + body


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def train_sentencepiece(out_file) -> int:
    """Train a BPE sentencepiece model on the course's text and pad it to InternLM2's 92,544 pieces.

    The learned pieces come first (``<unk>`` 0, ``<s>`` 1, ``</s>`` 2, byte fallback), then
    unused fillers, then InternLM2's six chat specials at 92538-92543. Repeated fields of a
    protobuf message concatenate, so the extra pieces are appended to the serialised model.

    Args:
        out_file: where to write ``tokenizer.model``.

    Returns:
        The number of pieces (92,544).
    """
    import sentencepiece as spm

    from helpers.tokenizer import tokenizer_corpus

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(tokenizer_corpus()), model_writer=buf, model_type="bpe", vocab_size=LEARNED_PIECES,
        byte_fallback=True, hard_vocab_limit=False, character_coverage=1.0, split_digits=True, add_dummy_prefix=False,
        remove_extra_whitespaces=False, normalization_rule_name="identity", allow_whitespace_only_pieces=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=2, minloglevel=2,
    )
    proto = buf.getvalue()
    sp = spm.SentencePieceProcessor(model_proto=proto)
    learned = sp.get_piece_size()
    unused, user_defined = 5, 4  # SentencePiece.Type
    extra = b"".join(_piece(f"[UNUSED_TOKEN_{i}]", 0.0, unused) for i in range(SP_VOCAB - len(CHAT_SPECIALS) - learned))
    extra += b"".join(_piece(t, 0.0, user_defined) for t in CHAT_SPECIALS)
    # ModelProto fields 2+ (trainer/normalizer specs) may stand before or after: pieces are field 1,
    # and a parser merges repeated field-1 entries in order wherever they appear.
    padded = proto + extra
    check = spm.SentencePieceProcessor(model_proto=padded)
    if check.get_piece_size() != SP_VOCAB or check.piece_to_id("<|im_end|>") != 92542:
        raise RuntimeError(f"padded sentencepiece model has {check.get_piece_size()} pieces, "
                           f"<|im_end|> at {check.piece_to_id('<|im_end|>')}")
    Path(out_file).write_bytes(padded)
    return SP_VOCAB


def tokenizer_files() -> dict:
    """tokenizer_config.json, special_tokens_map.json and added_tokens.json of the published layout."""
    def entry(token):
        return dict(content=token, lstrip=False, normalized=False, rstrip=False, single_word=False, special=True)

    decoder = {str(i): entry(t) for i, t in enumerate(("<unk>", "<s>", "</s>"))}
    decoder.update({str(SP_VOCAB - len(CHAT_SPECIALS) + i): entry(t) for i, t in enumerate(CHAT_SPECIALS)})
    decoder.update({str(SP_VOCAB + i): entry(t) for i, t in enumerate(IMAGE_SPECIALS)})
    additional = ["<|im_start|>", "<|im_end|>", "<|action_start|>", "<|action_end|>", "<|interpreter|>",
                  "<|plugin|>", *IMAGE_SPECIALS]
    config = dict(added_tokens_decoder=decoder, additional_special_tokens=additional,
                  auto_map={"AutoTokenizer": ["tokenization_internlm2.InternLM2Tokenizer", None]},
                  bos_token="<s>", clean_up_tokenization_spaces=False, eos_token="</s>", model_max_length=4096,
                  pad_token="</s>", tokenizer_class="InternLM2Tokenizer", unk_token="<unk>")
    special_map = dict(additional_special_tokens=additional, bos_token="<s>", eos_token="</s>", pad_token="</s>",
                       unk_token="<unk>")
    added = {t: SP_VOCAB + i for i, t in enumerate(IMAGE_SPECIALS)}
    return {"tokenizer_config.json": config, "special_tokens_map.json": special_map, "added_tokens.json": added}


# --------------------------------------------------------------------------- config
def replica_config(shapes: str = "tiny") -> dict:
    """config.json of the replica: InternVL2-2B's published keys and values, at the given sizes.

    Args:
        shapes: ``"tiny"`` (the course's CPU widths) or ``"2b"`` (InternVL2-2B's).

    Returns:
        The config dict.
    """
    from helpers.reference_configs import REFERENCE_CONFIGS
    from helpers.models import TINY_LLM, TINY_VISION

    if shapes == "2b":
        ref = REFERENCE_CONFIGS["InternVL2-2B"]
        vision_sizes = {k: ref["vision_config"][k] for k in TINY_VISION}
        llm_sizes = {k: ref["llm_config"][k] for k in TINY_LLM}
    elif shapes == "tiny":
        vision_sizes, llm_sizes = dict(TINY_VISION), dict(TINY_LLM)
    else:
        raise ValueError(f"shapes is 'tiny' or '2b', got {shapes!r}")
    vision = dict(GENERIC_KEYS, architectures=["InternVisionModel"], model_type="intern_vit_6b",
                  attention_dropout=0.0, drop_path_rate=0.0, dropout=0.0, hidden_act="gelu", image_size=448,
                  initializer_factor=1.0, initializer_range=0.02, layer_norm_eps=1e-06, norm_type="layer_norm",
                  num_channels=3, patch_size=14, qk_normalization=False, qkv_bias=True, torch_dtype="bfloat16",
                  use_flash_attn=True, **vision_sizes)
    llm = dict(GENERIC_KEYS, architectures=["InternLM2ForCausalLM"], model_type="internlm2",
               _name_or_path="internlm/internlm2-chat-1_8b", attn_implementation="flash_attention_2",
               auto_map={"AutoConfig": "configuration_internlm2.InternLM2Config",
                         "AutoModel": "modeling_internlm2.InternLM2ForCausalLM",
                         "AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM"},
               bias=False, bos_token_id=1, eos_token_id=2, pad_token_id=2, hidden_act="silu",
               initializer_range=0.02, max_position_embeddings=32768, rms_norm_eps=1e-05,
               rope_scaling={"type": "dynamic", "factor": 2.0}, rope_theta=1000000, tie_word_embeddings=False,
               torch_dtype="bfloat16", use_cache=True, vocab_size=VOCAB_SIZE, **llm_sizes)
    return dict(
        _commit_hash=None, architectures=["InternVLChatModel"], model_type="internvl_chat",
        auto_map={"AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
                  "AutoModel": "modeling_internvl_chat.InternVLChatModel",
                  "AutoModelForCausalLM": "modeling_internvl_chat.InternVLChatModel"},
        downsample_ratio=0.5, dynamic_image_size=True, force_image_size=448, llm_config=llm, max_dynamic_patch=12,
        min_dynamic_patch=1, ps_version="v2", select_layer=-1, template="internlm2-chat", torch_dtype="bfloat16",
        transformers_version=None, use_backbone_lora=0, use_llm_lora=0, use_thumbnail=True, vision_config=vision,
    )


# --------------------------------------------------------------------------- weights and build
def _weights(cfg: dict, seed: int, device: str) -> dict:
    import torch

    from helpers.internvl.configuration_internvl_chat import InternVLChatConfig
    from helpers.internvl.modeling_internvl_chat import InternVLChatModel

    with torch.device("meta"):
        model = InternVLChatModel(InternVLChatConfig(**json.loads(json.dumps(cfg))))
    gen = torch.Generator(device=device).manual_seed(seed)
    state = {}
    for name, p in sorted(model.named_parameters()):
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("ls1", "ls2") or (("norm" in name or "mlp1.0." in name) and leaf == "weight"):
            t = torch.ones(p.shape, dtype=torch.bfloat16)
        elif leaf == "bias":
            t = torch.zeros(p.shape, dtype=torch.bfloat16)
        else:
            t = torch.empty(p.shape, dtype=torch.bfloat16, device=device).normal_(0.0, 0.02, generator=gen).cpu()
        state[name] = t.contiguous()
    return state


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def _build_into(tmp: Path, shapes: str, seed: int, device: str) -> None:
    from safetensors.torch import save_file

    cfg = replica_config(shapes)
    _write_json(tmp / "config.json", cfg)
    _write_json(tmp / "generation_config.json", dict(_from_model_config=True, eos_token_id=[92542, 92543],
                                                       transformers_version="4.37.2"))
    train_sentencepiece(tmp / "tokenizer.model")
    for name, data in tokenizer_files().items():
        _write_json(tmp / name, data)
    code = Path(__file__).resolve().parent / "internvl"
    for name in (*REMOTE_CODE_FILES, "tokenization_internlm2.py"):
        (tmp / name).write_text(MARK + (code / name).read_text(encoding="utf-8"), encoding="utf-8")
    save_file(_weights(cfg, seed, device), str(tmp / "model.safetensors"), metadata={"format": "pt"})
    _write_json(tmp / "replica_build.json", dict(version=REPLICA_VERSION, shapes=shapes, seed=seed))
    tmp.chmod(0o755)  # a model directory is meant to be shared (mkdtemp and safetensors make private files)
    for f in tmp.iterdir():
        f.chmod(0o644)


def build_replica(out_dir=None, shapes: str = "tiny", seed: int = 0, device: str = "cpu",
                  overwrite: bool = False) -> Path:
    """Build (or reuse) a published-layout InternVL2-2B replica with random weights.

    Args:
        out_dir: target (default ``<artifacts>/models/internvl2-2b-replica-<shapes>``).
        shapes: ``"tiny"`` or ``"2b"``.
        seed: weight seed.
        device: where weights are drawn (``"cuda"`` makes the 2b build take seconds).
        overwrite: rebuild even when a current build is there.

    Returns:
        The replica directory.

    Example:
        >>> build_replica(shapes="tiny").name                   # doctest: +SKIP
        'internvl2-2b-replica-tiny'
    """
    out = Path(out_dir) if out_dir else get_settings().artifacts / "models" / f"internvl2-2b-replica-{shapes}"
    info = out / "replica_build.json"
    want = dict(version=REPLICA_VERSION, shapes=shapes, seed=seed)
    if not overwrite and info.is_file() and json.loads(info.read_text()) == want:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        _build_into(tmp, shapes, seed, device)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m helpers.replica", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None, help="output directory")
    ap.add_argument("--shapes", choices=("tiny", "2b"), default="tiny")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="where weights are drawn (cuda for the 2b shapes)")
    ap.add_argument("--force", action="store_true", help="rebuild even if a current build exists")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    path = build_replica(args.out, args.shapes, args.seed, args.device, overwrite=args.force)
    size = sum(f.stat().st_size for f in path.iterdir()) / 2**20
    print(f"{path}  {size:.1f} MiB  {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
