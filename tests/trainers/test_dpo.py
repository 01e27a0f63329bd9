"""DPO/IPO trainer: sequence log-probs against a naive reference, hand values at initialisation,
a tiny run whose held-out pairwise accuracy rises, resume equals an uninterrupted run, the CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlft.config import config_from_dict
from rlft.errors import ConfigError
from rlft.models.loading import frozen_reference, load_policy
from rlft.rewards.pairs import PreferencePair
from rlft.trainers.dpo import (
    batch_of_step,
    chosen_rejected_logps,
    dpo_step,
    pair_rollout,
    split_pairs,
)
from rlft.trainers.registry import train

ROOT = Path(__file__).parents[2]


def write_pairs(path: Path, n: int = 96) -> Path:
    gen = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(n):
        a, b = torch.randint(0, 50, (2,), generator=gen).tolist()
        # The rejected answer repeats its last digit: a preference (stop after the answer) that a
        # barely trained model can learn and generalise to held-out pairs.
        rows.append({"prompt": f"{a}+{b}=", "chosen": str(a + b), "rejected": str(a + b) + str(a + b)[-1]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def dpo_recipe(tmp_path: Path, tiny_recipe: list[str], name: str, *extra: str) -> list[str]:
    keep = [r for r in tiny_recipe if not r.startswith(("train.", "checkpoint.", "eval."))]
    return [*keep, "algorithm.name=dpo", f"preference.data={write_pairs(tmp_path / 'pairs.jsonl')}",
            "preference.batch_size=8", "preference.eval_fraction=0.25", "preference.beta=0.5",
            "train.learning_rate=3e-3",
            "train.torch_threads=1", "eval.every=100", "checkpoint.every=3", f"run_dir={tmp_path / name}", *extra]


def naive_logp(model, tokenizer, prompt: str, completion: str) -> float:
    """log pi(completion + EOS | prompt), one unpadded sequence, token by token."""
    prompt_ids = tokenizer(prompt).input_ids
    target = tokenizer(completion).input_ids + [tokenizer.eos_token_id]
    ids = torch.tensor([prompt_ids + target])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
    logps = logits.log_softmax(-1)
    return sum(logps[len(prompt_ids) - 1 + i, t].item() for i, t in enumerate(target))


def test_padded_pair_logps_equal_the_naive_per_sequence_sum(tiny_model_dir):
    model, tokenizer = load_policy(str(tiny_model_dir))
    model.eval()
    pairs = [PreferencePair("7+5=", "12", "13"), PreferencePair("41+38=", "79", "7"),
             PreferencePair("3+4=", "7", "77")]
    batch = pair_rollout(tokenizer, pairs)  # rows: chosen x3, then rejected x3
    assert batch.prompt_ids.shape[0] == 6 and batch.completion_mask.sum(-1).tolist()[0] >= 2
    with torch.no_grad():
        chosen, rejected = chosen_rejected_logps(model, batch)
    for i, p in enumerate(pairs):
        assert chosen[i].item() == pytest.approx(naive_logp(model, tokenizer, p.prompt, p.chosen), abs=1e-4)
        assert rejected[i].item() == pytest.approx(naive_logp(model, tokenizer, p.prompt, p.rejected), abs=1e-4)


@pytest.mark.parametrize("loss, expected", [("dpo", math.log(2)), ("ipo", (1 / (2 * 0.1)) ** 2)])
def test_first_step_from_the_reference_has_the_hand_computed_loss(tiny_model_dir, loss, expected):
    """With policy == reference, h = 0: DPO gives -log sigmoid(0) = log 2; IPO (0 - 1/(2 tau))^2."""
    model, tokenizer = load_policy(str(tiny_model_dir))
    reference = frozen_reference(model)
    config = config_from_dict({"algorithm": {"name": "dpo"},
                               "preference": {"data": "unused.jsonl", "loss": loss, "beta": 0.1}})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    metrics, finite = dpo_step(config, model, reference, tokenizer, optimizer,
                               [PreferencePair("1+2=", "3", "4"), PreferencePair("9+9=", "18", "81")])
    assert finite
    assert metrics["dpo/loss"] == pytest.approx(expected, rel=1e-5)
    assert metrics["dpo/margin"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["dpo/reward_accuracy"] == 0.0  # ties: neither implicit reward is higher


def test_batches_are_a_fresh_permutation_per_epoch_and_a_split_is_disjoint():
    pairs = [PreferencePair(f"{i}+0=", str(i), str(i + 1)) for i in range(10)]
    train_pairs, held = split_pairs(pairs, 0.2, seed=0)
    assert len(held) == 2 and not set(held) & set(train_pairs)
    epoch0 = [p for s in range(2) for p in batch_of_step(train_pairs, 4, 0, s)]
    assert sorted(epoch0, key=str) == sorted(train_pairs, key=str)  # 8 pairs, 2 steps: each once
    assert batch_of_step(train_pairs, 4, 0, 2) != batch_of_step(train_pairs, 4, 0, 0)


def test_recipe_errors_name_the_field():
    with pytest.raises(ConfigError, match="preference.data is empty"):
        config_from_dict({"algorithm": {"name": "dpo"}})
    with pytest.raises(ConfigError, match="label_smoothing"):
        config_from_dict({"algorithm": {"name": "dpo"},
                          "preference": {"data": "p.jsonl", "loss": "ipo", "label_smoothing": 0.1}})
    with pytest.raises(ConfigError, match="preference.loss"):
        config_from_dict({"algorithm": {"name": "dpo"}, "preference": {"data": "p.jsonl", "loss": "kto"}})


@pytest.mark.slow
def test_dpo_raises_held_out_pairwise_accuracy_and_resumes_exactly(tmp_path, tiny_recipe):
    full = config_from_dict({}, [*dpo_recipe(tmp_path, tiny_recipe, "full"), "preference.epochs=2"])
    summary = train(full, progress=False)
    assert summary["algorithm"] == "dpo" and summary["steps"] == 18  # 72 pairs / 8 x 2 epochs
    assert summary["pairwise_accuracy_before"] == 0.5
    assert summary["pairwise_accuracy_after"] > 0.75
    metrics = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert {"dpo/loss", "dpo/reward_accuracy", "dpo/margin"} <= set(metrics[0])
    assert sum(m["dpo/loss"] for m in metrics[-4:]) < sum(m["dpo/loss"] for m in metrics[:4])
    assert (tmp_path / "full" / "privacy.json").exists()
    from rlft.responsible.audit_log import verify_log

    assert verify_log(tmp_path / "full" / "audit.jsonl").ok

    # Killed after step 4 (last checkpoint: step 3), then resumed: the same final weights.
    part = config_from_dict({}, [*dpo_recipe(tmp_path, tiny_recipe, "part"), "preference.epochs=2"])

    def stop(metrics):
        if metrics["step"] == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(part, progress=False, on_step=stop)
    train(part, resume=True, progress=False)
    a = load_file(str(tmp_path / "full" / "final_model" / "model.safetensors"))
    b = load_file(str(tmp_path / "part" / "final_model" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_rlft_train_runs_the_example_recipe(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "rlft.cli.main", "train", str(ROOT / "examples" / "dpo.yaml"),
         "--run-dir", str(tmp_path / "run"), "--no-progress",
         "--set", f"preference.data={write_pairs(tmp_path / 'pairs.jsonl', 40)}",
         "--set", "warm_start.steps=2", "--set", "task.eval_size=8", "--set", "model.tiny.hidden_size=32",
         "--set", "model.tiny.intermediate_size=64", "--set", "train.torch_threads=1"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "dpo" in out.stdout
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["loss"] == "dpo"  # 36 pairs / 16 per step
