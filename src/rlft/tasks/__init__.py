"""Tasks: prompts, answers and the verifiable reward that scores completions."""

from rlft.tasks.arithmetic import ArithmeticTask, Problem

__all__ = ["ArithmeticTask", "Problem", "build_task"]


def build_task(config) -> ArithmeticTask:  # noqa: ANN001 - TaskConfig, imported lazily
    """The task named in a recipe's ``task:`` section."""
    return ArithmeticTask(
        digits=config.digits,
        operations=config.operations,
        eval_size=config.eval_size,
        seed=config.seed,
        answer_format=config.answer_format,
    )
