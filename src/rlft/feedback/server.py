"""The feedback web app: FastAPI on uvicorn, in front of a :class:`~rlft.feedback.store.Store`.

This module imports FastAPI and uvicorn at the top; nothing else in rlft imports it, so they load
only when a server is started.

HTTP API (every ``/api`` route except ``/api/health``, and ``/openapi.json``, need
``Authorization: Bearer TOKEN``; an unknown or missing token gets 401):

=========================  ========================================================================
``GET /``                  the annotation page
``GET /api/health``        ``{"ok": true}``
``GET /api/me``            ``{name, consented, consent_text, mode}``
``POST /api/consent``      record the annotator's consent (204)
``GET /api/next?kind=``    the next item for this annotator (200), or 204 when none is left
``POST /api/judgements``   store a judgement: 201 stored (``replaced``: it replaced this
                           annotator's earlier vote on the item), 200 a repeat of an idempotency
                           key (stored once), 409 the key was used for a different judgement,
                           403 no consent yet, 404 unknown item, 413 body too large, 422 invalid
``GET /openapi.json``      the API's schema (token needed: it maps the API for whoever asks)
=========================  ========================================================================
"""

import asyncio
import hashlib
import json
import socket
import threading
from collections.abc import Callable
from typing import Annotated, Any, Literal

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rlft.feedback.page import PAGE
from rlft.feedback.store import (
    Annotator,
    Judgement,
    Store,
    UnknownItemError,
    label_problem,
    text_problem,
)

DEFAULT_CONSENT_TEXT = (
    "Your judgements and comments will be stored with your annotator name and used to train "
    "language models. Do not enter personal information in comments."
)
MAX_BODY_BYTES = 16 * 1024


class JudgementIn(BaseModel):
    """A submission from the page (or any client)."""

    model_config = ConfigDict(extra="forbid")

    item_id: str  # the items file's rule: label_problem
    kind: Literal["pair", "rating"] = "pair"
    choice: Literal["A", "B", "tie", "up", "down"]
    side: Literal["A", "B"] | None = None
    comment: str | None = Field(default=None, max_length=2000)
    idempotency_key: str = Field(min_length=8, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")

    @field_validator("item_id")
    @classmethod
    def _valid_item_id(cls, value: str) -> str:
        problem = label_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("comment")
    @classmethod
    def _valid_text(cls, value: str | None) -> str | None:
        problem = text_problem(value) if value is not None else None
        if problem is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _choice_fits_kind(self) -> "JudgementIn":
        if self.kind == "pair" and (self.choice not in ("A", "B", "tie") or self.side is not None):
            raise ValueError("a pair judgement has choice A, B or tie and no side")
        if self.kind == "rating" and (self.choice not in ("up", "down") or self.side is None):
            raise ValueError("a rating has choice up or down and a side (A or B)")
        return self


class AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: a lone surrogate echoed from a request cannot be encoded as
    UTF-8, and would turn a 422 into a 500."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


async def validation_error(request: Request, exc: Exception) -> Response:
    """The 422 answer to a body that does not validate (an exception handler; the serving app's too)."""
    assert isinstance(exc, RequestValidationError)
    # The rejected input is not echoed back: it may be personal data, or not encodable at all.
    errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return AsciiJSONResponse({"detail": errors}, status_code=422)


class BodyLimit:
    """Reject request bodies over ``max_bytes`` with 413, declared or streamed (ASGI middleware).
    ``error_body(message, status)`` shapes the answer (default: ``{"detail": message}``)."""

    def __init__(
        self, app: Any, max_bytes: int, error_body: Callable[[str, int], dict[str, Any]] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.error_body = error_body or (lambda message, status: {"detail": message})

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._reject(scope, receive, send)
            return
        body, more = b"", True
        while more:  # bodies are small: read it all, then replay it to the app
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await self._reject(scope, receive, send)
                return
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # type: ignore[no-any-return]

        await self.app(scope, replay, send)

    async def _reject(self, scope: Any, receive: Any, send: Any) -> None:
        message = f"Request body over {self.max_bytes} bytes."
        response = JSONResponse(self.error_body(message, 413), status_code=413)
        await response(scope, receive, send)


def create_app(
    store: Store,
    mode: Literal["pair", "rating"] = "pair",
    consent_text: str = DEFAULT_CONSENT_TEXT,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> Any:
    """The ASGI app. ``mode`` is what the page asks annotators for: compare two or rate one."""
    # The schema is served below, behind the token, like every route that is not the page.
    app = FastAPI(title="rlft feedback", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_exception_handler(RequestValidationError, validation_error)
    Who = annotator_dependency(store)
    _add_open_routes(app, Who)
    _add_annotator_routes(app, store, Who, mode, consent_text)
    _add_judgement_route(app, store, Who)
    return BodyLimit(app, max_body_bytes)


def annotator_dependency(store: Store) -> Any:
    """``Annotated[Annotator, Depends(...)]``: the annotator whose bearer token the request carries,
    or 401. A route takes it as a parameter typed with this."""

    def annotator(request: Request) -> Annotator:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        found = None
        if scheme.lower() == "bearer" and 0 < len(token) <= 256:
            found = store.annotator_for_token(token.strip())
        if found is None:
            raise HTTPException(
                401, "Unknown or missing token.", headers={"WWW-Authenticate": "Bearer"}
            )
        return found

    return Annotated[Annotator, Depends(annotator)]


def _add_open_routes(app: FastAPI, Who: Any) -> None:
    """The page and the health check (no token), and the API's schema (token needed)."""

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE

    @app.get("/api/health")
    def health() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(who: Who) -> dict[str, Any]:
        return app.openapi()  # type: ignore[no-any-return]


def _add_annotator_routes(
    app: FastAPI, store: Store, Who: Any, mode: Literal["pair", "rating"], consent_text: str
) -> None:
    """Who am I, consent, and the next item to judge."""

    @app.get("/api/me")
    def me(who: Who) -> dict[str, Any]:
        return {
            "name": who.name,
            "consented": who.consented,
            "consent_text": consent_text,
            "mode": mode,
        }

    @app.post("/api/consent", status_code=204)
    def consent(who: Who) -> Response:
        store.record_consent(who.id)
        return Response(status_code=204)

    @app.get("/api/next")
    def next_item(who: Who, kind: Literal["pair", "rating"] = mode) -> Any:
        found = store.next_item(who.id, kind)
        if found is None:
            return Response(status_code=204)
        item, side = found
        if kind == "rating":
            text = item.completion_a if side == "A" else item.completion_b
            options = [{"side": side, "text": text}]
        else:
            options = [
                {"side": "A", "text": item.completion_a},
                {"side": "B", "text": item.completion_b},
            ]
            if _shown_swapped(
                item.id, who.id
            ):  # against position bias: half the items show B first
                options.reverse()
        return {"item_id": item.id, "kind": kind, "prompt": item.prompt, "options": options}


def _add_judgement_route(app: FastAPI, store: Store, Who: Any) -> None:
    """``POST /api/judgements``: 201 stored, 200 a repeated key, 409 a reused key, 403, 404."""

    @app.post("/api/judgements", status_code=201)
    def submit(body: JudgementIn, who: Who) -> Any:
        if not who.consented:
            raise HTTPException(403, "Give consent first (POST /api/consent).")
        judgement = Judgement(
            body.idempotency_key,
            body.item_id,
            who.id,
            body.kind,
            body.choice,
            body.side,
            body.comment,
        )
        try:
            result = store.submit(judgement)
        except UnknownItemError as exc:
            raise HTTPException(404, str(exc)) from None
        if result.conflict:
            raise HTTPException(
                409, "This idempotency key was already used for a different judgement."
            )
        if not result.created:
            return JSONResponse(
                {"id": result.id, "stored": False, "duplicate": True}, status_code=200
            )
        return {"id": result.id, "stored": True, "duplicate": False, "replaced": result.replaced}


def _shown_swapped(item_id: str, annotator_id: int) -> bool:
    return hashlib.sha256(f"{item_id}:{annotator_id}".encode()).digest()[0] & 1 == 1


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening socket; port 0 picks a free one (read it back with ``getsockname()``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class BackgroundServer:
    """Run the app on uvicorn in a thread: for tests, benchmarks and scripted annotators.

    >>> with BackgroundServer(create_app(store)) as server:
    ...     httpx.get(server.url + "/api/health")
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = bind_socket(host, port)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._serve, name="rlft-feedback-server", daemon=True)

    def _serve(self) -> None:
        asyncio.run(self.server.serve(sockets=[self.sock]))

    def __enter__(self) -> "BackgroundServer":
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("The feedback server failed to start.")
            threading.Event().wait(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def serve(
    store: Store, host: str, port: int, mode: Literal["pair", "rating"], consent_text: str
) -> None:
    """Serve until interrupted (the ``rlft feedback serve`` command)."""
    app = create_app(store, mode=mode, consent_text=consent_text)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
