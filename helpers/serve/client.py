"""The OpenAI-compatible client side of the api_server: images as data URLs, one chat request, a keyless probe."""
from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
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


def status_without_key(base_url: str, model: str, prompt: str, timeout: float = 30.0) -> int:
    """The HTTP status of one chat request sent with no ``Authorization`` header.

    A server started with ``--api-keys`` must answer 401; 200 means anyone who reaches the port
    can use the GPU. Plain urllib, not the openai client: that one always sends some key.

    Args:
        base_url: server URL without ``/v1``.
        model: model id (what ``/v1/models`` lists).
        prompt: any question.
        timeout: seconds for the request.

    Returns:
        The status code, e.g. 401.

    Example:
        >>> status_without_key("http://127.0.0.1:23333", "internvl2", "你好")  # doctest: +SKIP
        401
    """
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}]}).encode()
    request = urllib.request.Request(base_url.rstrip("/") + "/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status
    except urllib.error.HTTPError as exc:
        return exc.code
