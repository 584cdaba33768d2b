"""Troubleshooting lab (notebook 07): the failures learners of this workflow hit, reproduced safely.

Every reproduction here ends in a caught exception or a measured result, never a hung kernel,
and returns an :class:`Outcome` whose ``kind`` is the letter of what actually happened. The
notebook asks the learner to predict that letter first (:data:`EXERCISES`,
:func:`check_prediction`), then shows the fix and checks it. This module holds the event-loop,
version-drift and XTuner-launch problems; :mod:`helpers.troubleshoot.serving` the prompt,
checkpoint, token-budget, KV-cache and EXIF ones.

Example:
    >>> outcome = reproduce_event_loop_errors()
    >>> outcome.kind
    'b'
    >>> check_prediction("event_loop", "b", outcome.kind).startswith("✅")
    True
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import json
import re
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from helpers.settings import REPO_ROOT


@dataclass(frozen=True)
class Exercise:
    """One "predict, then run" question: choices by letter, the expected letter, a hint."""

    question: str
    choices: dict
    answer: str
    hint: str


@dataclass
class Outcome:
    """What a reproduction did: ``kind`` is a choice letter of its exercise, ``data`` the numbers."""

    kind: str
    detail: str
    data: dict = field(default_factory=dict)


EXERCISES = {
    "event_loop": Exercise(
        "同一个 asyncio 队列先在第一次调用的事件循环里用过，第二次调用换了一个新的事件循环再用它，会怎样？",
        {"a": "两次都正常", "b": "第一次正常，第二次 RuntimeError", "c": "两次都 RuntimeError", "d": "第二次卡住不返回"},
        "b", "asyncio 的队列、锁在第一次需要等待时记住当时的事件循环（_LoopBoundMixin）；换一个循环再用就报错。"),
    "chat_template": Exercise(
        "把微调模型目录命名为 foodie-llama2-lora，并且 tokenizer_config.json 里没有 chat_template，LMDeploy 0.18 会用哪个对话模板？",
        {"a": "InternVL2 的 ChatML 模板", "b": "按目录名匹配到的 Llama 2 模板", "c": "报错，要求指定模板"},
        "b", "lmdeploy.model.get_chat_template 先按路径字符串逐个匹配内置模板，名字里有 llama2 就选 Llama 2。"),
    "stop_words": Exercise(
        "模型学会了在答案后输出 <|im_end|>；目录里没有 generation_config.json 时，LMDeploy 只把分词器的 eos（</s>）当停止符。回答会怎样？",
        {"a": "答完就停", "b": "答完不停，一直写到 max_new_tokens", "c": "一个字也不输出"},
        "b", "停止 token 来自分词器的 eos 加上 generation_config.json 的 eos_token_id；<|im_end|> 不在其中就不会停。"),
    "lora_checkpoint": Exercise(
        "把 XTuner 的 iter_N.pth 当成模型交给 from_pretrained（或 load_state_dict），会怎样？",
        {"a": "能加载，效果等于微调后的模型", "b": "失败或缺少几乎全部权重", "c": "能加载，效果等于基座"},
        "b", "iter_N.pth 只有 LoRA 和 mlp1 的张量（XTuner 的 state_dict 只保存可训练部分），不是模型目录。"),
    "version_drift": Exercise(
        "一个只继承 PreTrainedModel、没有继承 GenerationMixin 的远程代码 LM 类，在 transformers 4.48 和 5.17 里有没有 generate？",
        {"a": "两边都有", "b": "4.48 有，5.17 没有", "c": "两边都没有"},
        "b", "transformers 4.45 起宣布、之后执行：PreTrainedModel 不再继承 GenerationMixin。"),
    "max_length": Exercise(
        "一条训练样本（图像 token + 文本）比 max_length 长时，XTuner 会怎样处理它？",
        {"a": "完整保留", "b": "被截断：答案没有 label，图像 token 也不全", "c": "自动减少切片数"},
        "b", "XTuner 只是把 input_ids 和 labels 从尾部截到 max_length；答案在最后。"),
    "image_order": Exercise(
        "LMDeploy 0.18 收到 (问题, 图片) 元组时，提示里图片在问题前还是后？",
        {"a": "图片在前", "b": "问题在前、图片在后"},
        "b", "只有 (图片, 问题) 才是图片在前；XTuner 训练数据是图片在前。"),
    "system_prompt": Exercise(
        "XTuner 训练用的系统提示词和 LMDeploy 按模型目录渲染出的默认系统提示词一样吗？",
        {"a": "一样", "b": "不一样"},
        "b", "XTuner 的 InternVL_V1_5_Dataset 固定写入自己的系统提示词；tiny 模型的 chat_template 默认的是 InternVL2 的中文提示词。"),
    "kv_cache": Exercise(
        "cache_max_entry_count=0.8 在一张 139.8 GiB 的卡上、加载 4.4 GB 权重之后，大约给 KV cache 多少？",
        {"a": "0.8 × 139.8 ≈ 112 GiB", "b": "0.8 × (139.8 − 权重) ≈ 109 GiB", "c": "固定 session_len × batch 所需的量"},
        "b", "它是加载权重之后空闲显存的比例。"),
    "xtuner_exit": Exercise(
        "训练配置一加载就崩溃时，`xtuner train` 的退出码是多少？",
        {"a": "0", "b": "非 0"},
        "a", "xtuner 的命令行用 subprocess.run 启动 train.py，却不检查它的返回码。"),
    "missing_image": Exercise(
        "训练数据第 1 条记录的图片文件不存在，XTuner 的 InternVL_V1_5_Dataset 取第 1 条时会怎样？",
        {"a": "抛出 FileNotFoundError", "b": "打印一行错误，悄悄换成另一条随机样本", "c": "返回没有图片的样本"},
        "b", "prepare_data 捕获读图异常返回 None，__getitem__ 随后用 _rand_another() 换一条。"),
    "exif": Exercise(
        "一张带 EXIF Orientation=6 的竖拍照片，用 Image.open(path).convert('RGB')（XTuner 的读法）打开，宽高是？",
        {"a": "竖的（与手机上看到的一样）", "b": "横的（侧躺的原始像素）"},
        "b", "Image.open 不应用 EXIF 旋转；ImageOps.exif_transpose 才会。"),
}


def check_prediction(name: str, prediction, observed: str | None = None) -> str:
    """Say whether a learner's prediction matches what happened, with a hint when it does not.

    Args:
        name: key of :data:`EXERCISES`.
        prediction: the learner's letter (None: not made yet).
        observed: the letter the reproduction measured (None: the exercise's expected answer).

    Returns:
        One line starting with ✅, ❌ or ✍️.

    Example:
        >>> check_prediction("xtuner_exit", None).startswith("✍️")
        True
    """
    ex = EXERCISES[name]
    letters = "/".join(ex.choices)
    if prediction is None:
        return f"✍️ 还没有预测：把 PREDICTION 设为 {letters} 之一再运行。{ex.question}"
    key = str(prediction).strip().lower()
    if key not in ex.choices:
        return f"✍️ {prediction!r} 不是选项之一（{letters}）。"
    truth = observed or ex.answer
    if key == truth:
        return f"✅ 预测正确：{truth}（{ex.choices[truth]}）。"
    return f"❌ 你预测 {key}（{ex.choices[key]}），实际是 {truth}（{ex.choices[truth]}）。提示：{ex.hint}"


# --------------------------------------------------------------------------- 1. event loops
def _in_thread(fn):
    """Run ``fn`` on a fresh thread (no running loop there) and return or raise its result."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result(timeout=30)


def _plain(message: str) -> str:
    return re.sub(r"<(\w+) at 0x[0-9a-f]+[^>]*>", r"<\1>", message)


def reproduce_event_loop_errors() -> Outcome:
    """The two event-loop errors of LMDeploy in notebooks and Gradio, with asyncio alone.

    (1) A queue first used under one loop, then from a second call that brings its own loop
    (what LMDeploy's old vision engine met on a web UI's second request); (2) waiting
    synchronously on a loop that is already running (what a notebook cell is inside).

    Returns:
        :class:`Outcome`; ``data["calls"]`` says per call "ok" or the error, ``data["nested"]``
        the second error's message.
    """
    queue: asyncio.Queue = asyncio.Queue()

    async def request():  # one request: wait briefly for work on the shared queue
        try:
            await asyncio.wait_for(queue.get(), 0.01)
        except asyncio.TimeoutError:
            pass

    calls = []
    for _ in range(2):
        try:
            _in_thread(lambda: asyncio.run(request()))
            calls.append("ok")
        except RuntimeError as exc:
            calls.append(f"RuntimeError: {_plain(str(exc))}")

    async def cell():
        inner = asyncio.sleep(0)
        try:
            asyncio.get_running_loop().run_until_complete(inner)
        finally:
            inner.close()

    try:
        _in_thread(lambda: asyncio.run(cell()))
        nested = "ok"
    except RuntimeError as exc:
        nested = f"RuntimeError: {exc}"
    failed = [c != "ok" for c in calls]
    kind = {(False, False): "a", (False, True): "b", (True, True): "c"}.get(tuple(failed), "c")
    return Outcome(kind, f"call 1: {calls[0]} | call 2: {calls[1]} | nested wait: {nested}",
                   dict(calls=calls, nested=nested))


class LoopThread:
    """One event loop on its own daemon thread; every call is submitted to it (the fix).

    LMDeploy 0.18's pipeline works this way (``_EventLoopThread`` in ``lmdeploy/pipeline.py``):
    whichever thread or loop a caller is in, the coroutines always run on the same loop.

    Example:
        >>> with LoopThread() as lt:
        ...     lt.run(asyncio.sleep(0, result=7))
        7
    """

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="course-loop")
        self.thread.start()

    def run(self, coro, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def fixed_event_loop_calls(n: int = 3) -> list:
    """The same shared-queue request as :func:`reproduce_event_loop_errors`, ``n`` times through one LoopThread."""
    results = []
    with LoopThread() as lt:
        queue = lt.run(_make_queue())

        async def request():
            try:
                await asyncio.wait_for(queue.get(), 0.01)
            except asyncio.TimeoutError:
                pass
            return "ok"

        for _ in range(n):
            results.append(_in_thread(lambda: lt.run(request())))  # each call from a different thread
    return results


async def _make_queue():
    return asyncio.Queue()


def package_source_hits(package: str, patterns, python: str | None = None) -> dict:
    """Lines of an installed package's source matching each regex, as ``path:line: text``.

    Args:
        package: top-level package name (e.g. "lmdeploy").
        patterns: regexes.
        python: the interpreter whose site-packages to search (default: this one).

    Returns:
        ``{pattern: [hit, ...]}`` with paths relative to site-packages.
    """
    root = Path(_site_packages(python)) / package
    hits = {p: [] for p in patterns}
    for path in sorted(root.rglob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
        for p in patterns:
            for i, line in enumerate(text, 1):
                if re.search(p, line):
                    hits[p].append(f"{path.relative_to(root.parent)}:{i}: {line.strip()[:110]}")
    return hits


def _site_packages(python: str | None) -> str:
    if python is None:
        import sysconfig

        return sysconfig.get_paths()["purelib"]
    out = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip()


# --------------------------------------------------------------------------- 4. version drift
XTUNER_PYTHON = REPO_ROOT / ".venv-xtuner" / "bin" / "python"
LMDEPLOY_PYTHON = REPO_ROOT / ".venv-lmdeploy" / "bin" / "python"

DRIFT_PROBE = '''
import io, json, logging, tempfile, torch, transformers
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
stream = io.StringIO()
transformers.utils.logging.get_logger("transformers").addHandler(logging.StreamHandler(stream))

class ToyConfig(PretrainedConfig):
    model_type = "toy_remote_lm"

class OldStyleLM(PreTrainedModel):  # remote code written for transformers 4.37: no GenerationMixin, no post_init
    config_class = ToyConfig
    def __init__(self, config):
        super().__init__(config)
        self.lm_head = torch.nn.Linear(4, 4)
    def prepare_inputs_for_generation(self, input_ids, **kwargs):
        return {"input_ids": input_ids}

class FixedLM(OldStyleLM, GenerationMixin):  # the fix: inherit GenerationMixin, finish with post_init()
    def __init__(self, config):
        super().__init__(config)
        self.post_init()

def round_trip(cls):
    folder = tempfile.mkdtemp()
    try:
        cls(ToyConfig()).save_pretrained(folder)
        cls.from_pretrained(folder)
        return "ok"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:120]

print(json.dumps({"transformers": transformers.__version__,
                  "PreTrainedModel_inherits_GenerationMixin": issubclass(PreTrainedModel, GenerationMixin),
                  "old_style_has_generate": hasattr(OldStyleLM, "generate"), "old_style_loads": round_trip(OldStyleLM),
                  "fixed_has_generate": hasattr(FixedLM, "generate"), "fixed_loads": round_trip(FixedLM),
                  "warning": stream.getvalue().strip().splitlines()[0][:300] if stream.getvalue() else ""}))
'''


def run_in_env(python, code: str, args=(), timeout: int = 240) -> dict:
    """Run ``code`` with another environment's Python and parse the JSON its last line prints.

    Args:
        python: interpreter path (e.g. :data:`XTUNER_PYTHON`).
        code: a script whose last stdout line is JSON.
        args: command-line arguments for the script.
        timeout: seconds.

    Returns:
        The parsed JSON, plus ``"stdout"`` (the lines before it).

    Raises:
        FileNotFoundError: the interpreter does not exist (install that requirements file).
        RuntimeError: the script failed; the message ends with its stderr.
    """
    python = Path(python)
    if not python.exists():
        raise FileNotFoundError(f"{python} does not exist: run `make envs` (requirements-xtuner.txt / "
                                "requirements-lmdeploy.txt)")
    env = {**__import__("os").environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    proc = subprocess.run([str(python), "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=str(REPO_ROOT), env=env)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{python.parent.parent.name} script failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    result = json.loads(lines[-1])
    result["stdout"] = "\n".join(lines[:-1])
    return result


def version_drift() -> list:
    """:data:`DRIFT_PROBE` in both course environments: one row per transformers version."""
    rows = []
    for name, python in (("xtuner", XTUNER_PYTHON), ("lmdeploy", LMDEPLOY_PYTHON)):
        row = run_in_env(python, DRIFT_PROBE)
        row.pop("stdout")
        rows.append({"env": name, **row})
    return rows
