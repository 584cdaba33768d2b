"""Troubleshooting lab, serving side: chat templates, stop tokens, image order, system prompts, KV cache.

Each function answers one question from LMDeploy's or XTuner's *own* code on the CPU:
:func:`template_choice` calls ``lmdeploy.model.get_chat_template`` on renamed copies of a
checkpoint's tokenizer files, :func:`lmdeploy_stop_ids` runs LMDeploy's stop-token resolution,
:func:`image_order` its prompt formatter, :func:`xtuner_training_format` reads the training
prompt out of XTuner's installed source. :func:`train_toy_chat` fine-tunes the tiny LLM on four
text answers in seconds, so stopping (or not) can be measured on a model that actually learnt
to end its answers with ``<|im_end|>``.

Example:
    >>> from helpers.troubleshoot.serving import kv_cache_plan
    >>> round(kv_cache_plan(139.8, 4.41e9, 0.8)["kv_cache_gib"], 1)
    108.6
"""
from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

from helpers.settings import REPO_ROOT

TOKENIZER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "tokenizer.model", "added_tokens.json")
TOY_PAIRS = (("红色的肉串，撒着孜然，是什么菜？", "烤羊肉串"), ("透明的虾饺皮，是什么菜？", "虾饺"),
             ("米浆蒸成的卷，是什么菜？", "肠粉"), ("大盘里有鸡块和土豆，是什么菜？", "大盘鸡"))
GIB = 2 ** 30


def _rel(path) -> str:
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return path.name


# --------------------------------------------------------------------------- 2. chat template, stop tokens
def tokenizer_copy(model_dir, out_dir, keep_template: bool = True, keep_generation_config: bool = True) -> Path:
    """Copy a checkpoint's config and tokenizer files (no weights) into ``out_dir``.

    Args:
        model_dir: checkpoint directory.
        out_dir: new directory; its *name* is what LMDeploy's name matching sees.
        keep_template: keep ``chat_template`` (tokenizer_config.json / chat_template.jinja).
        keep_generation_config: copy generation_config.json (its eos_token_id list).

    Returns:
        ``out_dir``.
    """
    src, out = Path(model_dir), Path(out_dir)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    names = TOKENIZER_FILES + (("generation_config.json",) if keep_generation_config else ())
    for name in names + tuple(p.name for p in src.glob("*.py")):  # remote code: LMDeploy reads the processor
        if (src / name).is_file() and not (name == "chat_template.jinja" and not keep_template):
            shutil.copy2(src / name, out / name)
    if not keep_template:
        cfg = json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))
        cfg.pop("chat_template", None)
        (out / "tokenizer_config.json").write_text(json.dumps(cfg, ensure_ascii=False), encoding="utf-8")
    return out


def template_choice(model_dir, question: str = "图中是什么菜？", chat_template_config=None) -> dict:
    """Which chat template LMDeploy 0.18 picks for a directory, and the prompt it renders.

    Args:
        model_dir: checkpoint directory (tokenizer files are enough).
        question: the user turn to render.
        chat_template_config: ``lmdeploy.ChatTemplateConfig`` to name the template (the fix).

    Returns:
        ``{"dir", "has_chat_template", "template" (class name), "prompt", "refused"}``; ``refused``
        is True where the VL pipeline would stop with "please specify chat template" (nothing
        named and only the plain ``base`` template matched, ``lmdeploy/serve/core/vl_async_engine.py``).
    """
    from lmdeploy.model import BaseChatTemplate, get_chat_template

    model_dir = Path(model_dir)
    cfg = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    template = get_chat_template(str(model_dir), chat_template_config, trust_remote_code=True)
    return dict(dir=model_dir.name, has_chat_template=bool(cfg.get("chat_template")) or
                (model_dir / "chat_template.jinja").is_file(),
                template=type(template).__name__,
                prompt=template.messages2prompt([{"role": "user", "content": question}]),
                refused=chat_template_config is None and type(template) is BaseChatTemplate)


def lmdeploy_stop_ids(model_dir) -> dict:
    """The stop token ids LMDeploy 0.18 resolves for a checkpoint, via its own functions.

    ``lmdeploy.utils.get_hf_gen_cfg`` reads generation_config.json (or config.json), and
    ``GenerationConfig.update_from_hf_gen_cfg`` adds its ``eos_token_id`` to the tokenizer's eos.

    Returns:
        ``{token: id}`` sorted by id.
    """
    from lmdeploy.messages import GenerationConfig
    from lmdeploy.utils import get_hf_gen_cfg
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=True)
    gen = GenerationConfig()
    gen.update_from_hf_gen_cfg(get_hf_gen_cfg(str(model_dir), trust_remote_code=True), tok.eos_token_id)
    return {tok.convert_ids_to_tokens(i): i for i in sorted(gen.stop_token_ids)}


def chat_prompt(system: str, question: str) -> str:
    """InternVL2's internlm2-chat prompt for one text question (LMDeploy's rendering, course markers)."""
    from helpers.prompts import internvl2_chat_template

    return internvl2_chat_template(system).chat_template().messages2prompt([{"role": "user", "content": question}])


def train_toy_chat(model_dir, system: str, pairs=TOY_PAIRS, steps: int = 60, lr: float = 3e-3, seed: int = 0):
    """Fine-tune only the LLM of a checkpoint on text pairs that end in ``<|im_end|>`` (seconds on a CPU).

    A stand-in for a real fine-tune: the answers are learnt exactly, and the model learns to
    stop with ``<|im_end|>``, as XTuner's labels teach it.

    Args:
        model_dir: checkpoint (the tiny model).
        system: system prompt of the training prompts.
        pairs: (question, answer) pairs.
        steps: full-batch AdamW steps.
        lr: learning rate.
        seed: torch seed.

    Returns:
        ``(language_model in eval mode, tokenizer, final loss)``.
    """
    import torch

    from helpers.models import load_model

    torch.manual_seed(seed)
    model, tok = load_model(model_dir)
    lm = model.language_model.train()
    end = tok.convert_tokens_to_ids("<|im_end|>")
    batch = []
    for question, answer in pairs:
        prompt = tok(chat_prompt(system, question))["input_ids"]
        target = tok(answer, add_special_tokens=False)["input_ids"] + [end]
        batch.append((torch.tensor([prompt + target]), torch.tensor([[-100] * len(prompt) + target])))
    opt = torch.optim.AdamW(lm.parameters(), lr=lr)
    for _ in range(steps):
        loss = sum(lm(input_ids=ids, labels=lab).loss for ids, lab in batch) / len(batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
    return lm.eval(), tok, float(loss.detach())


def greedy_reply(lm, tok, prompt: str, stop_ids, max_new_tokens: int = 24) -> dict:
    """Greedy decoding that stops only at ``stop_ids``, as a serving engine does.

    Returns:
        ``{"text", "new_tokens", "stopped"}`` (``stopped``: ended on a stop id, not on the limit).
    """
    import torch

    ids = tok(prompt)["input_ids"]
    out = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            nxt = int(lm(input_ids=torch.tensor([ids + out])).logits[0, -1].argmax())
            out.append(nxt)
            if nxt in set(stop_ids):
                break
    return dict(text=tok.decode(out), new_tokens=len(out), stopped=out[-1] in set(stop_ids))


# --------------------------------------------------------------------------- 6. image order
def image_order(question: str, image) -> list:
    """How LMDeploy 0.18 lays out ``(question, image)`` and ``images_first(...)`` for InternVL.

    The pair goes through LMDeploy's ``MultimodalProcessor._re_format_prompt_images_pair``; the
    user turn is then joined in content order the way ``InternVLVisionModel.proc_messages`` does
    (text as is, each image as ``<img>…</img>\\n``).

    Returns:
        Two rows ``{"call", "content_order", "user_turn"}``.
    """
    from lmdeploy.serve.processors.multimodal import MultimodalProcessor
    from lmdeploy.vl.model.internvl import InternVLVisionModel

    from helpers.serve.messages import images_first

    class _Template:
        def messages2prompt(self, messages, **kwargs):
            return messages[0]["content"]

    rows = []
    for call, prompt in (("pipe((question, image))", (question, image)),
                         ("pipe(images_first((question, image)))", images_first((question, image)))):
        message = MultimodalProcessor._re_format_prompt_images_pair(prompt)
        kinds = [c["type"] for c in message["content"]]
        content = [c if c["type"] == "text" else {"type": "image"} for c in message["content"]]
        stub = SimpleNamespace(image_token="<IMG_CONTEXT×N>")
        user, _ = InternVLVisionModel.proc_messages(stub, [{"role": "user", "content": content}], _Template())
        rows.append(dict(call=call, content_order=kinds, user_turn=user))
    return rows


# --------------------------------------------------------------------------- 7. system prompt
def xtuner_training_format(venv=None) -> dict:
    """XTuner 0.2.0's InternLM2 prompt pieces, read from its installed ``internvl_dataset.py``.

    The ``InternLM2ForCausalLM`` branch of ``InternVL_V1_5_Dataset.__init__`` sets
    ``self._system`` and overrides ``template["SYSTEM"]`` / ``["INSTRUCTION"]``; their string
    literals are evaluated with ``ast`` (nothing is imported).

    Args:
        venv: the XTuner environment (default: ``.venv-xtuner`` of the repository).

    Returns:
        ``{"system", "SYSTEM", "INSTRUCTION", "source"}``.
    """
    venv = Path(venv or REPO_ROOT / ".venv-xtuner")
    path = next(iter(sorted(venv.glob("lib/python*/site-packages/xtuner/dataset/internvl_dataset.py"))), None)
    if path is None:
        raise FileNotFoundError(f"xtuner is not installed in {venv.name}: install requirements-xtuner.txt")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "InternLM2ForCausalLM" in ast.unparse(node.test):
            for stmt in node.body:
                if isinstance(stmt, ast.Assign):
                    target = ast.unparse(stmt.targets[0])
                    key = {"self._system": "system", "self.template['SYSTEM']": "SYSTEM",
                           "self.template['INSTRUCTION']": "INSTRUCTION"}.get(target)
                    if key:
                        found[key] = ast.literal_eval(stmt.value)
    return dict(found, source=str(path.relative_to(path.parents[2])))


def training_prompt(question: str, fmt: dict) -> str:
    """The text prompt XTuner trains on for one question (before tokenisation)."""
    return fmt["SYSTEM"].format(system=fmt["system"]) + fmt["INSTRUCTION"].format(input=question)


# --------------------------------------------------------------------------- 8. KV cache
def kv_cache_plan(card_gib: float, weight_bytes: float, ratio: float, kv_bytes_per_token: int | None = None,
                  need_tokens: int | None = None) -> dict:
    """What ``cache_max_entry_count=ratio`` reserves: a share of the memory *left after the weights*.

    Args:
        card_gib: the card's memory in GiB.
        weight_bytes: model weights on the card.
        ratio: ``cache_max_entry_count``.
        kv_bytes_per_token: bytes of one token's keys and values (``helpers.concepts.memory``).
        need_tokens: tokens the workload keeps at once (e.g. session_len x sessions).

    Returns:
        ``free_gib``, ``kv_cache_gib``, ``expected_in_use_gib`` and, given the per-token size,
        ``tokens`` the cache holds and ``times_needed``.
    """
    free = card_gib - weight_bytes / GIB
    out = dict(ratio=ratio, free_gib=free, kv_cache_gib=ratio * free,
               expected_in_use_gib=weight_bytes / GIB + ratio * free)
    if kv_bytes_per_token:
        out["tokens"] = int(ratio * free * GIB // kv_bytes_per_token)
        if need_tokens:
            out["times_needed"] = out["tokens"] / need_tokens
    return out


def recorded_serving_memory(results_dir=None) -> list:
    """GPU memory in use per LMDeploy variant, from the recorded serving benchmark (benchmarks/results)."""
    from lmdeploy import PytorchEngineConfig

    default = PytorchEngineConfig().cache_max_entry_count  # the "default" variant sets no ratio
    results = Path(results_dir or REPO_ROOT / "benchmarks" / "results")
    rows = []
    for path in sorted(results.glob("serving-2*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        for row in data.get("rows", []):
            if row.get("engine") == "lmdeploy" and "gpu_used_gib" in row:
                rows.append(dict(run=path.name, card=data["environment"]["card"],
                                 card_gib=data["environment"]["card_memory_gib"],
                                 cache_max_entry_count=row.get("knobs", {}).get("cache_max_entry_count", default),
                                 gpu_used_gib=row["gpu_used_gib"]))
    return rows
