"""The prompt template InternVL2-2B was trained with ("internlm2-chat", MPT style).

A conversation renders as::

    <|im_start|>system\\n{system}<|im_end|><|im_start|>user\\n{q1}<|im_end|><|im_start|>assistant\\n{a1}<|im_end|>
    <|im_start|>user\\n{q2}<|im_end|><|im_start|>assistant\\n

(one line; the break above is only for reading). Note there is no newline after
``<|im_end|>``: that is what InternVL2's own template and XTuner 0.2.0's fine-tuning data
produce (InternLM2's plain chat template differs here). Generation stops at ``<|im_end|>``.

Example:
    >>> conv = get_conv_template("internlm2-chat")
    >>> conv.system_message = "S"
    >>> conv.append_message(conv.roles[0], "Hi")
    >>> conv.append_message(conv.roles[1], None)
    >>> conv.get_prompt()
    '<|im_start|>system\\nS<|im_end|><|im_start|>user\\nHi<|im_end|><|im_start|>assistant\\n'
"""
import copy
from dataclasses import dataclass, field


@dataclass
class Conversation:
    """A system message plus alternating (role, message) turns, rendered MPT style.

    MPT style: ``system_template.format(system_message) + sep``, then for every turn
    ``role + message + sep``; the final turn with message None leaves ``role`` open for the
    model to complete.
    """

    name: str
    system_template: str = "{system_message}"
    system_message: str = ""
    roles: tuple = ("user", "assistant")
    sep: str = "\n"
    stop_str: tuple = ()  # strings that end an answer, besides the tokenizer's EOS
    messages: list = field(default_factory=list)

    def append_message(self, role: str, message):
        """Add a turn; ``message=None`` marks the turn the model should write."""
        if role not in self.roles:
            raise ValueError(f"role must be one of {self.roles}, got {role!r}")
        self.messages.append([role, message])

    def get_prompt(self) -> str:
        """The prompt string for everything appended so far."""
        parts = [self.system_template.format(system_message=self.system_message) + self.sep]
        for role, message in self.messages:
            parts.append(role if message is None else role + message + self.sep)
        return "".join(parts)

    def copy(self) -> "Conversation":
        return copy.deepcopy(self)


CONV_TEMPLATES = {
    "internlm2-chat": Conversation(
        name="internlm2-chat",
        system_template="<|im_start|>system\n{system_message}",
        system_message="You are an AI assistant whose name is InternLM (书生·浦语).",
        roles=("<|im_start|>user\n", "<|im_start|>assistant\n"),
        sep="<|im_end|>",
        stop_str=("<|im_end|>",),
    ),
}


def get_conv_template(name: str) -> Conversation:
    """A fresh copy of a registered template.

    Args:
        name: template name, e.g. ``config.template`` ("internlm2-chat").

    Returns:
        A new :class:`Conversation` with no messages.
    """
    if name not in CONV_TEMPLATES:
        raise KeyError(f"unknown conversation template {name!r}; known: {sorted(CONV_TEMPLATES)}")
    return CONV_TEMPLATES[name].copy()
