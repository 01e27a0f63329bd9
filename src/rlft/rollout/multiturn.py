"""Multi-turn rollouts: policy turns and environment turns interleaved in one token sequence.

Token in, token out: the sampled tokens of each agent turn are kept exactly as sampled, and each
environment turn is tokenised on its own and appended; earlier turns are never re-tokenised, so
the log-probabilities recorded while sampling are those of the exact sequence the trainer scores.
An agent turn ends at EOS (or at ``max_turn_tokens``); the environment's text follows it.

The result is a :class:`MultiTurnRollout`, a :class:`rlft.types.Rollout` whose ``completion_ids``
hold everything after the first observation, agent and environment tokens alike, with

  completion_mask       1 on agent tokens only: environment tokens are never in a loss
  completion_attention  1 on every real token (the model attends to the environment's turns)
  token_rewards         each turn's reward on the last token of that agent turn
  turn_index            k on the tokens of agent turn k, -1 on environment tokens and padding

so ``Learner.score``, the advantage estimators (which skip masked tokens) and the pure losses
work unchanged. The first observation is the left-padded prompt.

Caps: at most ``max_turns`` agent turns and ``max_total_tokens`` tokens after the prompt; an
episode that hits either without the environment ending it is marked ``truncated``.
Environment failures (an exception, a malformed step) are caught: with ``on_env_error="raise"``
an :class:`rlft.envs.EnvError` names the episode and turn; with ``"skip"`` the episode is ended,
its tokens are masked out of the loss and the error is kept in :attr:`Episode.error`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from transformers import PreTrainedTokenizerBase

from rlft.algorithms.utterance import turn_ends, turn_starts
from rlft.envs.base import Env, EnvError, Observation, StepResult, as_async
from rlft.rollout.sampling import sample
from rlft.types import Rollout


@dataclass
class MultiTurnRollout(Rollout):
    """A :class:`Rollout` of whole episodes; see the module docstring for the extra fields."""

    completion_attention: torch.Tensor = field(default_factory=lambda: torch.zeros(0))  # (B, T)
    token_rewards: torch.Tensor = field(default_factory=lambda: torch.zeros(0))  # (B, T)
    turn_index: torch.Tensor = field(default_factory=lambda: torch.zeros(0))  # (B, T) long

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.completion_attention], dim=1)

    def select(self, index: slice | torch.Tensor) -> MultiTurnRollout:
        return MultiTurnRollout(
            self.prompt_ids[index], self.prompt_mask[index], self.completion_ids[index],
            self.completion_mask[index], self.logprobs[index], self.completion_attention[index],
            self.token_rewards[index], self.turn_index[index],
        )

    def turn_starts(self) -> torch.Tensor:
        """(B, T) 1.0 on the first token of each agent turn: where V(s_k) of turn k is read."""
        return turn_starts(self.turn_index)

    def turn_ends(self) -> torch.Tensor:
        """(B, T) 1.0 on the last token of each agent turn: where the turn's reward sits."""
        return turn_ends(self.turn_index)


@dataclass
class Episode:
    """The bookkeeping of one episode, kept next to its row of the rollout."""

    segments: list[str] = field(default_factory=list)  # [observation, action, observation, ...]
    rewards: list[float] = field(default_factory=list)  # one per agent turn
    success: bool = False
    done: bool = False
    truncated: bool = False
    error: str | None = None
    infos: list[dict[str, Any]] = field(default_factory=list)

    @property
    def total_reward(self) -> float:
        return float(sum(self.rewards))


@dataclass
class _Row:
    prompt: list[int]
    ids: list[int] = field(default_factory=list)
    agent: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    turn: list[int] = field(default_factory=list)


def episode_info_metrics(episodes: Sequence[Episode]) -> dict[str, float]:
    """Each metric environments report of their steps (``StepResult.info["metrics"]``, e.g.
    python_tool's ``tool/calls_per_episode``): summed over an episode's steps, averaged over
    ``episodes``."""
    totals: dict[str, float] = {}
    for ep in episodes:
        for info in ep.infos:
            for name, value in (info.get("metrics") or {}).items():
                totals[name] = totals.get(name, 0.0) + float(value)
    return {name: total / max(len(episodes), 1) for name, total in totals.items()}


def encode_text(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of one environment turn, tokenised on its own (no special tokens added)."""
    return list(tokenizer(text, add_special_tokens=False).input_ids) if text else []


async def _gather(calls: list[Any]) -> list[Any]:
    return await asyncio.gather(*calls, return_exceptions=True)


def _run(calls: list[Any]) -> list[Any]:
    return asyncio.run(_gather(calls)) if calls else []


def _left_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r):] = 1
    return ids, mask


def _right_pad(rows: Sequence[Sequence[float]], value: float, dtype: torch.dtype, width: int) -> torch.Tensor:
    out = torch.full((len(rows), width), value, dtype=dtype)
    for i, r in enumerate(rows):
        if r:
            out[i, : len(r)] = torch.tensor(list(r), dtype=dtype)
    return out


@torch.no_grad()
def rollout_episodes(
    policy: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    envs: Sequence[Env],
    *,
    max_turns: int,
    max_turn_tokens: int,
    max_total_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    greedy: bool = False,
    on_env_error: Literal["skip", "raise"] = "skip",
) -> tuple[MultiTurnRollout, list[Episode]]:
    """Play every episode of ``envs`` to the end (or a cap), all turns batched across episodes.

    ``policy`` is anything :func:`rlft.rollout.sampling.sample` accepts (a causal LM, or a
    wrapper that perturbs its logits, as ILQL's decoding does). Envs may be sync or async.
    """
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    aenvs = [as_async(e) for e in envs]
    episodes = [Episode() for _ in envs]
    first = _run([e.reset() for e in aenvs])
    rows: list[_Row] = []
    for i, obs in enumerate(first):
        if not isinstance(obs, Observation):
            _fail(episodes[i], i, 0, f"reset() gave {obs!r}, not an Observation", on_env_error)
            obs = Observation("")
        episodes[i].segments.append(obs.text)
        rows.append(_Row(prompt=encode_text(tokenizer, obs.text) or [eos]))

    for turn in range(max_turns):
        active = [i for i, ep in enumerate(episodes) if not ep.done and len(rows[i].ids) < max_total_tokens]
        if not active:
            break
        prompt_ids, prompt_mask = _left_pad([rows[i].prompt + rows[i].ids for i in active], pad)
        out = sample(
            policy, prompt_ids, prompt_mask, eos_token_id=eos, pad_token_id=pad,
            max_new_tokens=max_turn_tokens, temperature=temperature, top_p=top_p,
            generator=generator, greedy=greedy,
        )
        actions = []
        for j, i in enumerate(active):
            n = int(out.completion_mask[j].sum())
            n = min(n, max_total_tokens - len(rows[i].ids))  # the total-token cap
            tokens = out.completion_ids[j, :n].tolist()
            row = rows[i]
            row.ids += tokens
            row.agent += [1] * n
            row.logprobs += out.logprobs[j, :n].tolist()
            row.rewards += [0.0] * n
            row.turn += [turn] * n
            text = tokenizer.decode([t for t in tokens if t != eos], skip_special_tokens=False)
            episodes[i].segments.append(text)
            actions.append(text)
        results = _run([aenvs[i].step(a) for i, a in zip(active, actions, strict=True)])
        for i, result in zip(active, results, strict=True):
            _apply(episodes[i], rows[i], result, i, turn, tokenizer, max_total_tokens, on_env_error)

    for ep in episodes:
        if not ep.done:
            ep.done, ep.truncated = True, True
    return _to_rollout(rows, episodes, pad), episodes


def _fail(ep: Episode, i: int, turn: int, message: str, on_env_error: str) -> None:
    text = f"episode {i}, turn {turn}: {message}"
    if on_env_error == "raise":
        raise EnvError(text)
    ep.error, ep.done = text, True


def _apply(
    ep: Episode, row: _Row, result: Any, i: int, turn: int, tokenizer: PreTrainedTokenizerBase,
    max_total_tokens: int, on_env_error: str,
) -> None:
    """Record one environment step: reward on the turn's last token, then the observation."""
    if isinstance(result, BaseException):
        _fail(ep, i, turn, f"step() raised {type(result).__name__}: {result}", on_env_error)
        return
    if not isinstance(result, StepResult) or not isinstance(result.observation, Observation):
        _fail(ep, i, turn, f"step() returned {result!r}, not a StepResult(Observation, ...)", on_env_error)
        return
    reward = float(result.reward)
    if reward != reward or reward in (float("inf"), float("-inf")):
        _fail(ep, i, turn, f"step() returned a non-finite reward {reward}", on_env_error)
        return
    ep.rewards.append(reward)
    ep.infos.append(dict(result.info))
    ep.success = ep.success or bool(result.info.get("success", False))
    if row.rewards:
        row.rewards[-1] += reward
    if result.done:
        ep.done = True
        return
    obs = encode_text(tokenizer, result.observation.text)
    room = max_total_tokens - len(row.ids)
    if len(obs) >= room:  # no room left for another agent turn
        ep.done, ep.truncated = True, True
        return
    ep.segments.append(result.observation.text)
    row.ids += obs
    row.agent += [0] * len(obs)
    row.logprobs += [0.0] * len(obs)
    row.rewards += [0.0] * len(obs)
    row.turn += [-1] * len(obs)


def _to_rollout(rows: list[_Row], episodes: list[Episode], pad: int) -> MultiTurnRollout:
    prompt_ids, prompt_mask = _left_pad([r.prompt for r in rows], pad)
    width = max(1, max(len(r.ids) for r in rows))
    ids = _right_pad([r.ids for r in rows], pad, torch.long, width)
    attention = _right_pad([[1.0] * len(r.ids) for r in rows], 0.0, torch.float32, width)
    agent = _right_pad([r.agent for r in rows], 0.0, torch.float32, width)
    for i, ep in enumerate(episodes):
        if ep.error is not None:  # a failed episode never reaches a loss
            agent[i] = 0.0
    return MultiTurnRollout(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        completion_ids=ids,
        completion_mask=agent,
        logprobs=_right_pad([r.logprobs for r in rows], 0.0, torch.float32, width) * agent,
        completion_attention=attention,
        token_rewards=_right_pad([r.rewards for r in rows], 0.0, torch.float32, width) * agent,
        turn_index=_right_pad([r.turn for r in rows], -1, torch.long, width),
    )


def encode_demonstration(
    tokenizer: PreTrainedTokenizerBase, segments: Sequence[str]
) -> tuple[list[int], list[int]]:
    """(ids, agent) of a scripted episode [obs, action, obs, action, ...], tokenised exactly as
    :func:`rollout_episodes` builds it: each segment on its own, each action followed by EOS."""
    ids: list[int] = []
    agent: list[int] = []
    for k, text in enumerate(segments):
        if k % 2 == 0:
            tokens = encode_text(tokenizer, text) or ([tokenizer.eos_token_id] if k == 0 else [])
            ids += tokens
            agent += [0] * len(tokens)
        else:
            tokens = encode_text(tokenizer, text) + [tokenizer.eos_token_id]
            ids += tokens
            agent += [1] * len(tokens)
    return ids, agent
