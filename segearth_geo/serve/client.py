"""The client of a model server: :class:`RemoteSegmenter`, a :class:`~segearth_geo.prediction.Segmenter` over HTTP.

Standard library HTTP and numpy only (no torch), so a base install runs ``segment``, ``batch``, the worker and the
QGIS plugin against a server. What it does:

* **pipelining**: one ``segment`` call is split into up to :data:`IN_FLIGHT` requests sent at once on
  persistent connections (one per sender thread), so uploads, the server's model and downloads overlap;
* **retries**: a 503 (busy, draining) waits ``Retry-After`` and tries again for up to :data:`BUSY_SECONDS`; a
  dropped or refused connection retries with backoff for up to ``SEGEARTH_RETRY_S`` seconds (default
  :data:`DOWN_SECONDS`) — every request is idempotent, so a job rides out a busy or restarting server;
* **cancel**: :meth:`RemoteSegmenter.cancel` ends the calls in progress with
  :class:`~segearth_geo.errors.Cancelled` and asks the server to drop this client's queued chips;
* **exact thresholds**: it declares ``"threshold"``, so the engine passes its threshold and the polygons equal an
  in-process run's (see :mod:`~segearth_geo.serve.wire`);
* **security**: the token (``token=`` / ``LoadOptions.token``, else ``SEGEARTH_TOKEN``) is sent as a bearer header,
  never over plain HTTP to a host that is not this machine unless ``SEGEARTH_ALLOW_INSECURE_TOKEN=1``; HTTPS
  verifies the server against the system's CAs or ``SEGEARTH_CA_BUNDLE``.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import queue
import random
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from segearth_geo.errors import Cancelled, ModelError, SegEarthGeoError, UsageError
from segearth_geo.params import LoadOptions, field_name
from segearth_geo.prediction import ChipPrediction
from segearth_geo.serve.config import TOKEN_ENV, is_loopback
from segearth_geo.serve.wire import CHIPS_TYPE, WireError, decode_response, encode_request

log = logging.getLogger(__name__)

IN_FLIGHT = 4  # requests one client keeps in flight
BUSY_SECONDS = 3600.0  # how long a busy server (503) is waited for
DOWN_SECONDS = 600.0  # how long an unreachable server is waited for (SEGEARTH_RETRY_S)
CONNECT_SECONDS = 10.0
READ_SECONDS = 1800.0  # a queued request may wait long on a busy server
INSECURE_ENV = "SEGEARTH_ALLOW_INSECURE_TOKEN"
CA_ENV = "SEGEARTH_CA_BUNDLE"
RETRY_ENV = "SEGEARTH_RETRY_S"
# Load options that belong to the server's model: set them on `segearth-geo serve`.
SERVER_SIDE = ("dtype", "cache_mb", "template", "sam3_output", "presence_threshold")


@dataclass(frozen=True)
class ServerAddress:
    """``scheme://host:port/prefix`` of a server (a reverse proxy may add a path prefix)."""

    scheme: str
    host: str
    port: int
    prefix: str = ""

    @classmethod
    def parse(cls, spec: str) -> ServerAddress:
        try:
            parts = urlsplit(spec.strip())
            port = parts.port
        except ValueError as exc:
            raise UsageError(f"model server address {spec!r} is not a URL such as http://gpu-box:8765 ({exc})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"model server address {spec!r} needs http:// or https:// and a host")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise UsageError("a model server address takes no user, password, query or fragment; pass the token "
                             f"in {TOKEN_ENV}")
        default = 443 if parts.scheme == "https" else 80
        return cls(parts.scheme, parts.hostname, port or default, parts.path.rstrip("/"))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.prefix}"


class _Senders:
    """Daemon threads, each with its own persistent connection, running submitted calls."""

    def __init__(self, count: int, connect: Callable[[], http.client.HTTPConnection]) -> None:
        self._tasks: queue.Queue = queue.Queue()
        self._connect = connect
        self._local = threading.local()
        for n in range(count):
            threading.Thread(target=self._loop, name=f"segearth-remote-{n}", daemon=True).start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        self._tasks.put((future, fn, args))
        return future

    def connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
            self._local.used = False
        return conn

    def reused(self) -> bool:
        return bool(getattr(self._local, "used", False))

    def mark_used(self) -> None:
        self._local.used = True

    def drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()

    def _loop(self) -> None:
        while True:
            future, fn, args = self._tasks.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                future.set_exception(exc)


class RemoteSegmenter:
    """A segmenter whose model runs on a ``segearth-geo serve`` server (see the module docstring).

    Args:
        url: ``http://HOST:PORT`` or ``https://HOST:PORT`` (a path prefix is kept, for reverse proxies).
        token: the server's token (default: ``SEGEARTH_TOKEN``).
        request_chips: most chips per request (default: the server's batch size).
        score_threshold: keep only instances scoring above this (a server whose model has detection scores).
        in_flight: requests kept in flight.
    """

    def __init__(self, url: str, *, token: str | None = None, request_chips: int | None = None,
                 score_threshold: float | None = None, in_flight: int = IN_FLIGHT) -> None:
        self.address = ServerAddress.parse(url)
        self._token = token if token is not None else (os.environ.get(TOKEN_ENV) or "").strip() or None
        if (self._token and self.address.scheme == "http" and not is_loopback(self.address.host)
                and os.environ.get(INSECURE_ENV) != "1"):
            raise UsageError(f"refusing to send the token over plain http to {self.address.host}: use https:// (a "
                             f"TLS server or a reverse proxy), or set {INSECURE_ENV}=1 on a trusted network")
        self.client_id = uuid.uuid4().hex
        self.score_threshold = score_threshold
        self._cancel = threading.Event()
        self._cache: dict[str, Any] = {}
        self._cache_lock = threading.Lock()
        self._ssl = self._ssl_context() if self.address.scheme == "https" else None
        self.server = self._info()
        self.chip_size = int(self.server["chip_size"])
        caps = set(self.server.get("capabilities") or ()) & {"image_cache", "scores"}
        self.capabilities = frozenset({"threshold", "cancel", *caps})
        self.request_chips = int(request_chips or self.server.get("batch_size") or 8)
        self.retry_s = float(os.environ.get(RETRY_ENV) or DOWN_SECONDS)
        self._senders = _Senders(max(1, in_flight), self._connect)
        self.in_flight = max(1, in_flight)

    def __repr__(self) -> str:
        return f"RemoteSegmenter({str(self.address)!r})"

    @property
    def device_description(self) -> str:
        devices = ", ".join(self.server.get("devices") or []) or "?"
        return f"{self.address} ({devices})"

    # -- the Segmenter protocol -------------------------------------------------------------------
    def segment(self, chips: Sequence[np.ndarray], prompt: str, threshold: float = 0.5) -> list[ChipPrediction]:
        """Predictions for ``chips`` by ``prompt`` from the server; ``threshold`` as the engine applies it."""
        self._cancel.clear()
        chips = list(chips)
        if not chips:
            return []
        per = max(1, min(self.request_chips, -(-len(chips) // self.in_flight)))
        futures = [self._senders.submit(self._request, chips[a:a + per], [prompt], threshold)
                   for a in range(0, len(chips), per)]
        try:
            out: list[ChipPrediction] = []
            for future in futures:
                while True:
                    if self._cancel.is_set():
                        raise Cancelled("cancelled; the server drops this client's queued chips")
                    try:
                        out.extend(future.result(timeout=0.1)[0])
                        break
                    except TimeoutError:
                        continue
            return out
        except BaseException:  # Cancelled, Ctrl-C, or a failed request: stop the others too
            self._cancel.set()
            raise

    def cache_stats(self) -> dict[str, Any]:
        """The server's image-cache counters for this client's requests (hits, misses per tier; bytes, items now)."""
        with self._cache_lock:
            return json.loads(json.dumps(self._cache)) if self._cache else {"hits": {}, "misses": {}, "evictions": 0}

    def cancel(self) -> None:
        """End the calls in progress (:class:`Cancelled`) and ask the server to drop this client's queued chips."""
        self._cancel.set()
        threading.Thread(target=self._send_cancel, name="segearth-remote-cancel", daemon=True).start()

    # -- requests -------------------------------------------------------------------------------
    def _request(self, chips: list[np.ndarray], prompts: list[str], threshold: float) -> list[list[ChipPrediction]]:
        body = encode_request(chips, prompts, threshold, self.score_threshold, compress=True)
        status, headers, data = self._exchange("POST", "/v1/segment", body, CHIPS_TYPE)
        try:
            results, cache = decode_response(data, [c.shape[:2] for c in chips], len(prompts), threshold)
        except WireError as exc:
            raise ModelError(f"the model server {self.address} sent a malformed answer: {exc}") from None
        if cache:
            self._add_cache(cache)
        return results

    def _exchange(self, method: str, path: str, body: list | None = None,
                  content_type: str | None = None) -> tuple[int, dict[str, str], bytes]:
        """One request with the retry policy of the module docstring; returns a 200's status, headers, body."""
        down_since: float | None = None
        busy_since: float | None = None
        attempt = 0
        while True:
            if self._cancel.is_set() and path == "/v1/segment":
                raise Cancelled("cancelled")
            try:
                status, headers, data = self._send(method, path, body, content_type)
            except (OSError, http.client.HTTPException) as exc:
                reused = self._senders.reused()
                self._senders.drop()
                if reused and attempt == 0:  # a keep-alive connection the server had closed: retry at once
                    attempt += 1
                    continue
                down_since = down_since or time.monotonic()
                if time.monotonic() - down_since > self.retry_s:
                    raise ModelError(f"the model server {self.address} is unreachable ({type(exc).__name__}: "
                                     f"{exc}); start it or check the address") from None
                log.warning("model server %s unreachable (%s); retrying", self.address, type(exc).__name__)
                self._sleep(min(10.0, 0.25 * 2 ** min(attempt, 6)))
                attempt += 1
                continue
            down_since, attempt = None, 0
            if status == 200:
                return status, headers, data
            if status == 503:
                busy_since = busy_since or time.monotonic()
                if time.monotonic() - busy_since > BUSY_SECONDS:
                    raise ModelError(f"the model server {self.address} has been busy for {BUSY_SECONDS:.0f} s")
                wait = _retry_after(headers.get("retry-after"))
                log.info("model server busy; retrying in %.1f s", wait)
                self._sleep(wait * random.uniform(0.8, 1.2))
                continue
            raise self._refusal(status, data)

    def _send(self, method: str, path: str, body: list | None, content_type: str | None):
        conn = self._senders.connection()
        headers = {"X-SegEarth-Client": self.client_id, "Accept-Encoding": "identity"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if body is not None:
            headers["Content-Type"] = content_type or "application/octet-stream"
            headers["Content-Length"] = str(sum(len(part) for part in body))
        conn.putrequest(method, self.address.prefix + path, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        for part in body or ():
            conn.send(part)
        response = conn.getresponse()
        data = response.read()
        self._senders.mark_used()
        if response.will_close:
            self._senders.drop()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data

    def _refusal(self, status: int, data: bytes) -> SegEarthGeoError:
        try:
            message = json.loads(data.decode("utf-8")).get("message") or ""
        except (ValueError, UnicodeDecodeError, AttributeError):
            message = data[:200].decode("utf-8", "replace")
        if status == 401:
            return ModelError(f"the model server {self.address} refused the token (401): set {TOKEN_ENV} to the "
                              "server's token")
        if status == 409:
            return Cancelled(f"the model server cancelled the request: {message}")
        return ModelError(f"the model server {self.address} answered {status}: {message}")

    def _connect(self) -> http.client.HTTPConnection:
        if self._ssl is not None:
            return _TLSConnection(self.address.host, self.address.port, timeout=CONNECT_SECONDS, context=self._ssl)
        return _Connection(self.address.host, self.address.port, timeout=CONNECT_SECONDS)

    @staticmethod
    def _ssl_context() -> ssl.SSLContext:
        cafile = os.environ.get(CA_ENV)
        if cafile and not os.path.isfile(cafile):
            raise UsageError(f"{CA_ENV}={cafile} is not a file (a PEM bundle of the CAs to trust)")
        return ssl.create_default_context(cafile=cafile or None)

    def _info(self) -> dict[str, Any]:
        """``GET /v1/info`` at load time: a few quick tries, then one clear line."""
        deadline = time.monotonic() + 10.0
        while True:
            conn = self._connect()
            try:
                headers = {"X-SegEarth-Client": self.client_id}
                if self._token:
                    headers["Authorization"] = f"Bearer {self._token}"
                conn.request("GET", self.address.prefix + "/v1/info", headers=headers)
                response = conn.getresponse()
                data = response.read()
            except ssl.SSLError as exc:
                raise ModelError(f"TLS with the model server {self.address} failed ({exc.reason or exc}); for a "
                                 f"self-signed certificate set {CA_ENV} to it") from None
            except (OSError, http.client.HTTPException) as exc:
                if time.monotonic() > deadline:
                    raise ModelError(f"cannot reach the model server {self.address} ({type(exc).__name__}: {exc}); "
                                     "start it with 'segearth-geo serve' or check the address") from None
                time.sleep(0.5)
                continue
            finally:
                conn.close()
            if response.status == 503:
                if time.monotonic() > deadline:
                    raise ModelError(f"the model server {self.address} is busy or shutting down; try again later")
                time.sleep(0.5)
                continue
            if response.status != 200:
                raise self._refusal(response.status, data)
            try:
                info = json.loads(data.decode("utf-8"))
                int(info["chip_size"])
            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                raise ModelError(f"{self.address} does not answer like a segearth-geo model server") from None
            return info

    def _send_cancel(self) -> None:
        conn = self._connect()
        try:
            headers = {"X-SegEarth-Client": self.client_id, "Content-Length": "0"}
            if self._token:
                headers["Authorization"] = f"Bearer {self._token}"
            conn.request("POST", self.address.prefix + "/v1/cancel", headers=headers)
            conn.getresponse().read()
        except (OSError, http.client.HTTPException) as exc:
            log.info("could not ask the server to drop queued chips: %s", exc)
        finally:
            conn.close()

    def _sleep(self, seconds: float) -> None:
        if self._cancel.wait(seconds):
            raise Cancelled("cancelled")

    def _add_cache(self, delta: dict[str, Any]) -> None:
        with self._cache_lock:
            cache = self._cache
            for name in ("hits", "misses"):
                tiers = cache.setdefault(name, {})
                for tier, count in (delta.get(name) or {}).items():
                    if isinstance(count, int):
                        tiers[tier] = tiers.get(tier, 0) + count
            cache["evictions"] = cache.get("evictions", 0) + int(delta.get("evictions") or 0)
            cache.update({k: delta[k] for k in ("bytes", "items", "max_bytes") if isinstance(delta.get(k), int)})


class _Connection(http.client.HTTPConnection):
    """Plain HTTP whose socket waits :data:`READ_SECONDS` for an answer once connected."""

    def connect(self) -> None:
        super().connect()
        self.sock.settimeout(READ_SECONDS)


class _TLSConnection(http.client.HTTPSConnection):
    """HTTPS whose socket waits :data:`READ_SECONDS` for an answer once connected."""

    def connect(self) -> None:
        super().connect()
        self.sock.settimeout(READ_SECONDS)


def _retry_after(value: str | None) -> float:
    try:
        return min(60.0, max(0.2, float(value)))
    except (TypeError, ValueError):
        return 1.0


def load_remote(options: LoadOptions, style: str = "python") -> RemoteSegmenter:
    """The remote segmenter of ``options.model``; the load options the server's model does not take are refused
    in one line (``score_threshold`` without detection scores on the server; the model's own options: ``dtype``,
    ``cache_mb``, ``template``, a GPU ``device``). ``batch_size`` is the most chips per request."""
    given = [name for name in SERVER_SIDE if getattr(options, name) is not None]
    if options.device not in ("auto", "cpu"):  # this side (decoding, geo work) runs on the CPU
        given.insert(0, "device")
    if given:
        names = ", ".join(field_name(n, style) for n in given)
        raise UsageError(f"a model server's model is set up on the server: remove {names} here and give it to "
                         "'segearth-geo serve' instead")
    segmenter = RemoteSegmenter(options.model, token=options.token, request_chips=options.batch_size,
                                score_threshold=options.score_threshold)
    if options.score_threshold is not None and segmenter.server.get("score_threshold") is None:
        raise UsageError(f"the model on {segmenter.address} ({segmenter.server.get('model')}) does not take "
                         f"{field_name('score_threshold', style)}: it gives no detection scores")
    log.info("model server %s: %s, %d-px chips, on %s", segmenter.address, segmenter.server.get("model"),
             segmenter.chip_size, segmenter.device_description)
    return segmenter


__all__ = ["RemoteSegmenter", "ServerAddress", "load_remote"]
