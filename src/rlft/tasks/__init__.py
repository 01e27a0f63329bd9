"""Tasks: prompts, answers and the reward that scores completions.

``TASKS`` is the registry: a recipe's ``task.name`` picks a builder here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rlft.tasks.arithmetic import ArithmeticTask
from rlft.tasks.base import Problem, Task, reward_context
from rlft.tasks.dataset import DatasetTask
from rlft.tasks.reviews import ReviewsTask

__all__ = [
    "TASKS", "ArithmeticTask", "DatasetTask", "Problem", "ReviewsTask", "Task", "build_task", "dataset_task_from_config",
    "dataset_task_from_rows", "reward_context",
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


def _dataset(config: Any, reward_factory: Any, warm_start: Any) -> DatasetTask:
    return dataset_task_from_config(config, reward_factory() if reward_factory is not None else None, warm_start)


def dataset_task_from_config(config: Any, reward: Any, warm_start: Any, evaluate_on: str | None = None) -> DatasetTask:
    """The dataset task of a TaskConfig; ``evaluate_on`` (a file) gives a task that only
    evaluates, on that file (``rlft eval RUN --data FILE``), without reading the training data."""
    from rlft.errors import ConfigError
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


# task.name -> builder(task config, a function building the recipe's reward (called only by tasks
# that score with it, so a reward model is not loaded twice), warm-start config)
TASKS: dict[str, Callable[[Any, Any, Any], Any]] = {
    "arithmetic": _arithmetic,
    "reviews": _reviews,
    "dataset": _dataset,
}


def build_task(config: Any, reward_factory: Callable[[], Any] | None = None, warm_start: Any = None) -> Any:
    """The task named in a recipe's ``task:`` section (a TaskConfig). ``reward_factory()`` builds
    the recipe's reward (the dataset task scores with it); ``warm_start`` is the WarmStartConfig."""
    return TASKS[config.name](config, reward_factory, warm_start)
