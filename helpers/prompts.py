"""InternVL2's chat format in one place: the prompt text, the image tokens, the stop marker.

InternVL2-2B (and InternVL2-8B) were trained with the ``internlm2-chat`` template::

    <|im_start|>system\\n{system}<|im_end|><|im_start|>user\\n<img><IMG_CONTEXT>*N</img>\\n{question}<|im_end|><|im_start|>assistant\\n

(one line). Every course path builds its prompts here, from the model's *public* attributes
(``template``, ``system_message``, ``num_image_token``: OpenGVLab's ``InternVLChatModel`` has
them too), never from methods that only the course's own implementation has. The image goes
before the question, as in the model's own ``chat()`` and in XTuner's training data.

Example:
    >>> render([("<image>\\n这是什么菜？", None)], "S")
    '<|im_start|>system\\nS<|im_end|><|im_start|>user\\n<image>\\n这是什么菜？<|im_end|><|im_start|>assistant\\n'
    >>> expand_images("<image>\\nQ", [2], num_image_token=2)
    '<img><IMG_CONTEXT><IMG_CONTEXT><IMG_CONTEXT><IMG_CONTEXT></img>\\nQ'
"""
from __future__ import annotations

from helpers.env import need
from helpers.internvl.conversation import get_conv_template
from helpers.settings import INTERNVL2_SYSTEM_PROMPT, XTUNER_SYSTEM_PROMPT

IMAGE = "<image>"  # where an image goes in a question, before expansion
IMG_START = "<img>"
IMG_END = "</img>"
IMG_CONTEXT = "<IMG_CONTEXT>"  # one per image feature; the model splices features in at these ids
TEMPLATE = "internlm2-chat"  # the only template the course's checkpoints and InternVL2-2B/8B use
SYSTEM_PROMPTS = {"internvl2": INTERNVL2_SYSTEM_PROMPT, "xtuner": XTUNER_SYSTEM_PROMPT}
IMAGE_POSITIONS = ("before", "after")  # where with_image_marks puts the marks relative to the question

# The same format, as the pieces XTuner 0.2.0's InternVL_V1_5_Dataset writes a training sample with (it
# overrides PROMPT_TEMPLATE.internlm2_chat with these), derived from the conversation template above.
_CONV = get_conv_template(TEMPLATE)
TURN_TOKENS = (_CONV.roles[0].split("user")[0], _CONV.sep)  # "<|im_start|>", "<|im_end|>"
XTUNER_SYSTEM = _CONV.system_template.replace("{system_message}", "{system}") + _CONV.sep
XTUNER_INSTRUCTION = _CONV.roles[0] + "{input}" + _CONV.sep + _CONV.roles[1]
XTUNER_SUFFIX = _CONV.sep
IMAGE_MARKERS = IMG_START + IMG_END + "\n"  # wraps the <IMG_CONTEXT> run XTuner puts before the question

__all__ = ["IMAGE", "IMG_START", "IMG_END", "IMG_CONTEXT", "TEMPLATE", "SYSTEM_PROMPTS", "IMAGE_POSITIONS", "TURN_TOKENS", "XTUNER_SYSTEM",
           "XTUNER_INSTRUCTION", "XTUNER_SUFFIX", "IMAGE_MARKERS", "image_tokens",
           "expand_images", "with_image_marks", "render", "build_query", "stop_marker", "stop_token_ids"]


def _conversation(template: str):
    try:
        return get_conv_template(template)
    except KeyError:
        raise ValueError(f"conversation template {template!r} is not one the course knows ({TEMPLATE!r}: "
                         "InternVL2-2B and InternVL2-8B); InternVL2-1B/4B use other LLMs and templates") from None


def image_tokens(num_tiles: int, num_image_token: int = 256) -> str:
    """The text that stands for one image of ``num_tiles`` tiles.

    Args:
        num_tiles: tiles of this image (thumbnail included).
        num_image_token: LLM tokens per tile (256 for 448 px tiles, patch 14, pixel shuffle 0.5).

    Returns:
        ``<img>`` + ``<IMG_CONTEXT>`` x (tiles x num_image_token) + ``</img>``.
    """
    return IMG_START + IMG_CONTEXT * (int(num_image_token) * int(num_tiles)) + IMG_END


def expand_images(prompt: str, num_patches_list, num_image_token: int = 256) -> str:
    """Replace the ``<image>`` marks of a rendered prompt, in order, by each image's tokens.

    Args:
        prompt: text with one ``<image>`` per image.
        num_patches_list: tiles per image, in prompt order.
        num_image_token: LLM tokens per tile.

    Returns:
        The prompt with image tokens.

    Raises:
        ValueError: fewer ``<image>`` marks than images.
    """
    for n in num_patches_list:
        if IMAGE not in prompt:
            raise ValueError(f"{len(list(num_patches_list))} images but the prompt has fewer {IMAGE} marks")
        prompt = prompt.replace(IMAGE, image_tokens(n, num_image_token), 1)
    return prompt


def with_image_marks(text: str, n_images: int, position: str = "before") -> str:
    """Put the missing ``<image>`` marks around the text, one line each (image first by default).

    Args:
        text: the user's question, possibly with its own ``<image>`` marks.
        n_images: images that come with it.
        position: "before" the question (InternVL2's ``chat()`` and XTuner's training data) or
            "after" it (the order a model fine-tuned image-first never saw; notebook 06 measures it).

    Returns:
        The question with at least ``n_images`` marks.

    Example:
        >>> with_image_marks("Q", 1), with_image_marks("Q", 1, position="after")
        ('<image>\\nQ', 'Q\\n<image>')
    """
    if position not in IMAGE_POSITIONS:
        raise ValueError(f"position must be one of {IMAGE_POSITIONS}, got {position!r}")
    missing = max(n_images - text.count(IMAGE), 0)
    if position == "after":
        return text + ("\n" + IMAGE) * missing
    return (IMAGE + "\n") * missing + text


def render(turns, system_message: str, template: str = TEMPLATE) -> str:
    """The prompt text of a conversation (image marks not yet expanded).

    Args:
        turns: ``[(user_text, answer_or_None), ...]``; a final ``None`` answer leaves the
            assistant's turn open for the model to write.
        system_message: the system prompt.
        template: the checkpoint's ``config.template``.

    Returns:
        The rendered prompt.
    """
    conv = _conversation(template)
    conv.system_message = system_message
    for user, answer in turns:
        conv.append_message(conv.roles[0], user)
        conv.append_message(conv.roles[1], answer)
    return conv.get_prompt()


def build_query(model, question: str, num_patches_list=(), history=(), system_message: str | None = None) -> tuple:
    """The exact prompt ``model.chat`` builds, from the model's public attributes only.

    Works for the course's model and OpenGVLab's alike: it reads ``model.template``,
    ``model.system_message`` and ``model.num_image_token``.

    Args:
        model: a loaded InternVLChatModel.
        question: the user's text; ``<image>\\n`` is put in front when it has fewer marks than images.
        num_patches_list: tiles per image of this turn ([] for text only).
        history: earlier ``(question, answer)`` pairs.
        system_message: overrides ``model.system_message``.

    Returns:
        (prompt with image tokens, the question as it goes into the history).

    Example:
        >>> # prompt, q = build_query(model, "这是什么菜？", [7])
    """
    num_patches_list = list(num_patches_list or [])
    history = list(history or [])
    marks = sum(q.count(IMAGE) for q, _ in history)
    question = with_image_marks(question, len(num_patches_list) - marks) if num_patches_list else question
    system = system_message if system_message is not None else model.system_message
    prompt = render(history + [(question, None)], system, getattr(model, "template", None) or TEMPLATE)
    return expand_images(prompt, num_patches_list, model.num_image_token), question


def stop_marker(template: str = TEMPLATE) -> str:
    """The text that ends an assistant turn (``<|im_end|>``)."""
    return _conversation(template).sep


def stop_token_ids(tokenizer, template: str = TEMPLATE) -> list:
    """Token ids generation stops at: the turn end, then the tokenizer's EOS.

    Args:
        tokenizer: the checkpoint's tokenizer.
        template: the checkpoint's ``config.template``.

    Returns:
        A list of ids, ``<|im_end|>`` first.
    """
    ids = [tokenizer.convert_tokens_to_ids(stop_marker(template))]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def internvl2_chat_template(system_prompt: str, template: str = "internlm2-chat"):
    """LMDeploy ChatTemplateConfig that renders InternVL2's own prompt with a given system prompt.

    The markers come from InternVL2's conversation template (``helpers.internvl.conversation``,
    the same file the checkpoint's remote code uses), so LMDeploy builds byte-for-byte the prompt
    that ``model.chat()`` builds: ``<|im_start|>system\n{system}<|im_end|><|im_start|>user\n...``.

    Args:
        system_prompt: the system message.
        template: conversation template name (``config.template``).

    Returns:
        ``lmdeploy.ChatTemplateConfig``.

    Example:
        >>> internvl2_chat_template("你是美食助手。").meta_instruction  # doctest: +SKIP
        '你是美食助手。'
    """
    lmdeploy = need("lmdeploy")
    conv = get_conv_template(template)
    system_prefix = conv.system_template.split("{system_message}")[0]
    user, assistant = conv.roles
    return lmdeploy.ChatTemplateConfig(
        model_name="base",  # LMDeploy's plain template class, filled with InternVL2's markers
        system=system_prefix, meta_instruction=system_prompt, eosys=conv.sep,
        user=user, eoh=conv.sep, assistant=assistant, eoa=conv.sep, separator="",
        stop_words=list(conv.stop_str) or [conv.sep],
    )
