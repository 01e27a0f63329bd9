"""Issue 13 item 16: truncating the audit log and deleting audit.head with it must not verify."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlft.responsible.audit_log import AuditLog


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("RLFT_AUDIT")}


def _verify_cli(run: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rlft.cli.main", "audit", "verify", str(run), *extra],
        capture_output=True,
        text=True,
        timeout=60,
        env=_clean_env(),
    )


def _truncate_and_drop_head(audit: AuditLog, keep: int) -> None:
    lines = audit.path.read_text().splitlines(keepends=True)
    audit.path.write_text("".join(lines[:keep]))
    audit.head_path.unlink()


def test_signed_log_truncated_with_its_head_deleted_fails(tmp_path: Path):
    audit = AuditLog(tmp_path, key=b"s3cret")
    for step in range(4):
        audit.append("checkpoint", step=step)
    _truncate_and_drop_head(audit, keep=2)
    result = AuditLog(tmp_path, key=b"s3cret").verify()
    assert (
        not result.ok and "audit.head is missing" in result.problem and "signed" in result.problem
    )
    # --allow-missing-head does not excuse a signed log.
    key_file = tmp_path / "key"
    key_file.write_text("s3cret\n")
    out = _verify_cli(tmp_path, "--key-file", str(key_file), "--allow-missing-head")
    assert out.returncode == 1 and "audit.head is missing" in out.stdout


def test_unsigned_log_without_head_fails_unless_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("RLFT_AUDIT_KEY", raising=False)
    monkeypatch.delenv("RLFT_AUDIT_KEY_FILE", raising=False)
    audit = AuditLog(tmp_path)
    for step in range(4):
        audit.append("checkpoint", step=step)
    _truncate_and_drop_head(audit, keep=2)
    assert not audit.verify().ok
    out = _verify_cli(tmp_path)
    assert out.returncode == 1 and "--allow-missing-head" in out.stdout
    allowed = audit.verify(allow_missing_head=True)
    assert allowed.ok and "missing" in allowed.warning
    out = _verify_cli(tmp_path, "--allow-missing-head")
    assert out.returncode == 0 and "missing" in out.stderr


def test_intact_log_with_its_head_still_verifies(tmp_path: Path):
    audit = AuditLog(tmp_path, key=b"k")
    audit.append("run_start")
    audit.append("run_end")
    assert audit.verify().ok
