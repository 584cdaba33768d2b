"""Tests for helpers.serve.browser without a browser: the switches, the DOM conditions, the ask sequence.

tests/test_webui_browser.py runs the same helpers against the real page in Chromium.
"""
from __future__ import annotations

from helpers.serve import browser


class FakePage:
    """Records what a Playwright page is asked to do; the answer appears when the condition is awaited."""

    def __init__(self, bots):
        self.bots, self.calls = list(bots), []

    def bring_to_front(self):
        self.calls.append(("front",))

    def fill(self, selector, text):
        self.calls.append(("fill", selector, text))

    def press(self, selector, key):
        self.calls.append(("press", selector, key))

    def wait_for_function(self, script, arg=None, timeout=None):
        self.calls.append(("wait", script, arg, timeout))
        self.bots.append("  麻婆豆腐 ")

    def locator(self, selector):
        page = self

        class Locator:
            def all_inner_texts(self):
                assert selector == browser.BOT_MESSAGES
                return list(page.bots)

        return Locator()


def test_ask_types_presses_enter_and_waits_for_one_more_finished_answer():
    page = FakePage(["你好"])
    assert browser.ask(page, "图中是什么菜？", timeout_ms=5000) == "麻婆豆腐"
    assert page.calls[1:3] == [("fill", "#msg textarea", "图中是什么菜？"), ("press", "#msg textarea", "Enter")]
    assert page.calls[3] == ("wait", browser.ANSWER_DONE_JS, [1], 5000)  # one bot message before asking


def test_answer_done_condition_names_the_ui_elements_it_reads():
    js = browser.ANSWER_DONE_JS
    assert js.startswith("([n]) =>") and "bots.length === n + 1" in js
    assert "'⏳'" in js and "!box.disabled" in js  # the pending note gone and the input unlocked
    assert browser.BOT_MESSAGES == '#chatbot [data-testid="bot"]' and browser.BOT_MESSAGES in js
    assert "#msg textarea" in js and browser.MESSAGE_BOX == "#msg textarea"


def test_chat_text_is_passed_as_an_argument_not_pasted_into_the_script():
    page = FakePage([])
    browser.wait_for_chat_text(page, "已载入 it's.jpg", 1000)
    assert page.calls == [("wait", browser.CHAT_INCLUDES_JS, ["已载入 it's.jpg"], 1000)]
    assert "it's" not in browser.CHAT_INCLUDES_JS


def test_chromium_switches_stay_offline_and_keep_background_tabs_running():
    plain, tabs = browser.chromium_args(), browser.chromium_args(background_tabs=True)
    assert "--headless" in plain and "--disable-background-networking" in plain
    assert "--disable-renderer-backgrounding" not in plain and "--disable-renderer-backgrounding" in tabs
    assert tabs[:len(plain)] == plain and browser.CHROMIUM == "/usr/bin/chromium"
