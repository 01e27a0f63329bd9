"""``rlft prm label``: step labels without people, the way Math-Shepherd makes them.

Math-Shepherd (Wang et al. 2024) labels a step of a solution by what happens after it:
from the prefix that ends with the step, N continuations are sampled by a "completer" (here the
policy itself), and the step's soft label is the fraction of them that reach the right answer
(its soft estimation); the hard label is 1 if any of them does (hard estimation). A step after which nothing can be
rescued gets 0; an early mistake therefore shows up as a drop of the labels. The last step needs no
continuation: its label is whether the solution itself is right.

Here, for ``label.prompts`` training prompts of the RL recipe's task (never its held-out ones),
``label.solutions`` solutions are sampled, split into steps by ``step_separator``, and every step
but the last gets ``label.rollouts`` continuations; "right" is the task's own reward reaching the
recipe's ``eval.pass_threshold``. The labels go to ``train_data`` (JSONL, ``rlft.rewards.step_labels``):
``labels`` the soft label of each step, with ``hard_labels``, ``correct`` (the solution's own
outcome) and ``rollouts`` kept beside them; ``rlft prm train`` trains on the soft labels or their
hard version (``labels: hard``, which is ``hard_labels``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from rlft.common.run_folder import write_text_atomic
from rlft.config.process_reward import ProcessRewardRecipe
from rlft.errors import ConfigError
from rlft.models.device import move_model, resolve_device, sampling_generator
from rlft.models.tokens import decode_completions, encode_prompts
from rlft.rewards.process_model import split_steps
from rlft.rewards.step_labels import StepLabels, label_row
from rlft.rollout.sampling import sample


def policy_folder(path: str) -> str:
    """A run folder's ``final_model/`` (else ``base_model/``); any other path or hub id as it is."""
    root = Path(path).expanduser()
    for name in ("final_model", "base_model"):
        if (root / name / "config.json").is_file():
            return str(root / name)
    return path


@torch.no_grad()
def sample_texts(policy: Any, tokenizer: Any, prompts: list[str], config: Any, batch_size: int,
                 gen: torch.Generator) -> tuple[list[str], int]:
    """One completion of each prompt with the recipe's rollout settings; (texts, tokens sampled)."""
    texts, tokens = [], 0
    device = next(policy.parameters()).device
    for start in range(0, len(prompts), batch_size):
        ids, mask = encode_prompts(tokenizer, prompts[start : start + batch_size])
        rollout = sample(
            policy, ids.to(device), mask.to(device), eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, max_new_tokens=config.rollout.max_new_tokens,
            temperature=config.rollout.temperature, top_p=config.rollout.top_p,
            generator=sampling_generator(gen, device),
        )
        texts += decode_completions(tokenizer, rollout.completion_ids, rollout.completion_mask)
        tokens += int(rollout.completion_mask.sum())
    return texts, tokens


def monte_carlo_labels(task: Any, config: Any, policy: Any, tokenizer: Any, problems: list[Any],
                       solutions: list[str], recipe: ProcessRewardRecipe, gen: torch.Generator,
                       ) -> tuple[list[StepLabels], int]:
    """The labelled steps of each solution (module docstring) and the tokens the rollouts sampled."""
    threshold, N, sep = config.eval.pass_threshold, recipe.label.rollouts, recipe.step_separator
    correct = [r >= threshold for r in task.reward(solutions, problems)]
    split = [split_steps(s, sep) for s in solutions]
    # Every step but the last of every solution: (solution, step, the text up to the step's end).
    prefixes = [(i, k, solutions[i][:end]) for i, steps in enumerate(split) for k, (_, end) in enumerate(steps[:-1])]
    prompts = [problems[i].prompt + prefix for i, _, prefix in prefixes for _ in range(N)]
    continuations, tokens = sample_texts(policy, tokenizer, prompts, config, recipe.label.batch_size, gen)
    full = [prefix + c for (_, _, prefix), c in zip([p for p in prefixes for _ in range(N)], continuations, strict=True)]
    reached = task.reward(full, [problems[i] for i, _, _ in prefixes for _ in range(N)])
    labels = [[0.0] * len(steps) for steps in split]
    for j, (i, k, _) in enumerate(prefixes):
        labels[i][k] = sum(r >= threshold for r in reached[j * N : (j + 1) * N]) / N
    rows = []
    for i, steps in enumerate(split):
        if steps:  # an empty solution has no step to label
            labels[i][-1] = float(correct[i])
            rows.append(StepLabels(problems[i].prompt, [text for text, _ in steps], labels[i],
                                   {"hard_labels": [float(v > 0) for v in labels[i]], "correct": correct[i],
                                    "rollouts": N}))
    return rows, tokens


def _check_not_an_input(out: Path, files: list[Any], policy: Path) -> None:
    """The labels file may replace an earlier labels file (--overwrite), never what labelling reads."""
    target = out.resolve()
    for file in files:
        if file and Path(file).resolve() == target:
            raise ConfigError(f"train_data={out} is {file}, a file rlft prm label reads; the labels would replace it. "
                              "Set train_data to a new .jsonl path.")
    if policy.is_dir() and target.is_relative_to(policy.resolve()):  # (a hub id is no local folder)
        raise ConfigError(f"train_data={out} is inside label.policy ({policy}); the labels would be written into the "
                          "model folder. Set train_data to a path outside it.")


def label_steps(recipe: ProcessRewardRecipe, overwrite: bool = False, recipe_file: str | Path | None = None
                ) -> dict[str, Any]:
    """Write Math-Shepherd step labels into ``recipe.train_data``; returns what was done.
    ``recipe_file``: the PRM recipe's own file, which the labels must not replace."""
    from rlft.config import load_config
    from rlft.models.loading import load_policy
    from rlft.tasks import build_task
    from rlft.trainers.setup import prepare_task, recipe_reward

    label = recipe.label
    if not label.recipe or not label.policy:
        raise ConfigError("rlft prm label needs label.recipe (the RL recipe of the task) and label.policy (the model "
                          "that samples solutions).")
    out = Path(recipe.train_data)
    policy_dir = policy_folder(label.policy)
    _check_not_an_input(out, [recipe_file, label.recipe], Path(policy_dir))
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} exists (step labels may be hand-written); remove it, or pass --overwrite.")
    started = time.perf_counter()
    config = load_config(label.recipe)
    task = build_task(config.task, lambda: recipe_reward(config), config.warm_start)
    policy, tokenizer = load_policy(policy_dir)
    move_model(policy, resolve_device(recipe.device, "device")).eval()
    prepare_task(config, task, policy, tokenizer)
    gen = torch.Generator().manual_seed(recipe.seed)
    problems = [p for p in task.train_problems(label.prompts, gen) for _ in range(label.solutions)]
    solutions, solution_tokens = sample_texts(policy, tokenizer, [p.prompt for p in problems], config,
                                              label.batch_size, gen)
    rows, rollout_tokens = monte_carlo_labels(task, config, policy, tokenizer, problems, solutions, recipe, gen)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, "".join(json.dumps(label_row(r)) + "\n" for r in rows))
    steps = [v for r in rows for v in r.labels]
    return {
        "train_data": str(out.resolve()), "solutions": len(rows), "steps": len(steps),
        "solution_pass_rate": sum(bool(r.extra["correct"]) for r in rows) / max(len(rows), 1),
        "positive_fraction": sum(v >= 0.5 for v in steps) / max(len(steps), 1),
        "sampled_tokens": solution_tokens + rollout_tokens, "seconds": round(time.perf_counter() - started, 1),
    }
