"""Weights & Biases: offline by default, the run written under ``RUN/wandb`` (upload it later with
``wandb sync``); ``log.wandb_mode: online`` sends it to the W&B server and needs credentials."""

from __future__ import annotations

from typing import Any, ClassVar

from rlft.errors import RlftError
from rlft.tracking.base import TrackerStart, sample_table

FOLDER = "wandb"


class WandbTracker:
    """Metrics with their step, the recipe as the run's config, sample completions as a table
    (``eval/samples``). A resumed run continues the same W&B run id: offline, each session adds an
    ``offline-run-*-ID`` folder, and ``wandb sync`` of all of them uploads one run."""

    library: ClassVar[str] = "wandb"
    fix: ClassVar[str] = "Check log.wandb_mode (offline needs no account) and, online, your W&B credentials."
    creates: ClassVar[tuple[str, ...]] = (FOLDER,)

    def __init__(self, run: Any, wandb: Any, where: str) -> None:
        self.run, self.wandb, self.where = run, wandb, where

    @classmethod
    def start(cls, how: TrackerStart) -> WandbTracker:
        import wandb

        mode, run_id = how.log.wandb_mode, how.saved.get("run_id")
        # silent and console off: rlft's own progress bar stays the only thing on the terminal
        settings = wandb.Settings(silent=True, console="off", x_disable_stats=True, save_code=False)
        try:
            run = wandb.init(
                project=how.log.project, name=how.run_name, id=run_id, resume="allow" if run_id else None,
                mode=mode, dir=str(how.run_dir), config=None if run_id else how.params, settings=settings,
            )  # fmt: skip
        except (wandb.errors.UsageError, wandb.errors.AuthenticationError) as exc:
            raise RlftError(
                f"W&B could not start in log.wandb_mode={mode} ({exc}). Online logging needs credentials: run "
                "`wandb login` or set WANDB_API_KEY; or use log.wandb_mode: offline (no account needed; "
                "upload later with `wandb sync`)."
            ) from None
        if run_id:  # the config shows the recipe the run resumed with (train.steps may have grown)
            run.config.update(how.params, allow_val_change=True)
        where = f"W&B run {run.id} ({mode})"
        if mode == "offline":
            where += f" in {run.settings.sync_dir} (upload: wandb sync {how.run_dir / FOLDER}/offline-run-*)"
        return cls(run, wandb, where)

    def state(self) -> dict[str, Any]:
        return {"run_id": self.run.id, "mode": self.run.settings.mode}

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def log_samples(self, samples: list[dict[str, Any]], step: int) -> None:
        columns, rows = sample_table(samples)
        self.run.log({"eval/samples": self.wandb.Table(columns=columns, data=rows)}, step=step)

    def close(self, failed: bool = False) -> None:
        self.run.finish(exit_code=1 if failed else 0)
