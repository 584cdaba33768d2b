"""Driving the course's web UI in a headless Chromium: the one place that knows the page's DOM.

The screenshot script (``scripts/webui_screenshot.py``) and the browser tests
(``tests/test_webui_browser.py``) both ask the UI a question and wait for the streamed answer;
the element ids and the "answer finished" condition live here so both read the page the same way.
Playwright only drives Debian's ``/usr/bin/chromium`` (``scripts/install_browser.sh``); no
browser is ever downloaded.

Example:
    >>> ask(page, "图中是什么菜？", timeout_ms=180_000)   # doctest: +SKIP
    '麻婆豆腐'
"""
from __future__ import annotations

CHROMIUM = "/usr/bin/chromium"
# offline and quiet: no sync, updates or background traffic from a throw-away profile
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync")
# two tabs at once: keep the one in the background from being throttled
BACKGROUND_TAB_ARGS = ("--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                       "--disable-backgrounding-occluded-windows")
MESSAGE_BOX = "#msg textarea"
BOT_MESSAGES = '#chatbot [data-testid="bot"]'
USER_MESSAGES = '#chatbot [data-testid="user"]'
# Done = one more bot message than before asking, no longer the ⏳ note, and the input unlocked
# again (the UI locks it while an answer streams). Argument: [bot messages before asking].
ANSWER_DONE_JS = """([n]) => {
    const bots = document.querySelectorAll('#chatbot [data-testid="bot"]');
    const box = document.querySelector('#msg textarea');
    return bots.length === n + 1 && !bots[n].innerText.includes('⏳') && box && !box.disabled;
}"""
CHAT_INCLUDES_JS = "([text]) => document.querySelector('#chatbot').innerText.includes(text)"


def chromium_args(background_tabs: bool = False) -> list:
    """Command-line switches for the headless Chromium (with ``background_tabs``: several live tabs).

    Example:
        >>> "--headless" in chromium_args() and "--disable-renderer-backgrounding" in chromium_args(True)
        True
    """
    return list(CHROMIUM_ARGS) + (list(BACKGROUND_TAB_ARGS) if background_tabs else [])


def bot_texts(page) -> list:
    """The assistant's messages on the page, oldest first, stripped."""
    return [t.strip() for t in page.locator(BOT_MESSAGES).all_inner_texts()]


def user_texts(page) -> list:
    """The learner's messages on the page, oldest first, stripped."""
    return [t.strip() for t in page.locator(USER_MESSAGES).all_inner_texts()]


def wait_for_chat_text(page, text: str, timeout_ms: int):
    """Wait until the chat shows ``text`` (a note such as "已载入 dish.jpg" or "已切换到").

    The text goes to the page as an argument, not pasted into the script, so quotes in a file
    name cannot break the condition.
    """
    page.wait_for_function(CHAT_INCLUDES_JS, arg=[text], timeout=timeout_ms)


def ask(page, question: str, timeout_ms: int) -> str:
    """Type a question, press Enter, wait for the streamed answer to finish; return it.

    Args:
        page: a Playwright page showing the course's web UI.
        question: what to type into the message box.
        timeout_ms: bound on the wait for the answer (a loaded CPU machine can take minutes).

    Returns:
        The last assistant message, stripped.

    Example:
        >>> ask(page, "它属于哪个菜系？", timeout_ms=180_000)  # doctest: +SKIP
        '川菜'
    """
    page.bring_to_front()
    before = len(bot_texts(page))
    page.fill(MESSAGE_BOX, question)
    page.press(MESSAGE_BOX, "Enter")
    page.wait_for_function(ANSWER_DONE_JS, arg=[before], timeout=timeout_ms)
    return bot_texts(page)[-1]
