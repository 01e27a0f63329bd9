"""`rlft report` on a run of every algorithm; a gae run's advantages use the run's own critic."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from rlft.algorithms.advantages import gae_advantages
from rlft.algorithms.kl import KL_ESTIMATORS, kl_penalised_rewards
from rlft.config import ALGORITHMS, config_from_dict
from rlft.models.loading import load_policy
from rlft.models.tokens import encode_prompts
from rlft.models.value_head import ValueHead
from rlft.report.report import build_report, load_critic, token_views
from rlft.rollout.sampling import sample, score_completions, sequence_logprobs
from rlft.trainers.registry import train

# About a second per run in process.
RUN = [
    "model.tiny.hidden_size=32", "model.tiny.num_layers=1", "model.tiny.intermediate_size=64",
    "warm_start.steps=2", "warm_start.batch_size=8", "task.eval_size=8", "train.steps=1",
    "train.batch_size=8", "algorithm.group_size=4", "rollout.max_new_tokens=4",
    "eval.every=10", "checkpoint.every=10", "train.torch_threads=1",
]


def _train(folder: Path, *extra: str) -> Path:
    train(config_from_dict({}, [*RUN, f"run_dir={folder}", *extra]), progress=False)
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report_algorithms")
    made = {name: _train(root / name, f"algorithm.name={name}") for name in ALGORITHMS}
    made["ppo_separate"] = _train(root / "ppo_separate", "algorithm.name=ppo", "algorithm.critic=separate")
    pairs = root / "pairs.jsonl"
    pairs.write_text("".join(
        json.dumps({"prompt": f"{a}+{a}=", "chosen": str(2 * a), "rejected": str(2 * a) + "1"}) + "\n"
        for a in range(24)
    ))
    made["dpo"] = _train(
        root / "dpo", "algorithm.name=dpo", f"preference.data={pairs}", "preference.batch_size=8",
        "preference.eval_fraction=0.25",
    )
    return made


@pytest.mark.parametrize("name", [*ALGORITHMS, "ppo_separate", "dpo"])
def test_report_works_for_every_algorithm(runs: dict[str, Path], name: str) -> None:
    """Before the fix a ppo or a2c run raised (gae called with values=None) and dpo a KeyError."""
    page = build_report(runs[name], n_prompts=1).html()
    assert page.count('class="completion"') == 4  # 1 prompt x group size 4
    views = token_views(runs[name], n_prompts=1)
    if name == "dpo":
        assert all(v.advantage is None for v in views)
        assert "No advantage row" in page and '<span class="label">advantage' not in page
        return
    assert '<span class="label">advantage' in page
    assert all(torch.isfinite(torch.tensor(v.advantage)).all() for v in views)
    if name in ("ppo", "a2c", "ppo_separate"):
        assert "with the values of" in views[0].advantage_source, views[0].advantage_source
        assert "V = 0" not in page


def _direct_gae(run: Path, values_from: str) -> tuple[list[list[float]], torch.Tensor]:
    """The report's sample for one prompt, and GAE computed here from the saved critic by hand."""
    import yaml

    from rlft.tasks import build_task

    recipe = yaml.safe_load((run / "config.yaml").read_text())
    algo = recipe["algorithm"]
    task = build_task(config_from_dict({"task": recipe["task"]}).task)
    policy, tokenizer = load_policy(str(run / "final_model"))
    base, _ = load_policy(str(run / "base_model"))
    policy.eval()
    problems = [task.eval_problems[0]] * algo["group_size"]
    ids, mask = encode_prompts(tokenizer, [p.prompt for p in problems])
    rollout = sample(policy, ids, mask, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                     max_new_tokens=recipe["rollout"]["max_new_tokens"], generator=torch.Generator().manual_seed(0))
    from rlft.models.tokens import decode_completions

    completions = decode_completions(tokenizer, rollout.completion_ids, rollout.completion_mask)
    rewards = torch.tensor(task.reward(completions, problems))
    head = ValueHead(policy.config.hidden_size)
    head.load_state_dict(load_file(str(run / "value_head.safetensors")))
    with torch.inference_mode():
        logprobs, _ = sequence_logprobs(policy, rollout)
        base_logprobs, _ = sequence_logprobs(base, rollout)
        _, _, values = score_completions(policy, rollout, value_head=head)
    if values_from == "zero":
        values = torch.zeros_like(values)
    m = rollout.completion_mask
    token_rewards = torch.zeros_like(m)
    token_rewards[torch.arange(len(rewards)), m.sum(-1).long() - 1] = rewards
    kl = KL_ESTIMATORS[algo["kl_estimator"]](logprobs, base_logprobs)
    token_rewards = kl_penalised_rewards(token_rewards, kl, m, algo["kl_coef"])
    adv, _ = gae_advantages(token_rewards, m, values=values, gamma=algo["gamma"], lam=algo["lam"],
                            scale_rewards=algo["scale_rewards"])
    return [adv[i, : int(m[i].sum())].tolist() for i in range(len(rewards))], values


def test_gae_advantages_use_the_runs_value_head(runs: dict[str, Path], tmp_path: Path) -> None:
    # A tiny run's rewards are all 0 and its head stays 0; a random head shows whose values count.
    run = tmp_path / "run"
    shutil.copytree(runs["ppo"], run)
    head = ValueHead(32)
    torch.nn.init.normal_(head.proj.weight, std=0.5)
    save_file(head.state_dict(), str(run / "value_head.safetensors"))
    views = token_views(run, n_prompts=1)
    expected, values = _direct_gae(run, "critic")
    assert values.abs().max() > 0.1
    for view, adv in zip(views, expected, strict=True):
        assert view.advantage == pytest.approx(adv, abs=1e-5)
    with_zero_values, _ = _direct_gae(run, "zero")
    assert any(v.advantage != pytest.approx(z, abs=1e-3) for v, z in zip(views, with_zero_values, strict=True))


def test_separate_critic_is_loaded_from_the_newest_checkpoint(runs: dict[str, Path]) -> None:
    run = runs["ppo_separate"]
    policy, _ = load_policy(str(run / "final_model"))
    trunk, head, source = load_critic(run, {"critic": "separate"}, policy)
    newest = sorted((run / "checkpoints").glob("step_*"))[-1]
    saved = load_file(str(newest / "model.safetensors"))
    assert newest.name in source and trunk is not policy
    for key, tensor in trunk.state_dict().items():
        torch.testing.assert_close(tensor, saved["critic." + key], rtol=0, atol=0)
    torch.testing.assert_close(head.proj.weight, saved["value_head.proj.weight"], rtol=0, atol=0)


def test_missing_critic_falls_back_to_zero_values_and_says_so(runs: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs["ppo"], run, ignore=shutil.ignore_patterns("checkpoints", "value_head.safetensors"))
    views = token_views(run, n_prompts=1)
    assert "V = 0 because the run kept neither value_head.safetensors nor a checkpoint" in views[0].advantage_source
    expected, _ = _direct_gae(runs["ppo"], "zero")
    for view, adv in zip(views, expected, strict=True):
        assert view.advantage == pytest.approx(adv, abs=1e-5)
