"""What the web UI does on each event: upload, example, send, the streamed answer, new chat, model switch.

Each handler takes and returns the tab's state (a dict in ``gr.State``) and the chat messages; none raises
into Gradio (a bad upload or a failed turn becomes a message in the chat). :func:`helpers.serve.webui.build_app`
lays out the page and wires these methods to it.
"""
from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

from helpers.serve.profiles import engine_tiling, fit_to_grid, get_profile
from helpers.serve.timing import log_timing, question_key
from helpers.serve.uploads import UploadError, bound_history, discard_upload, load_upload, message_problem

log = logging.getLogger("helpers.serve.webui")

QUEUED = "⏳ 已提交，正在排队等待模型空闲……"
THINKING = "⏳ 模型正在读图和思考……"
# Shown from the first generated token until a token brings visible text (a real model's first token
# nearly always does; a random-weight replica's often decodes to nothing): the load test's first-token mark.
WRITING = "✍️ 模型开始回答了……"
BUSY = "⚠️ 上一条回答还没有结束，请稍候再发送。"
EMPTY_STATE = {"image": None, "image_name": None, "history": [], "messages": [], "model": None,
               "pending": None, "busy": False}


def _user_turn(state, text):
    state["messages"] = state["messages"] + [{"role": "user", "content": text},
                                             {"role": "assistant", "content": QUEUED}]


class ChatHandlers:
    """The web UI's event handlers over one engine pool (shared by every browser tab)."""

    def __init__(self, gr, pool, settings, default_label: str, examples: list, profile=None):
        self.gr, self.pool, self.S = gr, pool, settings
        self.profile = profile or get_profile()
        self.default_label = default_label
        self.examples = examples
        self.example_paths = [str(p) for p, _ in examples]

    # ---- small pieces
    def state(self, state):
        state = state if isinstance(state, dict) else copy.deepcopy(EMPTY_STATE)
        if state.get("model") not in self.pool.models:
            state["model"] = self.default_label
        return state

    @staticmethod
    def say(state, text):
        state["messages"] = state["messages"] + [{"role": "assistant", "content": text}]

    def busy(self):
        self.gr.Warning(BUSY)

    def use_image(self, path, state, display_name=None):
        state = self.state(state)
        if state["busy"]:
            self.busy()
            return state, None
        timings: dict = {}
        try:
            image, notes = load_upload(path, settings=self.S, timings=timings)
        except Exception as exc:  # UploadError, or an unforeseen decoder failure: still only a bad upload
            if not isinstance(exc, UploadError):
                log.exception("upload %s", path)
                exc = f"⚠️ 无法处理这个文件（{type(exc).__name__}: {exc}）。请换一张照片。"
            discard_upload(path)  # a refused upload must not stay in Gradio's temp folder
            keep = f" 当前仍使用 {state['image_name']}。" if state["image"] is not None else ""
            self.say(state, str(exc) + keep)
            return state, None
        name = display_name or Path(path).name
        preview = image.copy()
        preview.thumbnail((768, 768))
        size, served = (image.width, image.height), self._prescale(image, state, notes, timings)
        state.update(image=served, image_name=name, history=[], pending=None)
        extra = "；".join(notes)
        state["messages"] = [{"role": "assistant",
                              "content": f"📷 已载入 {name}（{size[0]}×{size[1]}）"
                                         + (f"，{extra}" if extra else "") + "。新的对话开始了，请提问，例如「图中是什么菜？」"}]
        log_timing("upload", width=size[0], height=size[1], **timings)
        return state, preview

    def _prescale(self, image, state, notes, timings):
        """The profile's downscale to the tile grid (same tiles, fewer pixels to resize every turn)."""
        if not self.profile.prescale:
            return image
        start = time.perf_counter()
        smaller, tiles = fit_to_grid(image, **engine_tiling(self.pool.get(state["model"])))
        timings.update(prescale_s=round(time.perf_counter() - start, 5), tiles=tiles,
                       served=f"{smaller.width}x{smaller.height}")
        if smaller is not image:
            notes.append(f"已缩小为 {smaller.width}×{smaller.height} 再切图（仍是 {tiles} 个图块）")
        return smaller

    # ---- events
    def on_upload(self, file, state):
        state = self.state(state)
        if not file:
            return state, state["messages"], self.gr.update(), None
        state, preview = self.use_image(file, state)
        return state, state["messages"], (preview if preview is not None else self.gr.update()), None

    def on_example(self, state, evt):
        state = self.state(state)
        index = evt.index if isinstance(evt.index, int) else (evt.index or [0])[0]
        if not 0 <= index < len(self.example_paths):
            self.say(state, "⚠️ 没有这个示例。")
            return state, state["messages"], self.gr.update()
        state, preview = self.use_image(self.example_paths[index], state,
                                        display_name=f"示例：{self.examples[index][1]}")
        return state, state["messages"], (preview if preview is not None else self.gr.update())

    def on_send(self, message, state):
        """Runs outside the queue: show the question and a "queued" note at once."""
        state = self.state(state)
        text = (message or "").strip()
        if not text:
            return state, state["messages"], self.gr.update()
        if state["busy"] or state["pending"] is not None:
            self.busy()
            return state, self.gr.update(), self.gr.update()
        too_long = message_problem(text, self.S.max_message_chars)
        if too_long:
            self.say(state, too_long)
            return state, state["messages"], self.gr.update()
        state["pending"] = text
        _user_turn(state, text)
        return state, state["messages"], ""

    def _direct_question(self, message, state):
        """The question of a direct ``/chat`` API call (no on_send before it), or None when refused."""
        text = (message or "").strip()
        if not text:
            return None
        if state["busy"]:
            self.busy()
            return None
        too_long = message_problem(text, self.S.max_message_chars)
        if too_long:
            self.say(state, too_long)
            return None
        _user_turn(state, text)
        return text

    def on_chat(self, message, state, max_new_tokens, temperature, top_p, do_sample):
        """The queued part: stream the answer into the chat (also the ``/chat`` API for scripts)."""
        state = self.state(state)
        entered = time.time()  # Gradio's queue let this request in now (the load test's queue wait ends here)
        text, state["pending"] = state["pending"], None
        if text is None:
            text = self._direct_question(message, state)
            if text is None:
                yield state, state["messages"]
                return
        slot = len(state["messages"]) - 1
        state["busy"] = True
        messages = state["messages"]

        def show(content):
            messages[slot] = {"role": "assistant", "content": content}
            state["messages"] = list(messages)
            return state, state["messages"]

        try:
            yield show(THINKING)
            yield from self._stream(text, state, show, max_new_tokens, temperature, top_p, do_sample, entered)
        except Exception as exc:
            log.exception("chat turn failed")
            yield show(f"⚠️ 生成失败：{type(exc).__name__}: {exc}。可以重试或点「新对话」。")
        finally:
            state["busy"] = False

    def _stream(self, text, state, show, max_new_tokens, temperature, top_p, do_sample, entered=None):
        from helpers.serve.generation import generation_config

        eng = self.pool.get(state["model"])
        try:
            cfg = generation_config(max_new_tokens=int(max_new_tokens), do_sample=bool(do_sample),
                                    temperature=float(temperature), top_p=float(top_p))
        except (TypeError, ValueError) as exc:
            yield show(f"⚠️ 生成参数无效：{exc}")
            return
        first_turn = not state["history"]
        prompt = (text, state["image"]) if first_turn and state["image"] is not None else text
        session = eng.session()
        session.history, _ = bound_history(state["history"], self.S.max_history_chars)
        answer, marks, last_sent = "", {}, 0.0
        called = time.perf_counter()
        try:
            for piece in eng.chat(prompt, session=session, gen_config=cfg, stream_response=True):
                if getattr(piece, "finish_reason", None) == "error":
                    raise RuntimeError(getattr(piece, "error_message", None) or "engine error")
                first_piece = "first_piece_s" not in marks
                marks.setdefault("first_piece_s", time.perf_counter())
                marks.update(tokens_out=getattr(piece, "generate_token_len", None),
                             tokens_in=getattr(piece, "input_token_len", None))
                answer += piece.text
                now = time.perf_counter()
                # The first text goes out at once; later pieces at most every stream_interval_s.
                first_text = bool(answer) and "first_text_s" not in marks
                if first_text:
                    marks["first_text_s"] = now
                if first_piece or first_text or now - last_sent >= self.profile.stream_interval_s:
                    last_sent = now
                    yield show(answer or WRITING)
        finally:
            try:
                session.close()
            except Exception:  # closing is best effort; the turn itself is what matters
                log.debug("session close failed", exc_info=True)
            self._log_turn(text, prompt, called, marks, entered)
        state["history"] = state["history"] + [(prompt, answer)]
        yield show(answer if answer.strip() else "（模型没有生成文字）")

    @staticmethod
    def _log_turn(text, prompt, start, marks, entered):
        """One ``turn`` timing record: engine time to the first piece and to the first text, then decode."""
        end = time.perf_counter()
        since = {k: round(marks[k] - start, 5) for k in ("first_piece_s", "first_text_s") if k in marks}
        log_timing("turn", q=question_key(text), entered=round(entered, 4) if entered else None,
                   image=isinstance(prompt, tuple),  # this turn sends the photo; later turns resend it as history
                   engine_ttft_s=since.get("first_piece_s"),
                   engine_first_text_s=since.get("first_text_s"), total_s=round(end - start, 5),
                   decode_s=round(end - marks["first_piece_s"], 5) if "first_piece_s" in marks else None,
                   tokens_in=marks.get("tokens_in"), tokens_out=marks.get("tokens_out"))

    def on_new_chat(self, state):
        state = self.state(state)
        if state["busy"]:
            self.busy()
            return state, state["messages"]
        state.update(history=[], pending=None)
        keep = f"当前图片仍是 {state['image_name']}。" if state["image"] is not None else "请先上传一张食物照片。"
        state["messages"] = [{"role": "assistant", "content": f"🆕 新对话。{keep}"}]
        return state, state["messages"]

    def on_switch(self, label, state):
        state = self.state(state)
        if label not in self.pool.models:
            self.say(state, f"⚠️ 没有模型 {label}。")
            return state, state["messages"]
        if state["busy"]:
            self.busy()
            return state, state["messages"]
        state.update(model=label, history=[], pending=None)
        state["messages"] = [{"role": "assistant", "content": f"🔁 已切换到 {label}（{self.pool.models[label]}）。"
                                                            "对话重新开始，图片保留。"}]
        return state, state["messages"]
