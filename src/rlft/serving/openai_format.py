"""OpenAI's response bodies and stream chunks for rlft's answers (no web framework here).

Shapes follow OpenAI's API reference for ``chat.completion``, ``chat.completion.chunk`` and
``text_completion``, so the official ``openai`` client parses them. Fields rlft adds: each choice's
``response_id`` (the id to send feedback on; with ``n > 1`` each answer has its own),
``model_version`` and ``adapter`` (what produced the answer), ``recorded`` (whether the answer
was stored, which needs the user's consent) and, only when there is one, ``warning`` (a chat answer
of a model without a chat template). The top-level ``id`` is the first choice's response id.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rlft.serving.host import Generation


@dataclass(frozen=True)
class Answer:
    """Everything a response body says: the texts, their ids and what produced them."""

    kind: str  # "chat" | "text"
    model: str
    generations: list[Generation]  # one per prompt (chat: one)
    response_ids: list[list[str]]  # per prompt, one id per text
    recorded: bool
    created: int
    warning: str | None = None  # something the client should know about how it was answered

    @property
    def id(self) -> str:
        return self.response_ids[0][0]

    @property
    def version(self) -> int:
        return self.generations[0].model_version

    def choices(self) -> Iterator[tuple[int, str, str, str, Generation]]:
        """(index, text, finish_reason, response_id, generation) of every answer, in order."""
        index = 0
        for generation, ids in zip(self.generations, self.response_ids, strict=True):
            for text, reason, rid in zip(generation.texts, generation.finish_reasons, ids, strict=True):
                yield index, text, reason, rid, generation
                index += 1

    def usage(self) -> dict[str, int]:
        prompt = sum(g.prompt_tokens for g in self.generations)
        completion = sum(sum(g.completion_tokens) for g in self.generations)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def head(self, obj: str) -> dict[str, Any]:
        head = {
            "id": self.id, "object": obj, "created": self.created, "model": self.model,
            "system_fingerprint": f"rlft-v{self.version}", "model_version": self.version,
            "adapter": self.generations[0].adapter, "recorded": self.recorded,
        }  # fmt: skip
        if self.warning is not None:
            head["warning"] = self.warning
        return head


def now() -> int:
    return int(time.time())


def response_body(answer: Answer) -> dict[str, Any]:
    """The non-streaming body: ``chat.completion`` or ``text_completion``."""
    choices = []
    for index, text, reason, rid, generation in answer.choices():
        choice: dict[str, Any] = {"index": index, "finish_reason": reason, "logprobs": None}
        if answer.kind == "chat":
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        choice.update(response_id=rid, model_version=generation.model_version)
        choices.append(choice)
    obj = "chat.completion" if answer.kind == "chat" else "text_completion"
    return {**answer.head(obj), "choices": choices, "usage": answer.usage()}


def stream_events(answer: Answer, include_usage: bool) -> Iterator[str]:
    """Server-sent events of the whole answer, then ``data: [DONE]``.

    Per choice: (chat only) a first chunk with the role, chunks of its text a word at a time, and a
    last chunk with its ``finish_reason``; with ``include_usage`` a final chunk with no choices and
    the usage, as OpenAI's ``stream_options.include_usage`` does.
    """
    chat = answer.kind == "chat"
    obj = "chat.completion.chunk" if chat else "text_completion"
    for index, text, reason, rid, generation in answer.choices():
        extra = {"response_id": rid, "model_version": generation.model_version}
        pieces: list[dict[str, str]] = [{"role": "assistant", "content": ""}] if chat else []
        pieces += [{"content": p} for p in _pieces(text)]
        for piece in pieces:
            body = {"index": index, "finish_reason": None, "logprobs": None, **extra}
            body.update({"delta": piece} if chat else {"text": piece["content"]})
            yield _event({**answer.head(obj), "choices": [body]})
        last = {"index": index, "finish_reason": reason, "logprobs": None, **extra}
        last.update({"delta": {}} if chat else {"text": ""})  # type: ignore[dict-item]
        yield _event({**answer.head(obj), "choices": [last]})
    if include_usage:
        yield _event({**answer.head(obj), "choices": [], "usage": answer.usage()})
    yield "data: [DONE]\n\n"


def _pieces(text: str) -> list[str]:
    """``text`` cut before each run of whitespace (the pieces join back to ``text``)."""
    return re.findall(r"\s*\S+|\s+$", text) if text else []


def _event(body: dict[str, Any]) -> str:
    # ASCII JSON: a lone surrogate in the text cannot break the stream's UTF-8.
    return "data: " + json.dumps(body, ensure_ascii=True, separators=(",", ":")) + "\n\n"


def models_body(model: str, version: int, created: int) -> dict[str, Any]:
    """``GET /v1/models``: the one model this server serves."""
    entry = {"id": model, "object": "model", "created": created, "owned_by": "rlft",
             "model_version": version}  # fmt: skip
    return {"object": "list", "data": [entry]}


def error_body(message: str, status: int, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape (``param``: the request field at fault, if one is), plus ``detail``
    as the feedback app answers."""
    kind = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
            404: "not_found_error", 413: "invalid_request_error", 422: "invalid_request_error"}.get(
        status, "api_error")  # fmt: skip
    return {"error": {"message": message, "type": kind, "param": param, "code": status}, "detail": message}
