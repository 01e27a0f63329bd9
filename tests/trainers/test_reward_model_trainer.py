"""The reward-model trainer on the run harness (``rlft rm train``): a run stopped mid-way and
continued with ``--resume`` equals an uninterrupted one; a resumed run may add epochs but not
change the recipe; an overflowing learning rate stops with the last good checkpoint named."""

from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors.torch import load_file

from rlft.cli.main import main
from rlft.config.reward_model import rm_recipe_from_dict
from rlft.errors import NonFiniteError, RlftError
from rlft.trainers import reward_model
from rlft.trainers.reward_model import train_reward_model

WORDS = ["the", "a", "cat", "dog", "sun", "rain", "tree", "river", "stone", "light", "cloud", "bird", "song", "road"]


@pytest.fixture
def pairs(tmp_path):
    """48 pairs with a hidden preference: the chosen completion praises, the rejected one complains."""
    rng = random.Random(0)
    path = tmp_path / "pairs.jsonl"
    with path.open("w") as f:
        for i in range(48):
            filler = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))
            f.write(json.dumps({"prompt": f"Review {i}: ", "chosen": f"{filler} good", "rejected": f"{filler} bad"}) + "\n")
    return path


def _recipe(pairs, out, **extra):
    return {"train_data": str(pairs), "tiny": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1,
            "intermediate_size": 64}, "learning_rate": 3e-3, "epochs": 2, "batch_size": 8, "max_length": 32,
            "torch_threads": 1, "eval_every": 3, "checkpoint": {"every": 2}, "output_dir": str(out), **extra}  # fmt: skip


class Crash(Exception):
    pass


def _crash_at(step):
    def on_step(metrics):
        if metrics["step"] == step:
            raise Crash  # after the step is logged, before its checkpoint: like a SIGKILL there
    return on_step


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_stopped_and_resumed_reward_model_equals_an_uninterrupted_one(tmp_path, pairs):
    clean = train_reward_model(rm_recipe_from_dict(_recipe(pairs, tmp_path / "clean")), progress=False)
    # Step 9 is mid-way through the second epoch (6 batches an epoch): the resume, from step 8,
    # must draw that epoch's order, not the first one's.
    with pytest.raises(Crash):
        train_reward_model(rm_recipe_from_dict(_recipe(pairs, tmp_path / "killed")), progress=False,
                           on_step=_crash_at(9))
    recipe = tmp_path / "rm.yaml"
    recipe.write_text(json.dumps(_recipe(pairs, tmp_path / "killed")))  # JSON is YAML
    assert main(["rm", "train", str(recipe), "--resume", "--no-progress"]) == 0

    a = load_file(str(tmp_path / "clean" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "model" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    for name in ("metrics.jsonl", "evals.jsonl"):
        assert _jsonl(tmp_path / "clean" / name) == _jsonl(tmp_path / "killed" / name), name
    resumed = json.loads((tmp_path / "killed" / "summary.json").read_text())
    drop = {"seconds", "run_dir", "model_dir"}
    assert {k: v for k, v in clean.items() if k not in drop} == {k: v for k, v in resumed.items() if k not in drop}
    assert clean["steps"] == 12 and clean["final_margin"] > clean["base_margin"] + 0.5  # it learned
    events = [r["event"] for r in _jsonl(tmp_path / "killed" / "audit.jsonl")]
    assert events.count("run_resume") == 1 and events[-1] == "run_end"
    assert main(["audit", "verify", str(tmp_path / "killed")]) == 0


def test_a_resumed_reward_model_may_add_epochs_but_not_change_the_recipe(tmp_path, pairs):
    out = tmp_path / "out"
    train_reward_model(rm_recipe_from_dict(_recipe(pairs, out, epochs=1)), progress=False)
    with pytest.raises(RlftError, match=r"learning_rate: 0.003 -> 0.001"):
        train_reward_model(rm_recipe_from_dict(_recipe(pairs, out, epochs=1, learning_rate=1e-3)), resume=True,
                           progress=False)
    with pytest.raises(RlftError, match="already holds a run"):
        train_reward_model(rm_recipe_from_dict(_recipe(pairs, out, epochs=1)), progress=False)
    summary = train_reward_model(rm_recipe_from_dict(_recipe(pairs, out, epochs=2)), resume=True, progress=False)
    assert summary["steps"] == 12 and [m["step"] for m in _jsonl(out / "metrics.jsonl")] == list(range(1, 13))


def test_a_learning_rate_that_overflows_mid_run_names_the_last_good_checkpoint(tmp_path, pairs, monkeypatch):
    original, calls = reward_model.bradley_terry_step, []

    def blowing_up(model, tokenizer, optimizer, batch, recipe):
        calls.append(1)
        if len(calls) == 3:  # step 3: the learning rate jumps to 1e30
            for group in optimizer.param_groups:
                group["lr"] = 1e30
        return original(model, tokenizer, optimizer, batch, recipe)

    monkeypatch.setattr(reward_model, "bradley_terry_step", blowing_up)
    out = tmp_path / "out"
    with pytest.raises(NonFiniteError, match=r"Stopped at reward_model step 3: The weights overflowed.*1e\+30.*"
                                             r"last good checkpoint, \S+step_0000002, is intact"):
        train_reward_model(rm_recipe_from_dict(_recipe(pairs, out)), progress=False)
    assert not (out / "model").exists() and not (out / "summary.json").exists()
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_0000002"]
