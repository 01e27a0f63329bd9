"""TensorBoard: event files in ``RUN/tensorboard`` (``tensorboard --logdir RUN/tensorboard``)."""

from __future__ import annotations

from typing import Any, ClassVar

from rlft.tracking.base import TrackerStart, param_values, samples_markdown

FOLDER = "tensorboard"


class TensorBoardTracker:
    """Scalars under the metric names, the recipe in the HParams tab (written once, when the
    tracker run starts), sample completions as a Markdown table in the TEXT tab (``eval/samples``).
    Every call is flushed, so what the harness counts as received is on disk."""

    library: ClassVar[str] = "tensorboard"
    fix: ClassVar[str] = "Check that RUN/tensorboard can be written."
    creates: ClassVar[tuple[str, ...]] = (FOLDER,)

    def __init__(self, writer: Any, where: str) -> None:
        self.writer, self.where = writer, where

    @classmethod
    def start(cls, how: TrackerStart) -> TensorBoardTracker:
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package
        from torch.utils.tensorboard.summary import hparams

        folder = how.run_dir / FOLDER
        writer = SummaryWriter(log_dir=str(folder))  # a resumed run adds an event file beside the first
        if not how.saved:
            experiment, session_start, _ = hparams(param_values(how.params), {})
            writer.file_writer.add_summary(experiment)  # type: ignore[attr-defined]
            writer.file_writer.add_summary(session_start)  # type: ignore[attr-defined]
            writer.flush()
        return cls(writer, f"{folder} (view: tensorboard --logdir {folder})")

    def state(self) -> dict[str, Any]:
        return {"logdir": FOLDER}

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def log_samples(self, samples: list[dict[str, Any]], step: int) -> None:
        self.writer.add_text("eval/samples", samples_markdown(samples), step)
        self.writer.flush()

    def close(self, failed: bool = False) -> None:
        self.writer.close()
