"""Extending rlft from a file of your own: the public registration calls (docs/extending.md).

Each call adds an entry to the registry the built-ins live in, through the same
:meth:`rlft.algorithms.registry.Registry.add` they use, with the metadata the recipe checks read
(whether a loss reuses a batch, whether an estimator needs a critic, ...). A recipe then names the
entry like a built-in one, and a typo in it fails when the recipe loads, listing what is
registered. A name registered twice is refused unless ``replace=True``.

Each ``register_*`` takes the entry as its second argument or decorates it::

    @rlft.register_policy_loss("cispo")
    def cispo_loss(logprobs, old_logprobs, advantages, *, clip_low, clip_high, clip_ratio_c, mask): ...

Put the file on the command line with ``--plugin my_loss.py`` (or ``plugins: [my_loss.py]`` in the
recipe): it is imported before the recipe is checked, and the run records it in config.yaml.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from rlft.algorithms.registry import Registry
from rlft.errors import ConfigError

F = TypeVar("F")

__all__ = [
    "register_advantage_estimator", "register_algorithm", "register_env", "register_kl_estimator",
    "register_policy_loss", "register_reward", "register_task", "registries", "restoring_registries",
]  # fmt: skip

# How the trainer calls each kind of function (positional tensors, then keywords), checked when it
# is registered so that a wrong signature fails at load, not in the middle of a run.
POLICY_LOSS_CALL = (3, ("clip_low", "clip_high", "clip_ratio_c", "mask"))
ADVANTAGE_CALL = (2, ("values", "group_size", "gamma", "lam", "scale_rewards"))
KL_CALL = (2, ("clamp",))


def _decorate(entry: F | None, add: Callable[[F], None]) -> Any:
    """``add(entry)`` now, or a decorator that adds the function or class it decorates."""
    if entry is not None:
        add(entry)
        return entry

    def decorator(decorated: F) -> F:
        add(decorated)
        return decorated

    return decorator


def _add(registry: Registry[Any, Any], name: str, entry: Any, info: Any, replace: bool) -> None:
    try:
        registry.add(name, entry, info, replace=replace)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _check_call(what: str, name: str, fn: Any, call: tuple[int, tuple[str, ...]], shape: str) -> None:
    """``fn`` can be called as the trainer calls a ``what`` (``call``: positional count, keywords)."""
    if not callable(fn):
        raise ConfigError(f"register_{what}({name!r}) needs a function, got {fn!r}.")
    positional, keywords = call
    try:
        inspect.signature(fn).bind(*range(positional), **dict.fromkeys(keywords))
    except TypeError as exc:
        raise ConfigError(
            f"register_{what}({name!r}): {fn.__qualname__} cannot be called as the trainer calls it, {shape} "
            f"({exc}). Accept the keywords it does not use with **kwargs."
        ) from None
    except ValueError:  # a builtin without a signature: trust it
        pass


def register_policy_loss(
    name: str, fn: Any = None, *, needs_old_logprobs: bool = True, sequence_level: bool = False,
    replace: bool = False,
) -> Any:
    """A policy loss for ``algorithm.policy_loss: NAME``: ``fn(logprobs, old_logprobs, advantages, *,
    clip_low, clip_high, clip_ratio_c, mask) -> (loss, clipped)``, all (B, T) (rlft.algorithms.losses).

    needs_old_logprobs: it has an importance ratio against ``old_logprobs``, so a batch may be
        reused (several epochs or mini-batches); False allows one on-policy update per batch only.
    sequence_level: its ratio is one per sequence (as GSPO's).
    """
    from rlft.algorithms.losses import POLICY_LOSSES, PolicyLossInfo

    def add(loss: Any) -> None:
        _check_call("policy_loss", name, loss, POLICY_LOSS_CALL,
                    "fn(logprobs, old_logprobs, advantages, *, clip_low, clip_high, clip_ratio_c, mask)")
        _add(POLICY_LOSSES, name, loss, PolicyLossInfo(needs_old_logprobs, sequence_level), replace)

    return _decorate(fn, add)


def register_advantage_estimator(
    name: str, fn: Any = None, *, needs_critic: bool = False, needs_groups: bool = False, token_level: bool = False,
    replace: bool = False,
) -> Any:
    """An advantage estimator for ``algorithm.advantage_estimator: NAME``: ``fn(token_rewards,
    completion_mask, *, values, group_size, gamma, lam, scale_rewards, eps=...) -> (advantages,
    returns)``, all (B, T) (rlft.algorithms.advantages).

    needs_critic: it reads ``values`` (the recipe must set ``algorithm.critic``).
    needs_groups: it compares the completions of one prompt (``algorithm.group_size`` >= 2).
    token_level: it reads token rewards where they sit (returns to go), so a reward's dense
    ``step_rewards`` reach it; otherwise it gets each completion's reward on its last token.
    """
    from rlft.algorithms.advantages import ADVANTAGE_ESTIMATORS, EstimatorInfo

    def add(estimator: Any) -> None:
        _check_call("advantage_estimator", name, estimator, ADVANTAGE_CALL,
                    "fn(token_rewards, completion_mask, *, values, group_size, gamma, lam, scale_rewards)")
        _add(ADVANTAGE_ESTIMATORS, name, estimator, EstimatorInfo(needs_critic, needs_groups, token_level), replace)

    return _decorate(fn, add)


def register_kl_estimator(name: str, fn: Any = None, *, replace: bool = False) -> Any:
    """A KL estimator for ``algorithm.kl_estimator: NAME``: ``fn(logprobs, ref_logprobs, clamp=...)``
    -> the per-token estimate (B, T) (rlft.algorithms.kl)."""
    from rlft.algorithms.kl import KL_ESTIMATORS

    def add(estimator: Any) -> None:
        _check_call("kl_estimator", name, estimator, KL_CALL, "fn(logprobs, ref_logprobs, clamp=...)")
        _add(KL_ESTIMATORS, name, estimator, None, replace)

    return _decorate(fn, add)


def _check_settings(what: str, name: str, settings: Any) -> None:
    if settings is not None and not (isinstance(settings, type) and dataclasses.is_dataclass(settings)):
        raise ConfigError(
            f"register_{what}({name!r}, settings=...) takes a dataclass (its fields are the recipe's keys), "
            f"got {settings!r}."
        )


def register_env(name: str, family: Any = None, *, settings: Any = None, replace: bool = False) -> Any:
    """An environment family for the agent recipe's ``env.name: NAME`` (rlft.envs.EnvFamily: a
    class with ``train_envs``, ``eval_envs``, ``demonstration`` and ``corpus``).

    The family is built as ``family(settings_instance, **fields)``: ``settings`` is the dataclass
    of its own settings (the recipe writes them in ``env:`` next to ``name``; checked like any
    section), and ``fields`` the env: fields it names in its class attribute ``settings``
    (a tuple such as ``("max_turns", "seed")``). Without a settings dataclass it is built as
    ``family(**fields)``.
    """
    from rlft.config.agent import ENV_FIELDS
    from rlft.envs import ENV_FAMILIES, EnvInfo

    _check_settings("env", name, settings)

    def add(cls: Any) -> None:
        missing = [m for m in ("train_envs", "eval_envs", "demonstration", "corpus") if not callable(getattr(cls, m, None))]
        if missing:
            raise ConfigError(f"register_env({name!r}): {cls!r} has no {', '.join(missing)} (rlft.envs.EnvFamily).")
        fields = getattr(cls, "settings", None)
        allowed = sorted(ENV_FIELDS - {"name", "settings"})
        if not isinstance(fields, tuple) or not set(fields) <= set(allowed):
            raise ConfigError(
                f"register_env({name!r}): {cls.__qualname__}.settings must be a tuple of the env: fields its "
                f"constructor takes besides its own settings (any of {', '.join(allowed)}), e.g. "
                f"settings = ('max_turns', 'seed'); got {fields!r}."
            )
        if not isinstance(getattr(cls, "name", None), str):
            cls.name = name
        _add(ENV_FAMILIES, name, cls, EnvInfo(settings=settings), replace)

    return _decorate(family, add)


def register_reward(name: str, cls: Any = None, *, replace: bool = False) -> Any:
    """A reward type for ``reward: {type: NAME, ...}`` (also inside ``weighted``): a dataclass whose
    fields are the spec's keys (declared with ``rlft.schema.setting`` to document and range-check
    them) and whose instances score a batch, ``reward(prompts, completions, **context)``
    (docs/rewards.md)."""
    from rlft.rewards.registry import REWARDS, reward_types

    def add(reward: Any) -> None:
        if not (isinstance(reward, type) and dataclasses.is_dataclass(reward) and callable(reward)):
            raise ConfigError(
                f"register_reward({name!r}) takes a dataclass whose instances are called as "
                f"reward(prompts, completions, **context); got {reward!r}."
            )
        if name in reward_types() and name not in REWARDS:
            raise ConfigError(f"register_reward({name!r}): {name!r} is a combinator of rewards; choose another name.")
        if "name" in {f.name for f in dataclasses.fields(reward)}:
            raise ConfigError(f"register_reward({name!r}): a reward's field may not be called 'name' (rlft sets it).")
        reward.name = name  # type: ignore[attr-defined]  # describe_reward and its errors read it
        _add(REWARDS, name, reward, None, replace)

    return _decorate(cls, add)


def register_task(name: str, build: Any = None, *, settings: Any = None, replace: bool = False) -> Any:
    """A task for ``task.name: NAME``: ``build(settings) -> task`` (rlft.tasks.Task), given the
    instance of ``settings`` (a dataclass; the recipe writes its fields in ``task:`` next to
    ``name``), or ``build(None)`` without one. The task scores with its own ``reward``."""
    from rlft.schema import build as build_settings
    from rlft.tasks import TASKS, TaskEntry

    _check_settings("task", name, settings)

    def add(fn: Any) -> None:
        if not callable(fn):
            raise ConfigError(f"register_task({name!r}) needs a function returning the task, got {fn!r}.")

        def make(config: Any, reward_factory: Any, warm_start: Any) -> Any:
            return fn(build_settings(settings, config.settings, "task") if settings is not None else None)

        fields = frozenset({"settings"}) if settings is not None else frozenset()
        _add(TASKS, name, TaskEntry(make, fields, settings=settings), None, replace)

    return _decorate(build, add)


def register_algorithm(
    name: str, preset: Mapping[str, Any], *, base: str = "grpo", train: Mapping[str, Any] | None = None,
    replace: bool = False,
) -> None:
    """An algorithm for ``algorithm.name: NAME``: a preset of the algorithm section's fields over
    those of the online algorithm ``base`` (``{"policy_loss": "cispo", "clip_high": 5.0}``; names of
    registered parts), and ``train`` defaults (``epochs_per_batch``, ``mini_batches``,
    ``learning_rate``) over base's. A recipe's own fields still win over the preset's."""
    from rlft.algorithms.presets import ALGORITHM_PRESETS, AlgorithmPreset, TrainingDefaults
    from rlft.config import AlgorithmConfig, config_from_dict
    from rlft.schema import build

    where = f"register_algorithm({name!r})"
    origin = ALGORITHM_PRESETS.get(base)
    if origin is None or origin["trainer"] != "rl":
        online = [n for n, p in ALGORITHM_PRESETS.items() if p["trainer"] == "rl"]
        raise ConfigError(f"{where}: base={base!r} is not an online algorithm; choose one of {', '.join(online)}.")
    if "name" in preset:
        raise ConfigError(f"{where}: the preset names its parts, not itself; remove 'name'.")
    build(AlgorithmConfig, dict(preset), where)  # names the bad key, type or unregistered part
    unknown = sorted(set(train or {}) - set(TrainingDefaults.__annotations__))
    if unknown:
        raise ConfigError(f"{where}: train takes {', '.join(TrainingDefaults.__annotations__)}, not {unknown[0]!r}.")
    entry = AlgorithmPreset(trainer="rl", algorithm={**origin["algorithm"], **preset},
                            train=TrainingDefaults(**{**origin["train"], **(train or {})}))  # type: ignore[typeddict-item]
    previous = ALGORITHM_PRESETS.get(name)
    _add(ALGORITHM_PRESETS, name, entry, None, replace)
    try:  # its parts must fit together (a critic for GAE, groups for GRPO) in the default recipe
        config_from_dict({"algorithm": {"name": name}})
    except ConfigError as exc:
        if previous is None:
            del ALGORITHM_PRESETS[name]
        else:
            ALGORITHM_PRESETS[name] = previous
        raise ConfigError(f"{where}: {exc}") from None


def registries() -> dict[str, Registry[Any, Any]]:
    """Every registry a ``register_*`` call adds to, by the recipe field (or spec key) that names it."""
    from rlft.algorithms.advantages import ADVANTAGE_ESTIMATORS
    from rlft.algorithms.kl import KL_ESTIMATORS
    from rlft.algorithms.losses import POLICY_LOSSES
    from rlft.algorithms.presets import ALGORITHM_PRESETS
    from rlft.envs import ENV_FAMILIES
    from rlft.rewards.registry import REWARDS
    from rlft.tasks import TASKS

    return {
        "algorithm.policy_loss": POLICY_LOSSES, "algorithm.advantage_estimator": ADVANTAGE_ESTIMATORS,
        "algorithm.kl_estimator": KL_ESTIMATORS, "algorithm.name": ALGORITHM_PRESETS, "env.name": ENV_FAMILIES,
        "reward.type": REWARDS, "task.name": TASKS,
    }  # fmt: skip


@contextlib.contextmanager
def restoring_registries() -> Iterator[None]:
    """Every registry as it was on entry, again on exit: for tests that register names (a plugin's
    own tests too), so that one test's registrations do not leak into the next."""
    saved = [(r, dict(r), dict(r.infos)) for r in registries().values()]
    try:
        yield
    finally:
        for registry, entries, infos in saved:
            registry.clear()
            registry.update(entries)
            registry.infos.clear()
            registry.infos.update(infos)
