"""The Python API: ``rlft.train(recipe, reward=..., task=...)`` and ``rlft.dataset_task(rows, ...)``.

For people who write code rather than recipes: the same run as ``rlft train`` (run folder, audit
log, checkpoints, resume, summary), with the reward and the task given as Python objects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rlft.config import RecipeConfig, config_from_dict, read_recipe_yaml


def train(
    recipe: str | Path | Mapping[str, Any] | RecipeConfig | None = None,
    *,
    reward: Callable[..., Any] | None = None,
    task: Any = None,
    overrides: Sequence[str] = (),
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train and return the run's summary (also written to ``RUN/summary.json``).

    recipe:    a YAML path, a mapping of recipe fields, a RecipeConfig, or None (the demo recipe)
    reward:    ``reward(prompts, completions, **context) -> list[float]``; replaces ``reward:``.
               ``context`` has ``answers``, ``problems`` and every extra column of the data.
    task:      an object following :class:`rlft.tasks.Task` (e.g. :func:`dataset_task`, or your
               own procedurally generated task); replaces the recipe's ``task:`` section, which
               must then be left at its defaults.
    overrides: ``KEY=VALUE`` strings, as ``--set`` on the command line.
    """
    from rlft.errors import ConfigError
    from rlft.trainers.registry import train as run_recipe

    if isinstance(recipe, RecipeConfig):
        if overrides:
            raise ConfigError("overrides apply to a recipe file or mapping, not to a built RecipeConfig.")
        config = recipe
    else:
        data = read_recipe_yaml(recipe) if isinstance(recipe, (str, Path)) else dict(recipe or {})
        if task is not None and "task" in data:
            raise ConfigError(
                "task= replaces the recipe's task section, but the recipe has one too; remove one of them."
            )
        config = config_from_dict(data, list(overrides))
    if reward is not None and getattr(task, "reward_function", None) is not None:
        raise ConfigError(
            "reward= was given twice: to rlft.train and to the task (dataset_task(reward=...)). Give it once."
        )
    if reward is not None and not callable(reward):
        raise ConfigError(f"reward= must be a callable reward(prompts, completions, **context), got {type(reward).__name__}.")
    if task is not None:
        missing = [name for name in ("eval_problems", "train_problems", "reward", "corpus", "prepare") if not hasattr(task, name)]
        if missing:
            raise ConfigError(
                f"task= is missing {', '.join(missing)} of the Task protocol (rlft.tasks.Task; "
                "docs/datasets.md#your-own-task-in-python)."
            )
    return run_recipe(config, resume=resume, progress=progress, reward=reward, task=task)


def dataset_task(
    rows: Sequence[Mapping[str, Any]],
    eval_rows: Sequence[Mapping[str, Any]] | None = None,
    reward: Callable[..., Any] | None = None,
    **fields: Any,
) -> Any:
    """A dataset task from rows in memory (dicts with a prompt and, optionally, an answer and
    extra columns). ``fields`` are those of the recipe's task section (prompt_field, answer_field,
    system_prompt, chat_template, eval_fraction, eval_size, seed) and ``target_field``."""
    from rlft.config import TaskConfig, WarmStartConfig
    from rlft.errors import ConfigError
    from rlft.schema import build
    from rlft.tasks import dataset_task_from_rows
    from rlft.tasks.data import Row

    def as_rows(items: Any, name: str) -> list[Row]:
        if hasattr(items, "to_dict") and not isinstance(items, Mapping):  # a pandas DataFrame
            items = items.to_dict("records")
        if isinstance(items, Mapping) or not all(isinstance(item, Mapping) for item in items):
            raise ConfigError(f"{name} must be a sequence of mappings (one dict per row), or a DataFrame.")
        return [Row(f"{name}[{i}]", dict(item)) for i, item in enumerate(items)]

    if reward is None or not callable(reward):
        raise ConfigError(
            "dataset_task needs reward=: a callable reward(prompts, completions, **context) -> scores "
            f"(got {type(reward).__name__}); for a built-in, rlft.rewards.build_reward({{'type': 'exact_match'}})."
        )
    # The same checks as a recipe's fields (ranges, types, unknown names).
    target = {"target_field": fields.pop("target_field")} if "target_field" in fields else {}
    config = build(TaskConfig, {"name": "dataset", **fields}, "dataset_task")
    warm = build(WarmStartConfig, target, "dataset_task")
    eval_part = as_rows(eval_rows, "eval_rows") if eval_rows is not None else None
    return dataset_task_from_rows(config, reward, as_rows(rows, "rows"), eval_part, warm.target_field)
