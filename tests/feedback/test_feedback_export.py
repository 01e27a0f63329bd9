"""`rlft feedback export` as a user runs it: it never destroys the database or overwrites a file
without --force, refuses a directory with one line, and writes atomically."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from rlft.cli.main import main
from rlft.errors import RlftError
from rlft.feedback.exchange import write_jsonl
from rlft.feedback.store import Item, Judgement, Store


@pytest.fixture
def db(tmp_path):
    """A feedback database with one A/B judgement, closed (as between two commands)."""
    path = tmp_path / "fb.db"
    store = Store(path)
    store.add_items([Item("i1", "2+2=", "4", "5")])
    who = store.annotator_for_token(store.add_annotator("ann", consent=True))
    store.submit(Judgement("export-key-1", "i1", who.id, "pair", "A"))
    store.close()
    return path


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _export(capsys, *args):
    code = main(["feedback", "export", *args])
    return code, capsys.readouterr().err


def test_export_onto_the_database_is_refused_and_the_database_survives(
    db, tmp_path, capsys, monkeypatch
):
    before = _digest(db)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "link.jsonl").symlink_to(db)
    (tmp_path / "sub").mkdir()
    for out in ("fb.db", str(db), "sub/../fb.db", "link.jsonl", "fb.db-wal"):
        for force in ([], ["--force"]):
            code, err = _export(capsys, "--db", "fb.db", "--out", out, *force)
            assert code == 2 and "is the feedback database" in err, (out, force, err)
            assert err.count("\n") == 1  # one line, no traceback
    assert _digest(db) == before
    assert Store(db).counts()["judgements"] == 1


def test_another_sqlite_database_is_never_overwritten(db, tmp_path, capsys):
    other = tmp_path / "other.db"
    Store(other).close()
    before = _digest(other)
    code, err = _export(capsys, "--db", str(db), "--out", str(other), "--force")
    assert code == 2 and "is a SQLite database" in err
    assert _digest(other) == before


def test_an_existing_file_is_replaced_only_with_force(db, tmp_path, capsys):
    out = tmp_path / "pairs.jsonl"
    out.write_text("keep me\n")
    code, err = _export(capsys, "--db", str(db), "--out", str(out))
    assert code == 2 and "already exists" in err and "--force" in err
    assert out.read_text() == "keep me\n"
    code, err = _export(capsys, "--db", str(db), "--out", str(out), "--force")
    assert code == 0, err
    assert json.loads(out.read_text())["chosen"] == "4"
    ratings = tmp_path / "ratings.jsonl"
    ratings.write_text("old ratings\n")  # --ratings-out obeys the same rule
    code, err = _export(
        capsys, "--db", str(db), "--out", str(tmp_path / "new.jsonl"), "--ratings-out", str(ratings)
    )
    assert code == 2 and "ratings.jsonl already exists" in err
    assert ratings.read_text() == "old ratings\n" and not (tmp_path / "new.jsonl").exists()


def test_export_to_a_directory_is_one_clear_error(db, tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "rlft.cli.main", "feedback", "export", "--db", str(db), "--out", str(folder)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith("rlft: error:") and "is a directory" in done.stderr
    assert "Traceback" not in done.stderr and list(folder.iterdir()) == []


def test_write_jsonl_never_writes_over_a_file_an_open_store_holds(tmp_path):
    store = Store(
        tmp_path / "live.db"
    )  # the -wal file has no SQLite header: only the registry knows
    try:
        with pytest.raises(RlftError, match="feedback database"):
            write_jsonl([{"a": 1}], tmp_path / "live.db-wal")
    finally:
        store.close()
    write_jsonl([{"a": 1}], tmp_path / "live.db-wal")  # closed: an ordinary file name again


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    out = tmp_path / "pairs.jsonl"
    out.write_text('{"old": true}\n')
    with pytest.raises(TypeError):
        write_jsonl([{"ok": 1}, {"bad": object()}], out)
    assert out.read_text() == '{"old": true}\n'
    assert sorted(os.listdir(tmp_path)) == ["pairs.jsonl"]
