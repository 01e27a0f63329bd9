"""A new multi-turn environment with settings of its own: `rlft agent` with --plugin.

Two turns. The user says a number and the agent acknowledges it; then the user asks for it back,
and the agent must repeat it:

    user:  Remember 47.            agent: ok
    user:  What was the number?    agent: 47

The right number scores 1.0 and ends the episode as a success. The acknowledgement scores
`ack_reward` when it is "ok" and nothing when it is "sure", and the scripted demonstrations of the
warm start say either at random: imitation alone says "ok" half of the time, and RL learns the
rest from the per-turn reward. The number has `digits` digits; a seeded share of the numbers
(`held_out`) is never trained on (the tokenizer's text has every number, the warm start and RL
only the training ones), so held-out success measures recall, not memorised numbers.

    rlft agent examples/plugin/recall.yaml --plugin examples/plugin/recall_env.py
"""

from dataclasses import dataclass

import torch

import rlft
from rlft.envs import Observation, StepResult
from rlft.schema import setting


@dataclass(frozen=True)
class RecallSettings:
    """The recipe's `env:` keys of its own (checked like any section: names, types, ranges)."""

    digits: int = setting(2, "Digits of the number to remember.", ge=1, le=4)
    held_out: float = setting(0.2, "Share of the numbers kept for evaluation.", gt=0, lt=1)
    ack_reward: float = setting(0.2, "Reward of acknowledging with 'ok' (not 'sure').", ge=0)


class RecallEnv:
    """One episode: remember `number`, then say it back."""

    def __init__(self, number: int, ack_reward: float) -> None:
        self.number, self.ack_reward, self.turn = number, ack_reward, 0

    def reset(self) -> Observation:
        self.turn = 0
        return Observation(f"Remember {self.number}.\n")

    def step(self, action_text: str) -> StepResult:
        self.turn += 1
        if self.turn == 1:
            ok = action_text.strip() == "ok"
            reward = self.ack_reward if ok else 0.0
            return StepResult(Observation("What was the number?\n"), reward, False, {"success": False, "ok": ok})
        right = action_text.strip() == str(self.number)
        return StepResult(Observation(""), float(right), True, {"success": right})


@rlft.register_env("recall", settings=RecallSettings)
class RecallFamily:
    """Numbers of `digits` digits, split into training and held-out numbers by `seed`."""

    settings = ("seed",)  # the env: fields passed to the constructor besides RecallSettings

    def __init__(self, options: RecallSettings, seed: int = 1234) -> None:
        self.options = options
        numbers = torch.randperm(10**options.digits, generator=torch.Generator().manual_seed(seed)).tolist()
        n_held = max(1, int(len(numbers) * options.held_out))
        self.eval_numbers, self.train_numbers = sorted(numbers[:n_held]), numbers[n_held:]

    def train_envs(self, n, gen):
        picks = torch.randint(0, len(self.train_numbers), (n,), generator=gen).tolist()
        return [RecallEnv(self.train_numbers[i], self.options.ack_reward) for i in picks]

    def eval_envs(self):
        return [RecallEnv(number, self.options.ack_reward) for number in self.eval_numbers[:32]]

    def demonstration(self, env, gen):
        """A scripted successful episode: [observation, action, observation, action]."""
        ack = "ok" if torch.rand((), generator=gen) < 0.5 else "sure"
        first = env.reset().text
        second = env.step(ack).observation.text
        return [first, ack, second, str(env.number)]

    def corpus(self, n=500, seed=0):
        gen = torch.Generator().manual_seed(seed)
        numbers = self.train_numbers + self.eval_numbers
        return ["".join(self.demonstration(RecallEnv(number, 0.0), gen)) for number in numbers for _ in range(3)]
