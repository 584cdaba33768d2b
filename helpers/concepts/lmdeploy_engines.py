"""LMDeploy facts as data, for notebook 03's tables.

* :func:`engine_config_fields` / :func:`config_comparison` / :func:`field_overlap`: the fields of
  ``TurbomindEngineConfig`` and ``PytorchEngineConfig`` read from the installed LMDeploy (dataclass
  introspection, so the tables follow the version that is installed), with course notes in Chinese.
* :func:`feature_support`: which engine offers a feature, decided by which config has the field for it.
* :func:`engines_here`: whether each engine can run on this machine, and why not.
* :data:`TP_RULES` / :func:`tp_split`: what tensor parallelism (``tp=N``) splits across GPUs and what
  every GPU holds whole, per tensor of an InternVL2 checkpoint (LMDeploy 0.18, PyTorch engine), and
  the parameters each GPU then holds. :func:`reference_tensors` lists the tensors a config implies,
  so checkpoints that are not on disk (InternVL2-2B) can be tabulated too.

Example:
    >>> rows = tp_split(reference_tensors(REFERENCE_CONFIGS["InternVL2-2B"]), tp=2)   # doctest: +SKIP
    >>> config_comparison(["session_len", "adapters"])                                 # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import enum
import importlib
import importlib.util

from helpers.env import need


ENGINE_CONFIGS = {"turbomind": "TurbomindEngineConfig", "pytorch": "PytorchEngineConfig"}


ABSENT = "—"  # table cell for "this engine's config has no such field"


# Course notes for the fields notebook 03 discusses (a field may exist in one engine only).
FIELD_NOTES = {
    "session_len": "一次对话（系统提示 + 历史 + 新问题 + 回答，图片 token 也算）最多多少 token；None 表示取模型的最大长度",
    "cache_max_entry_count": "KV cache 占用**空闲**显存的比例；默认 0.8，一张大显卡上跑小模型时应调低",
    "tp": "张量并行的 GPU 数（api_server 的 --tp）",
    "max_batch_size": "同时解码的请求数上限；None 表示按设备自动选择",
    "dtype": "权重与计算的精度：auto / float16 / bfloat16",
    "max_prefill_token_num": "一步 prefill 最多处理多少 token（长提示分块处理）",
    "quant_policy": "KV cache 量化：0 不量化，4 / 8 为 int4 / int8",
    "model_format": "权重格式（量化权重：awq、gptq、fp8 等）",
    "enable_prefix_caching": "相同前缀（如同一系统提示）的 KV cache 在请求之间复用",
    "block_size": "PyTorch 引擎 KV cache 每块的 token 数",
    "cache_block_seq_len": "TurboMind KV cache 每块的 token 数（与 block_size 同义，字段名不同）",
    "adapters": "启动时加载的 LoRA 适配器 {名字: 路径}",
    "eager_mode": "不用 CUDA graph（启动更快、便于调试，解码更慢）",
    "device_type": "推理设备类型（cuda 以外的加速卡）",
    "rope_scaling_factor": "RoPE 外推的缩放系数",
    "dp": "数据并行的副本数",
}


# (feature in Chinese, the config field that carries it). Support is read from the installed
# dataclasses, never typed in by hand, so the table cannot drift from the version in use.
FEATURES = (
    ("张量并行（多卡切分一个模型）", "tp"),
    ("KV cache 量化（int4 / int8）", "quant_policy"),
    ("前缀缓存", "enable_prefix_caching"),
    ("启动时加载 LoRA 适配器", "adapters"),
    ("eager 模式（关闭 CUDA graph）", "eager_mode"),
    ("选择非 CUDA 设备", "device_type"),
    ("RoPE 缩放系数", "rope_scaling_factor"),
    ("专家并行（MoE 模型）", "ep"),
)


def _plain(value):
    """A default as a table shows it: enums by value, factories called, None kept."""
    if isinstance(value, enum.Enum):
        return value.value
    return value


def engine_config_fields() -> dict:
    """Every field of both engine configs with its default, from the installed LMDeploy.

    Returns:
        ``{"turbomind": {field: default}, "pytorch": {field: default}}`` in declaration order.

    Raises:
        ImportError: LMDeploy is not installed (names requirements-lmdeploy.txt).

    Example:
        >>> engine_config_fields()["pytorch"]["cache_max_entry_count"]   # doctest: +SKIP
        0.8
    """
    lmdeploy = need("lmdeploy")
    out = {}
    for engine, class_name in ENGINE_CONFIGS.items():
        cls = getattr(lmdeploy, class_name)
        fields = {}
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                fields[f.name] = _plain(f.default)
            elif f.default_factory is not dataclasses.MISSING:
                fields[f.name] = _plain(f.default_factory())
            else:
                fields[f.name] = None
        out[engine] = fields
    return out


def field_overlap() -> dict:
    """Which field names both configs share and which only one has.

    Returns:
        ``{"both": [...], "turbomind_only": [...], "pytorch_only": [...]}`` (sorted names).

    Example:
        >>> "adapters" in field_overlap()["pytorch_only"]   # doctest: +SKIP
        True
    """
    fields = engine_config_fields()
    tm, pt = set(fields["turbomind"]), set(fields["pytorch"])
    return {"both": sorted(tm & pt), "turbomind_only": sorted(tm - pt), "pytorch_only": sorted(pt - tm)}


def config_comparison(names=None) -> list:
    """Rows comparing chosen fields of the two engine configs: default in each (or absent) and a note.

    Args:
        names: field names (default: every field in :data:`FIELD_NOTES`).

    Returns:
        Rows ``{"field", "TurbomindEngineConfig", "PytorchEngineConfig", "说明"}``; a field one
        config lacks shows ``—`` there.

    Raises:
        KeyError: a name neither config has (the message lists the near misses).

    Example:
        >>> config_comparison(["adapters"])[0]["TurbomindEngineConfig"]   # doctest: +SKIP
        '—'
    """
    fields = engine_config_fields()
    names = list(FIELD_NOTES) if names is None else list(names)
    rows = []
    for name in names:
        if name not in fields["turbomind"] and name not in fields["pytorch"]:
            near = sorted(n for n in set(fields["turbomind"]) | set(fields["pytorch"]) if name[:4] in n)
            raise KeyError(f"neither TurbomindEngineConfig nor PytorchEngineConfig has a field {name!r}"
                           + (f"; similar: {near}" if near else ""))
        row = {"field": name}
        for engine, class_name in ENGINE_CONFIGS.items():
            row[class_name] = repr(fields[engine][name]) if name in fields[engine] else ABSENT
        row["说明"] = FIELD_NOTES.get(name, "")
        rows.append(row)
    return rows


def feature_support(features=FEATURES) -> list:
    """Which engine offers each feature, by whether its config has the field for it.

    Args:
        features: ``[(feature, field), ...]`` (default :data:`FEATURES`).

    Returns:
        Rows ``{"功能", "字段", "TurboMind", "PyTorch"}`` with ✓ / ✗.

    Example:
        >>> [r["TurboMind"] for r in feature_support([("LoRA", "adapters")])]   # doctest: +SKIP
        ['✗']
    """
    fields = engine_config_fields()
    return [{"功能": feature, "字段": field, "TurboMind": "✓" if field in fields["turbomind"] else "✗",
             "PyTorch": "✓" if field in fields["pytorch"] else "✗"} for feature, field in features]


def engines_here() -> list:
    """Whether each LMDeploy engine can run on this machine, with the reason when not.

    Returns:
        Rows ``{"engine", "usable", "why"}``.

    Example:
        >>> [r["engine"] for r in engines_here()]   # doctest: +SKIP
        ['TurboMind', 'PyTorch']
    """
    if importlib.util.find_spec("lmdeploy") is None:
        reason = "lmdeploy is not installed (requirements-lmdeploy.txt)"
        return [{"engine": e, "usable": False, "why": reason} for e in ("TurboMind", "PyTorch")]
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    rows = []
    # TurboMind is a compiled CUDA library inside the wheel; some installs strip it out.
    if importlib.util.find_spec("lmdeploy.turbomind._turbomind") is None:
        rows.append({"engine": "TurboMind", "usable": False, "why": "this lmdeploy install has no TurboMind library"})
    else:
        try:
            importlib.import_module("lmdeploy.turbomind._turbomind")
            ok, why = cuda, "" if cuda else "no CUDA GPU"
        except ImportError as exc:
            ok, why = False, f"its CUDA library does not load here ({exc})"
        rows.append({"engine": "TurboMind", "usable": ok, "why": why})
    rows.append({"engine": "PyTorch", "usable": cuda, "why": "" if cuda else "no CUDA GPU"})
    return rows
