"""The OpenAI-compatible client side of the api_server: images as data URLs, one chat request."""
from __future__ import annotations

import base64
from pathlib import Path

from helpers.env import need


def image_data_url(image_path) -> str:
    """A ``data:image/...;base64,...`` URL of an image file (what the OpenAI API takes inline).

    Example:
        >>> image_data_url("photo.jpg")[:23]   # doctest: +SKIP
        'data:image/jpeg;base64,'
    """
    from PIL import Image

    path = Path(image_path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            mime = Image.MIME.get(img.format, "image/jpeg")
    except Exception as exc:
        raise ValueError(f"{path} is not an image Pillow can read") from exc
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def openai_chat(base_url: str, api_key: str | None, prompt: str, image_path=None, model: str | None = None,
                max_tokens: int = 128, temperature: float = 0.0, timeout: float = 120.0) -> str:
    """Ask LMDeploy's OpenAI-compatible server one question about one image.

    Args:
        base_url: server URL, with or without ``/v1``.
        api_key: the key the server was started with (None when it has none).
        prompt: the question.
        image_path: an image file, sent inline as a base64 data URL (None: text only).
        model: model id (default: the first one ``/v1/models`` lists).
        max_tokens: answer length limit.
        temperature: 0 for greedy.
        timeout: seconds for the request.

    Returns:
        The answer text.

    Example:
        >>> openai_chat("http://127.0.0.1:23333", "sk-course", "这是什么菜？", "photo.jpg")  # doctest: +SKIP
    """
    openai = need("openai")
    url = base_url.rstrip("/")
    url = url if url.endswith("/v1") else url + "/v1"
    client = openai.OpenAI(base_url=url, api_key=api_key or "none", timeout=timeout, max_retries=0)
    if model is None:
        model = client.models.list().data[0].id
    content = [{"type": "text", "text": prompt}]
    if image_path is not None:
        # image first: LMDeploy keeps the order of the content parts (see images_first)
        content.insert(0, {"type": "image_url", "image_url": {"url": image_data_url(image_path)}})
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}],
                                           max_tokens=max_tokens, temperature=temperature)
    return reply.choices[0].message.content
