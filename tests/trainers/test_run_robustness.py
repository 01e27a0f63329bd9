"""Issue 13 items 12, 13, 17, 18 and 19: damaged checkpoints, overflowing weights, resume
bookkeeping, rollout.max_new_tokens and one-line errors for a bad run_dir or model."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from rlft.cli.main import main
from rlft.config import config_from_dict, load_config
from rlft.errors import ConfigError, NonFiniteError, RlftError
from rlft.trainers.registry import train

pytestmark = pytest.mark.slow


def _config(run, recipe, *extra):
    return config_from_dict({}, [*recipe, f"run_dir={run}", *extra])


def _flip_a_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # in the tensor data, after the header: the file still parses
    path.write_bytes(bytes(data))


def _snapshot(run: Path) -> dict[str, bytes]:
    return {
        name: (run / name).read_bytes()
        for name in ("config.yaml", "audit.jsonl", "audit.head", "privacy.json")
    }


# ---- item 12: a damaged newest checkpoint ------------------------------------------------------


def test_bit_flipped_newest_checkpoint_is_moved_aside_and_the_previous_one_resumed(
    tmp_path, tiny_recipe, capsys
):
    run = tmp_path / "run"
    recipe = [*tiny_recipe, "warm_start.steps=0", "train.steps=4", "checkpoint.every=2"]
    train(_config(run, recipe), progress=False)
    _flip_a_bit(run / "checkpoints" / "step_0000004" / "model.safetensors")

    summary = train(_config(run, recipe, "train.steps=6"), resume=True, progress=False)
    assert "step_0000004 is damaged" in capsys.readouterr().err
    assert (run / "checkpoints" / "corrupt_step_0000004").is_dir()  # kept for inspection
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 6] and summary["steps"] == 6
    events = [r["event"] for r in map(json.loads, (run / "audit.jsonl").read_text().splitlines())]
    assert events.count("run_resume") == 1 and main(["audit", "verify", str(run)]) == 0


def test_no_intact_checkpoint_refuses_before_touching_the_run(tmp_path, tiny_recipe):
    run = tmp_path / "run"
    recipe = [*tiny_recipe, "warm_start.steps=0", "train.steps=2", "checkpoint.every=2"]
    train(_config(run, recipe), progress=False)
    (run / "checkpoints" / "step_0000002" / "optimizer.pt").write_bytes(b"truncated")
    before = _snapshot(run)
    with pytest.raises(
        RlftError,
        match=r"no intact checkpoint.*step_0000002: optimizer.pt does not match its SHA-256",
    ):
        train(_config(run, recipe, "train.steps=4"), resume=True, progress=False)
    assert _snapshot(run) == before  # no run_resume record, privacy.json and config.yaml untouched
    assert (run / "checkpoints" / "step_0000002").is_dir()


def test_checkpoint_check_uses_its_checksums_and_the_audit_hash(tmp_path):
    import torch

    from rlft.common.hashing import folder_sha256
    from rlft.trainers.checkpoint import TrainerState, checkpoint_problem, save_checkpoint

    model = torch.nn.Linear(8, 8)
    path = save_checkpoint(
        tmp_path, model, {"optimizer": torch.optim.AdamW(model.parameters())}, TrainerState(step=1), keep=2
    )
    recorded = folder_sha256(path)
    assert checkpoint_problem(path, recorded) is None and checkpoint_problem(path, None) is None
    _flip_a_bit(path / "model.safetensors")
    assert "model.safetensors does not match" in checkpoint_problem(
        path, None
    )  # no audit record needed
    # Rewriting checksums.json to match is still caught by the hash in the audit log.
    from rlft.common.hashing import file_sha256

    sums = json.loads((path / "checksums.json").read_text())
    sums["model.safetensors"] = file_sha256(path / "model.safetensors")
    (path / "checksums.json").write_text(json.dumps(sums))
    assert checkpoint_problem(path, None) is None
    assert "audit.jsonl" in checkpoint_problem(path, recorded)


# ---- item 13: an overflowing learning rate -----------------------------------------------------


def test_overflowing_learning_rate_stops_with_a_clear_error_and_saves_no_final_model(
    tmp_path, tiny_recipe, monkeypatch
):
    from rlft.tasks.arithmetic import ArithmeticTask

    # Non-zero advantages, so the policy gradient (and the step) is not zero.
    monkeypatch.setattr(
        ArithmeticTask, "reward", lambda self, c, p: [float(sum(map(ord, x)) % 2) for x in c]
    )
    run = tmp_path / "run"
    with pytest.raises(
        NonFiniteError, match=r"weights overflowed.*1e\+30.*Lower train.learning_rate"
    ):
        train(
            _config(run, tiny_recipe, "warm_start.steps=0", "train.learning_rate=1e30"),
            progress=False,
        )
    assert not (run / "final_model").exists() and not (run / "summary.json").exists()


def test_non_finite_learning_rate_is_refused_at_load(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  learning_rate: .inf\n")
    with pytest.raises(ConfigError, match=r"train.learning_rate=inf is not a finite number"):
        load_config(recipe)
    with pytest.raises(ConfigError, match="not a finite number"):
        config_from_dict({}, ["warm_start.learning_rate=nan"])


def test_saving_non_finite_weights_is_refused(tmp_path):
    import torch

    from rlft.trainers.checkpoint import TrainerState, save_checkpoint

    model = torch.nn.Linear(4, 4)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="weights are not finite"):
        save_checkpoint(
            tmp_path, model, {"optimizer": torch.optim.AdamW(model.parameters())}, TrainerState(step=1), keep=1
        )
    assert not any(tmp_path.glob("step_*"))


# ---- item 17: resume bookkeeping ---------------------------------------------------------------


def _fake_pii(monkeypatch):
    """Count a fake entity in every text holding a 7, so arithmetic prompts carry 'PII'."""
    from rlft.responsible.pii import PiiScrubber, ScrubResult

    monkeypatch.setattr(
        PiiScrubber,
        "scrub",
        lambda self, text: ScrubResult(
            text, Counter({"SEVEN": text.count("7")}) if "7" in text else Counter()
        ),
    )


def test_resumed_run_merges_privacy_counts_and_refuses_fewer_steps(
    tmp_path, tiny_recipe, monkeypatch
):
    _fake_pii(monkeypatch)
    recipe = [*tiny_recipe, "warm_start.steps=4", "checkpoint.every=2"]
    whole = tmp_path / "whole"
    train(_config(whole, recipe, "train.steps=4"), progress=False)
    part = tmp_path / "part"
    train(_config(part, recipe, "train.steps=2"), progress=False)
    first = json.loads((part / "privacy.json").read_text())
    train(_config(part, recipe, "train.steps=4"), resume=True, progress=False)
    merged = json.loads((part / "privacy.json").read_text())
    expected = json.loads((whole / "privacy.json").read_text())
    assert merged["counts"]["SEVEN"] > first["counts"]["SEVEN"]
    assert merged == expected  # equal to the uninterrupted run's counts

    config_before = (part / "config.yaml").read_bytes()
    with pytest.raises(
        RlftError, match=r"already completed 4 steps.*train.steps=3.*train.steps >= 4"
    ):
        train(_config(part, recipe, "train.steps=3"), resume=True, progress=False)
    assert (part / "config.yaml").read_bytes() == config_before


def test_run_that_failed_loading_its_model_can_be_rerun_in_the_same_folder(
    tmp_path, tiny_recipe, tiny_model_dir
):
    broken = tmp_path / "broken_model"
    shutil.copytree(tiny_model_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    run = tmp_path / "run"
    recipe = [*tiny_recipe, "warm_start.steps=0", "train.steps=1"]
    with pytest.raises(RlftError, match=r"truncated or damaged"):
        train(_config(run, recipe, f"model.path={broken}"), progress=False)
    assert (run / "config.yaml").exists()  # the failed start left its recipe and audit record
    summary = train(_config(run, recipe, f"model.path={tiny_model_dir}"), progress=False)
    assert summary["steps"] == 1
    assert main(["audit", "verify", str(run)]) == 0  # the audit log continues, both starts recorded


def test_non_run_folder_messages_do_not_send_the_user_in_a_circle(tmp_path, tiny_recipe, capsys):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "todo.txt").write_text("buy milk\n")
    args = [
        "demo",
        "--no-progress",
        "--run-dir",
        str(folder),
        *sum((["--set", o] for o in tiny_recipe), []),
    ]
    assert main(args) == 2
    fresh = capsys.readouterr().err
    assert main([*args, "--resume"]) == 2
    resumed = capsys.readouterr().err
    assert "holds no rlft run" in fresh and "--resume" not in fresh
    assert "not an rlft run folder" in resumed and "without --resume" not in resumed
    assert "--set run_dir=PATH" in fresh and "--set run_dir=PATH" in resumed
    assert sorted(p.name for p in folder.iterdir()) == ["todo.txt"]


# ---- item 18: rollout.max_new_tokens beyond the context window --------------------------------


def test_max_new_tokens_beyond_the_context_window_is_refused_before_training(tmp_path, tiny_recipe):
    run = tmp_path / "run"
    # 600 > 512 positions of the tiny model (a value that still fits in memory if this check regressed).
    with pytest.raises(
        ConfigError, match=r"max_new_tokens=600 does not fit.*max_position_embeddings is 512"
    ):
        train(_config(run, tiny_recipe, "rollout.max_new_tokens=600"), progress=False)
    assert not (run / "base_model").exists()  # refused before the warm start and any sampling


def test_max_new_tokens_bound_leaves_room_for_the_longest_prompt(tiny_model_dir):
    from rlft.models.loading import check_max_new_tokens, load_policy

    model, tokenizer = load_policy(str(tiny_model_dir))
    prompts = ["1+2=", "12345+67890="]
    longest = len(tokenizer(prompts[1]).input_ids)
    check_max_new_tokens(model, tokenizer, prompts, 512 - longest)  # exactly fits
    with pytest.raises(
        ConfigError, match=rf"longest prompt has {longest} tokens, so at most {512 - longest}"
    ):
        check_max_new_tokens(model, tokenizer, prompts, 512 - longest + 1)
    with pytest.raises(ConfigError, match="max_new_tokens=100000000"):
        check_max_new_tokens(model, tokenizer, prompts, 100_000_000)


# ---- item 19: one-line errors ------------------------------------------------------------------


def _train_args(run: Path, recipe: list[str]) -> list[str]:
    return [
        "demo",
        "--no-progress",
        "--run-dir",
        str(run),
        *sum((["--set", o] for o in recipe), []),
    ]


def test_run_dir_that_is_a_file_is_one_line_error(tmp_path, tiny_recipe, capsys):
    target = tmp_path / "run"
    target.write_text("not a folder")
    assert main(_train_args(target, tiny_recipe)) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and "Traceback" not in err


def test_read_only_run_dir_is_one_line_error(tiny_recipe):
    import tempfile

    tmp_path = Path(tempfile.mkdtemp())  # not under pytest's 0700 folder: another user may enter it
    tmp_path.chmod(0o755)
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    command = [sys.executable, "-m", "rlft.cli.main", *_train_args(parent / "run", tiny_recipe)]
    if os.geteuid() == 0:  # root writes anywhere: run as nobody, for whom the folder is read-only
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv")
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    env = {**os.environ, "HOME": str(tmp_path)}
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    finally:
        shutil.rmtree(tmp_path)
    assert out.returncode == 2, out.stderr
    assert "Cannot write into run folder" in out.stderr and "Traceback" not in out.stderr


def test_full_disk_is_one_line_error_and_the_run_resumes(
    tmp_path, tiny_recipe, monkeypatch, capsys
):
    import rlft.trainers.checkpoint as checkpoint

    real_save = checkpoint.save_file

    def disk_full(tensors, filename, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)

    run = tmp_path / "run"
    recipe = [*tiny_recipe, "warm_start.steps=0", "train.steps=4", "checkpoint.every=2"]
    monkeypatch.setattr(checkpoint, "save_file", disk_full)
    assert main(_train_args(run, recipe)) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "disk is full" in err and "Traceback" not in err
    monkeypatch.setattr(checkpoint, "save_file", real_save)  # space freed
    assert main([*_train_args(run, recipe), "--resume"]) == 0
    assert json.loads((run / "summary.json").read_text())["steps"] == 4
