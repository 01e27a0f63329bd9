"""One folder per run. Layout (documented in docs/run-folder.md):

    RUN/
      config.yaml            the resolved recipe (every default filled in)
      base_model/            the warm-started policy RL starts from (a Hugging Face model folder)
      base_eval.json         held-out accuracy of the base policy
      metrics.jsonl          one JSON object per RL step (see docs/metrics.md)
      evals.jsonl            held-out evaluations during training
      samples.jsonl          sample completions at each evaluation
      checkpoints/step_N/    model.safetensors, optimizer.pt, trainer_state.json (atomic)
      final_model/           the trained policy (a Hugging Face model folder)
      summary.json           before/after accuracy, steps, time
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


class RunFolder:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    config = property(lambda self: self.root / "config.yaml")
    base_model = property(lambda self: self.root / "base_model")
    base_eval = property(lambda self: self.root / "base_eval.json")
    metrics = property(lambda self: self.root / "metrics.jsonl")
    evals = property(lambda self: self.root / "evals.jsonl")
    samples = property(lambda self: self.root / "samples.jsonl")
    checkpoints = property(lambda self: self.root / "checkpoints")
    final_model = property(lambda self: self.root / "final_model")
    summary = property(lambda self: self.root / "summary.json")

    def append_jsonl(self, path: Path, record: dict[str, Any]) -> None:
        with path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()

    def read_jsonl(self, path: Path) -> list[dict[str, Any]]:
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def truncate_jsonl(self, path: Path, keep_up_to_step: int) -> None:
        """Drop records written after ``keep_up_to_step`` (they are redone on resume)."""
        records = [r for r in self.read_jsonl(path) if r.get("step", 0) <= keep_up_to_step]
        write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in records))


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a crash leaves either the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")
