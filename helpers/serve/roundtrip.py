"""One round trip through the web UI as a browser makes it: start the app, load a photo, ask, read the answer.

Notebooks 03 and 06 check with it that the UI serves the same engine and prompt as the pipeline; it talks to
the running app over HTTP with ``gradio_client`` (the lmdeploy environment) and always closes the app.

Example:
    >>> trip = webui_roundtrip(build_app(pipe, S), "photo.jpg", "这是什么菜？", S)   # doctest: +SKIP
    >>> trip["answer"]                                                              # doctest: +SKIP
"""
from __future__ import annotations

from helpers.serve.api_server import free_port
from helpers.serve.webui import launch


def message_text(message: dict) -> str:
    """The text of a Gradio chat message (Gradio 6 carries content as a list of typed parts)."""
    content = message["content"]
    return "".join(p.get("text", "") for p in content) if isinstance(content, list) else content


def webui_roundtrip(demo, image_path, question: str, settings, model: str | None = None, max_new_tokens: int = 24,
                    temperature: float = 0.8, top_p: float = 0.8, do_sample: bool = False) -> dict:
    """Launch ``demo`` on a free loopback port, load ``image_path``, optionally switch to ``model``, ask ``question``.

    Returns:
        ``{"loaded": the UI's note on the photo, "answer": the answer's text, "roles": the chat's roles,
        "chat": the chat messages}``.
    """
    from gradio_client import Client, handle_file

    port = free_port()
    launch(demo, "127.0.0.1", port, settings=settings, prevent_thread_lock=True, quiet=True, inline=False)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        chat, _, _ = client.predict(handle_file(str(image_path)), api_name="/load_image")
        loaded = message_text(chat[-1])
        if model is not None:
            client.predict(model, api_name="/switch_model")
        chat = client.predict(question, max_new_tokens, temperature, top_p, do_sample, api_name="/chat")
    finally:
        demo.close()
    return {"loaded": loaded, "answer": message_text(chat[-1]), "roles": [m["role"] for m in chat], "chat": chat}
