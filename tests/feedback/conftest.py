"""Fixtures for the feedback tests: a SQLite store with items, and a live server on it."""

from __future__ import annotations

import pytest

from rlft.feedback.store import Item, Store

ITEMS = [
    Item("i1", "2+2=", "4", "5"),
    Item("i2", "Say hi.", "Hello!", "Go away."),
    Item("i3", "Capital of France?", "Paris", "Lyon"),
    Item("solo", "Rate me.", "Only one answer"),
]


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "feedback.db")
    store.add_items(ITEMS)
    yield store
    store.close()


@pytest.fixture
def live(store):
    """(server, store) with the app served by a real uvicorn on 127.0.0.1 and a free port."""
    pytest.importorskip("fastapi", reason="the feedback extra is not installed")
    from rlft.feedback.server import BackgroundServer, create_app

    with BackgroundServer(create_app(store)) as server:
        yield server, store
