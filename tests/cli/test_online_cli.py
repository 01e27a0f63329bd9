"""`rlft online RECIPE` as a user runs it: a real server process, the official openai client,
feedback over HTTP, a round that promotes version 2 while serving, and a restart that keeps it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

openai = pytest.importorskip("openai", reason="the dev extra (openai client) is not installed")
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi", reason="the feedback extra is not installed")
pytest.importorskip("peft", reason="the scale extra is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(recipe: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "rlft.cli.main", "online", str(recipe)],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"rlft online exited {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise AssertionError(f"rlft online did not start:\n{log.read_text()}")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_rlft_online_serves_learns_and_restarts(tmp_path, tiny_model_dir):
    from rlft.feedback.store import Store

    db = tmp_path / "feedback.db"
    store = Store(db)
    token = store.add_annotator("ann")
    store.close()
    port = free_port()
    recipe = tmp_path / "online.yaml"
    recipe.write_text(json.dumps({
        "model": str(tiny_model_dir), "output_dir": str(tmp_path / "online"), "feedback_db": str(db),
        "serve": {"port": port}, "torch_threads": 1,
        "online": {"every_judgements": 8, "steps": 4, "batch_size": 8, "learning_rate": 3e-3,
                   "min_heldout_accuracy": 0.0, "poll_seconds": 0.2},
    }))  # fmt: skip
    proc = start(recipe, port, tmp_path / "online.log")
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=token)
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.post(f"http://127.0.0.1:{port}/v1/consent", headers=headers).status_code == 204
        for i in range(8):
            answer = client.completions.create(model="rlft", prompt=f"{i}+1=", max_tokens=4, user="ann")
            assert answer.system_fingerprint == "rlft-v1"
            reply = httpx.post(f"http://127.0.0.1:{port}/v1/feedback", headers=headers,
                               json={"response_id": answer.id, "rating": "up" if i % 2 else "down"})  # fmt: skip
            assert reply.status_code == 201, reply.text
        deadline = time.time() + 120  # the round runs in the background while the server serves
        while time.time() < deadline:
            if client.completions.create(model="rlft", prompt="1+1=", max_tokens=2).system_fingerprint == "rlft-v2":
                break
            time.sleep(0.5)
        else:
            raise AssertionError((tmp_path / "online.log").read_text())
    finally:
        stop(proc)
    status = subprocess.run([sys.executable, "-m", "rlft.cli.main", "online", "status", "--dir",
                             str(tmp_path / "online")], capture_output=True, text=True)  # fmt: skip
    assert json.loads(status.stdout)["served_version"] == 2
    proc = start(recipe, port, tmp_path / "online2.log")
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=token)
        assert client.completions.create(model="rlft", prompt="1+1=", max_tokens=2).system_fingerprint == "rlft-v2"
    finally:
        stop(proc)
    verify = subprocess.run([sys.executable, "-m", "rlft.cli.main", "audit", "verify", str(tmp_path / "online")],
                            capture_output=True, text=True)  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
