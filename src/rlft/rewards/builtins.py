"""Built-in rewards: answer checks, a format check, a length penalty, offline sentiment, a user's
own function, and a weighted combination of any of them.

Each reward is a dataclass whose fields are its parameters (with their documentation), so a
recipe's ``reward:`` section is validated like the rest of a recipe: an unknown key names the
nearest valid one, a wrong type or value names the field. See ``docs/rewards.md``.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from rlft.rewards.base import RewardError, RewardOutput, RewardSpecError, context_list, score
from rlft.rewards.normalization import NormalizeMode, RunningMoments, normalize
from rlft.schema import setting

_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?")


def _required(help: str, **checks: Any) -> Any:
    """A dataclass field without a default: the reward cannot be built without it."""
    return field(metadata={"help": help, **checks})


def _answers(context: dict[str, Any], n: int, name: str) -> list[str]:
    """Reference answers from ``answers=[...]``, or from ``problems=[...]`` with an ``.answer``."""
    if "answers" not in context and "problems" in context:
        answers = [str(p.answer) for p in context_list(context, "problems", n, name)]
        if answers and not any(answers):
            raise RewardError(
                f"Reward {name!r} compares completions with reference answers, but the data has "
                "none (task.answer_field is null, or the task has no answers). Set "
                "task.answer_field, or use a reward that needs no answers."
            )
        return answers
    return [str(a) for a in context_list(context, "answers", n, name)]


@dataclass
class ExactMatch:
    """1.0 where the completion equals the sample's reference answer, else 0.0.

    Needs the context ``answers`` (or ``problems`` whose items have ``.answer``).
    """

    name: ClassVar[str] = "exact_match"
    strip: bool = setting(True, "Ignore whitespace around the completion and the answer.")
    ignore_case: bool = setting(False, "Compare case-insensitively.")

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], **context: Any
    ) -> list[float]:
        answers = _answers(context, len(completions), self.name)
        return [
            float(self._norm(c) == self._norm(a)) for c, a in zip(completions, answers, strict=True)
        ]

    def _norm(self, text: str) -> str:
        text = text.strip() if self.strip else text
        return text.lower() if self.ignore_case else text


def parse_number(text: str, which: Literal["first", "last"] = "last") -> float | None:
    """The first or last number written in ``text`` (``1,234.5`` reads as 1234.5), or None."""
    found = _NUMBER.findall(text)
    if not found:
        return None
    return float((found[0] if which == "first" else found[-1]).replace(",", ""))


@dataclass
class NumericAnswer:
    """1.0 where the number in the completion is within ``tolerance`` of the reference answer.

    Free text around the number is allowed ("The answer is 42."), unlike ``exact_match``.
    Needs the context ``answers`` (or ``problems``).
    """

    name: ClassVar[str] = "numeric"
    which: Literal["first", "last"] = setting("last", "Which number of the completion is its answer.")
    tolerance: float = setting(1e-6, "Largest absolute difference that still counts as correct.", ge=0)

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], **context: Any
    ) -> list[float]:
        answers = _answers(context, len(completions), self.name)
        out = []
        for completion, answer in zip(completions, answers, strict=True):
            target = parse_number(answer, "last")
            if target is None:
                raise ValueError(f"reference answer {answer!r} is not a number")
            got = parse_number(completion, self.which)
            out.append(float(got is not None and abs(got - target) <= self.tolerance))
        return out


@dataclass
class RegexFormat:
    """``reward`` where the completion matches ``pattern``, else ``penalty``."""

    name: ClassVar[str] = "regex"
    pattern: str = _required("A Python regular expression, e.g. '^<answer>\\\\d+</answer>$'.")
    mode: Literal["search", "match", "fullmatch"] = setting(
        "search", "search: anywhere; match: at the start; fullmatch: the whole completion."
    )
    reward: float = setting(1.0, "Score of a completion that matches.")
    penalty: float = setting(0.0, "Score of a completion that does not match.")

    def __post_init__(self) -> None:
        try:
            self._regex = re.compile(self.pattern, re.DOTALL)
        except re.error as exc:
            raise RewardSpecError(
                f"regex.pattern={self.pattern!r} is not a valid regular expression: {exc}"
            ) from None

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], **context: Any
    ) -> list[float]:
        test = getattr(self._regex, self.mode)
        return [self.reward if test(c) else self.penalty for c in completions]


@dataclass
class LengthPenalty:
    """``-coef * max(0, length - max_length)``: zero up to ``max_length``, linear beyond."""

    name: ClassVar[str] = "length_penalty"
    max_length: int = _required("Length allowed without penalty.", ge=0)
    coef: float = setting(0.01, "Penalty per unit of length beyond max_length.", ge=0)
    unit: Literal["chars", "words"] = setting(
        "chars", "What length counts: characters or whitespace-separated words."
    )

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], **context: Any
    ) -> list[float]:
        lengths = [len(c) if self.unit == "chars" else len(c.split()) for c in completions]
        return [0.0 - self.coef * max(0, n - self.max_length) for n in lengths]


@dataclass
class Sentiment:
    """VADER's compound sentiment score of the completion, in [-1, 1] (Hutto & Gilbert, 2014).

    Works offline: the lexicon ships inside the ``vaderSentiment`` package. With
    ``target: negative`` the sign is flipped, so negative text scores high.
    """

    name: ClassVar[str] = "sentiment"
    target: Literal["positive", "negative"] = setting("positive", "Which sentiment scores high.")

    def __post_init__(self) -> None:
        try:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
        except ImportError:
            raise RewardSpecError(
                "The sentiment reward needs vaderSentiment: pip install 'rlft[feedback]'."
            ) from None
        self._analyzer = SentimentIntensityAnalyzer()

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], **context: Any
    ) -> list[float]:
        sign = 1.0 if self.target == "positive" else -1.0
        return [sign * self._analyzer.polarity_scores(c)["compound"] for c in completions]


@dataclass
class MathVerify:
    """1.0 where the completion's final answer is mathematically equal to the reference answer.

    Built on the ``math-verify`` library (Hugging Face; offline, sympy underneath): LaTeX, a
    ``\\boxed{}`` answer, fractions, decimals and expressions are compared by value, so
    ``\\frac{1}{2}``, ``0.5`` and ``1/2`` are equal. The answer is taken from the last ``\\boxed{}``
    of the completion, else from its last math expression. Needs the context ``answers``.
    """

    name: ClassVar[str] = "math_verify"
    float_rounding: int = setting(6, "Decimal places that count when comparing numbers.", ge=0)
    timeout_seconds: int = setting(
        5, "Give up on one comparison after this long (scored 0.0); only in the main thread.", ge=1
    )

    def __post_init__(self) -> None:
        try:
            import math_verify  # noqa: F401
        except ImportError:
            raise RewardSpecError(
                "reward type 'math_verify' needs the math-verify package: pip install 'math-verify>=0.7'."
            ) from None

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], **context: Any
    ) -> list[float]:
        import threading

        from math_verify import parse, verify

        answers = _answers(context, len(completions), self.name)
        # math-verify times out with SIGALRM, which exists only in the main thread.
        timeout = self.timeout_seconds if threading.current_thread() is threading.main_thread() else None
        scores = []
        for completion, answer in zip(completions, answers, strict=True):
            gold = parse(answer if "$" in answer or "\\" in answer else f"${answer}$", parsing_timeout=timeout)
            guess = parse(completion, parsing_timeout=timeout)
            ok = bool(gold) and bool(guess) and verify(
                gold, guess, float_rounding=self.float_rounding, timeout_seconds=timeout
            )
            scores.append(float(ok))
        return scores


@dataclass
class PythonFunction:
    """A user's own batched reward, ``module:function`` or ``path/to/file.py:function``.

    It is called as ``function(prompts, completions, **context)`` and returns one float per
    completion (or a :class:`RewardOutput`). It is imported when the recipe is loaded, so a typo
    fails before training starts.
    """

    name: ClassVar[str] = "python"
    function: str = _required(
        "Where the function lives: 'package.module:function' or 'file.py:function'."
    )

    def __post_init__(self) -> None:
        self._fn = load_function(self.function)

    def __call__(self, prompts: Sequence[str], completions: Sequence[str], **context: Any) -> Any:
        return self._fn(prompts, completions, **context)


def load_function(ref: str) -> Callable[..., Any]:
    """Import ``module:function`` or ``file.py:function``, with errors that name what is missing."""
    module_name, sep, attr = ref.rpartition(":")
    if not sep or not module_name or not attr:
        raise RewardSpecError(f"python.function={ref!r} must look like 'package.module:function'.")
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise RewardSpecError(f"python.function={ref!r}: file {path} does not exist.")
            spec = importlib.util.spec_from_file_location(f"rlft_user_reward_{path.stem}", path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RewardSpecError(
            f"python.function={ref!r}: cannot import {module_name!r}: {exc}"
        ) from None
    except SyntaxError as exc:
        raise RewardSpecError(
            f"python.function={ref!r}: {exc.filename}:{exc.lineno}: syntax error ({exc.msg}); fix the file."
        ) from None
    except Exception as exc:  # the module's own top-level code failed
        raise RewardSpecError(
            f"python.function={ref!r}: importing {module_name!r} raised {type(exc).__name__}: {exc}"
        ) from None
    fn = getattr(module, attr, None)
    if fn is None:
        raise RewardSpecError(
            f"python.function={ref!r}: {module_name!r} has no attribute {attr!r}."
        )
    if not callable(fn):
        raise RewardSpecError(f"python.function={ref!r}: {attr!r} is not callable.")
    return fn


@dataclass
class Component:
    """One term of a weighted combination."""

    name: str
    reward: Any
    weight: float = 1.0


class WeightedSum:
    """``sum_k weight_k * normalize(reward_k)``, each reward normalised on its own first.

    Normalising each component before weighting makes the weights mean what they say: a length
    penalty in the hundreds no longer drowns a 0/1 correctness reward. ``normalize`` is one of
    ``none``, ``batch`` or ``running`` (see ``rlft.rewards.normalization``). The raw component
    scores are returned in ``RewardOutput.components`` for logging.
    """

    name = "weighted"

    def __init__(self, components: Sequence[Component], normalize: NormalizeMode = "none") -> None:
        if not components:
            raise RewardSpecError("weighted.components must list at least one reward.")
        names = [c.name for c in components]
        if len(set(names)) != len(names):
            raise RewardSpecError(
                f"weighted.components have duplicate names {names}; give each a distinct 'name'."
            )
        self.components = list(components)
        self.normalize = normalize
        self._moments = {c.name: RunningMoments() for c in components}

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], **context: Any
    ) -> RewardOutput:
        total = [0.0] * len(completions)
        raw: dict[str, list[float]] = {}
        for c in self.components:
            values = score(c.reward, prompts, completions, **context).rewards
            raw[c.name] = values
            scaled = normalize(values, self.normalize, self._moments[c.name])
            total = [t + c.weight * v for t, v in zip(total, scaled, strict=True)]
        return RewardOutput(total, raw)
