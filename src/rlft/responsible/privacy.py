"""Private by default: what a run reads passes through the PII scrubber before it is used.

A recipe's ``privacy.scrub_pii`` (default true) routes every prompt and preference record through
:class:`rlft.responsible.pii.PiiScrubber` before it reaches the tokenizer, the model, a reward or
any file of the run folder.

**Prompts are scrubbed; targets are never changed.** The fields a reward or a warm start compares
against (a verifiable task's ``answer`` and ``target``, a dataset's answer and reward columns) pass
through unchanged: replacing a number in an answer by ``[PHONE]`` would make the reward pay for the
placeholder. They are still scanned, and what the detectors found in them is reported under
``pii_kept_in_targets`` so a user can see it. :func:`scrub_fields` applies the rule to any record
(a dataclass or a mapping) given the names of its target fields; a task declares them as
``target_fields`` (default :data:`DEFAULT_TARGET_FIELDS`).

Only counts are kept, in ``RUN/privacy.json`` (read by ``rlft card``)::

    {"scrub_pii": true, "counts": {"EMAIL": 3, "PHONE": 1},
     "fields": {"prompt": {"EMAIL": 3}, "corpus": {"PHONE": 1}},
     "target_fields": ["answer", "target"], "pii_kept_in_targets": {},
     "distinct_texts": 512, "texts_with_pii": 4, "ner": false}

Counts are per field and distinct text: the same training prompt drawn a hundred times counts
once. Scrubbing is memoised per distinct text, so a task whose prompts hold no PII (arithmetic)
pays for one detector pass per distinct prompt and a dictionary look-up afterwards.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from rlft.responsible.pii import PiiScrubber, ScrubResult

DEFAULT_TARGET_FIELDS: tuple[str, ...] = ("answer", "target", "extra")
"""Fields of a task's problems that rewards and the warm start compare against, never scrubbed:
the answer, the warm-start target and the extra columns (they reach rewards as keywords)."""


class RunScrubber:
    """Scrubs text for one run and remembers what it removed (counts only, never values).

    ``enabled=False`` passes everything through unchanged and writes ``scrub_pii: false``.
    """

    def __init__(self, enabled: bool = True, scrubber: PiiScrubber | None = None) -> None:
        self.enabled = enabled
        self.scrubber = (scrubber or PiiScrubber()) if enabled else None
        self.counts: Counter[str] = Counter()
        self.field_counts: dict[str, Counter[str]] = {}
        self.kept_in_targets: dict[str, Counter[str]] = {}
        self.target_fields: set[str] = set()
        self.texts_with_pii = 0
        self._seen: dict[str, ScrubResult] = {}
        self._counted: set[tuple[str, str, bool]] = set()

    def _result(self, value: str, field: str, target: bool) -> ScrubResult:
        assert self.scrubber is not None
        result = self._seen.get(value)
        if result is None:
            result = self._seen[value] = self.scrubber.scrub(value)
        key = (field, value, target)
        if result.counts and key not in self._counted:
            self._counted.add(key)
            if target:
                self.kept_in_targets.setdefault(field, Counter()).update(result.counts)
            else:
                self.counts.update(result.counts)
                self.field_counts.setdefault(field, Counter()).update(result.counts)
                self.texts_with_pii += 1
        return result

    def text(self, value: str, field: str = "text") -> str:
        """``value`` with PII replaced; counted under ``field``."""
        if self.scrubber is None:
            return value
        return self._result(value, field, target=False).text

    def keep(self, value: Any, field: str) -> Any:
        """``value`` unchanged (a target field); PII found in its strings is counted, not removed,
        under ``field`` (``field.column`` for each column of a mapping such as ``extra``)."""
        self.target_fields.add(field)
        if self.scrubber is not None:
            columns = value.items() if isinstance(value, Mapping) else [(None, value)]
            for column, part in columns:
                for text in _strings(part):
                    self._result(text, field if column is None else f"{field}.{column}", target=True)
        return value

    def record(self, record: Any, targets: Collection[str] = (), field: str = "text") -> Any:
        """A copy of a dataclass instance, mapping or list with every string scrubbed, except the
        top-level fields named in ``targets`` (see :func:`scrub_fields`)."""
        if self.scrubber is None:
            return record
        if isinstance(record, str):
            return self.text(record, field)
        if dataclasses.is_dataclass(record) and not isinstance(record, type):
            changes = {
                f.name: self._field(f.name, getattr(record, f.name), targets)
                for f in dataclasses.fields(record)
                if isinstance(getattr(record, f.name), (str, list, dict, tuple))
            }
            return dataclasses.replace(record, **changes)
        if isinstance(record, Mapping):
            return {k: self._field(str(k), v, targets) for k, v in record.items()}
        if isinstance(record, (list, tuple)):
            return [self.record(v, field=field) for v in record]
        return record

    def _field(self, name: str, value: Any, targets: Collection[str]) -> Any:
        if name in targets:
            return self.keep(value, name)
        return self.record(value, field=name)

    def summary(self) -> dict[str, Any]:
        return {
            "scrub_pii": self.enabled,
            "counts": _sorted(self.counts),
            "fields": {k: _sorted(v) for k, v in sorted(self.field_counts.items())},
            "target_fields": sorted(self.target_fields),
            "pii_kept_in_targets": {k: _sorted(v) for k, v in sorted(self.kept_in_targets.items())},
            "distinct_texts": len(self._seen),
            "texts_with_pii": self.texts_with_pii,
            "ner": bool(self.scrubber and self.scrubber.use_ner),
        }

    def write(self, run_dir: str | Path) -> Path:
        from rlft.common.run_folder import write_json_atomic

        path = Path(run_dir) / "privacy.json"
        write_json_atomic(path, self.summary())
        return path


def _sorted(counts: Counter[str]) -> dict[str, int]:
    return dict(sorted(counts.items()))


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    return []


def scrub_fields(record: Any, scrubber: RunScrubber, targets: Collection[str]) -> Any:
    """``record`` (a dataclass instance or a mapping) with its prompt side scrubbed and its targets
    untouched.

    Every string in every top-level field is scrubbed and counted under that field's name, except
    the fields named in ``targets`` (answers, warm-start targets, reward columns): those are
    returned as they are, because a reward compares against them, and PII found in them is
    counted under ``pii_kept_in_targets``. A dataset task calls it with its answer and reward
    columns::

        row = scrub_fields({"prompt": "...", "answer": "42", "source": "..."}, scrubber, {"answer"})
    """
    if not (isinstance(record, Mapping) or (dataclasses.is_dataclass(record) and not isinstance(record, type))):
        raise TypeError(f"scrub_fields takes a dataclass instance or a mapping, not {type(record).__name__}")
    return scrubber.record(record, targets)


class PrivateTask:
    """A task whose problems and tokenizer corpus are scrubbed; everything else is delegated.

    ``train_problems``, ``eval_problems``, any other ``*_problems`` method (a dataset's
    ``warm_start_problems``) and ``corpus()`` are the only ways task text enters a run (the warm
    start, rollouts, rewards, evaluations, samples and the tiny model's tokenizer all read them),
    so wrapping them is enough to keep the originals out of the run folder. The task's
    ``target_fields`` (default :data:`DEFAULT_TARGET_FIELDS`) are never changed.
    """

    def __init__(self, task: Any, scrubber: RunScrubber) -> None:
        self._task = task
        self.scrubber = scrubber
        self.target_fields = tuple(getattr(task, "target_fields", DEFAULT_TARGET_FIELDS))
        self._eval_source: Any = None
        self._eval: list[Any] = []

    @property
    def eval_problems(self) -> list[Any]:
        # Read through: a task may build its held-out problems late (the dataset task renders
        # chat templates in prepare()); rescrub only when the task's list changes.
        source = self._task.eval_problems
        if source is not self._eval_source:
            self._eval = self._scrub(source)
            self._eval_source = source
        return self._eval

    def _scrub(self, problems: list[Any]) -> list[Any]:
        return [scrub_fields(p, self.scrubber, self.target_fields) for p in problems]

    def train_problems(self, n: int, gen: Any) -> list[Any]:
        return self._scrub(self._task.train_problems(n, gen))

    def corpus(self, *args: Any, **kwargs: Any) -> list[str]:
        return [self.scrubber.text(t, "corpus") for t in self._task.corpus(*args, **kwargs)]

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._task, name)
        if name.endswith("_problems") and callable(value):
            return lambda *args, **kwargs: self._scrub(value(*args, **kwargs))
        return value


def private_task(task: Any, enabled: bool) -> PrivateTask:
    """``task`` behind a fresh :class:`RunScrubber` (a no-op one when ``enabled`` is false)."""
    return PrivateTask(task, RunScrubber(enabled))
