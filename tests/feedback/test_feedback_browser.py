"""A real headless Chromium (Debian's package, driven by Playwright) signs in, judges, and the
rows land in the database."""

from __future__ import annotations


def test_sign_in_consent_keyboard_and_click(browser, live):
    server, store = live
    token = store.add_annotator("browser-user")  # no consent yet: the page asks for it
    page = browser.new_page()
    page.set_default_timeout(10_000)
    page.goto(server.url + "/")

    page.fill("#token", "rlft_wrong")
    page.click("#signin")
    page.wait_for_selector("#status.error")
    assert "Unknown token" in page.text_content("#status")

    page.fill("#token", token)
    page.click("#signin")
    page.click("#agree")
    page.wait_for_selector("#judge:not(.hidden)")
    first_id = page.evaluate("current.item_id")
    left_side = page.evaluate("current.options[0].side")
    page.keyboard.press("1")  # shortcut: the left response is better
    page.wait_for_function("document.getElementById('status').textContent.includes('Saved (1')")

    rows = store.judgements()
    assert [(r["item_id"], r["choice"], r["annotator"]) for r in rows] == [
        (first_id, left_side, "browser-user")
    ]

    # Typing in the comment box must not trigger shortcuts; then a click submits with the comment.
    second_id = page.evaluate("current.item_id")
    assert second_id != first_id
    page.fill("#comment", "1 and 2 are close; 3 words")
    page.click("#comment")
    page.keyboard.type(" 1 2 3 t")
    right_side = page.evaluate("current.options[1].side")
    page.click("[data-pick='1']")
    page.wait_for_function("document.getElementById('status').textContent.includes('Saved (2')")
    rows = store.judgements()
    assert len(rows) == 2
    assert (rows[1]["item_id"], rows[1]["choice"]) == (second_id, right_side)
    assert rows[1]["comment"] == "1 and 2 are close; 3 words 1 2 3 t"

    page.dblclick("[data-pick='tie']")  # a double click on the third item stores one tie
    page.wait_for_function("document.getElementById('status').textContent.includes('Saved (3')")
    page.wait_for_selector("#done:not(.hidden)")
    assert [r["choice"] for r in store.judgements()][2:] == ["tie"]
    assert store.annotator_for_token(token).consented
