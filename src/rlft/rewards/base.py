"""The reward protocol, and the one place where a reward's output is checked.

Every reward — rule-based, a learned reward model, a remote service, a user's function — is a
callable that scores a whole batch at once::

    reward(prompts: Sequence[str], completions: Sequence[str], **context) -> Sequence[float] | RewardOutput

``context`` carries per-sample extras as lists aligned with ``prompts`` (``answers=[...]``,
``problems=[...]``); a reward takes what it needs and ignores the rest, so the trainer passes the
same context to every reward. The trainer never calls a reward directly but through
:func:`score`, which turns a raised exception or a non-finite value into a :class:`RewardError`
that names the prompt that caused it, before anything reaches the weights.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from rlft.errors import ConfigError, RlftError


class RewardError(RlftError):
    """A reward raised, returned the wrong number of scores, or returned NaN/inf."""


class RewardSpecError(ConfigError):
    """A reward specification (in a recipe or passed to ``build_reward``) that does not validate."""


@dataclass
class RewardOutput:
    """Scores of one batch.

    rewards:      one float per completion, the value the trainer optimises
    components:   optional per-component scores (name -> one float per completion), for metrics,
                  e.g. the raw parts of a weighted combination
    step_rewards: optional dense rewards: per completion, ``(end, reward)`` pairs, each the reward
                  of the completion's text up to character ``end`` (a step that ends there; an
                  ``end`` of ``len(completion)`` is the completion's end). The trainer puts each on
                  the token where that text ends; the advantage estimators that read token rewards
                  (reinforce_pp, gae) use them, the others ``rewards`` (docs/rewards.md#dense-rewards)
    """

    rewards: list[float]
    components: dict[str, list[float]] = field(default_factory=dict)
    step_rewards: list[list[tuple[int, float]]] | None = None


@runtime_checkable
class RewardFunction(Protocol):
    """Anything that scores a batch of completions; see the module docstring."""

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], **context: Any
    ) -> Sequence[float] | RewardOutput: ...


def resolve(value: Any) -> Any:
    """An ``async def`` reward's result, awaited (in an event loop of its own, in this thread);
    any other value as it is."""
    if inspect.isawaitable(value):
        async def wait() -> Any:
            return await value

        return asyncio.run(wait())
    return value


def score(
    reward: RewardFunction, prompts: Sequence[str], completions: Sequence[str], **context: Any
) -> RewardOutput:
    """Call ``reward`` on a batch and check what it returns.

    Raises :class:`RewardError` naming the offending prompt when the reward raises (the batch is
    re-scored one sample at a time to find which one), returns a wrong count, or returns a
    non-finite value.
    """
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    try:
        raw = resolve(reward(prompts, completions, **context))
    except RewardError:
        raise
    except SystemExit as exc:  # sys.exit() in a reward would end the run silently, often with status 0
        raise exit_error(describe_reward(reward), exc) from None
    except Exception as exc:
        culprit = _first_failing_sample(reward, prompts, completions, context)
        where = f" on prompt {prompts[culprit]!r}" if culprit is not None else ""
        hint = ""
        if isinstance(exc, TypeError) and "keyword argument" in str(exc):
            hint = (f" A reward is called with every context list ({', '.join(sorted(context))}): accept the "
                    "ones it does not use with **context, e.g. def score(prompts, completions, answers, **context).")
        raise RewardError(
            f"Reward {describe_reward(reward)} raised{where}: {type(exc).__name__}: {exc}.{hint}"
        ) from exc
    out = as_output(raw, describe_reward(reward))
    if len(out.rewards) != len(prompts):
        raise RewardError(
            f"Reward {describe_reward(reward)} returned {len(out.rewards)} scores for {len(prompts)} completions."
        )
    check_step_rewards(out, completions, describe_reward(reward))
    for i, value in enumerate(out.rewards):
        if not math.isfinite(value):
            raise RewardError(
                f"Reward {describe_reward(reward)} returned {value} for prompt {prompts[i]!r} "
                f"(completion {completions[i]!r}); rewards must be finite."
            )
    return out


def as_output(raw: Any, name: str) -> RewardOutput:
    """What a reward returned as a :class:`RewardOutput` of floats, or a :class:`RewardError`.

    Numbers are taken as they are (bools as 1.0 and 0.0: ``completion == answer`` is a score);
    text is refused, not converted: a reward that returns ``"0.5"`` more likely returns the wrong
    thing than a number in disguise."""
    if isinstance(raw, RewardOutput):
        values, components, steps = raw.rewards, raw.components, raw.step_rewards
    else:
        values, components, steps = raw, {}, None
    if hasattr(values, "tolist"):  # a tensor or an array
        values = values.tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise RewardError(
            f"Reward {name} returned {type(raw).__name__} {str(raw)[:60]!r}; a reward returns one "
            "number per completion (a list, a tensor or a RewardOutput)."
        )
    out = []
    for i, value in enumerate(values):
        if isinstance(value, (str, bytes)):
            raise RewardError(
                f"Reward {name} returned the text {value!r} as score {i}; a reward returns numbers, and rlft "
                "does not convert text. Return float(...) of it if a number is meant."
            )
        try:
            out.append(float(value))
        except (TypeError, ValueError):
            raise RewardError(
                f"Reward {name} returned {type(value).__name__} {str(value)[:60]!r} as score {i}; a reward "
                "returns one number per completion (a list, a tensor or a RewardOutput)."
            ) from None
    return RewardOutput(out, components, steps)


def check_step_rewards(out: RewardOutput, completions: Sequence[str], name: str) -> None:
    """A reward's ``step_rewards``: one list per completion of ``(end, reward)`` pairs, ``end`` a
    character position in 0..len(completion), ``reward`` finite; else a :class:`RewardError`."""
    if out.step_rewards is None:
        return
    if len(out.step_rewards) != len(completions):
        raise RewardError(
            f"Reward {name} returned step_rewards for {len(out.step_rewards)} completions, not {len(completions)}."
        )
    for i, (steps, completion) in enumerate(zip(out.step_rewards, completions, strict=True)):
        for pair in steps:
            ok = isinstance(pair, (tuple, list)) and len(pair) == 2 and isinstance(pair[0], int)
            if not ok or not 0 <= pair[0] <= len(completion) or not math.isfinite(float(pair[1])):
                raise RewardError(
                    f"Reward {name} returned the step reward {pair!r} for completion {i} ({completion!r}); each is "
                    f"(end, reward): end a character position in 0..{len(completion)}, reward a finite number."
                )


def exit_error(name: str, exc: SystemExit) -> RewardError:
    """The error for a reward that called ``sys.exit``: it ends the run, but with a message."""
    return RewardError(
        f"Reward {name} called sys.exit({exc.code!r}) (raised SystemExit); a reward returns scores and does "
        "not end the process. The run stops here; raise an exception in the reward to report a problem."
    )


def _first_failing_sample(
    reward: RewardFunction,
    prompts: Sequence[str],
    completions: Sequence[str],
    context: dict[str, Any],
) -> int | None:
    for i in range(len(prompts)):
        one = context_rows(context, [i], len(prompts))
        try:
            reward(prompts[i : i + 1], completions[i : i + 1], **one)
        except Exception:
            return i
    return None


def context_rows(context: dict[str, Any], rows: Sequence[int], n: int) -> dict[str, Any]:
    """``context`` for the samples ``rows`` of a batch of ``n``: per-sample lists are indexed,
    anything else is passed through."""
    return {
        k: [v[i] for i in rows] if isinstance(v, (list, tuple)) and len(v) == n else v
        for k, v in context.items()
    }


def describe_reward(reward: Any) -> str:
    """How an error names a reward: its type, with the function of a ``python`` reward
    (``python (my_reward.py:score)``), or a plain callable's own name."""
    name = getattr(reward, "name", None) or getattr(reward, "__qualname__", None) or type(reward).__name__
    function = getattr(reward, "function", None)
    return f"{name} ({function})" if isinstance(function, str) else str(name)


def context_list(context: dict[str, Any], key: str, n: int, reward_name: str) -> list[Any]:
    """The per-sample context ``key`` as a list of length ``n``, or a clear error."""
    if key not in context:
        raise RewardError(
            f"Reward {reward_name!r} needs the per-sample context {key!r} "
            f"(got: {', '.join(sorted(context)) or 'none'})."
        )
    values = list(context[key])
    if len(values) != n:
        raise RewardError(
            f"Reward {reward_name!r}: context {key!r} has {len(values)} items for {n} completions."
        )
    return values
