"""The serving app: an OpenAI-compatible API in front of a :class:`~rlft.serving.host.ModelHost`,
with feedback on its answers kept in a :class:`~rlft.feedback.store.Store` (docs/serving.md).

This module imports FastAPI; nothing else in rlft.serving does. Auth and the body limit are the
feedback app's (:mod:`rlft.feedback.server`), with OpenAI's error shape: every route but ``/`` and
``/health`` needs ``Authorization: Bearer TOKEN``, a token from ``rlft feedback add-annotator NAME``.

=============================  ===================================================================
``GET /``                      the chat page (thumbs up/down, "another answer" to compare two)
``GET /health``                ``{"ok": true, "model_version": V}``
``GET /v1/models``             the served model
``POST /v1/chat/completions``  OpenAI chat completions; ``stream: true`` answers server-sent events
``POST /v1/completions``       OpenAI text completions (one prompt or a list), streaming too
``POST /v1/feedback``          ``{response_id, rating: up|down}`` or ``{response_ids: [a, b],
                               preferred: a}``: 201 created, 200 duplicate or replaced, 404
                               unknown answer, 403 another user's answer or no consent, 422 bad body
``POST /v1/consent``           record the user's consent (204)
``GET /v1/me``                 ``{name, consented, consent_text, model, model_version, adapter}``
=============================  ===================================================================

Requests answer 400 for values the host refuses (:class:`~rlft.serving.host.InvalidRequestError`)
and for more than ``max_rows_per_request`` answers (prompts x n) in one request, 403 when ``user``
names someone other than the token's annotator, 404 for another ``model``, 413 for a body over
``max_body_bytes``, 422 for a body that does not parse or has a field of the wrong type (strict:
``"8"`` or ``true`` is not an integer). Every error body has OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``.

The requests of one HTTP call are one group of the host (:meth:`ModelHost.submit`): batches take
turns between calls, so a small request is not held behind a big one.
"""

# No `from __future__ import annotations`: FastAPI reads the route parameters' types at runtime,
# and the token dependency is a local name.
import asyncio
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from rlft.errors import RlftError
from rlft.feedback.live import (
    ConsentRequiredError,
    FeedbackRuleError,
    LiveFeedback,
    NotYourResponseError,
    UnknownResponseError,
    new_response_id,
)
from rlft.feedback.records import text_problem
from rlft.feedback.server import (
    AsciiJSONResponse,
    BodyLimit,
    annotator_dependency,
    bind_socket,
)
from rlft.feedback.store import Annotator, Store
from rlft.serving import openai_format as fmt
from rlft.serving.chat import NO_TEMPLATE_WARNING, chat_prompt, has_chat_template
from rlft.serving.host import Generation, GenerationRequest, InvalidRequestError, ModelHost
from rlft.serving.page import CHAT_PAGE

DEFAULT_CONSENT_TEXT = (
    "Your messages, the model's answers and your thumbs and choices will be stored with your name "
    "(e-mail addresses, phone numbers and similar personal data are removed first) and used to "
    "train the model you talk to, including a version personal to you."
)
MAX_BODY_BYTES = 256 * 1024
DEFAULT_MAX_TOKENS = 256  # when a request gives none (capped to what fits the context window)
MAX_PROMPTS = 16
MAX_ROWS_PER_REQUEST = 64  # answers (prompts x n) one request may ask for
# OpenAI parameters rlft does not implement: refused when set, rather than silently ignored.
UNSUPPORTED = ("stop", "tools", "tool_choice", "functions", "function_call", "logit_bias",
               "logprobs", "top_logprobs", "presence_penalty", "frequency_penalty",
               "response_format", "echo", "suffix", "best_of")  # fmt: skip


class _Sampling(BaseModel):
    """The sampling fields chat and text completions share (OpenAI's names and defaults). Strict:
    ``"8"``, ``8.0`` and ``true`` are not integers, ``"0.5"`` is not a number (422)."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field(max_length=256)
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    seed: int | None = None
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None
    user: str | None = Field(default=None, max_length=256)


class ChatIn(_Sampling):
    messages: list[dict[str, Any]] = Field(max_length=512)
    max_completion_tokens: int | None = None


class CompletionIn(_Sampling):
    prompt: str | list[str]


class FeedbackIn(BaseModel):
    """A rating of one answer, or the better of two answers to the same prompt."""

    model_config = ConfigDict(extra="forbid")

    response_id: str | None = Field(default=None, max_length=128)
    rating: Literal["up", "down"] | None = None
    response_ids: list[str] | None = Field(default=None, min_length=2, max_length=2)
    preferred: str | None = Field(default=None, max_length=128)

    @model_validator(mode="after")
    def _one_form(self) -> "FeedbackIn":
        rating = self.response_id is not None and self.rating is not None
        pair = self.response_ids is not None and self.preferred is not None
        given = [k for k in ("response_id", "rating", "response_ids", "preferred") if getattr(self, k) is not None]
        if rating == pair or len(given) != 2:
            raise ValueError(
                "send either {response_id, rating: up|down} or {response_ids: [a, b], preferred: a}"
            )
        return self


def create_serving_app(
    host: ModelHost,
    store: Store,
    *,
    model_name: str,
    consent_text: str = DEFAULT_CONSENT_TEXT,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_rows_per_request: int = MAX_ROWS_PER_REQUEST,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
) -> Any:
    """The ASGI app serving ``host`` as the model ``model_name``; answers and votes go to ``store``.
    A request may ask for at most ``max_rows_per_request`` answers (prompts x n); one without
    ``max_tokens`` gets ``default_max_tokens`` (or what the context window leaves, if less)."""
    if max_rows_per_request < 1 or default_max_tokens < 1:
        raise RlftError(
            f"max_rows_per_request and default_max_tokens must be at least 1 (got "
            f"{max_rows_per_request}, {default_max_tokens})."
        )
    app = FastAPI(
        title="rlft serve", docs_url=None, redoc_url=None, openapi_url=None,
        default_response_class=AsciiJSONResponse,
    )  # fmt: skip
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(InvalidRequestError, _invalid_request)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    who = annotator_dependency(store)
    live = LiveFeedback(store)
    started = fmt.now()
    answerer = _Answerer(host, live, model_name, max_rows_per_request, default_max_tokens)
    _add_open_routes(app, host)
    _add_account_routes(app, host, store, who, model_name, consent_text, started)
    _add_completion_routes(app, answerer, who)
    _add_feedback_route(app, live, who)
    return BodyLimit(app, max_body_bytes, error_body=fmt.error_body)


async def _invalid_request(request: Request, exc: Exception) -> Response:
    param = getattr(exc, "param", None)
    return AsciiJSONResponse(fmt.error_body(str(exc), 400, param), status_code=400)


async def _validation_error(request: Request, exc: Exception) -> Response:
    """422 in OpenAI's shape, naming each bad field; the rejected values are not echoed back
    (they may be personal data, or not encodable at all)."""
    assert isinstance(exc, RequestValidationError)
    problems, params = [], []
    for e in exc.errors():
        where = ".".join(str(part) for part in e["loc"] if part != "body")
        problems.append(f"{where}: {e['msg']}" if where else str(e["msg"]))
        params.append(where)
    message = "The request body is not valid: " + "; ".join(problems) + "."
    param = params[0] if params and params[0] else None
    return AsciiJSONResponse(fmt.error_body(message, 422, param), status_code=422)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    return AsciiJSONResponse(
        fmt.error_body(str(exc.detail), exc.status_code), status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )  # fmt: skip


def _add_open_routes(app: FastAPI, host: ModelHost) -> None:
    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return CHAT_PAGE

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"ok": True, "model_version": host.version}


def _add_account_routes(
    app: FastAPI, host: ModelHost, store: Store, Who: Any, model_name: str, consent_text: str,
    started: int,
) -> None:  # fmt: skip
    @app.get("/v1/me")
    def me(who: Who) -> dict[str, Any]:
        return {
            "name": who.name, "consented": who.consented, "consent_text": consent_text,
            "model": model_name, "model_version": host.version,
            "adapter": who.name if who.name in host.adapters() else None,
        }  # fmt: skip

    @app.post("/v1/consent", status_code=204)
    def consent(who: Who) -> Response:
        store.record_consent(who.id)
        return Response(status_code=204)

    @app.get("/v1/models")
    def models(who: Who) -> dict[str, Any]:
        return fmt.models_body(model_name, host.version, started)


class _Answerer:
    """Sampling, recording and formatting of one request's answers."""

    def __init__(
        self, host: ModelHost, live: LiveFeedback, model_name: str, max_rows: int, default_max_tokens: int
    ) -> None:
        self.host, self.live, self.model_name = host, live, model_name
        self.max_rows, self.default_max_tokens = max_rows, default_max_tokens
        # Chat answers of a model without a template carry a warning (the prompt is role lines).
        self.chat_warning = None if has_chat_template(host.tokenizer) else NO_TEMPLATE_WARNING

    def check(self, body: _Sampling, who: Annotator) -> None:
        if body.user is not None and body.user != who.name:
            raise HTTPException(
                403, f"user is {body.user!r}, but the token belongs to {who.name!r}; send your own "
                "name as user, or leave it out.",
            )  # fmt: skip
        if body.model != self.model_name:
            raise HTTPException(
                404, f"This server serves the model {self.model_name!r}, not {body.model!r} (GET /v1/models)."
            )
        for name in UNSUPPORTED:
            value = (body.model_extra or {}).get(name)
            if value in (None, False, 0, [], {}, {"type": "text"}) or (name == "best_of" and value == 1):
                continue
            raise InvalidRequestError(f"{name} is not supported by rlft serve; leave it out.", name)

    def request(self, body: _Sampling, prompt: str, max_tokens: int | None, who: Annotator) -> GenerationRequest:
        problem = text_problem(prompt)
        if problem is not None:
            raise InvalidRequestError(f"The prompt {problem}.")
        if max_tokens is None:
            max_tokens = max(1, min(self.default_max_tokens, self.host.max_tokens_for(prompt)))
        return GenerationRequest(
            prompt=prompt, max_tokens=max_tokens,
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            n=1 if body.n is None else body.n, seed=body.seed, adapter=who.name,
        )  # fmt: skip

    async def answer(
        self, kind: str, body: _Sampling, who: Annotator, requests: list[GenerationRequest]
    ) -> Response:
        """Sample every request (batched by the host), record the answers, send them."""
        rows = sum(r.n for r in requests if isinstance(r.n, int))
        if rows > self.max_rows:
            raise InvalidRequestError(
                f"This request asks for {rows} answers ({len(requests)} prompt(s) x n={requests[0].n}); "
                f"this server answers at most {self.max_rows} per request (rlft serve "
                "--max-rows-per-request). Send fewer prompts or a smaller n per request.", "n",
            )  # fmt: skip
        for r in requests:  # all are checked before any is queued
            self.host.check(r)
        group = object()  # this call's requests take their turns in the host's line together
        generations = list(await asyncio.gather(*(self.host.agenerate(r, group) for r in requests)))
        ids = [[new_response_id() for _ in g.texts] for g in generations]
        recorded = await run_in_threadpool(self._record, who, requests, generations, ids)
        warning = self.chat_warning if kind == "chat" else None
        answer = fmt.Answer(kind, self.model_name, generations, ids, recorded, fmt.now(), warning)
        if not body.stream:
            return AsciiJSONResponse(fmt.response_body(answer))
        usage = bool((body.stream_options or {}).get("include_usage"))
        return StreamingResponse(
            fmt.stream_events(answer, usage), media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )  # fmt: skip

    def _record(
        self, who: Annotator, requests: list[GenerationRequest], generations: list[Generation],
        ids: list[list[str]],
    ) -> bool:  # fmt: skip
        stored = True
        for request, generation, row_ids in zip(requests, generations, ids, strict=True):
            for text, rid in zip(generation.texts, row_ids, strict=True):
                stored = self.live.record_response(
                    rid, who, request.prompt, text, generation.model_version, generation.adapter
                ) and stored
        return stored


def _add_completion_routes(app: FastAPI, answerer: _Answerer, Who: Any) -> None:
    @app.post("/v1/chat/completions")
    async def chat(body: ChatIn, who: Who) -> Response:
        answerer.check(body, who)
        prompt = chat_prompt(answerer.host.tokenizer, body.messages)
        max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        return await answerer.answer("chat", body, who, [answerer.request(body, prompt, max_tokens, who)])

    @app.post("/v1/completions")
    async def completions(body: CompletionIn, who: Who) -> Response:
        answerer.check(body, who)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not 1 <= len(prompts) <= MAX_PROMPTS:
            raise InvalidRequestError(f"prompt must be a string or a list of 1 to {MAX_PROMPTS} strings.", "prompt")
        requests = [answerer.request(body, p, body.max_tokens, who) for p in prompts]
        return await answerer.answer("text", body, who, requests)


def _add_feedback_route(app: FastAPI, live: LiveFeedback, Who: Any) -> None:
    @app.post("/v1/feedback", status_code=201)
    def feedback(body: FeedbackIn, who: Who) -> Response:
        try:
            if body.rating is not None:
                assert body.response_id is not None
                result = live.rate(who, body.response_id, body.rating)
            else:
                assert body.response_ids is not None and body.preferred is not None
                result = live.prefer(who, (body.response_ids[0], body.response_ids[1]), body.preferred)
        except UnknownResponseError as exc:
            raise HTTPException(404, str(exc)) from None
        except (NotYourResponseError, ConsentRequiredError) as exc:
            raise HTTPException(403, str(exc)) from None
        except FeedbackRuleError as exc:
            raise HTTPException(422, str(exc)) from None
        content = {"id": result.id, "created": result.created, "replaced": result.replaced,
                   "duplicate": result.duplicate}  # fmt: skip
        return AsciiJSONResponse(content, status_code=201 if result.created else 200)


def serve(app: Any, host: str, port: int) -> None:
    """Serve ``app`` until interrupted (the ``rlft serve`` command)."""
    import uvicorn

    try:
        sock = bind_socket(host, port)
    except OSError as exc:
        raise RlftError(
            f"Cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port, or stop "
            "what is using it."
        ) from None
    uvicorn.Server(uvicorn.Config(app, log_level="info", access_log=False)).run(sockets=[sock])
