"""Tasks: prompts, answers and the reward that scores completions.

``TASKS`` is the registry: a recipe's ``task.name`` picks an entry here and nowhere else. An entry
says how to build the task, which fields of the recipe's ``task:`` section it reads (setting
another is refused when the recipe loads), and the checks of its own fields. A plugin adds one
with ``rlft.register_task`` (docs/extending.md), its settings a dataclass of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rlft.algorithms.registry import Registry
from rlft.errors import ConfigError
from rlft.tasks.arithmetic import ArithmeticTask
from rlft.tasks.base import Problem, Task, reward_context
from rlft.tasks.dataset import DatasetTask
from rlft.tasks.multistep import MultistepSettings, MultistepTask
from rlft.tasks.reviews import N_PROMPTS, ReviewsTask

__all__ = [
    "TASKS", "ArithmeticTask", "DatasetTask", "MultistepTask", "Problem", "ReviewsTask", "Task", "TaskEntry", "build_task",
    "dataset_task_from_config", "dataset_task_from_rows", "reward_context",
]  # fmt: skip


def _arithmetic(config: Any, reward_factory: Any, warm_start: Any) -> ArithmeticTask:
    return ArithmeticTask(
        digits=config.digits,
        operations=config.operations,
        eval_size=config.eval_size,
        seed=config.seed,
        answer_format=config.answer_format,
    )


def _reviews(config: Any, reward_factory: Any, warm_start: Any) -> ReviewsTask:
    return ReviewsTask(eval_size=config.eval_size, seed=config.seed)


def _multistep(config: Any, reward_factory: Any, warm_start: Any) -> MultistepTask:
    return MultistepTask(**config.settings, eval_size=config.eval_size, seed=config.seed)


def _dataset(config: Any, reward_factory: Any, warm_start: Any) -> DatasetTask:
    return dataset_task_from_config(config, reward_factory() if reward_factory is not None else None, warm_start)


def dataset_task_from_config(config: Any, reward: Any, warm_start: Any, evaluate_on: str | None = None) -> DatasetTask:
    """The dataset task of a TaskConfig; ``evaluate_on`` (a file) gives a task that only
    evaluates, on that file (``rlft eval RUN --data FILE``), without reading the training data."""
    from rlft.tasks.data import load_rows

    if reward is None:
        raise ConfigError(
            "task.name='dataset' has no reward of its own; give one in the recipe's reward: section "
            "(e.g. {type: exact_match} or {type: math_verify} against the answer column, or "
            "{type: python, function: 'my_reward.py:score'}), or --reward on the command line."
        )
    if evaluate_on is not None:
        train_rows, eval_rows = [], load_rows(evaluate_on, config.split, "--data")
    else:
        if not config.data:
            raise ConfigError("task.name='dataset' needs task.data: a .jsonl/.json/.csv/.parquet file, a folder or a hub id.")
        train_rows = load_rows(config.data, config.split, "task.data")
        eval_rows = load_rows(config.eval_data, config.eval_split, "task.eval_data") if config.eval_data else None
    demos = None
    if evaluate_on is None and warm_start is not None and warm_start.data:
        demos = load_rows(warm_start.data, config.split, "warm_start.data")
    target_field = warm_start.target_field if warm_start is not None else None
    return dataset_task_from_rows(config, reward, train_rows, eval_rows, target_field, demos, evaluate_on is not None)


def dataset_task_from_rows(
    config: Any, reward: Any, train_rows: Any, eval_rows: Any, target_field: str | None = None,
    demonstrations: Any = None, evaluation_only: bool = False,
) -> DatasetTask:  # fmt: skip
    """A DatasetTask with the fields of a TaskConfig, on rows already read."""
    return DatasetTask(
        train_rows,
        eval_rows,
        reward,
        prompt_field=config.prompt_field,
        answer_field=config.answer_field,
        target_field=target_field,
        system_prompt=config.system_prompt,
        chat_template=config.chat_template,
        eval_fraction=config.eval_fraction,
        eval_size=config.eval_size,
        seed=config.seed,
        demonstrations=demonstrations,
        evaluation_only=evaluation_only,
    )


def _no_curriculum(config: Any) -> None:
    """Refused at load (not when the run starts): a task without a finite training set has no
    prompts for ``task.sampler: curriculum`` to keep pass rates of."""
    if config.sampler == "curriculum":
        raise ConfigError(
            f"task.sampler: curriculum needs a task with a finite training set to track pass rates in, but "
            f"task {config.name!r} draws new problems every time. Use it with task.name: multistep or dataset "
            "(or a task of your own that defines all_train_problems()), or set task.sampler: uniform."
        )


def _check_arithmetic(config: Any) -> None:
    _no_curriculum(config)
    if config.answer_format == "steps" and set(config.operations) != {"+"}:
        raise ConfigError(
            f"task.answer_format='steps' writes column-addition steps, so task.operations must be "
            f"['+'], not {config.operations!r}; use answer_format: answer for other operations."
        )
    bad_ops = [op for op in config.operations if op not in ("+", "-", "*")]
    if bad_ops or not config.operations:
        raise ConfigError(f"task.operations={config.operations!r}: allowed are '+', '-', '*' (at least one).")


def _check_reviews(config: Any) -> None:
    _no_curriculum(config)
    if config.eval_size > N_PROMPTS // 2:
        raise ConfigError(
            f"task.eval_size={config.eval_size}: the reviews task has {N_PROMPTS} prompts; "
            f"hold out at most {N_PROMPTS // 2}."
        )


def _check_multistep(config: Any) -> None:
    if config.settings["min_steps"] > config.settings["max_steps"]:
        raise ConfigError(
            f"task.min_steps={config.settings['min_steps']} is above task.max_steps={config.settings['max_steps']}."
        )


def _no_checks(config: Any) -> None:
    return None


@dataclass(frozen=True)
class TaskEntry:
    """What a ``task.name`` means."""

    # (task config, a function building the recipe's reward (called only by tasks that score with
    # it, so a reward model is not loaded twice), warm-start config) -> the task
    build: Callable[[Any, Any, Any], Any]
    # The fields of the task section it reads (``name`` aside); setting another is refused.
    fields: frozenset[str]
    # Checks across its fields (a TaskConfig in, ConfigError out), run when a recipe loads.
    check: Callable[[Any], None] = _no_checks
    # The fields of the warm_start section it reads besides steps, batch_size and learning_rate
    # (the other tasks make their own warm-start targets).
    warm_start_fields: frozenset[str] = frozenset()
    # Scores with the recipe's reward (it has no score of its own), so it cannot run without one.
    needs_recipe_reward: bool = False
    # (task config, reward, warm-start config, a file) -> a task that only evaluates, on that file
    # (``rlft eval RUN --data FILE``); None where the task is not read from files.
    evaluate_on_file: Callable[[Any, Any, Any, str], Any] | None = None
    # The dataclass of its own settings (``task.settings``, written next to ``task.name``), for a
    # plugin's task; the build function reads them from ``config.settings``.
    settings: Any = None


TASKS: Registry[TaskEntry, None] = Registry("task", None, {
    "arithmetic": TaskEntry(
        _arithmetic, frozenset({"digits", "operations", "answer_format", "eval_size", "seed"}), _check_arithmetic
    ),
    "reviews": TaskEntry(_reviews, frozenset({"eval_size", "seed"}), _check_reviews),
    "multistep": TaskEntry(_multistep, frozenset({"eval_size", "seed", "settings"}), _check_multistep, settings=MultistepSettings),
    "dataset": TaskEntry(
        _dataset,
        frozenset({"data", "split", "eval_data", "eval_split", "eval_fraction", "prompt_field", "answer_field",
                   "system_prompt", "chat_template", "eval_size", "seed"}),
        warm_start_fields=frozenset({"target_field", "data"}),
        needs_recipe_reward=True,
        evaluate_on_file=lambda config, reward, warm_start, path: dataset_task_from_config(
            config, reward, warm_start, evaluate_on=path
        ),
    ),
})


def build_task(config: Any, reward_factory: Callable[[], Any] | None = None, warm_start: Any = None) -> Any:
    """The task named in a recipe's ``task:`` section (a TaskConfig). ``reward_factory()`` builds
    the recipe's reward (the dataset task scores with it); ``warm_start`` is the WarmStartConfig."""
    return TASKS[config.name].build(config, reward_factory, warm_start)
