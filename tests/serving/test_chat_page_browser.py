"""The chat page in a real headless Chromium: sign in, consent, chat, thumbs, "another answer"
and picking the better one; the votes land in the feedback store as the page's user's."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the feedback extra is not installed")

from rlft.feedback.live import LiveFeedback  # noqa: E402
from rlft.feedback.server import BackgroundServer  # noqa: E402
from rlft.feedback.store import Store  # noqa: E402
from rlft.serving.app import create_serving_app  # noqa: E402
from rlft.serving.host import ModelHost  # noqa: E402


def test_chat_thumbs_and_another_answer(browser, tiny_model_dir, tmp_path):
    store = Store(tmp_path / "feedback.db")
    token = store.add_annotator("page-user")  # no consent yet: the page asks for it
    live = LiveFeedback(store)
    host = ModelHost.from_folder(tiny_model_dir)
    with host, BackgroundServer(create_serving_app(host, store, model_name="tiny")) as server:
        page = browser.new_page()
        page.set_default_timeout(20_000)
        page.goto(server.url + "/")
        page.fill("#token", "rlft_wrong")
        page.click("#signin")
        page.wait_for_selector("#status.error")
        assert "Unknown token" in page.text_content("#status")

        page.fill("#token", token)
        page.click("#signin")
        page.click("#agree")
        page.wait_for_selector("#chat:not(.hidden)")
        page.fill("#message", "2+3=")
        page.click("#send")
        page.wait_for_function("document.getElementById('status').textContent.includes('Answered by model version 1')")
        first = page.evaluate("current")
        assert live.response(first["id"])["completion"] == first["text"]

        page.click("#up")
        page.wait_for_function("document.getElementById('status').textContent.includes('marked good')")
        page.click("#down")  # a changed mind: the last vote wins
        page.wait_for_function("document.getElementById('status').textContent.includes('vote changed')")
        votes = live.judgements()
        assert [(v.kind, v.desirable, v.user, v.response_ids) for v in votes] == [
            ("rating", False, "page-user", (first["id"],))
        ]

        page.click("#again")
        page.wait_for_selector("#compare:not(.hidden)")
        second = page.evaluate("pair[1]")
        page.click("[data-pick='1']")  # the second answer is better
        page.wait_for_function("document.getElementById('status').textContent.includes('answer 2 kept')")
        pair = [v for v in live.judgements() if v.kind == "pair"]
        assert len(pair) == 1 and pair[0].response_ids[0] == second["id"]
        assert pair[0].completion == second["text"] and pair[0].rejected == first["text"]
    store.close()
