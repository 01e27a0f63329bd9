"""The ``dataset`` task: a user's own prompts, answers and extra columns, and their reward.

Rows come from any source :func:`rlft.tasks.data.load_rows` reads. A prompt is a string (plain
text) or a list of ``{role, content}`` messages, rendered with the tokenizer's own chat template
(``apply_chat_template(..., add_generation_prompt=True)``) once the tokenizer is known. The answer
column reaches rewards as ``answers`` and is what the warm start imitates; every other column
reaches rewards under its own name, as a list aligned with the prompts (TRL's convention).

The held-out split is ``eval_data`` or a seeded ``eval_fraction`` of the *distinct prompts* of
``data``: rows that repeat a held-out prompt are held out with it, so no held-out prompt is ever
trained on. Everything that can be wrong with the data is found here, before any training.
"""

from __future__ import annotations

import difflib
import json
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch

from rlft.errors import ConfigError
from rlft.tasks.base import RESERVED_CONTEXT, Problem, reward_context
from rlft.tasks.data import Row, rows_sha256

# The roles a message of a conversational prompt may have (those chat templates render).
CHAT_ROLES = ("system", "user", "assistant", "tool")

# How many offending rows an error message lists before "and N more".
_SHOWN = 5


def _rows_text(wheres: list[str]) -> str:
    shown = ", ".join(wheres[:_SHOWN])
    return shown + (f" and {len(wheres) - _SHOWN} more" if len(wheres) > _SHOWN else "")


class DatasetTask:
    """Prompts (and answers) from rows of data, scored by the recipe's reward.

    ``reward`` is any batched reward ``(prompts, completions, **context) -> scores`` (a built
    ``reward:`` spec or a Python callable); it is what ``eval/accuracy`` reports for this task.
    """

    name = "dataset"

    def __init__(
        self,
        train_rows: list[Row],
        eval_rows: list[Row] | None,
        reward: Callable[..., Any],
        *,
        prompt_field: str = "prompt",
        answer_field: str | None = "answer",
        target_field: str | None = None,
        system_prompt: str | None = None,
        chat_template: str = "auto",
        eval_fraction: float = 0.1,
        eval_size: int | None = None,
        seed: int = 1234,
        demonstrations: list[Row] | None = None,
        evaluation_only: bool = False,
    ) -> None:
        if chat_template not in ("auto", "none", "always"):
            raise ConfigError(f"task.chat_template={chat_template!r}: choose auto, none or always.")
        self.reward_function = reward
        self.prompt_field, self.answer_field, self.target_field = prompt_field, answer_field, target_field
        self.system_prompt, self.chat_template = system_prompt, chat_template
        self.data_sha256 = {"task.data": rows_sha256(train_rows)}
        if eval_rows is not None:
            self.data_sha256["task.eval_data"] = rows_sha256(eval_rows)
        if demonstrations is not None:
            self.data_sha256["warm_start.data"] = rows_sha256(demonstrations)
        if not evaluation_only:
            _check_columns(train_rows, prompt_field, answer_field, "task.data")
        if eval_rows is not None:
            _check_columns(eval_rows, prompt_field, answer_field, "task.eval_data")
        # Every row's own problems are found before the split's (which needs valid prompts).
        parsed = {id(row): self._parse(row, need_answer=answer_field is not None) for row in train_rows + (eval_rows or [])}
        self.conversational = chat_template == "always" or any(
            isinstance(r.values.get(prompt_field), list) for r in train_rows + (eval_rows or [])
        )
        if self.system_prompt and not self.conversational:
            raise ConfigError(
                "task.system_prompt is set but every prompt is plain text, so it would be ignored. "
                "Set task.chat_template: always to send each prompt as a user message after the "
                "system prompt, or remove task.system_prompt."
            )
        key = {rid: self._rendered_key(row["prompt"]) for rid, row in parsed.items()}
        train, held_out, self.dropped_overlap = _split(
            train_rows, [] if evaluation_only else eval_rows, eval_fraction, seed, lambda r: key[id(r)]
        )
        if evaluation_only:
            train, held_out = [], eval_rows or []
        self._train = [parsed[id(row)] for row in train]
        # eval_size caps how many held-out rows are evaluated; the rest are still never trained on.
        self._eval = [parsed[id(row)] for row in held_out[:eval_size]]
        self._demos = None
        if demonstrations is not None:
            _check_columns(demonstrations, prompt_field, target_field or answer_field, "warm_start.data")
            self._demos = [self._parse(row, need_answer=True, answer=target_field or answer_field)
                           for row in demonstrations]  # fmt: skip
        self.eval_problems: list[Problem] = []
        self._train_problems: list[Problem] = []
        self._demo_problems: list[Problem] = []
        self._prepared = False

    # ---- the Task protocol ---------------------------------------------------------------
    def train_problems(self, n: int, gen: torch.Generator) -> list[Problem]:
        """``n`` training problems: a seeded permutation of the training split (cycled if ``n`` is
        larger), drawn with ``gen`` only, so a resumed run draws the same ones."""
        self._require_prepared()
        return _draw(self._train_problems, n, gen)

    def all_train_problems(self) -> list[Problem]:
        """Every training problem (the finite pool ``task.sampler: curriculum`` chooses from)."""
        self._require_prepared()
        return list(self._train_problems)

    def warm_start_problems(self, n: int, gen: torch.Generator) -> list[Problem]:
        """``n`` demonstrations for the warm start: ``warm_start.data`` when given, else the
        training rows that have a target."""
        self._require_prepared()
        pool = self._demo_problems if self._demos is not None else [p for p in self._train_problems if p.target]
        if not pool:
            raise ConfigError(
                "warm_start.steps > 0 needs demonstrations, but no training row has an answer "
                f"(task.answer_field={self.answer_field!r}). Set warm_start.steps: 0, set "
                "task.answer_field, warm_start.target_field, or warm_start.data."
            )
        return _draw(pool, n, gen)

    def reward(self, completions: Sequence[str], problems: Sequence[Problem]) -> list[float]:
        from rlft.rewards.base import score

        out = score(self.reward_function, [p.prompt for p in problems], completions, **reward_context(problems))
        return list(out.rewards)

    def corpus(self) -> list[str]:
        """Training prompts, answers and targets: the text the tiny model's tokenizer learns."""
        texts: list[str] = []
        for r in self._train + (self._demos or []):
            texts += [m["content"] for m in r["prompt"]] if isinstance(r["prompt"], list) else [r["prompt"]]
            texts += [r["answer"], r["target"]]
        return [t for t in texts if t] + ([self.system_prompt] if self.system_prompt else [])

    def prepare(self, tokenizer: Any, max_prompt_tokens: int | None = None) -> None:
        """Render every prompt for ``tokenizer`` and check that each fits ``max_prompt_tokens``."""
        if self.conversational and not getattr(tokenizer, "chat_template", None):
            raise ConfigError(
                "The data has conversational prompts (lists of {role, content} messages) or "
                "task.chat_template is 'always', but the model's tokenizer has no chat template. "
                "Use an instruct model (its tokenizer_config.json has a chat_template), set "
                "tokenizer.chat_template and save it, or give plain string prompts with "
                "task.chat_template: none."
            )
        self.eval_problems = [self._problem(r, tokenizer) for r in self._eval]
        held_out = {p.prompt for p in self.eval_problems}
        rendered = [self._problem(r, tokenizer) for r in self._train]
        # The last guard against a held-out prompt being trained on: compare what the model sees.
        self._train_problems = [p for p in rendered if p.prompt not in held_out]
        self.dropped_after_rendering = len(rendered) - len(self._train_problems)
        if rendered and not self._train_problems:
            raise ConfigError("Every training prompt, as the model sees it, is also a held-out prompt; nothing is left to train on.")
        self._demo_problems = [self._problem(r, tokenizer) for r in self._demos or []]
        if max_prompt_tokens is not None:
            from rlft.models.tokens import prompt_token_ids

            rows = self._eval + self._train + (self._demos or [])
            problems = self.eval_problems + rendered + self._demo_problems
            lengths = [len(ids) for ids in prompt_token_ids(tokenizer, [p.prompt for p in problems])]
            too_long = [r["where"] for r, n in zip(rows, lengths, strict=True) if n > max_prompt_tokens]
            if too_long:
                raise ConfigError(
                    f"{len(too_long)} of {len(rows)} prompts are longer than {max_prompt_tokens} tokens "
                    f"(the longest has {max(lengths)}): {_rows_text(too_long)}. The limit is "
                    "rollout.max_prompt_tokens, or the model's context window (model.tiny.context_length "
                    "for the offline model) minus rollout.max_new_tokens. Shorten or drop those rows, "
                    "or raise the limit."
                )
        self._prepared = True

    # ---- rows -> problems ----------------------------------------------------------------
    def _parse(self, row: Row, need_answer: bool, answer: str | None = None) -> dict[str, Any]:
        """Validate one row; returns its prompt, answer, target and extra columns."""
        answer_key = answer or self.answer_field
        prompt = row.values.get(self.prompt_field)
        if isinstance(prompt, str):
            if not prompt.strip():
                raise ConfigError(f"{row.where}: the prompt ({self.prompt_field!r}) is empty.")
        elif _is_messages(prompt):
            if self.chat_template == "none":
                raise ConfigError(
                    f"{row.where}: the prompt is a list of messages but task.chat_template is 'none'. "
                    "Set task.chat_template: auto to render it with the tokenizer's chat template."
                )
            _check_roles(prompt, row.where)
            prompt = [{"role": m["role"], "content": _message_text(m["content"], row.where)} for m in prompt]
        else:
            raise ConfigError(
                f"{row.where}: the prompt ({self.prompt_field!r}) must be a string or a list of "
                f"{{role, content}} messages, got {_describe(prompt)}."
            )
        answer_value = _as_text(row, answer_key) if answer_key else ""
        if need_answer and answer_key and not answer_value:
            raise ConfigError(f"{row.where}: no answer in {answer_key!r}; fill or drop the row.")
        target = _as_text(row, self.target_field) if self.target_field else answer_value
        # The target column (warm_start.target_field) still reaches rewards: it is data, too.
        extra = {k: v for k, v in row.values.items() if k not in (self.prompt_field, answer_key)}
        return {"where": row.where, "prompt": prompt, "answer": answer_value, "target": target, "extra": extra}

    def _messages(self, prompt: str | list[dict[str, str]]) -> str | list[dict[str, str]]:
        """What the chat template will receive: the messages with the system prompt, or plain text."""
        if isinstance(prompt, str) and self.chat_template == "always":
            prompt = [{"role": "user", "content": prompt}]
        if isinstance(prompt, list) and self.system_prompt and prompt[0]["role"] != "system":
            prompt = [{"role": "system", "content": self.system_prompt}, *prompt]
        return prompt

    def _rendered_key(self, prompt: str | list[dict[str, str]]) -> str:
        """Equal for two prompts the model would see alike (before the template), e.g. "1+1=" and
        [{"role": "user", "content": "1+1="}] under chat_template: always."""
        return json.dumps(self._messages(prompt), sort_keys=True, ensure_ascii=False)

    def _problem(self, row: dict[str, Any], tokenizer: Any) -> Problem:
        prompt = self._messages(row["prompt"])
        if isinstance(prompt, list):
            prompt = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        return Problem(prompt=prompt, answer=row["answer"], target=row["target"], extra=row["extra"])

    def _require_prepared(self) -> None:
        if not self._prepared:
            raise RuntimeError("DatasetTask.prepare(tokenizer) must be called before drawing problems.")


def _draw(pool: list[Problem], n: int, gen: torch.Generator) -> list[Problem]:
    if not pool:
        raise ConfigError("There are no training problems to draw from (an evaluation-only task?).")
    out: list[Problem] = []
    while len(out) < n:
        order = torch.randperm(len(pool), generator=gen).tolist()
        out += [pool[i] for i in order[: n - len(out)]]
    return out


def _check_roles(messages: list[dict[str, Any]], where: str) -> None:
    """Refuse a role chat templates do not know: most render any role as it is, so a typo
    ("usr") would reach the model as a turn of its own instead of an error."""
    for i, message in enumerate(messages):
        role = message["role"]
        if role not in CHAT_ROLES:
            close = difflib.get_close_matches(role, CHAT_ROLES, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"{where}: message {i} has the role {role!r}, which is not a chat role.{hint} The roles are "
                f"{', '.join(CHAT_ROLES)}."
            )


def _message_text(content: Any, where: str) -> str:
    """A message's content as text: a string, or a list of {"type": "text", "text": ...} parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    raise ConfigError(
        f"{where}: a message's content must be text (or a list of {{type: text, text: ...}} parts), "
        f"got {_describe(content)}."
    )


def _is_messages(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) > 0
        and all(isinstance(m, dict) and isinstance(m.get("role"), str) and "content" in m for m in value)
    )


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def _as_text(row: Row, key: str) -> str:
    """A row's answer/target as text: strings as they are, numbers written out; "" if missing."""
    value = row.values.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, numbers.Number)):
        raise ConfigError(
            f"{row.where}: {key!r} must be a string or a number, got {_describe(value)}. Put structured "
            "values in another column: it reaches the reward under its own name."
        )
    return value if isinstance(value, str) else str(value)  # numpy's numbers too: str(np.int64(3)) == "3"


def _check_columns(rows: list[Row], prompt_field: str, answer_field: str | None, what: str) -> None:
    """Missing columns, missing answers and reserved column names, each with every row named."""
    columns = sorted({k for r in rows for k in r.values})
    listed = ", ".join(repr(c) for c in columns)
    if not any(prompt_field in r.values for r in rows):
        raise ConfigError(
            f"{what}: no column {prompt_field!r} for the prompt; the columns are {listed}. "
            "Set task.prompt_field to the prompt's column."
        )
    missing_prompt = [r.where for r in rows if r.values.get(prompt_field) is None]
    if missing_prompt:
        raise ConfigError(f"{what}: {len(missing_prompt)} rows have no {prompt_field!r}: {_rows_text(missing_prompt)}.")
    if answer_field is not None:
        if not any(answer_field in r.values for r in rows):
            raise ConfigError(
                f"{what}: no column {answer_field!r} for the answer; the columns are {listed}. Set "
                "task.answer_field to the answer's column, or task.answer_field: null for data "
                "without answers (the reward then gets no `answers`)."
            )
        missing = [r.where for r in rows if r.values.get(answer_field) in (None, "")]
        if missing:
            raise ConfigError(
                f"{what}: {len(missing)} of {len(rows)} rows have no {answer_field!r}: "
                f"{_rows_text(missing)}. Fill or drop them, or set task.answer_field: null if the "
                "reward does not need answers."
            )
    clash = [c for c in columns if c in RESERVED_CONTEXT and c not in (prompt_field, answer_field)]
    if clash:
        raise ConfigError(
            f"{what}: column {clash[0]!r} would clash with the reward's own {clash[0]!r} argument; "
            "rename that column."
        )


def _split(
    rows: list[Row], eval_rows: list[Row] | None, eval_fraction: float, seed: int, key: Callable[[Row], str]
) -> tuple[list[Row], list[Row], int]:
    """(train rows, held-out rows, training rows dropped because their prompt is held out);
    ``key(row)`` is equal for rows whose prompts the model sees alike."""
    if not rows:
        return [], [], 0
    if eval_rows is not None:
        held_keys = {key(r) for r in eval_rows}
        train = [r for r in rows if key(r) not in held_keys]
        if not train:
            raise ConfigError("task.data: every training prompt also appears in task.eval_data; nothing is left to train on.")
        return train, eval_rows, len(rows) - len(train)
    keys = sorted({key(r) for r in rows})
    n_eval = round(eval_fraction * len(keys))
    if n_eval == 0:
        raise ConfigError(
            f"task.eval_fraction={eval_fraction} of {len(keys)} distinct prompts holds out none, so "
            "nothing would be evaluated. Raise task.eval_fraction or give task.eval_data."
        )
    if n_eval >= len(keys):
        raise ConfigError(
            f"task.eval_fraction={eval_fraction} of {len(keys)} distinct prompts leaves none to "
            "train on. Lower task.eval_fraction or give more data."
        )
    order = torch.randperm(len(keys), generator=torch.Generator().manual_seed(seed)).tolist()
    held = {keys[i] for i in order[:n_eval]}
    train = [r for r in rows if key(r) not in held]
    return train, [r for r in rows if key(r) in held], 0
