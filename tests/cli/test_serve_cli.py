"""``rlft serve`` as a user runs it: a run folder served on 127.0.0.1, a token from
``rlft feedback add-annotator``, the official openai client, and the refusals."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

openai = pytest.importorskip("openai", reason="the openai client is not installed (rlft[dev])")
httpx = pytest.importorskip("httpx", reason="the feedback extra is not installed")
pytest.importorskip("fastapi", reason="the feedback extra is not installed")

from rlft.cli.serve_commands import is_loopback  # noqa: E402

RLFT = [sys.executable, "-m", "rlft.cli.main"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_rlft_serve_answers_the_openai_client_and_stores_feedback(tiny_model_dir, tmp_path):
    run = tmp_path / "myrun"
    shutil.copytree(tiny_model_dir, run / "final_model")
    (run / "config.yaml").write_text("task: {name: arithmetic}\n")
    db = tmp_path / "feedback.db"
    added = subprocess.run([*RLFT, "feedback", "add-annotator", "alice", "--db", str(db), "--consent"],
                           capture_output=True, text=True, env=ENV, timeout=60)  # fmt: skip
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    port = _free_port()
    server = subprocess.Popen([*RLFT, "serve", str(run), "--db", str(db), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, server.communicate()[1][-2000:]
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "rlft serve did not start in 90 s"
            time.sleep(0.3)
        client = openai.OpenAI(base_url=url + "/v1", api_key=token, max_retries=0)
        assert [m.id for m in client.models.list().data] == ["myrun"]
        answer = client.chat.completions.create(model="myrun", messages=[{"role": "user", "content": "2+2="}], max_tokens=4)
        assert answer.system_fingerprint == "rlft-v1" and answer.model_extra["recorded"] is True
        voted = httpx.post(url + "/v1/feedback", headers={"Authorization": f"Bearer {token}"},
                           json={"response_id": answer.id, "rating": "up"})  # fmt: skip
        assert voted.status_code == 201
    finally:
        server.terminate()
        out, err = server.communicate(timeout=30)
    assert "clear text" not in err
    # The tiny model has no chat template: said once at start, and in each chat answer.
    assert "'myrun' has no chat template" in err and "/v1/completions" in err
    assert "no chat template" in answer.model_extra["warning"]
    assert "as model 'myrun'" in out and f"http://127.0.0.1:{port}/v1" in out

    from rlft.feedback.live import LiveFeedback
    from rlft.feedback.store import Store

    [judgement] = LiveFeedback(Store(db)).judgements()
    assert (judgement.user, judgement.desirable, judgement.response_ids) == ("alice", True, (answer.id,))


def test_rlft_serve_refusals_and_the_clear_text_warning(tmp_path):
    missing = subprocess.run([*RLFT, "serve", str(tmp_path / "nowhere"), "--host", "0.0.0.0"],
                             capture_output=True, text=True, env=ENV, timeout=60)  # fmt: skip
    assert missing.returncode == 2
    assert "travel in clear text" in missing.stderr
    assert "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    bad_port = subprocess.run([*RLFT, "serve", str(tmp_path), "--port", "70000"],
                              capture_output=True, text=True, env=ENV, timeout=60)  # fmt: skip
    assert bad_port.returncode == 2 and "--port 70000" in bad_port.stderr
    assert "clear text" not in bad_port.stderr
    assert [is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "10.0.0.2", "example.org")] == [
        True, True, True, False, False, False
    ]  # fmt: skip


def test_rlft_serve_refuses_a_db_that_does_not_exist_or_is_not_a_database(tiny_model_dir, tmp_path, capsys):
    """In-process (rlft.cli.main.main: the command's whole path but the interpreter start)."""
    from rlft.cli.main import main
    from rlft.feedback.store import Store

    def serve(*args: str) -> tuple[int, str]:
        status = main(["serve", str(tiny_model_dir), *args])
        return status, capsys.readouterr().err

    typo = tmp_path / "feedbak.db"
    status, err = serve("--db", str(typo))
    assert status == 2 and f"--db {typo} does not exist" in err and "--create" in err
    assert not typo.exists()
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n" * 100)
    status, err = serve("--db", str(text))
    assert status == 2 and "cannot be opened as a SQLite database" in err
    assert text.read_text() == "not a database\n" * 100
    status, err = serve("--db", str(tmp_path))
    assert status == 2 and "is a folder" in err
    status, err = serve("--max-rows-per-request", "0")
    assert status == 2 and "--max-rows-per-request must be at least 1" in err
    db = tmp_path / "ok.db"
    Store(db).close()
    status, err = serve("--db", str(db), "--device", "cuda")  # no GPU here: one error, not a traceback
    assert status == 2 and "--device='cuda'" in err and "sees no CUDA device" in err
    status, err = serve("--db", str(db), "--device", "gpu0")
    assert status == 2 and "auto, cpu, cuda or cuda:N" in err
    # --create makes the database, then the command goes on (here to a port that is taken).
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        status, err = serve("--db", str(typo), "--create", "--port", str(taken.getsockname()[1]))
    assert status == 2 and "Cannot listen" in err, err
    assert Store(typo).counts()["annotators"] == 0
