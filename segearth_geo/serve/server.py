"""``segearth-geo serve``: load the model once per GPU and serve it over HTTP (uvicorn + Starlette).

One *replica* (a loaded segmenter and its thread) per visible CUDA device, or one on the CPU / the given device;
all replicas take batches from one :class:`~segearth_geo.serve.scheduler.Scheduler`, so every client's chips are
batched together and each replica's image cache serves every client. uvicorn brings HTTP/1.1, TLS, the
connection limit (503 beyond it) and the graceful shutdown; a subclass of its h11 protocol closes connections that
do not send a request's headers within :data:`HEADER_SECONDS` (slow clients), and SIGTERM drains: new requests get
503, queued work is answered, then the process exits (code 143).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from segearth_geo._version import __version__
from segearth_geo.errors import ModelError, UsageError
from segearth_geo.params import LoadOptions
from segearth_geo.prediction import ChipPrediction, describe_segmenter
from segearth_geo.serve.config import ServeOptions, check_access, read_token
from segearth_geo.serve.scheduler import Batch, Scheduler
from segearth_geo.serve.wire import VERSION, Limits

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 1000  # open connections (or requests) beyond this get 503 at once
HEADER_SECONDS = 10.0  # a connection must send a request's headers within this
KEEP_ALIVE_SECONDS = 30  # an idle keep-alive connection is closed after this
DRAIN_SECONDS = 120  # SIGTERM: requests in progress get this long to be answered
JOIN_SECONDS = 60  # then the model's last batch gets this long to end


def replica_devices(device: str) -> list[str]:
    """One device per replica: every visible CUDA device for ``auto``/``cuda`` (when torch sees any), else ``device``."""
    if device not in ("auto", "cuda"):
        return [device]
    try:
        import torch
    except ImportError:
        return [device]
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [f"cuda:{i}" for i in range(count)] or [device]


class Replica:
    """One segmenter and the thread that feeds it batches until the scheduler closes."""

    def __init__(self, segmenter: Any, scheduler: Scheduler, name: str) -> None:
        self.segmenter, self.scheduler = segmenter, scheduler
        self.info = describe_segmenter(segmenter)
        self.default_score = getattr(segmenter, "score_threshold", None)
        self.thread = threading.Thread(target=self._loop, name=f"segearth-replica-{name}", daemon=True)

    def _loop(self) -> None:
        if hasattr(signal, "pthread_sigmask"):  # signals are the main thread's (uvicorn's drain)
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        while True:
            try:
                batch = self.scheduler.next_batch()
                if batch is None:
                    return
                self.run(batch)
            except Exception:  # noqa: BLE001 - the replica must outlive any bug in a batch's bookkeeping
                log.exception("replica error (the replica goes on)")
                time.sleep(0.1)

    def run(self, batch: Batch) -> None:
        """Run one batch; when it fails and holds several requests, each request runs alone, so one client's
        failing chips fail only that client's request."""
        started = time.perf_counter()
        try:
            predictions, cache = self._call(batch)
        except Exception as exc:  # noqa: BLE001 - a model failure is the request's error, not the server's
            if len(batch.slices) > 1:
                for piece in batch.slices:
                    self.run(Batch(batch.prompt, batch.score_threshold, [piece]))
                return
            log.error("the model failed on a batch of %d chips: %s: %s", len(batch), type(exc).__name__, exc)
            self.scheduler.finish(batch, None, error=exc, seconds=time.perf_counter() - started)
            return
        self.scheduler.finish(batch, predictions, cache=cache, seconds=time.perf_counter() - started)

    def _call(self, batch: Batch) -> tuple[list[ChipPrediction], dict | None]:
        segmenter, chips = self.segmenter, batch.chips
        cached = self.info.has("image_cache")
        before = segmenter.cache_stats() if cached else None
        if batch.score_threshold is not None:
            segmenter.score_threshold = batch.score_threshold
        try:
            predictions = list(segmenter.segment(chips, batch.prompt) or [])
        finally:
            if batch.score_threshold is not None:
                segmenter.score_threshold = self.default_score
        if len(predictions) != len(chips):
            raise ModelError(f"the segmenter returned {len(predictions)} predictions for {len(chips)} chips")
        for chip, prediction in zip(chips, predictions):
            if not isinstance(prediction, ChipPrediction):
                raise ModelError(f"the segmenter returned {type(prediction).__name__}, not ChipPrediction")
            if any(t.probability.shape != chip.shape[:2] for t in prediction.targets):
                raise ModelError("the segmenter returned a probability of another shape than its chip")
        cache = _delta(before, segmenter.cache_stats()) if cached else None
        return predictions, cache


def _delta(before: dict, after: dict) -> dict:
    out = {"evictions": after.get("evictions", 0) - before.get("evictions", 0),
           **{k: after[k] for k in ("bytes", "items", "max_bytes") if k in after}}
    for name in ("hits", "misses"):
        old = before.get(name, {})
        out[name] = {t: n - old.get(t, 0) for t, n in after.get(name, {}).items() if n - old.get(t, 0)}
    return out


def load_replicas(load: LoadOptions, options: ServeOptions, scheduler: Scheduler,
                  loader: Callable[[LoadOptions], Any] | None = None) -> list[Replica]:
    """Load the model once per device of :func:`replica_devices` (the serve batch size is its forward batch)."""
    if loader is None:
        from segearth_geo.model.loading import load_model

        def loader(opts: LoadOptions) -> Any:
            return load_model(opts, style="cli")
    replicas = []
    for device in replica_devices(load.device):
        segmenter = loader(replace(load, device=device, batch_size=options.batch_size))
        replicas.append(Replica(segmenter, scheduler, device))
    sizes = {r.info.chip_size for r in replicas}
    if len(sizes) != 1:  # pragma: no cover - the same model on every device
        raise ModelError(f"the replicas report different chip sizes {sorted(sizes)}")
    return replicas


def server_info(load: LoadOptions, options: ServeOptions, replicas: list[Replica], limits: Limits) -> dict[str, Any]:
    """The static part of ``GET /v1/info``."""
    first = replicas[0]
    scores = first.info.has("scores") and isinstance(first.default_score, (int, float))
    return {"model": load.model, "chip_size": first.info.chip_size, "capabilities": sorted(first.info.capabilities),
            "devices": [r.info.device or load.device for r in replicas], "replicas": len(replicas),
            "version": __version__, "wire": VERSION, "batch_size": options.batch_size,
            "max_wait_ms": options.max_wait_ms, "max_queue": options.max_queue,
            "score_threshold": float(first.default_score) if scores else None, "options": load.changed(),
            "limits": limits.to_dict()}


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _raise_file_limit() -> None:
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
        if soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ImportError, ValueError, OSError):  # pragma: no cover - Windows, or not allowed
        pass


def run_server(load: LoadOptions, options: ServeOptions, *, announce: Callable[[str], None] = print,
               loader: Callable[[LoadOptions], Any] | None = None) -> None:
    """Check the options, load the replicas, serve until SIGTERM/Ctrl-C (drained), then return.

    ``announce`` gets one line once the server listens (``Serving demo on http://127.0.0.1:8765 ...``).
    """
    options = options.check("cli")
    token = read_token(options)
    check_access(options, token)
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError:
        raise UsageError('the server needs uvicorn and starlette: pip install "segearth-geo[serve]"') from None
    from segearth_geo.serve.app import ServerState, build_app
    from segearth_geo.serve.guard import DrainingServer, guarded_h11

    sock = _bind(options.host, options.port)
    _raise_file_limit()
    scheduler = Scheduler(options.batch_size, options.max_wait_ms / 1000.0, options.max_queue)
    try:
        replicas = load_replicas(load, options, scheduler, loader)
        limits = Limits(replicas[0].info.chip_size)
        info = server_info(load, options, replicas, limits)
        # Request bodies held at once (read, queued or answered): about twice the queue, plus one full request.
        budget = 2 * (options.max_queue + limits.max_chips) * limits.chip_size**2 * 3
        state = ServerState(scheduler, limits, info, token, takes_score_threshold=info["score_threshold"] is not None,
                            budget_bytes=budget, replicas=len(replicas))
        for replica in replicas:
            replica.thread.start()
        config = uvicorn.Config(build_app(state), log_config=None, access_log=False, lifespan="off",
                                http=guarded_h11(HEADER_SECONDS), limit_concurrency=MAX_CONNECTIONS,
                                timeout_keep_alive=KEEP_ALIVE_SECONDS, timeout_graceful_shutdown=DRAIN_SECONDS,
                                h11_max_incomplete_event_size=64 * 1024, ssl_certfile=options.certfile,
                                ssl_keyfile=options.keyfile)
        server = DrainingServer(config, state.draining)
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        announce(f"Serving {load.model} on {options.scheme}://{shown}:{port} ({len(replicas)} replica(s): "
                 f"{', '.join(state.info['devices'])}; {limits.chip_size}-px chips; token "
                 f"{'required' if token else 'not required'})")
        server.run(sockets=[sock])
    finally:
        sock.close()
        scheduler.close()
        left = scheduler.drop_all()  # no client waits for them any more
        if left:
            log.warning("%d queued chips were dropped at shutdown", left)
        _join(locals().get("replicas") or [])


def _join(replicas: list[Replica], seconds: float = JOIN_SECONDS) -> None:
    """Wait for the replicas' threads to leave the model: a process that exits while a thread is inside a torch
    call can abort in C++ ("terminate called without an active exception"). A model call that does not end in
    ``seconds`` (a hung GPU) ends the process at once, without running C++ destructors."""
    deadline = time.monotonic() + seconds
    for replica in replicas:
        if replica.thread.is_alive():
            replica.thread.join(max(0.0, deadline - time.monotonic()))
    if any(replica.thread.is_alive() for replica in replicas):
        log.error("a model call did not end within %.0f s of the shutdown; exiting now", seconds)
        logging.shutdown()
        os._exit(143)


__all__ = ["DRAIN_SECONDS", "HEADER_SECONDS", "MAX_CONNECTIONS", "Replica", "load_replicas", "replica_devices",
           "run_server", "server_info"]
