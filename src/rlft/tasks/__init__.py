"""Tasks: prompts, answers and the reward that scores completions."""

from rlft.tasks.arithmetic import ArithmeticTask, Problem
from rlft.tasks.reviews import ReviewsTask

__all__ = ["ArithmeticTask", "Problem", "ReviewsTask", "build_task"]


def build_task(config) -> ArithmeticTask | ReviewsTask:  # noqa: ANN001 - TaskConfig, imported lazily
    """The task named in a recipe's ``task:`` section."""
    if config.name == "reviews":
        return ReviewsTask(eval_size=config.eval_size, seed=config.seed)
    return ArithmeticTask(
        digits=config.digits,
        operations=config.operations,
        eval_size=config.eval_size,
        seed=config.seed,
        answer_format=config.answer_format,
    )
