"""Audit log: a clean chain verifies; each kind of tampering is detected and named."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlft.common.hashing import file_sha256, folder_sha256
from rlft.responsible.audit_log import AuditLog, record_hash, run_provenance


@pytest.fixture
def log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AuditLog:
    monkeypatch.delenv("RLFT_AUDIT_KEY", raising=False)
    monkeypatch.delenv("RLFT_AUDIT_KEY_FILE", raising=False)
    audit = AuditLog(tmp_path)
    audit.append("run_start", config={"seed": 0}, provenance=run_provenance())
    for step in (1, 2, 3):
        audit.append("checkpoint", step=step, sha256="ab" * 32)
    audit.append("run_end", final_accuracy=0.5)
    return audit


def _lines(audit: AuditLog) -> list[str]:
    return audit.path.read_text().splitlines(keepends=True)


def _verify_cli(run: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlft.cli.main", "audit", "verify", str(run), *extra],
                          capture_output=True, text=True, timeout=60, env=env)


def test_clean_log_verifies(log: AuditLog):
    result = log.verify()
    assert result.ok and result.records == 5 and result.problem is None
    records = log.records()
    assert [r["seq"] for r in records] == [0, 1, 2, 3, 4]
    assert records[0]["prev"] == "0" * 64
    assert all(r["prev"] == p["hash"] for p, r in zip(records, records[1:], strict=False))
    out = _verify_cli(log.root)
    assert out.returncode == 0 and "OK, 5 records" in out.stdout


def test_flipping_one_byte_is_detected_and_named(log: AuditLog):
    data = bytearray(log.path.read_bytes())
    line_start = data.index(b'"checkpoint"', data.index(b"\n") + 1)  # record 1
    position = data.index(b'"step": 1', line_start) + len('"step": ')
    data[position] = ord("7")
    log.path.write_bytes(bytes(data))
    result = log.verify()
    assert not result.ok and result.bad_line == 2
    assert "record 1 ('checkpoint') was edited" in result.problem
    out = _verify_cli(log.root)
    assert out.returncode == 1 and "line 2" in out.stdout and "edited" in out.stdout


def test_deleting_a_line_is_detected_and_named(log: AuditLog):
    lines = _lines(log)
    log.path.write_text("".join(lines[:2] + lines[3:]))
    result = log.verify()
    assert not result.ok and result.bad_line == 3
    assert "record 2 is missing (deleted)" in result.problem


def test_reordering_two_records_is_detected_and_named(log: AuditLog):
    lines = _lines(log)
    lines[1], lines[3] = lines[3], lines[1]
    log.path.write_text("".join(lines))
    result = log.verify()
    assert not result.ok and result.bad_line == 2
    assert "out of order" in result.problem and "record 1 is at line 4" in result.problem


def test_truncating_the_end_is_detected(log: AuditLog):
    log.path.write_text("".join(_lines(log)[:3]))
    result = log.verify()
    assert not result.ok and "truncated" in result.problem and "records 3..4" in result.problem


def test_rewriting_the_hash_after_an_edit_is_caught_by_the_hmac(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    key_file = tmp_path / "key"
    key_file.write_text("s3cret\n")
    monkeypatch.setenv("RLFT_AUDIT_KEY_FILE", str(key_file))
    audit = AuditLog(tmp_path / "run")
    for step in range(3):
        audit.append("checkpoint", step=step)
    assert audit.verify().ok and audit.verify().signed
    # An attacker without the key edits record 1 and recomputes its hash (and the links after it).
    records = audit.records()
    records[1]["fields"]["step"] = 99
    for i in (1, 2):
        records[i]["prev"] = records[i - 1]["hash"]
        records[i]["hash"] = record_hash(records[i])
    audit.path.write_text("".join(json.dumps(r) + "\n" for r in records))
    unsigned_check = AuditLog(tmp_path / "run", key_from_env=False).verify()
    assert unsigned_check.ok is False  # the head file still names the old last hash
    result = audit.verify()
    assert not result.ok and result.bad_line == 2 and "HMAC" in result.problem
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLFT_AUDIT")}
    out = _verify_cli(tmp_path / "run", "--key-file", str(key_file), env=env)
    assert out.returncode == 1 and "HMAC" in out.stdout


def test_torn_last_line_is_named(log: AuditLog):
    with log.path.open("a") as fh:
        fh.write('{"seq": 5, "ev')
    result = log.verify()
    assert not result.ok and result.bad_line == 6 and "not a valid JSON record" in result.problem


def test_missing_log_fails_with_a_clear_message(tmp_path: Path):
    out = _verify_cli(tmp_path)
    assert out.returncode == 1 and "no audit log" in out.stdout


def test_hash_helpers(tmp_path: Path):
    (tmp_path / "a.txt").write_bytes(b"abc")
    assert file_sha256(tmp_path / "a.txt") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.bin").write_bytes(b"\x00")
    before = folder_sha256(tmp_path)
    (tmp_path / ".tmp-partial").write_bytes(b"ignored")
    assert folder_sha256(tmp_path) == before
    (tmp_path / "sub" / "b.bin").write_bytes(b"\x01")
    assert folder_sha256(tmp_path) != before


def test_provenance_names_versions_host_and_user():
    prov = run_provenance()
    assert prov["rlft_version"] and prov["python"] and prov["torch"] and prov["host"]
    assert set(prov) >= {"git", "user", "transformers"}
