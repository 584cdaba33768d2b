"""Screenshot of the course's web UI for the README and notebooks 03/06 (docs/images/webui.png).

Starts the Gradio app on 127.0.0.1 with the transformers engine (CPU is enough), opens it in the
headless Chromium the browser tests use (``/usr/bin/chromium`` driven by Playwright; nothing is
downloaded), uploads a synthetic food photo, asks one question, waits for the answer and saves a
PNG of the page.

Usage:
    PYTHONPATH=. .venv-lmdeploy/bin/python scripts/webui_screenshot.py
    PYTHONPATH=. .venv-lmdeploy/bin/python scripts/webui_screenshot.py --model DIR --base DIR \\
        --out docs/images/webui-finetuned.png --question "图片中的食物通常属于哪个菜系?"

Args (command line):
    --model: the model the UI answers with (default: the tiny base of notebook 02, else the tiny model).
    --base: also offer a base model in the switcher; --model is then the fine-tuned one, selected.
    --question: what to ask; --out: the PNG to write; --dish: which synthetic dish to draw.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

WAIT_MS = 300_000


def main(argv=None) -> int:
    from helpers.settings import get_settings

    S = get_settings()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(S.base_model_path))
    p.add_argument("--base", default=None)
    p.add_argument("--question", default="描述这张图片。")
    p.add_argument("--dish", default="mapo_tofu")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--out", default="docs/images/webui.png")
    a = p.parse_args(argv)
    from helpers.serve.browser import CHROMIUM, MESSAGE_BOX, ask, chromium_args, wait_for_chat_text

    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} missing: run scripts/install_browser.sh", file=sys.stderr)
        return 2

    from playwright.sync_api import sync_playwright

    from helpers.serve.api_server import free_port
    from helpers.serve.pipeline import make_pipeline
    from helpers.data.synth_draw import draw_photo
    from helpers.serve.webui import build_app, launch

    settings = S.replace(max_new_tokens=a.max_new_tokens)
    work = Path(tempfile.mkdtemp(prefix="webui-shot-"))
    photo = work / f"{a.dish}.jpg"
    draw_photo(a.dish, 800, 600, seed=0).save(photo, quality=90)
    engine = make_pipeline(a.model, engine="transformers")
    base = make_pipeline(a.base, engine="transformers") if a.base else None
    # With a base, the UI offers both as notebook 06 does ("基础模型" / "微调模型") and the page
    # switches to the fine-tuned one before asking; without, it serves --model alone.
    demo = (build_app(None, settings, base_model=base, finetuned_model=engine) if base
            else build_app(engine, settings))
    port = free_port()
    launch(demo, "127.0.0.1", port, settings=settings, prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(str(work / "profile"), executable_path=CHROMIUM,
                                                        headless=True, args=chromium_args(),
                                                        viewport={"width": 1280, "height": 860})
            page = ctx.new_page()
            page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded")
            page.wait_for_selector(MESSAGE_BOX, timeout=WAIT_MS)
            if base:
                page.locator("#model label", has_text="微调模型").click()
                wait_for_chat_text(page, "已切换到", WAIT_MS)
            page.set_input_files("#upload input[type=file]", str(photo))
            wait_for_chat_text(page, photo.name, WAIT_MS)
            ask(page, a.question, WAIT_MS)
            page.mouse.move(0, 0)  # no hover highlight left where the last click was
            page.wait_for_timeout(500)
            out = Path(a.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
            ctx.close()
    finally:
        demo.close()
        shutil.rmtree(work, ignore_errors=True)
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
