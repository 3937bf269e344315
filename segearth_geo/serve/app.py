"""The HTTP endpoints of ``segearth-geo serve`` (a Starlette app; the protocol is in ``docs/serve.md``).

* ``GET /v1/health`` – no token: ``{"ok": true}`` (503 while draining), for load balancers;
* ``GET /v1/info`` – the model, its chip size, capabilities, devices, version, limits, queue;
* ``POST /v1/segment`` – a batch of chips and one or more prompts (:mod:`~segearth_geo.serve.wire`);
* ``POST /v1/cancel`` – drop the chips this client (``X-SegEarth-Client``) has queued.

Every request but health needs ``Authorization: Bearer <token>`` when the server has a token (compared in
constant time; 401 and nothing runs otherwise). The server receives pixels only: it never opens a path or URL
a client sends. Every refusal is a 4xx/5xx with a one-line JSON body ``{"error": ..., "message": ...}``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import threading
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from segearth_geo.serve.scheduler import Busy, Job, Scheduler, new_request_id
from segearth_geo.serve.wire import CHIPS_TYPE, MASKS_TYPE, Limits, WireError, decode_request, encode_response, error_body

log = logging.getLogger(__name__)

CLIENT_HEADER = "x-segearth-client"
CLIENT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
BODY_SECONDS = 30.0  # a request body must arrive within this, plus one second per MiB
JSON_TYPE = "application/json"


@dataclass
class ServerState:
    """What the endpoints share: the queue, the limits, the static info and the access token."""

    scheduler: Scheduler
    limits: Limits
    info: dict[str, Any]
    token: str | None = field(default=None, repr=False)
    takes_score_threshold: bool = False
    budget_bytes: int = 0
    replicas: int = 1
    draining: threading.Event = field(default_factory=threading.Event)
    refused: int = 0  # requests answered 503 (busy or draining)
    _reserved: int = 0

    def reserve(self, size: int) -> bool:
        """Take ``size`` bytes of the request-body budget (called on the event loop only)."""
        if self._reserved and self._reserved + size > self.budget_bytes:
            return False
        self._reserved += size
        return True

    def release(self, size: int) -> None:
        self._reserved -= size

    def retry_after(self) -> int:
        """Seconds a refused client should wait: the queue's share of the model's time, 1 to 30."""
        seconds = self.scheduler.queued * self.scheduler.seconds_per_chip() / max(1, self.replicas)
        return int(min(30, max(1, round(seconds))))


def error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(error_body(kind, message), status, headers=headers, media_type=JSON_TYPE)


def json_response(payload: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    import json

    return Response(json.dumps(payload, allow_nan=False), status, headers=headers, media_type=JSON_TYPE)


def build_app(state: ServerState) -> Starlette:
    """The ASGI app over ``state``."""

    def denied(request: Request) -> Response | None:
        if state.token is None:
            return None
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), state.token.encode()):
            return None
        return error(401, "Unauthorized", "missing or wrong token: send the header 'Authorization: Bearer <token>' "
                     "with the server's token", {"WWW-Authenticate": "Bearer"})

    def busy(message: str, seconds: int | None = None) -> Response:
        seconds = state.retry_after() if seconds is None else seconds
        state.refused += 1
        return error(503, "Busy", message, {"Retry-After": str(seconds)})

    async def health(request: Request) -> Response:
        if state.draining.is_set():
            return json_response({"ok": False, "draining": True}, 503, {"Retry-After": "5"})
        return json_response({"ok": True, "draining": False})

    async def info(request: Request) -> Response:
        refused = denied(request)
        if refused is not None:
            return refused
        scheduler = state.scheduler
        live = {"queued": scheduler.queued, "chips_done": scheduler.chips_done, "draining": state.draining.is_set(),
                "refused": state.refused,
                "batch_sizes": {str(k): v for k, v in sorted(scheduler.batch_sizes.items())}}
        return json_response({**state.info, **live})

    async def cancel(request: Request) -> Response:
        refused = denied(request)
        if refused is not None:
            return refused
        client = request.headers.get(CLIENT_HEADER, "")
        if not CLIENT_ID.fullmatch(client):
            return error(400, "BadRequest", f"cancel needs the header X-SegEarth-Client ({CLIENT_ID.pattern})")
        return json_response({"dropped": state.scheduler.cancel(client)})

    async def segment(request: Request) -> Response:
        refused = denied(request) or _check_headers(request, state.limits)
        if refused is not None:
            return refused
        if state.draining.is_set():
            return busy("the server is shutting down; retry on another server or later", 5)
        size = int(request.headers["content-length"])
        if not state.reserve(size):
            return busy("the server holds too many request bodies; retry later")
        try:
            return await _segment(request, state, size, busy)
        finally:
            state.release(size)

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        if status == 404:
            return error(404, "NotFound", f"no endpoint {request.url.path[:100]}; see /v1/info and docs/serve.md")
        if status == 405:
            return error(405, "MethodNotAllowed", f"{request.method} is not allowed on {request.url.path[:100]}")
        return error(status, "HTTPError", str(getattr(exc, "detail", "")) or "error")

    async def internal(request: Request, exc: Exception) -> Response:
        log.error("internal error on %s: %s: %s", request.url.path[:100], type(exc).__name__, exc)
        return error(500, "InternalError", f"internal server error ({type(exc).__name__})")

    routes = [Route("/v1/health", health, methods=["GET"]), Route("/v1/info", info, methods=["GET"]),
              Route("/v1/segment", segment, methods=["POST"]), Route("/v1/cancel", cancel, methods=["POST"])]
    return Starlette(routes=routes, exception_handlers={HTTPException: not_found, Exception: internal})


def _check_headers(request: Request, limits: Limits) -> Response | None:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != CHIPS_TYPE:
        return error(415, "UnsupportedMediaType", f"the body must be {CHIPS_TYPE} (wire format, docs/serve.md)")
    length = request.headers.get("content-length")
    if length is None or not length.isdigit():
        return error(411, "LengthRequired", "send the body with a Content-Length (no chunked encoding)")
    if int(length) > limits.max_body:
        return error(413, "TooLarge", f"the body of {length} bytes exceeds the limit of {limits.max_body} bytes "
                     f"({limits.max_chips} chips of {limits.chip_size} px)")
    client = request.headers.get(CLIENT_HEADER)
    if client is not None and not CLIENT_ID.fullmatch(client):
        return error(400, "BadRequest", f"the header X-SegEarth-Client must match {CLIENT_ID.pattern}")
    return None


async def _read_body(request: Request, size: int) -> bytearray:
    """The body, or :class:`WireError` 408 when it is slower than :data:`BODY_SECONDS` + 1 s/MiB."""
    body = bytearray()
    try:
        async with asyncio.timeout(BODY_SECONDS + size / 2**20):
            async for chunk in request.stream():
                body += chunk
                if len(body) > size:
                    raise WireError("the body is longer than its Content-Length")
    except TimeoutError:
        raise WireError("the request body arrived too slowly", 408) from None
    if len(body) != size:
        raise WireError(f"the body holds {len(body)} bytes, not its Content-Length of {size}")
    return body


async def _segment(request: Request, state: ServerState, size: int, busy) -> Response:
    try:
        body = await _read_body(request, size)
        parsed = decode_request(body, state.limits)
    except ClientDisconnect:
        return Response(status_code=400)  # nobody reads it
    except WireError as exc:
        return error(exc.status, "BadRequest" if exc.status == 400 else "Refused", str(exc))
    del body
    if parsed.score_threshold is not None and not state.takes_score_threshold:
        return error(400, "BadRequest", "this server's model has no detection scores: it takes no score_threshold")
    client = request.headers.get(CLIENT_HEADER) or f"conn-{request.client.host}:{request.client.port}"
    loop = asyncio.get_running_loop()
    finished = loop.create_future()
    left = [len(parsed.prompts)]

    def on_done(job: Job) -> None:  # a replica thread (or cancel)
        def count() -> None:
            left[0] -= 1
            if left[0] == 0 and not finished.done():
                finished.set_result(True)
        loop.call_soon_threadsafe(count)

    request_id = new_request_id()
    jobs = [Job(client, request_id, prompt, parsed.score_threshold, parsed.chips, on_done) for prompt in parsed.prompts]
    try:
        state.scheduler.submit(jobs, retry_after=state.retry_after())
    except Busy as exc:
        return busy(str(exc), int(exc.retry_after))
    if not await _until_done_or_gone(request, finished):
        dropped = state.scheduler.cancel(client, request_id)
        log.info("client %s left; %d queued chips dropped", client, dropped)
        return Response(status_code=499)
    failed = next((job.error for job in jobs if job.error is not None), None)
    if failed is not None:
        first = (str(failed).splitlines() or [""])[0][:300]
        return error(500, "ModelError", f"the model failed: {type(failed).__name__}: {first}")
    if any(job.cancelled for job in jobs):
        return error(409, "Cancelled", "the request was cancelled (POST /v1/cancel)")
    cache = _merged_cache([job.cache for job in jobs])
    parts = await anyio.to_thread.run_sync(encode_response, [job.results for job in jobs], parsed.threshold,
                                           parsed.compress, cache)
    return Response(b"".join(parts), media_type=MASKS_TYPE)


async def _until_done_or_gone(request: Request, finished: asyncio.Future) -> bool:
    """Wait for ``finished``; ``False`` when the client disconnects first."""

    async def gone() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(gone())
    try:
        done, _ = await asyncio.wait({finished, watcher}, return_when=asyncio.FIRST_COMPLETED)
        return finished in done
    finally:
        watcher.cancel()


def _merged_cache(parts: list[dict[str, Any]]) -> dict[str, Any] | None:
    parts = [p for p in parts if p]
    if not parts:
        return None
    merged: dict[str, Any] = {"hits": {}, "misses": {}, "evictions": 0}
    for part in parts:
        for name in ("hits", "misses"):
            for tier, count in part.get(name, {}).items():
                merged[name][tier] = merged[name].get(tier, 0) + count
        merged["evictions"] += part.get("evictions", 0)
        merged.update({k: part[k] for k in ("bytes", "items", "max_bytes") if k in part})
    return merged


__all__ = ["CLIENT_HEADER", "ServerState", "build_app"]
