"""The online loop on a real feedback store and a real model host: promotion and hot swap, a
rejected candidate is never served, rollback restores the exact outputs, a crashed round leaves
the served version serving and is retried, a restart loses nothing, forget removes everything."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("peft", reason="personal adapters need peft (the scale extra)")

from rlft.config.online import online_recipe_from_dict  # noqa: E402
from rlft.feedback.live import new_response_id  # noqa: E402
from rlft.online.setup import OnlineSession, open_online  # noqa: E402
from rlft.serving.host import GenerationRequest  # noqa: E402

PROMPTS = [f"{a}+{b}=" for a in range(1, 9) for b in range(1, 6)]


def open_session(tmp_path: Path, model: Path, **online) -> OnlineSession:  # noqa: ANN003
    recipe = online_recipe_from_dict({
        "model": str(model), "output_dir": str(tmp_path / "online"),
        "feedback_db": str(tmp_path / "feedback.db"), "torch_threads": 1,
        "online": {"every_judgements": 10, "steps": 6, "batch_size": 8, "learning_rate": 3e-3,
                   "min_heldout_accuracy": 0.0, "max_regression": 100.0, **online},
        "personalization": {"method": "adapter", "r": 2, "min_judgements": 12, "steps": 4,
                            "learning_rate": 1e-2},
    })  # fmt: skip
    return open_online(recipe)


def vote(session: OnlineSession, user: str, answers: list[tuple[str, str, str]]) -> None:
    """``user`` (consenting) was served each (prompt, completion) and rated it up or down."""
    tokens = session.__dict__.setdefault("test_tokens", {})
    if user not in tokens:
        tokens[user] = session.store.add_annotator(user, consent=True)
    annotator = session.store.annotator_for_token(tokens[user])
    for prompt, completion, rating in answers:
        response_id = new_response_id()
        assert session.live.record_response(response_id, annotator, prompt, completion, session.host.version, None)
        session.live.rate(annotator, response_id, rating)


def seeded(session: OnlineSession, prompt: str = "3+4=", adapter: str | None = None) -> str:
    request = GenerationRequest(prompt=prompt, max_tokens=6, temperature=1.0, seed=123, adapter=adapter)
    return session.host.generate(request).texts[0]


def weights(session: OnlineSession) -> dict[str, torch.Tensor]:
    return session.host.base_state_dict()


def test_round_promotes_a_candidate_and_swaps_it_in(tmp_path, tiny_model_dir):
    session = open_session(tmp_path, tiny_model_dir)
    try:
        before = weights(session)
        vote(session, "ann", [(p, "7", "up") for p in PROMPTS[:20]])
        assert session.loop.round_due()
        report = session.loop.poll()
        assert report is not None and report.outcome == "promoted", report
        assert session.host.version == 2 and report.version == 2
        after = weights(session)
        assert any(not torch.equal(before[k], after[k]) for k in before)
        # The candidate moved towards the held-out thumbs up: it is what is served now.
        assert report.gate["heldout_accuracy"] is None or report.gate["heldout_accuracy"] > 0.5
        saved = session.versions.load_version(2).state_dict()
        assert all(torch.equal(saved[k], after[k]) for k in after if k in saved)
        events = [r["event"] for r in session.loop.audit.records()]
        assert "online_round_start" in events and "online_candidate_promoted" in events
        promoted = next(r for r in session.loop.audit.records() if r["event"] == "online_candidate_promoted")
        assert len(promoted["fields"]["train_sha256"]) == 64
        from rlft.common.hashing import folder_sha256

        assert promoted["fields"]["version_sha256"] == folder_sha256(session.versions.version_folder(2))
        assert not session.loop.round_due()  # nothing new since the round
    finally:
        session.close()


def test_a_rejected_candidate_is_never_served(tmp_path, tiny_model_dir):
    probe = tmp_path / "probe.jsonl"
    probe.write_text("".join(json.dumps({"prompt": p, "answer": "12"}) + "\n" for p in PROMPTS[:8]))
    # Thumbs down on exactly the probe's answer: the candidate must lose probability on it, so
    # the probe regresses and the gate refuses it.
    session = open_session(tmp_path, tiny_model_dir, probe=str(probe), max_regression=0.001)
    try:
        before, text = weights(session), seeded(session)
        vote(session, "ann", [(p, "12", "down") for p in PROMPTS[:20]])
        report = session.loop.poll()
        assert report is not None and report.outcome == "rejected"
        assert "probe" in report.gate["reasons"][0]
        assert session.host.version == 1
        assert all(torch.equal(before[k], v) for k, v in weights(session).items())
        assert seeded(session) == text
        assert session.versions.versions() == [1]
        assert any(r["event"] == "online_candidate_rejected" for r in session.loop.audit.records())
    finally:
        session.close()


def test_rollback_serves_the_earlier_versions_exact_outputs(tmp_path, tiny_model_dir):
    session = open_session(tmp_path, tiny_model_dir)
    try:
        v1_weights, v1_text = weights(session), seeded(session)
        vote(session, "ann", [(p, "7", "up") for p in PROMPTS[:20]])
        assert session.loop.poll().outcome == "promoted"
        assert any(not torch.equal(v1_weights[k], v) for k, v in weights(session).items())
        # As a user runs it: the command writes the request; the running loop applies it.
        done = subprocess.run([sys.executable, "-m", "rlft.cli.main", "online", "rollback", "1",
                               "--dir", str(tmp_path / "online")], capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 0, done.stderr
        session.loop.poll()
        assert session.host.version == 1
        assert all(torch.equal(v1_weights[k], v) for k, v in weights(session).items())
        assert seeded(session) == v1_text
        assert session.versions.load_state().served_version == 1
        assert any(r["event"] == "online_rollback" for r in session.loop.audit.records())
        bad = subprocess.run([sys.executable, "-m", "rlft.cli.main", "online", "rollback", "9",
                              "--dir", str(tmp_path / "online")], capture_output=True, text=True)  # fmt: skip
        assert bad.returncode == 2 and "versions kept: [1, 2]" in bad.stderr
    finally:
        session.close()


def test_a_crashed_round_keeps_serving_and_is_retried(tmp_path, tiny_model_dir):
    probe = tmp_path / "probe.jsonl"
    probe.write_text(json.dumps({"prompt": "1+1=", "answer": "2"}) + "\n")
    session = open_session(tmp_path, tiny_model_dir, probe=str(probe), poll_seconds=0.01)
    try:
        text = seeded(session)
        vote(session, "ann", [(p, "7", "up") for p in PROMPTS[:20]])
        probe.write_text("{not json\n")  # edited by hand mid-run: the round reads it and fails
        report = session.loop.run_round()
        assert report.outcome == "failed" and "probe line" in report.error
        assert session.host.version == 1 and seeded(session) == text
        assert session.versions.load_state().consecutive_failures == 1
        assert any(r["event"] == "online_round_failed" for r in session.loop.audit.records())
        probe.write_text(json.dumps({"prompt": "1+1=", "answer": "2"}) + "\n")
        import time

        time.sleep(0.05)  # past the retry backoff
        retried = session.loop.poll()
        assert retried is not None and retried.outcome == "promoted"
        assert session.versions.load_state().consecutive_failures == 0
    finally:
        session.close()


def test_restart_and_personal_adapters_and_forget(tmp_path, tiny_model_dir):
    session = open_session(tmp_path, tiny_model_dir)
    try:
        vote(session, "ann", [(p, "7", "up") for p in PROMPTS[:16]])
        vote(session, "bob", [(p, "7", "down") for p in PROMPTS[16:32]])
        report = session.loop.poll()
        assert report.outcome == "promoted"
        assert set(report.adapters) == {"ann", "bob"}
        installed = sorted(u for u, a in report.adapters.items() if a["installed"])
        assert session.host.adapters() == installed
        shared_text = seeded(session)
        state = session.versions.load_state()
    finally:
        session.close()
    # A restarted server serves the same version with the same adapters: nothing is lost.
    again = open_session(tmp_path, tiny_model_dir)
    from rlft.errors import RlftError

    with pytest.raises(RlftError, match="Another rlft online is using"):
        open_session(tmp_path, tiny_model_dir)  # a second loop on the same folder
    try:
        assert again.host.version == state.served_version == 2
        assert again.host.adapters() == installed
        assert seeded(again) == shared_text
        assert again.live.count() == 32
        done = subprocess.run([sys.executable, "-m", "rlft.cli.main", "privacy", "forget", "ann",
                               "--db", str(tmp_path / "feedback.db"), "--online-dir", str(tmp_path / "online")],
                              capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert again.live.count() == 16
        assert not again.versions.adapter_folder("ann").exists()
        again.loop.poll()
        assert "ann" not in again.host.adapters()
        assert all(j.user == "bob" for j in again.live.judgements())
        forgotten = [r for r in again.loop.audit.records() if r["event"] == "online_user_forgotten"]
        assert forgotten and "ann" not in json.dumps(forgotten)
    finally:
        again.close()


def test_a_round_with_nothing_for_the_shared_model_is_skipped_and_adapters_still_learn(tmp_path, tiny_model_dir):
    # method dpo learns from pairs only; thumbs alone give the shared model nothing to train on.
    session = open_session(tmp_path, tiny_model_dir, method="dpo")
    try:
        vote(session, "ann", [(p, "7", "up") for p in PROMPTS[:14]])
        report = session.loop.poll()
        assert report.outcome == "skipped" and report.gate is None
        assert session.host.version == 1 and session.versions.versions() == [1]
        assert "ann" in report.adapters  # the user's own adapter learns from their thumbs (KTO)
        skipped = [r for r in session.loop.audit.records() if r["event"] == "online_round_skipped"]
        assert skipped and "dpo" in skipped[0]["fields"]["reason"]
        assert session.versions.load_state().consecutive_failures == 0
    finally:
        session.close()


def test_interval_starts_a_round_with_fewer_judgements_than_every_judgements(tmp_path, tiny_model_dir):
    session = open_session(tmp_path, tiny_model_dir, every_judgements=1000, interval=0.05)
    try:
        assert not session.loop.round_due()  # nothing new yet
        vote(session, "ann", [("1+1=", "2", "up")])
        import time

        time.sleep(0.1)
        assert session.loop.round_due()  # one new judgement and the interval has passed
    finally:
        session.close()


def test_dpo_rounds_learn_from_pairwise_judgements(tmp_path, tiny_model_dir):
    session = open_session(tmp_path, tiny_model_dir, method="dpo")
    try:
        token = session.store.add_annotator("ann", consent=True)
        ann = session.store.annotator_for_token(token)
        for prompt in PROMPTS[:16]:
            better, worse = new_response_id(), new_response_id()
            session.live.record_response(better, ann, prompt, "7", 1, None)
            session.live.record_response(worse, ann, prompt, "12", 1, None)
            session.live.prefer(ann, (worse, better), better)
        report = session.loop.poll()
        assert report.outcome == "promoted" and session.host.version == 2
        # The candidate moved towards the held-out preferences relative to the served model.
        assert report.gate["heldout_accuracy"] is None or report.gate["heldout_accuracy"] > 0.5
    finally:
        session.close()


def test_files_that_outlive_a_forget_hold_no_user_name(tmp_path, tiny_model_dir):
    session = open_session(tmp_path, tiny_model_dir)
    try:
        vote(session, "annabel", [(p, "7", "up") for p in PROMPTS[:16]])
        report = session.loop.poll()
        assert "annabel" in report.adapters  # the running loop knows the name
    finally:
        session.close()
    online = tmp_path / "online"
    for name in ("rounds.jsonl", "audit.jsonl", "state.json"):
        assert "annabel" not in (online / name).read_text(), name
    from rlft.online.versions import adapter_key

    assert f"user-{adapter_key('annabel')}" in (online / "rounds.jsonl").read_text()
