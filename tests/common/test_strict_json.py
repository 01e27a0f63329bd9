"""The run folder's JSON files are JSON: a non-finite metric is written as null, and said so."""

from __future__ import annotations

import json
import math

from rlft.common.run_folder import RunFolder, write_json_atomic


def strict_loads(text: str):
    """json.loads as jq or JavaScript read it: Infinity and NaN are not JSON."""

    def refuse(constant: str):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_inf_and_nan_are_written_as_null_with_one_warning(tmp_path, capsys):
    run = RunFolder(tmp_path)
    for step in (1, 2):
        run.append_jsonl(run.metrics, {"step": step, "train/loss": math.nan, "train/reward_mean": math.inf,
                                       "train/kl": 0.5, "eval": {"scores": [1.0, -math.inf]}})  # fmt: skip
    write_json_atomic(run.summary, {"final_mean_reward": -math.inf, "steps": 2})
    records = [strict_loads(line) for line in run.metrics.read_text().splitlines()]
    assert records[1] == {"step": 2, "train/loss": None, "train/reward_mean": None, "train/kl": 0.5,
                          "eval": {"scores": [1.0, None]}}  # fmt: skip
    assert strict_loads(run.summary.read_text()) == {"final_mean_reward": None, "steps": 2}
    run.truncate_jsonl(run.metrics, 1)  # the rewrite on resume stays JSON too
    assert [strict_loads(line)["step"] for line in run.metrics.read_text().splitlines()] == [1]
    err = capsys.readouterr().err
    assert "metrics.jsonl: train/loss is nan; written as null" in err
    assert err.count("train/loss is nan") == 1  # once per file and key, not once per step
    assert "summary.json: final_mean_reward is -inf" in err


def test_the_audit_log_stays_json(tmp_path):
    from rlft.responsible.audit_log import AuditLog

    log = AuditLog(tmp_path)
    log.append("run_end", summary={"final_mean_reward": math.nan})
    records = [strict_loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert records[-1]["fields"]["summary"]["final_mean_reward"] is None
    assert log.verify().ok  # the hash chain holds over the written (null) values


def test_exported_feedback_and_logged_episodes_are_json_too(tmp_path):
    from rlft.feedback.exchange import write_jsonl
    from rlft.rollout.episodes import write_episodes
    from rlft.rollout.multiturn import Episode

    write_jsonl([{"prompt": "p", "score": math.nan}], tmp_path / "pairs.jsonl")
    assert strict_loads((tmp_path / "pairs.jsonl").read_text()) == {"prompt": "p", "score": None}
    write_episodes(tmp_path / "episodes.jsonl", [Episode(segments=["hi", "yo"], rewards=[math.inf], success=False)])
    assert strict_loads((tmp_path / "episodes.jsonl").read_text())["rewards"] == [None]
