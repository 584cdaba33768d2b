"""How a prompt reaches an engine: text and images split apart, and the images placed first (InternVL2's order)."""
from __future__ import annotations

import os

from helpers import prompts


def _split_prompt(prompt) -> tuple:
    """``str | (str, image|[images]) | (image|[images], str)`` -> ``(text, [images])``."""
    if isinstance(prompt, str):
        return prompt, []
    if isinstance(prompt, tuple) and len(prompt) == 2:
        text, images = prompt
        if not isinstance(text, str):  # LMDeploy also takes (image, text)
            text, images = images, text
        if isinstance(text, str):
            images = list(images) if isinstance(images, (list, tuple)) else [images]
            return text, images
    raise TypeError(
        "a prompt is a str, (str, image), (str, [images]) or (image, str); images are PIL images or "
        f"file paths; got {type(prompt).__name__}: {str(prompt)[:80]!r}"
    )


def images_first(prompt):
    """A ``(text, image(s))`` prompt as ``(image(s), text)`` with PIL images: LMDeploy then puts them first.

    LMDeploy 0.18 turns a ``(text, image)`` pair into a user turn with the text *before* the
    image (``question<img>...</img>``) and only an ``(image, text)`` pair into image-first
    (it also takes a local path only in the first form: it sees no image in a path string).
    InternVL's own ``chat()`` and XTuner's training data put the image first
    (``<img>...</img>\nquestion``); a model fine-tuned on that format answers far worse the
    other way round (the course's tiny model: 12 % instead of 75 % on the val split, the same
    weights under transformers). Anything else (str, OpenAI messages, image-first pairs) is
    returned unchanged.

    Args:
        prompt: one prompt as LMDeploy takes it.

    Returns:
        The prompt in image-first form.

    Example:
        >>> from PIL import Image
        >>> img = Image.new("RGB", (8, 8))
        >>> images_first(("这是什么菜？", img))[1]
        '这是什么菜？'
        >>> images_first("你好")
        '你好'
    """
    from helpers.tiling import load_image

    if not (isinstance(prompt, tuple) and len(prompt) == 2 and isinstance(prompt[0], str)
            and not prompt[0].startswith(("http", "data:image"))):
        return prompt
    text, images = prompt

    def pil(img):
        return load_image(img) if isinstance(img, (str, os.PathLike)) and not str(img).startswith(("http", "data:")) \
            else img
    images = [pil(i) for i in images] if isinstance(images, (list, tuple)) else pil(images)
    return (images, text)


def _keep_images_first(pipe) -> None:
    """Make an LMDeploy pipeline's infer / stream_infer / chat put images before the text."""
    infer, stream_infer, chat = pipe.infer, pipe.stream_infer, pipe.chat

    def fix(prompts):
        return [images_first(p) for p in prompts] if isinstance(prompts, list) else images_first(prompts)

    pipe.infer = lambda prompts, *args, **kwargs: infer(fix(prompts), *args, **kwargs)
    pipe.stream_infer = lambda prompts, *args, **kwargs: stream_infer(fix(prompts), *args, **kwargs)
    pipe.chat = lambda prompt, *args, **kwargs: chat(images_first(prompt), *args, **kwargs)


def _is_single(prompts) -> bool:
    return isinstance(prompts, (str, tuple))


def _place_images(text: str, n_images: int) -> str:
    """Put one ``<image>`` placeholder per image, the way InternVL's own chat code expects them."""
    found = text.count("<image>")
    if found == n_images:
        return text
    if found:
        raise ValueError(f"prompt has {found} <image> placeholders but {n_images} images were given: {text[:80]!r}")
    if n_images == 1:
        return "<image>\n" + text
    # InternVL's multi-image convention: label each image so the question can refer to it.
    return "".join(f"Image-{i + 1}: <image>\n" for i in range(n_images)) + text
