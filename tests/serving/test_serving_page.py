"""The chat page in a real headless Chromium: sign in, consent, chat, thumbs, "another answer"
and the pick between two; the votes land in the store."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the feedback extra is not installed")

from rlft.feedback.live import LiveFeedback  # noqa: E402
from rlft.feedback.server import BackgroundServer  # noqa: E402
from rlft.feedback.store import Store  # noqa: E402
from rlft.serving.app import create_serving_app  # noqa: E402
from rlft.serving.host import ModelHost  # noqa: E402


@pytest.fixture
def chat_server(tiny_model_dir, tmp_path):
    """The page asks for no max_tokens, so answers run to the server's default. The untrained tiny
    model rarely ends an answer early: at the default (256) three answers were 400-800 decoding
    steps, 54 s on 2 cores kept busy by other processes (torch's threads wait on each other at every
    step) against 4 s on idle cores. 16 tokens are plenty to show an answer."""
    store = Store(tmp_path / "feedback.db")
    host = ModelHost.from_folder(tiny_model_dir)
    app = create_serving_app(host, store, model_name="tiny", default_max_tokens=16)
    with host, BackgroundServer(app) as server:
        yield server.url, store
    store.close()


def _status_has(page, text):
    page.wait_for_function(f"document.getElementById('status').textContent.includes({text!r})")


def test_chat_thumbs_and_another_answer(browser, chat_server):
    url, store = chat_server
    live = LiveFeedback(store)
    token = store.add_annotator("page-user")  # no consent yet: the page asks
    page = browser.new_page()
    page.set_default_timeout(60_000)  # a margin for a busy machine; answers take well under 1 s idle
    page.goto(url + "/")
    page.fill("#token", "rlft_wrong")
    page.click("#signin")
    page.wait_for_selector("#status.error")
    assert "Unknown token" in page.text_content("#status")

    page.fill("#token", token)
    page.click("#signin")
    page.click("#agree")
    page.wait_for_selector("#chat:not(.hidden)")
    page.fill("#message", "What is 2 + 3?")
    page.click("#send")
    page.wait_for_selector("#answer-bar:not(.hidden)")
    first = page.evaluate("current")
    stored = live.response(first["id"])
    assert (stored["annotator"], stored["completion"]) == ("page-user", first["text"])
    assert stored["prompt"].startswith("user: What is 2 + 3?\n")
    assert page.text_content("#transcript .assistant pre") == first["text"]

    page.click("#up")
    _status_has(page, "marked good")
    [rating] = live.judgements()
    assert (rating.kind, rating.desirable, rating.response_ids) == ("rating", True, (first["id"],))

    page.click("#again")
    page.wait_for_selector("#compare:not(.hidden)")
    second = page.evaluate("pair[1]")
    assert second["id"] != first["id"]
    page.click("[data-pick='1']")
    _status_has(page, "answer 2 kept")
    pair = live.judgements()[-1]
    assert (pair.kind, pair.response_ids) == ("pair", (second["id"], first["id"]))
    assert page.evaluate("current.id") == second["id"]

    # The kept answer is the assistant's turn of the conversation that goes on.
    page.fill("#message", "And 3 + 4?")
    page.click("#send")
    _status_has(page, "Answered by model version 1")
    third = live.response(page.evaluate("current.id"))
    assert "What is 2 + 3?" in third["prompt"] and "And 3 + 4?" in third["prompt"]
    assert page.evaluate("history.length") == 3 and page.evaluate("history[1].content") == second["text"]


def test_without_consent_the_page_chats_but_offers_no_feedback(browser, chat_server):
    url, store = chat_server
    token = store.add_annotator("no-consent")
    page = browser.new_page()
    page.set_default_timeout(60_000)  # a margin for a busy machine; answers take well under 1 s idle
    page.goto(url + "/")
    page.fill("#token", token)
    page.click("#signin")
    page.click("#skip")
    page.fill("#message", "Hello")
    page.click("#send")
    page.wait_for_selector("#answer-bar:not(.hidden)")
    assert page.is_disabled("#up") and page.is_disabled("#again")
    assert LiveFeedback(store).response(page.evaluate("current.id")) is None
