"""`rlft feedback forget ANNOTATOR`: their judgements and identity are gone, from every later
export and from the bytes of the SQLite file."""

from __future__ import annotations

import json

import pytest

from rlft.cli.main import main
from rlft.errors import RlftError
from rlft.feedback.exchange import preference_pairs
from rlft.feedback.store import Item, Judgement, Store

SECRET = "alice-private-remark-7731"


def _fill(store: Store) -> tuple[str, str]:
    store.add_items([Item("i1", "2+2=", "4", "5"), Item("i2", "hi", "hello", "go away")])
    tokens = store.add_annotator("alice", consent=True), store.add_annotator("bob", consent=True)
    alice, bob = (store.annotator_for_token(t) for t in tokens)
    for who, choice, tag in ((alice, "A", "a"), (bob, "B", "b")):
        for item in ("i1", "i2"):
            comment = SECRET if who is alice else None
            store.submit(Judgement(f"key-{tag}-{item}", item, who.id, "pair", choice, comment=comment))
    return tokens


def test_forget_removes_judgements_and_identity_from_store_exports_and_file(tmp_path):
    db = tmp_path / "feedback.db"
    store = Store(db)
    alice_token, bob_token = _fill(store)
    assert len(preference_pairs(store, "all")) == 4
    assert store.forget_annotator("alice") == 2
    pairs = preference_pairs(store, "all")
    assert len(pairs) == 2 and all(p["chosen"] in ("5", "go away") for p in pairs)  # bob's choices only
    assert [j["annotator"] for j in store.judgements()] == ["bob", "bob"]
    assert store.annotator_for_token(alice_token) is None  # the token no longer signs in
    assert store.annotator_for_token(bob_token) is not None
    assert store.counts() == {"items": 2, "annotators": 1, "judgements": 2}
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("feedback.db"))
    assert SECRET.encode() not in raw and b"alice" not in raw
    with pytest.raises(RlftError, match="No annotator named 'alice'"):
        Store(db).forget_annotator("alice")


def test_forget_from_the_command_line_then_export(tmp_path, capsys):
    db = tmp_path / "feedback.db"
    store = Store(db)
    _fill(store)
    store.close()
    assert main(["feedback", "forget", "alice", "--db", str(db)]) == 0
    assert "deleted 2 judgements" in capsys.readouterr().out
    out = tmp_path / "pairs.jsonl"
    assert main(["feedback", "export", "--db", str(db), "--out", str(out), "--aggregate", "all"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and SECRET not in out.read_text()
    assert main(["feedback", "forget", "nobody", "--db", str(db)]) == 2
