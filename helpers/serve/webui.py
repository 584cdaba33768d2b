"""The course's Gradio web UI: chat with InternVL2 about a food photo.

Upload a photo (or click an example), ask questions over several turns and watch the answer
stream in. Generation settings, a "new chat" button and a switch between the base and the
fine-tuned model sit on the side. Every browser tab has its own conversation (``gr.State``);
the engines are shared. Bad uploads (not an image, corrupt, too large, too many pixels) get
a message in the chat instead of an error page, odd image modes are converted, and requests
beyond the engine's capacity wait in Gradio's queue with a visible "queued" note.

Command line::

    python -m helpers.serve.webui --model PATH [--finetuned PATH] [--port 7860] [--host 127.0.0.1] [--share]
                            [--max-upload-mb 20] [--max-image-pixels 40000000] [--concurrency N]

Example:
    >>> from helpers.serve.webui import build_app                       # doctest: +SKIP
    >>> demo = build_app("artifacts/models/internvl2-tiny")        # doctest: +SKIP
    >>> demo.launch(server_name="127.0.0.1", server_port=7860)     # doctest: +SKIP
"""
from __future__ import annotations

import argparse
import copy
import logging
import os
import sys
from pathlib import Path

from helpers.settings import get_settings
from helpers.serve.uploads import UploadError, bound_history, discard_upload, load_upload, message_problem
from helpers.serve.engine_pool import EnginePool, _label, example_images


log = logging.getLogger("helpers.serve.webui")


QUEUED = "⏳ 已提交，正在排队等待模型空闲……"


THINKING = "⏳ 模型正在读图和思考……"


BUSY = "⚠️ 上一条回答还没有结束，请稍候再发送。"


EMPTY_STATE = {"image": None, "image_name": None, "history": [], "messages": [], "model": None,
               "pending": None, "busy": False}


def build_app(engine_or_model_path=None, settings=None, base_model=None, finetuned_model=None, *,
              engine: str | None = None, concurrency_limit: int | None = None, preload: bool = True,
              examples=None, max_queue: int = 64):
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
            engine's capacity: 1 for transformers, LMDeploy's batch size).
        preload: load the first model now (errors show at start, not at the first question).
        examples: ``[(path, caption)]`` (default: :func:`example_images`).
        max_queue: most requests waiting in the queue.

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
    from helpers.serve.generation import generation_config

    S = settings or get_settings()
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
    pool = EnginePool(models, engine=engine, settings=S)
    default_label = pool.labels[0]
    if preload:
        pool.get(default_label)
    limit = concurrency_limit or pool.capacity()
    examples = example_images(S) if examples is None else list(examples)
    example_paths = [str(p) for p, _ in examples]

    # ---- handlers (each returns messages, never raises into Gradio)
    def _state(state):
        state = state if isinstance(state, dict) else copy.deepcopy(EMPTY_STATE)
        if state.get("model") not in pool.models:
            state["model"] = default_label
        return state

    def _say(state, text):
        state["messages"] = state["messages"] + [{"role": "assistant", "content": text}]

    def _busy():
        gr.Warning(BUSY)

    def _use_image(path, state, display_name=None):
        state = _state(state)
        if state["busy"]:
            _busy()
            return state, None
        try:
            image, notes = load_upload(path, settings=S)
        except Exception as exc:  # UploadError, or an unforeseen decoder failure: still only a bad upload
            if not isinstance(exc, UploadError):
                log.exception("upload %s", path)
                exc = f"⚠️ 无法处理这个文件（{type(exc).__name__}: {exc}）。请换一张照片。"
            discard_upload(path)  # a refused upload must not stay in Gradio's temp folder
            keep = f" 当前仍使用 {state['image_name']}。" if state["image"] is not None else ""
            _say(state, str(exc) + keep)
            return state, None
        name = display_name or Path(path).name
        state.update(image=image, image_name=name, history=[], pending=None)
        extra = "；".join(notes)
        state["messages"] = [{"role": "assistant",
                              "content": f"📷 已载入 {name}（{image.width}×{image.height}）"
                                         + (f"，{extra}" if extra else "") + "。新的对话开始了，请提问，例如「图中是什么菜？」"}]
        preview = image.copy()
        preview.thumbnail((768, 768))
        return state, preview

    def on_upload(file, state):
        state = _state(state)
        if not file:
            return state, state["messages"], gr.update(), None
        state, preview = _use_image(file, state)
        return state, state["messages"], (preview if preview is not None else gr.update()), None

    def on_example(state, evt):
        state = _state(state)
        index = evt.index if isinstance(evt.index, int) else (evt.index or [0])[0]
        if not 0 <= index < len(example_paths):
            _say(state, "⚠️ 没有这个示例。")
            return state, state["messages"], gr.update()
        state, preview = _use_image(example_paths[index], state, display_name=f"示例：{examples[index][1]}")
        return state, state["messages"], (preview if preview is not None else gr.update())

    on_example.__annotations__["evt"] = gr.SelectData  # Gradio finds event data by this annotation

    def on_send(message, state):
        """Runs outside the queue: show the question and a "queued" note at once."""
        state = _state(state)
        text = (message or "").strip()
        if not text:
            return state, state["messages"], gr.update()
        if state["busy"] or state["pending"] is not None:
            _busy()
            return state, gr.update(), gr.update()
        too_long = message_problem(text, S.max_message_chars)
        if too_long:
            _say(state, too_long)
            return state, state["messages"], gr.update()
        state["pending"] = text
        state["messages"] = state["messages"] + [{"role": "user", "content": text},
                                                 {"role": "assistant", "content": QUEUED}]
        return state, state["messages"], ""

    def on_chat(message, state, max_new_tokens, temperature, top_p, do_sample):
        """The queued part: stream the answer into the chat (also the ``/chat`` API for scripts)."""
        state = _state(state)
        text, state["pending"] = state["pending"], None
        if text is None:  # called directly (API): no on_send before us
            text = (message or "").strip()
            if not text:
                yield state, state["messages"]
                return
            if state["busy"]:
                _busy()
                yield state, state["messages"]
                return
            too_long = message_problem(text, S.max_message_chars)
            if too_long:
                _say(state, too_long)
                yield state, state["messages"]
                return
            state["messages"] = state["messages"] + [{"role": "user", "content": text},
                                                     {"role": "assistant", "content": QUEUED}]
        slot = len(state["messages"]) - 1
        state["busy"] = True
        messages = state["messages"]

        def show(content):
            messages[slot] = {"role": "assistant", "content": content}
            state["messages"] = list(messages)
            return state, state["messages"]

        try:
            yield show(THINKING)
            eng = pool.get(state["model"])
            try:
                cfg = generation_config(max_new_tokens=int(max_new_tokens), do_sample=bool(do_sample),
                                        temperature=float(temperature), top_p=float(top_p))
            except (TypeError, ValueError) as exc:
                yield show(f"⚠️ 生成参数无效：{exc}")
                return
            first_turn = not state["history"]
            prompt = (text, state["image"]) if first_turn and state["image"] is not None else text
            session = eng.session()
            session.history, _ = bound_history(state["history"], S.max_history_chars)
            answer = ""
            try:
                for piece in eng.chat(prompt, session=session, gen_config=cfg, stream_response=True):
                    if getattr(piece, "finish_reason", None) == "error":
                        raise RuntimeError(getattr(piece, "error_message", None) or "engine error")
                    answer += piece.text
                    yield show(answer or THINKING)
            finally:
                try:
                    session.close()
                except Exception:  # closing is best effort; the turn itself is what matters
                    log.debug("session close failed", exc_info=True)
            state["history"] = state["history"] + [(prompt, answer)]
            yield show(answer if answer.strip() else "（模型没有生成文字）")
        except Exception as exc:
            log.exception("chat turn failed")
            yield show(f"⚠️ 生成失败：{type(exc).__name__}: {exc}。可以重试或点「新对话」。")
        finally:
            state["busy"] = False

    def on_new_chat(state):
        state = _state(state)
        if state["busy"]:
            _busy()
            return state, state["messages"]
        state.update(history=[], pending=None)
        keep = f"当前图片仍是 {state['image_name']}。" if state["image"] is not None else "请先上传一张食物照片。"
        state["messages"] = [{"role": "assistant", "content": f"🆕 新对话。{keep}"}]
        return state, state["messages"]

    def on_switch(label, state):
        state = _state(state)
        if label not in pool.models:
            _say(state, f"⚠️ 没有模型 {label}。")
            return state, state["messages"]
        if state["busy"]:
            _busy()
            return state, state["messages"]
        state.update(model=label, history=[], pending=None)
        state["messages"] = [{"role": "assistant", "content": f"🔁 已切换到 {label}（{pool.models[label]}）。"
                                                            "对话重新开始，图片保留。"}]
        return state, state["messages"]

    # ---- layout
    with gr.Blocks(title="InternVL2 美食问答") as demo:
        state = gr.State(dict(copy.deepcopy(EMPTY_STATE), model=default_label))
        gr.Markdown("## InternVL2 美食问答\n上传一张食物照片（或点一张示例），然后就图片连续提问。"
                    f"每条问题最多 {S.max_message_chars} 字；模型每次看到图片那一轮和最近约 "
                    f"{S.max_history_chars} 字的对话，更早的轮次不再发给模型。")
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                upload = gr.File(label="上传食物照片", file_count="single", type="filepath", elem_id="upload")
                preview = gr.Image(label="当前图片", interactive=False, type="pil", height=240, elem_id="preview")
                gallery = gr.Gallery(value=[(p, c) for p, c in examples], label="示例（点击使用）", columns=4,
                                     height=220, allow_preview=False, elem_id="examples", visible=bool(examples))
                model_choice = gr.Radio(pool.labels, value=default_label, label="模型", elem_id="model",
                                        visible=len(pool.labels) > 1)
                with gr.Accordion("生成参数", open=False, elem_id="gen-settings"):
                    max_new_tokens = gr.Slider(1, 1024, value=S.max_new_tokens, step=1, label="max_new_tokens",
                                               elem_id="max-new-tokens")
                    do_sample = gr.Checkbox(value=False, label="do_sample（关闭时为贪心解码，下面两项不起作用）",
                                            elem_id="do-sample")
                    temperature = gr.Slider(0.05, 2.0, value=0.8, step=0.05, label="temperature",
                                            elem_id="temperature")
                    top_p = gr.Slider(0.05, 1.0, value=0.8, step=0.05, label="top_p", elem_id="top-p")
            with gr.Column(scale=2):
                chatbot = gr.Chatbot(label="对话", height=480, elem_id="chatbot", buttons=["copy"])
                with gr.Row():
                    msg = gr.Textbox(placeholder="输入问题，回车发送", show_label=False, scale=5, elem_id="msg")
                    send = gr.Button("发送", variant="primary", scale=1, elem_id="send")
                new_chat = gr.Button("新对话", elem_id="new-chat")
        settings_inputs = [max_new_tokens, temperature, top_p, do_sample]

        upload.upload(on_upload, [upload, state], [state, chatbot, preview, upload], api_name="load_image",
                      queue=False)
        gallery.select(on_example, [state], [state, chatbot, preview], api_visibility="private", queue=False)
        # The question and a "queued" note show at once (outside the queue), the inputs lock, the
        # answer streams from the queued step, the inputs unlock. That queued step of the Enter
        # chain is also the one-call API for scripts and tests: gradio_client's
        # predict("question", max_new_tokens, temperature, top_p, do_sample, api_name="/chat").
        locked = [msg, send, upload, new_chat]

        def lock():
            return [gr.update(interactive=False)] * len(locked)

        def unlock():
            return [gr.update(interactive=True)] * len(locked)

        for trigger, api in ((msg.submit, dict(api_name="chat")), (send.click, dict(api_visibility="private"))):
            (trigger(on_send, [msg, state], [state, chatbot, msg], queue=False, api_visibility="private")
             .then(lock, None, locked, queue=False, api_visibility="private")
             .then(on_chat, [msg, state, *settings_inputs], [state, chatbot], **api)
             .then(unlock, None, locked, queue=False, api_visibility="private"))
        new_chat.click(on_new_chat, [state], [state, chatbot], api_name="new_chat", queue=False)
        model_choice.change(on_switch, [model_choice, state], [state, chatbot], api_name="switch_model", queue=False)

    demo.queue(default_concurrency_limit=limit, max_size=max_queue)
    demo.course_pool = pool  # for notebooks and tests: which engines serve this app
    demo.course_concurrency = limit
    return demo


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
    parser.add_argument("--concurrency", type=int, default=None, help="requests served at once (default: engine's)")
    parser.add_argument("--max-upload-mb", type=float, default=S.max_upload_mb,
                        help="largest upload accepted, MiB (default: %(default)s)")
    parser.add_argument("--max-image-pixels", type=int, default=S.max_image_pixels,
                        help="most pixels an uploaded image may have (default: %(default)s)")
    args = parser.parse_args(argv)
    S = S.replace(max_upload_mb=args.max_upload_mb, max_image_pixels=args.max_image_pixels)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for path in (args.model, args.base, args.finetuned):
        if path and not (Path(path) / "config.json").is_file():
            parser.error(f"no checkpoint at {path} (config.json missing)")
    demo = build_app(args.model, S, base_model=args.base, finetuned_model=args.finetuned, engine=args.engine,
                     concurrency_limit=args.concurrency)
    print(f"engine: {demo.course_pool.kind}; models: {demo.course_pool.labels}; "
          f"concurrency {demo.course_concurrency}; http://{args.host}:{args.port}", flush=True)
    launch(demo, args.host, args.port, share=args.share, settings=S)
    return 0


if __name__ == "__main__":
    sys.exit(main())
