"""Configuration of the whole InternVL2 chat model: vision encoder + projector + LLM.

``config.json`` of an InternVL2 checkpoint is this object serialised: the top level holds the
image options (``force_image_size``, ``downsample_ratio``, ``dynamic_image_size``...), and
``vision_config`` / ``llm_config`` hold the two towers. XTuner's ``InternVL_V1_5_Dataset`` and
LMDeploy read these keys by name.

Example:
    >>> cfg = InternVLChatConfig(vision_config={"hidden_size": 64, "num_attention_heads": 2},
    ...                          llm_config={"hidden_size": 256, "num_attention_heads": 4})
    >>> cfg.llm_config.architectures
    ['InternLM2ForCausalLM']
"""
import copy
import importlib

from transformers.configuration_utils import PretrainedConfig

from .configuration_intern_vit import InternVisionConfig
from .configuration_internlm2 import InternLM2Config


class InternVLChatConfig(PretrainedConfig):
    """Configuration of :class:`~.modeling_internvl_chat.InternVLChatModel`.

    Args:
        vision_config: dict (or :class:`InternVisionConfig`) for the vision encoder.
        llm_config: dict (or :class:`InternLM2Config`) for the language model; its
            ``architectures`` must be ``["InternLM2ForCausalLM"]`` (the only LLM this code has).
        use_backbone_lora, use_llm_lora: LoRA ranks baked into the checkpoint (0: none).
        select_layer: which vision layer feeds the projector (-1: the last).
        force_image_size: tile side in pixels (448); None means ``vision_config.image_size``.
        downsample_ratio: pixel-shuffle ratio; 0.5 turns 32x32 patches into 16x16 = 256 tokens.
        template: name of the conversation template (``"internlm2-chat"``).
        dynamic_image_size: split images into tiles (InternVL 1.5+ preprocessing).
        use_thumbnail: add a whole-image tile when an image is split.
        ps_version: pixel-shuffle variant; "v2" is the one InternVL2 was trained with.
        min_dynamic_patch, max_dynamic_patch: fewest / most tiles per image.
    """

    model_type = "internvl_chat"
    is_composition = True
    has_no_defaults_at_init = True
    sub_configs = {"vision_config": InternVisionConfig, "llm_config": InternLM2Config}

    def __init__(
        self,
        vision_config=None,
        llm_config=None,
        use_backbone_lora=0,
        use_llm_lora=0,
        select_layer=-1,
        force_image_size=None,
        downsample_ratio=0.5,
        template=None,
        dynamic_image_size=False,
        use_thumbnail=False,
        ps_version="v1",
        min_dynamic_patch=1,
        max_dynamic_patch=6,
        **kwargs,
    ):
        self.vision_config = _as_config(vision_config, InternVisionConfig)
        self.llm_config = _as_config(llm_config, InternLM2Config)
        if not self.llm_config.architectures:
            self.llm_config.architectures = ["InternLM2ForCausalLM"]
        arch = self.llm_config.architectures[0]
        if arch != "InternLM2ForCausalLM":
            raise ValueError(
                f"llm_config.architectures[0] is {arch!r}; this implementation only has InternLM2ForCausalLM "
                "(InternVL2-1B/4B use other LLMs and need the official remote code)"
            )
        if ps_version not in ("v1", "v2"):
            raise ValueError(f"ps_version must be 'v1' or 'v2', got {ps_version!r}")
        self.use_backbone_lora = use_backbone_lora
        self.use_llm_lora = use_llm_lora
        self.select_layer = select_layer
        self.force_image_size = force_image_size
        self.downsample_ratio = downsample_ratio
        self.template = template
        self.dynamic_image_size = dynamic_image_size
        self.use_thumbnail = use_thumbnail
        self.ps_version = ps_version
        self.min_dynamic_patch = min_dynamic_patch
        self.max_dynamic_patch = max_dynamic_patch
        # InternVL2 never shares the LLM's input and output embeddings; a config.json without the key
        # (the published layout has it only in llm_config) must not fall back to PretrainedConfig's True.
        kwargs.setdefault("tie_word_embeddings", False)
        # Last, so that transformers 5 (which walks `sub_configs` inside __init__) finds them set.
        super().__init__(**kwargs)

    def __reduce__(self):
        # transformers runs this file again when a process that already unpickled one of these
        # configs asks for the class by name (LMDeploy's tensor-parallel workers do): the class is
        # then a new object and plain pickling of the old instance fails ("not the same object").
        # Pickling by module and class name, resolved when loaded, survives the second run.
        return _restore, (type(self).__module__, type(self).__name__, self.__dict__)

    def to_dict(self):
        """Serialise with both sub-configs written out in full (XTuner reads them as dicts)."""
        out = copy.deepcopy(super().to_dict())
        out["vision_config"] = self.vision_config.to_dict()
        out["llm_config"] = self.llm_config.to_dict()
        out["model_type"] = self.model_type
        for sub in ("vision_config", "llm_config"):
            out[sub].pop("transformers_version", None)
        return out


def _as_config(value, cls):
    """Accept a dict, a config object or None (the class defaults)."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, PretrainedConfig):
        return cls(**value.to_dict())
    if isinstance(value, dict):
        return cls(**value)
    raise TypeError(f"{cls.__name__} must be built from a dict, got {type(value).__name__}")


def _restore(module_name, class_name, state):
    """Rebuild a pickled config with the class its module holds now (see ``__reduce__``)."""
    cls = getattr(importlib.import_module(module_name), class_name)
    obj = cls.__new__(cls)
    obj.__dict__.update(state)
    return obj
