"""A process reward model (PRM): a causal LM with a value head that scores each step of a solution,
and ``reward: {type: process_model}``, the dense reward that uses it.

A solution is split into steps by a separator (``step_separator``, a newline by default). The PRM
reads ``prompt + step_1 + sep + step_2 + sep + ...`` and, at the last token of each separator, its
value head gives a logit; ``sigmoid(logit)`` estimates the probability that a solution continued
from there reaches the right answer (Math-Shepherd, Wang et al. 2024: the label of a step
is the fraction of continuations from it that reach the answer). Each piece is tokenized on its own,
so the separator is always a token of its own at the scored position, whatever the text around it;
the PRM sees text, never the policy's tokens, so a PRM trained once scores any policy's completions.

The folder ``rlft prm train`` writes (``OUTPUT/model/``) is a ``save_pretrained`` causal LM with its
tokenizer, plus ``value_head.safetensors`` and ``prm.json`` (the separator it was trained with).

:class:`ProcessModelReward` turns the step scores into rewards: the sequence reward is the outcome
plus ``weight * combine(step scores)`` (``min``: a chain is as good as its weakest step, how
Math-Shepherd ranks solutions; ``sum``; ``last``), and the dense ``step_rewards`` put
``weight * score`` at the end of each step and the outcome at the end of the completion (the
step-by-step PPO of Math-Shepherd). The outcome is ``outcome:`` (a reward spec) or, when
empty, the task's own verifiable reward.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from rlft.errors import RlftError
from rlft.models.value_head import ValueHead
from rlft.rewards.base import RewardOutput, RewardSpecError, score
from rlft.schema import setting

PRM_FILE = "prm.json"
HEAD_FILE = "value_head.safetensors"


def split_steps(completion: str, separator: str) -> list[tuple[str, int]]:
    """The steps of ``completion``: (text, end), ``end`` the character position just after the
    step and its separator (the completion's end for the last one). Empty pieces are not steps.

    >>> split_steps("+5=12\\n*2=24\\n#24", "\\n")
    [('+5=12', 6), ('*2=24', 12), ('#24', 15)]
    """
    steps, start = [], 0
    while start <= len(completion):
        cut = completion.find(separator, start) if separator else -1
        stop = len(completion) if cut < 0 else cut
        end = len(completion) if cut < 0 else cut + len(separator)
        if completion[start:stop].strip():
            steps.append((completion[start:stop], end))
        if cut < 0:
            break
        start = end
    return steps


def step_inputs(tokenizer: Any, prompt: str, steps: Sequence[str], separator: str,
                max_length: int) -> tuple[list[int], list[int]]:
    """(ids, positions): ``prompt + step + sep + step + sep ...`` as token ids, each piece
    tokenized on its own, and the position of each separator's last token (one per step). Longer
    than ``max_length``: the start is cut (the prompt first); a step whose position is cut is lost."""
    ids = list(tokenizer(prompt).input_ids) if prompt else []
    sep = list(tokenizer(separator, add_special_tokens=False).input_ids)
    positions = []
    for step in steps:
        ids += list(tokenizer(step, add_special_tokens=False).input_ids) + sep
        positions.append(len(ids) - 1)
    cut = max(len(ids) - max_length, 0)
    return ids[cut:], [p - cut for p in positions if p >= cut]


class ProcessRewardModel(torch.nn.Module):
    """A causal LM (``trunk``) and a value head read at the separator positions."""

    def __init__(self, trunk: Any, head: ValueHead | None = None) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = head if head is not None else ValueHead(trunk.config.hidden_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) right-padded ids and mask -> (B, L) logits of every position."""
        from rlft.models.tokens import forward_accepts, positions_from_mask

        extra = {"position_ids": positions_from_mask(attention_mask)} if forward_accepts(self.trunk, "position_ids") else {}
        if forward_accepts(self.trunk, "logits_to_keep"):
            extra["logits_to_keep"] = 1  # only the hidden states are read: skip the vocabulary projection
        out = self.trunk(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, **extra)
        return self.head(out.hidden_states[-1])  # (B, L, H) -> (B, L)


def batch_step_logits(model: ProcessRewardModel, tokenizer: Any, rows: Sequence[tuple[str, Sequence[str]]],
                      separator: str, max_length: int) -> list[torch.Tensor]:
    """Logits of the steps of each (prompt, steps) row, with gradients: one (n_steps_kept,) tensor a row."""
    encoded = [step_inputs(tokenizer, prompt, steps, separator, max_length) for prompt, steps in rows]
    device = next(model.parameters()).device
    width = max(max(len(ids) for ids, _ in encoded), 1)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, _) in enumerate(encoded):
        input_ids[i, : len(ids)], mask[i, : len(ids)] = torch.tensor(ids, dtype=torch.long), 1
    logits = model(input_ids.to(device), mask.to(device))  # (B, L)
    return [logits[i, positions] for i, (_, positions) in enumerate(encoded)]


@torch.no_grad()
def step_scores(model: ProcessRewardModel, tokenizer: Any, rows: Sequence[tuple[str, Sequence[str]]],
                separator: str, batch_size: int = 32, max_length: int = 512) -> list[list[float]]:
    """sigmoid(logit) of every step of every row, in chunks of ``batch_size`` rows."""
    out: list[list[float]] = []
    for start in range(0, len(rows), batch_size):
        chunk = batch_step_logits(model, tokenizer, rows[start : start + batch_size], separator, max_length)
        out += [torch.sigmoid(t.float()).tolist() for t in chunk]
    return out


def resolve_prm_folder(path: str | Path) -> Path:
    """A folder written by ``rlft prm train`` maps to its ``model/``; else the folder itself."""
    path = Path(path).expanduser()
    folder = path / "model" if (path / "model" / PRM_FILE).is_file() else path
    if not (folder / PRM_FILE).is_file():
        raise RlftError(
            f"{path} is not a process reward model (no {PRM_FILE}, nor model/{PRM_FILE}). Train one with "
            "`rlft prm train RECIPE.yaml` (docs/sparse_rewards.md)."
        )
    return folder


def save_process_model(model: ProcessRewardModel, tokenizer: Any, separator: str, folder: Path) -> None:
    """The trunk and tokenizer (``save_pretrained``), the head and ``prm.json`` into ``folder``."""
    from safetensors.torch import save_file

    model.trunk.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    save_file({k: v.detach().contiguous() for k, v in model.head.state_dict().items()}, str(folder / HEAD_FILE))
    (folder / PRM_FILE).write_text(json.dumps({"step_separator": separator, "format": "rlft-prm-1"}) + "\n")


def load_process_model(path: str | Path, device: str = "cpu") -> tuple[ProcessRewardModel, Any, str]:
    """(model, tokenizer, its step separator) of a PRM folder, in eval mode on ``device``."""
    from safetensors.torch import load_file

    from rlft.models.loading import load_policy

    folder = resolve_prm_folder(path)
    trunk, tokenizer = load_policy(str(folder))
    model = ProcessRewardModel(trunk)
    model.head.load_state_dict(load_file(str(folder / HEAD_FILE)))
    separator = json.loads((folder / PRM_FILE).read_text())["step_separator"]
    return model.to(device).eval(), tokenizer, separator


def combine_steps(scores: Sequence[float], how: str) -> float:
    """One number for a solution's step scores: ``min``, ``sum`` or ``last`` (0 without steps)."""
    if not scores:
        return 0.0
    return {"min": min, "sum": sum, "last": lambda s: s[-1]}[how](scores)


@dataclass
class ProcessModelReward:
    """Dense rewards from a process reward model, plus the outcome (see the module docstring)."""

    name: ClassVar[str] = "process_model"
    path: str = field(metadata={"help": "Folder written by `rlft prm train` (or its model/)."})
    step_separator: str | None = setting(
        None, "What splits a completion into steps. Empty: the separator the PRM was trained with (prm.json)."
    )
    combine: Literal["min", "sum", "last"] = setting(
        "min", "The sequence score from the step scores (what group estimators such as grpo see): min (a chain is "
        "as good as its weakest step), sum or last.",
    )
    weight: float = setting(1.0, "Weight of the PRM's scores against the outcome (which has weight 1).", ge=0)
    outcome: dict[str, Any] | None = setting(
        None, "The outcome reward (a reward spec, e.g. {type: exact_match}) added at the end. Empty: the task's own "
        "verifiable reward (a dataset task has none: give one).",
    )
    batch_size: int = setting(32, "Completions scored per forward pass.", ge=1)
    max_length: int = setting(512, "Longest PRM input in tokens; longer ones lose the start of the prompt.", ge=8)
    device: str = setting("auto", "Where the PRM runs: auto (in a training recipe, the learner's), cpu, cuda, cuda:N.")

    def __post_init__(self) -> None:
        try:
            self._folder = resolve_prm_folder(self.path)
        except RlftError as exc:
            raise RewardSpecError(f"process_model.path: {exc}") from None
        if self.step_separator == "":
            raise RewardSpecError("process_model.step_separator is empty; leave it out to use the PRM's own.")
        self._outcome: Any = None  # the built outcome reward (set_outcome, or bind_task)
        self._model: Any = None

    def set_outcome(self, reward: Any) -> None:
        """The outcome reward built from ``outcome`` (the registry's builder builds nested specs)."""
        self._outcome = reward

    def bind_task(self, task: Any) -> None:
        """The task's own reward is the outcome when ``outcome`` is empty (rlft.rewards.limits.bind_task)."""
        if self._outcome is not None:
            return
        if getattr(task, "reward_function", None) is not None:
            raise RewardSpecError(
                "reward.type: process_model on a task that scores with the recipe's reward (task.name: dataset) needs "
                "reward.outcome: the reward of a right answer, e.g. {type: exact_match} or {type: math_verify}."
            )

        def task_reward(prompts: Sequence[str], completions: Sequence[str], problems: Any, **context: Any) -> Any:
            return task.reward(completions, problems)

        self._outcome = task_reward

    def __call__(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> RewardOutput:
        if self._outcome is None:
            raise RewardSpecError("process_model has no outcome reward: give reward.outcome (a reward spec).")
        outcome = score(self._outcome, prompts, completions, **context).rewards
        if self._model is None:
            from rlft.models.device import resolve_device

            self._model, self._tokenizer, self._trained = load_process_model(
                self._folder, str(resolve_device(self.device, "reward.device")))
        # Completions are split by step_separator; the PRM reads its own separator between steps.
        split = [split_steps(c, self.step_separator or self._trained) for c in completions]
        rows = [(p, [text for text, _ in steps]) for p, steps in zip(prompts, split, strict=True)]
        scores = step_scores(self._model, self._tokenizer, rows, self._trained, self.batch_size, self.max_length)
        # A step cut off by max_length has no score: the steps kept are the last ones.
        ends = [[end for _, end in steps][len(steps) - len(s):] for steps, s in zip(split, scores, strict=True)]
        process = [combine_steps(s, self.combine) for s in scores]
        return RewardOutput(
            rewards=[o + self.weight * p for o, p in zip(outcome, process, strict=True)],
            components={"outcome": list(outcome), "process": process},
            step_rewards=[[(end, self.weight * v) for end, v in zip(e, s, strict=True)] + [(len(c), o)]
                          for e, s, c, o in zip(ends, scores, completions, outcome, strict=True)],
        )
