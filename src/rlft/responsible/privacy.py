"""Private by default: what a run reads passes through the PII scrubber before it is used.

A recipe's ``privacy.scrub_pii`` (default true) routes every prompt, answer and preference record
through :class:`rlft.responsible.pii.PiiScrubber` before it reaches the tokenizer, the model, a
reward or any file of the run folder. Only the counts per entity type are kept, in
``RUN/privacy.json`` (read by ``rlft card``)::

    {"scrub_pii": true, "counts": {"EMAIL": 3, "PHONE": 1}, "distinct_texts": 512,
     "texts_with_pii": 4, "ner": false}

Counts are per distinct text: the same training prompt drawn a hundred times counts once.
Scrubbing is memoised per distinct text, so a task whose prompts hold no PII (arithmetic) pays
for one regex pass per distinct prompt and a dictionary look-up afterwards.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

from rlft.responsible.pii import PiiScrubber


class RunScrubber:
    """Scrubs text for one run and remembers what it removed (counts only, never values).

    ``enabled=False`` passes everything through unchanged and writes ``scrub_pii: false``.
    """

    def __init__(self, enabled: bool = True, scrubber: PiiScrubber | None = None) -> None:
        self.enabled = enabled
        self.scrubber = (scrubber or PiiScrubber()) if enabled else None
        self.counts: Counter[str] = Counter()
        self.texts_with_pii = 0
        self._seen: dict[str, str] = {}

    def text(self, value: str) -> str:
        if self.scrubber is None:
            return value
        done = self._seen.get(value)
        if done is None:
            result = self.scrubber.scrub(value)
            done = result.text
            self.counts.update(result.counts)
            self.texts_with_pii += bool(result.counts)
            self._seen[value] = done
        return done

    def record(self, record: Any) -> Any:
        """A copy of a dataclass instance, mapping or list with every string field scrubbed."""
        if self.scrubber is None:
            return record
        if isinstance(record, str):
            return self.text(record)
        if dataclasses.is_dataclass(record) and not isinstance(record, type):
            changes = {
                f.name: self.record(getattr(record, f.name))
                for f in dataclasses.fields(record)
                if isinstance(getattr(record, f.name), (str, list, dict, tuple))
            }
            return dataclasses.replace(record, **changes)
        if isinstance(record, dict):
            return {k: self.record(v) for k, v in record.items()}
        if isinstance(record, (list, tuple)):
            return [self.record(v) for v in record]
        return record

    def summary(self) -> dict[str, Any]:
        return {
            "scrub_pii": self.enabled,
            "counts": dict(sorted(self.counts.items())),
            "distinct_texts": len(self._seen),
            "texts_with_pii": self.texts_with_pii,
            "ner": bool(self.scrubber and self.scrubber.use_ner),
        }

    def write(self, run_dir: str | Path) -> Path:
        from rlft.trainers.run_folder import write_json_atomic

        path = Path(run_dir) / "privacy.json"
        write_json_atomic(path, self.summary())
        return path


class PrivateTask:
    """A task whose problems and tokenizer corpus are scrubbed; everything else is delegated.

    ``train_problems``, ``eval_problems`` and ``corpus()`` are the only ways task text enters a
    run (the warm start, rollouts, rewards, evaluations, samples and the tiny model's tokenizer
    all read them), so wrapping them is enough to keep the originals out of the run folder.
    """

    def __init__(self, task: Any, scrubber: RunScrubber) -> None:
        self._task = task
        self.scrubber = scrubber
        self.eval_problems = [scrubber.record(p) for p in task.eval_problems]

    def train_problems(self, n: int, gen: Any) -> list[Any]:
        return [self.scrubber.record(p) for p in self._task.train_problems(n, gen)]

    def corpus(self, *args: Any, **kwargs: Any) -> list[str]:
        return [self.scrubber.text(t) for t in self._task.corpus(*args, **kwargs)]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task, name)


def private_task(task: Any, enabled: bool) -> PrivateTask:
    """``task`` behind a fresh :class:`RunScrubber` (a no-op one when ``enabled`` is false)."""
    return PrivateTask(task, RunScrubber(enabled))
