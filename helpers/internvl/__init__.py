"""The course's own compact implementation of InternVL2 (InternViT + MLP projector + InternLM2).

These files are written as Hugging Face "remote code": they import each other only
relatively, so :func:`helpers.models.copy_remote_code` can copy them next to a checkpoint's
``config.json`` and ``AutoModel.from_pretrained(dir, trust_remote_code=True)`` loads them.
Parameter names and config keys equal the official InternVL2-2B checkpoint's, so XTuner and
LMDeploy treat a checkpoint built with them like the real one.

Files (``REMOTE_CODE_FILES``): three configuration modules, three modeling modules and the
prompt template (``conversation.py``). Classes are importable from here lazily, so
``import helpers.internvl`` does not import torch.

Example:
    >>> from helpers.internvl import REMOTE_CODE_FILES
    >>> "modeling_internvl_chat.py" in REMOTE_CODE_FILES
    True
"""
import importlib

REMOTE_CODE_FILES = (
    "configuration_intern_vit.py",
    "configuration_internlm2.py",
    "configuration_internvl_chat.py",
    "conversation.py",
    "modeling_intern_vit.py",
    "modeling_internlm2.py",
    "modeling_internvl_chat.py",
)

_LAZY = {
    "InternVisionConfig": "configuration_intern_vit",
    "InternLM2Config": "configuration_internlm2",
    "InternVLChatConfig": "configuration_internvl_chat",
    "InternVisionModel": "modeling_intern_vit",
    "InternLM2Model": "modeling_internlm2",
    "InternLM2ForCausalLM": "modeling_internlm2",
    "InternVLChatModel": "modeling_internvl_chat",
    "get_conv_template": "conversation",
}

__all__ = ["REMOTE_CODE_FILES", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
