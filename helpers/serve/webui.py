"""The course's Gradio web UI: chat with InternVL2 about a food photo.

Upload a photo (or click an example), ask questions over several turns and watch the answer
stream in. Generation settings, a "new chat" button and a switch between the base and the
fine-tuned model sit on the side. Every browser tab has its own conversation (``gr.State``);
the engines are shared. Bad uploads (not an image, corrupt, too large, too many pixels) get
a message in the chat instead of an error page, odd image modes are converted, and requests
beyond the engine's capacity wait in Gradio's queue with a visible "queued" note.

Command line::

    python -m helpers.serve.webui --model PATH [--finetuned PATH] [--port 7860] [--host 127.0.0.1] [--share]
                            [--max-upload-mb 20] [--max-image-pixels 40000000] [--profile baseline|class|class_mp]
                            [--concurrency N] [--max-queue N]

``--profile`` picks the serving settings (:mod:`helpers.serve.profiles`); the UI logs where each request's
time goes as ``TIMING`` lines (:mod:`helpers.serve.timing`), which ``benchmarks/webui_load.py`` reads.

Example:
    >>> from helpers.serve.webui import build_app                       # doctest: +SKIP
    >>> demo = build_app("artifacts/models/internvl2-tiny")        # doctest: +SKIP
    >>> demo.launch(server_name="127.0.0.1", server_port=7860)     # doctest: +SKIP
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from types import SimpleNamespace

from helpers.settings import get_settings
from helpers.serve.engine_pool import EnginePool, _label, example_images
from helpers.serve.handlers import EMPTY_STATE, ChatHandlers
from helpers.serve.profiles import PROFILES, ServeProfile, get_profile
from helpers.serve.timing import log_timings_to


def build_app(engine_or_model_path=None, settings=None, base_model=None, finetuned_model=None, *,
              engine: str | None = None, concurrency_limit: int | None = None, preload: bool = True,
              examples=None, max_queue: int | None = None, profile=None):
    """Build the Gradio app.

    Args:
        engine_or_model_path: the model the UI starts with: an engine from
            :func:`helpers.serve.pipeline.make_pipeline` or a checkpoint directory (default: settings.model_path
            unless ``base_model`` is given).
        settings: a Settings (limits, defaults, data root for examples).
        base_model: a "before fine-tuning" model (engine or directory) to switch to.
        finetuned_model: a fine-tuned model (engine or directory) to switch to.
        engine: engine kind for directories (default: settings.engine).
        concurrency_limit: requests served at once; more wait in the queue (default: the
            profile's, else the engine's capacity: 1 for transformers, LMDeploy's batch size up to 32).
        preload: load the first model now (errors show at start, not at the first question).
        examples: ``[(path, caption)]`` (default: :func:`example_images`).
        max_queue: most requests waiting in the queue (default: the profile's).
        profile: a :class:`helpers.serve.profiles.ServeProfile` or its name (default:
            :data:`helpers.serve.profiles.DEFAULT_PROFILE`): engine, queue and upload settings.

    Returns:
        ``gradio.Blocks`` with its queue configured; call ``.launch(...)``.

    Example:
        >>> demo = build_app("artifacts/models/internvl2-tiny", finetuned_model="artifacts/runs/tiny/merged")  # doctest: +SKIP
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from an offline course box
    try:
        import gradio as gr
    except ImportError as exc:
        raise ImportError("gradio is missing: install requirements-lmdeploy.txt") from exc

    S = settings or get_settings()
    P = profile if isinstance(profile, ServeProfile) else get_profile(profile)
    pool = EnginePool(_model_choices(S, engine_or_model_path, base_model, finetuned_model), engine=engine, settings=S,
                      profile=P)
    default_label = pool.labels[0]
    if preload:
        pool.get(default_label)
    # The transformers engine answers one request at a time whatever the profile says.
    limit = concurrency_limit or (P.concurrency if pool.kind == "lmdeploy" else None) or pool.capacity()
    examples = example_images(S) if examples is None else list(examples)
    handlers = ChatHandlers(gr, pool, S, default_label, examples, profile=P)
    with gr.Blocks(title="InternVL2 美食问答") as demo:
        ui = _layout(gr, S, pool, examples, default_label)
        _wire(gr, ui, handlers)
    demo.queue(default_concurrency_limit=limit, max_size=max_queue or P.max_queue)
    demo.course_pool = pool  # for notebooks and tests: which engines serve this app
    demo.course_concurrency, demo.course_max_queue = limit, max_queue or P.max_queue
    demo.course_profile = P
    return demo


def _model_choices(S, engine_or_model_path, base_model, finetuned_model) -> dict:
    """``{label: engine or directory}`` in the order the UI offers them (one entry per distinct model)."""
    entries = [("模型", engine_or_model_path)] if engine_or_model_path is not None else []
    entries += [("基础模型", base_model)] if base_model is not None else []
    entries += [("微调模型", finetuned_model)] if finetuned_model is not None else []
    if engine_or_model_path is None and base_model is None:
        entries.insert(0, ("模型", S.model_path))
    models: dict = {}
    seen = set()
    for kind, value in entries:
        key = str(Path(value).resolve()) if isinstance(value, (str, os.PathLike)) else id(value)
        if key not in seen:
            seen.add(key)
            models[_label(kind, value)] = value
    return models


def _layout(gr, S, pool, examples, default_label) -> SimpleNamespace:
    """The page: image and settings on the left, the chat on the right. Returns its components."""
    ui = SimpleNamespace(state=gr.State(dict(copy.deepcopy(EMPTY_STATE), model=default_label)))
    gr.Markdown("## InternVL2 美食问答\n上传一张食物照片（或点一张示例），然后就图片连续提问。"
                f"每条问题最多 {S.max_message_chars} 字；模型每次看到图片那一轮和最近约 "
                f"{S.max_history_chars} 字的对话，更早的轮次不再发给模型。")
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            ui.upload = gr.File(label="上传食物照片", file_count="single", type="filepath", elem_id="upload")
            ui.preview = gr.Image(label="当前图片", interactive=False, type="pil", height=240, elem_id="preview")
            ui.gallery = gr.Gallery(value=[(p, c) for p, c in examples], label="示例（点击使用）", columns=4,
                                    height=220, allow_preview=False, elem_id="examples", visible=bool(examples))
            ui.model_choice = gr.Radio(pool.labels, value=default_label, label="模型", elem_id="model",
                                       visible=len(pool.labels) > 1)
            with gr.Accordion("生成参数", open=False, elem_id="gen-settings"):
                max_new_tokens = gr.Slider(1, 1024, value=S.max_new_tokens, step=1, label="max_new_tokens",
                                           elem_id="max-new-tokens")
                do_sample = gr.Checkbox(value=False, label="do_sample（关闭时为贪心解码，下面两项不起作用）",
                                        elem_id="do-sample")
                temperature = gr.Slider(0.05, 2.0, value=0.8, step=0.05, label="temperature", elem_id="temperature")
                top_p = gr.Slider(0.05, 1.0, value=0.8, step=0.05, label="top_p", elem_id="top-p")
        ui.settings_inputs = [max_new_tokens, temperature, top_p, do_sample]
        with gr.Column(scale=2):
            ui.chatbot = gr.Chatbot(label="对话", height=480, elem_id="chatbot", buttons=["copy"])
            with gr.Row():
                ui.msg = gr.Textbox(placeholder="输入问题，回车发送", show_label=False, scale=5, elem_id="msg")
                ui.send = gr.Button("发送", variant="primary", scale=1, elem_id="send")
            ui.new_chat = gr.Button("新对话", elem_id="new-chat")
    return ui


def _wire(gr, ui, h: ChatHandlers) -> None:
    """Connect the page's events to the handlers (and name the API endpoints scripts call)."""
    def on_example(state, evt):
        return h.on_example(state, evt)

    on_example.__annotations__["evt"] = gr.SelectData  # Gradio finds event data by this annotation
    state, chatbot = ui.state, ui.chatbot
    ui.upload.upload(h.on_upload, [ui.upload, state], [state, chatbot, ui.preview, ui.upload],
                     api_name="load_image", queue=False)
    ui.gallery.select(on_example, [state], [state, chatbot, ui.preview], api_visibility="private", queue=False)
    # The question and a "queued" note show at once (outside the queue), the inputs lock, the
    # answer streams from the queued step, the inputs unlock. That queued step of the Enter
    # chain is also the one-call API for scripts and tests: gradio_client's
    # predict("question", max_new_tokens, temperature, top_p, do_sample, api_name="/chat").
    locked = [ui.msg, ui.send, ui.upload, ui.new_chat]

    def lock():
        return [gr.update(interactive=False)] * len(locked)

    def unlock():
        return [gr.update(interactive=True)] * len(locked)

    for trigger, api in ((ui.msg.submit, dict(api_name="chat")), (ui.send.click, dict(api_visibility="private"))):
        (trigger(h.on_send, [ui.msg, state], [state, chatbot, ui.msg], queue=False, api_visibility="private")
         .then(lock, None, locked, queue=False, api_visibility="private")
         .then(h.on_chat, [ui.msg, state, *ui.settings_inputs], [state, chatbot], **api)
         .then(unlock, None, locked, queue=False, api_visibility="private"))
    ui.new_chat.click(h.on_new_chat, [state], [state, chatbot], api_name="new_chat", queue=False)
    ui.model_choice.change(h.on_switch, [ui.model_choice, state], [state, chatbot], api_name="switch_model",
                           queue=False)


def serving_facts(demo) -> dict:
    """What a built app serves with: profile, queue, and the engine's own settings (for logs and benchmarks).

    Args:
        demo: what :func:`build_app` returned.

    Returns:
        ``{"profile": {...}, "concurrency", "max_queue", "engine", "engine_config": {...}}``.
    """
    pool = demo.course_pool
    facts = {"profile": dataclasses.asdict(demo.course_profile), "concurrency": demo.course_concurrency,
             "max_queue": demo.course_max_queue, "engine": pool.kind, "engine_config": {}}
    for label, eng in pool.engines.items():
        cfg = getattr(eng, "backend_config", None)
        keep = ("max_batch_size", "max_prefill_token_num", "cache_max_entry_count", "session_len", "tp",
                "block_size", "prefill_interval", "eager_mode", "enable_prefix_caching")
        facts["engine_config"][label] = {k: getattr(cfg, k) for k in keep if hasattr(cfg, k)} or {
            "engine": getattr(eng, "engine_name", "?"), "max_concurrency": getattr(eng, "max_concurrency", None)}
        encoder = getattr(getattr(eng, "async_engine", None), "vl_encoder", None)
        if encoder is not None:
            facts["engine_config"][label]["preprocess_workers"] = getattr(encoder.executor, "_max_workers", None)
    return facts


def launch(demo, host: str | None = None, port: int | None = None, share: bool = False, settings=None, **kwargs):
    """Start a built app on ``host:port`` (loopback unless asked) with the upload size cap.

    Args:
        demo: what :func:`build_app` returned.
        host: bind address (default: settings.server_host, 127.0.0.1).
        port: TCP port (default: settings.webui_port).
        share: make a public gradio.live link (needs internet; off unless asked).
        settings: a Settings.
        **kwargs: more ``Blocks.launch`` arguments (e.g. ``prevent_thread_lock=True``).

    Returns:
        What ``Blocks.launch`` returns.
    """
    S = settings or get_settings()
    # Gradio refuses uploads beyond this outright; below it load_upload explains the real limit.
    cap_mb = max(1, int(S.max_upload_mb * 4))
    # Every streaming answer holds a worker thread while it waits for its next token.
    kwargs.setdefault("max_threads", getattr(getattr(demo, "course_profile", None), "max_threads", 40))
    return demo.launch(server_name=host or S.server_host, server_port=port or S.webui_port, share=share,
                       max_file_size=f"{cap_mb}mb", show_error=False, **kwargs)


def main(argv=None) -> int:
    """``python -m helpers.serve.webui``: build and serve the UI until interrupted."""
    S = get_settings()
    parser = argparse.ArgumentParser(prog="python -m helpers.serve.webui", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help=f"checkpoint directory (default: {S.model_path})")
    parser.add_argument("--base", default=None, help="a base model directory to switch to")
    parser.add_argument("--finetuned", default=None, help="a fine-tuned model directory to switch to")
    parser.add_argument("--engine", choices=("lmdeploy", "transformers"), default=None,
                        help=f"inference engine (default here: {S.engine})")
    parser.add_argument("--host", default=S.server_host, help="bind address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=S.webui_port, help="port (default: %(default)s)")
    parser.add_argument("--share", action="store_true", help="public gradio.live link (needs internet)")
    parser.add_argument("--profile", choices=sorted(PROFILES), default=None,
                        help="serving profile: engine, queue and upload settings (helpers.serve.profiles)")
    parser.add_argument("--concurrency", type=int, default=None, help="requests served at once (default: profile's)")
    parser.add_argument("--max-queue", type=int, default=None, help="requests waiting at most (default: profile's)")
    parser.add_argument("--max-upload-mb", type=float, default=S.max_upload_mb,
                        help="largest upload accepted, MiB (default: %(default)s)")
    parser.add_argument("--max-image-pixels", type=int, default=S.max_image_pixels,
                        help="most pixels an uploaded image may have (default: %(default)s)")
    args = parser.parse_args(argv)
    S = S.replace(max_upload_mb=args.max_upload_mb, max_image_pixels=args.max_image_pixels)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    log_timings_to(sys.stdout)  # where request is spent, one JSON line each (helpers.serve.timing)
    for path in (args.model, args.base, args.finetuned):
        if path and not (Path(path) / "config.json").is_file():
            parser.error(f"no checkpoint at {path} (config.json missing)")
    demo = build_app(args.model, S, base_model=args.base, finetuned_model=args.finetuned, engine=args.engine,
                     concurrency_limit=args.concurrency, max_queue=args.max_queue, profile=args.profile)
    print(f"engine: {demo.course_pool.kind}; models: {demo.course_pool.labels}; "
          f"concurrency {demo.course_concurrency}; http://{args.host}:{args.port}", flush=True)
    # One JSON line the load test reads back: what this server really runs with.
    print("SERVING " + json.dumps(serving_facts(demo), ensure_ascii=False, default=str), flush=True)
    launch(demo, args.host, args.port, share=args.share, settings=S)
    return 0


if __name__ == "__main__":
    sys.exit(main())
