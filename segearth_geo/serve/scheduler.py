"""Fair dynamic batching of every client's chips onto the model replicas (one thread per replica).

A request becomes one :class:`Job` per prompt. Chips of the same *key* (prompt and score threshold: what one
``segment(chips, prompt)`` call shares) from any client are batched together, up to ``batch_size`` chips; a
batch that is not full waits at most ``max_wait_s`` after its oldest chip arrived for more. Fairness: clients
take turns (round-robin over client ids) both for which key runs next and for the places in a batch, so a batch
job with thousands of queued chips delays a dock user's request by at most about one batch.

Backpressure: at most ``max_queue`` chips wait in all, and one client may hold at most half of them (so another
client always finds room); a request beyond that is refused with :class:`Busy` (HTTP 503 + ``Retry-After``) and
the client retries later. :meth:`Scheduler.cancel` drops a client's (or one request's) chips that have not started.

Nothing here knows about HTTP or the model: a replica thread calls :meth:`Scheduler.next_batch`, runs the
model and hands the predictions to :meth:`Scheduler.finish`, which completes the jobs.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from segearth_geo.errors import SegEarthGeoError
from segearth_geo.prediction import ChipPrediction


class Busy(SegEarthGeoError):
    """The queue is full (or the server drains); ``retry_after`` seconds is a fair wait."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


_serial = itertools.count(1)


@dataclass(eq=False)
class Job:
    """One prompt over one request's chips; ``on_done(job)`` is called once, from a replica thread or
    :meth:`Scheduler.cancel`, when every chip has a prediction, the model failed (``error``) or it was cancelled."""

    client: str
    request: int
    prompt: str
    score_threshold: float | None
    chips: list[np.ndarray]
    on_done: Callable[[Job], None] = field(repr=False, default=lambda job: None)
    results: list[ChipPrediction | None] = field(default_factory=list, repr=False)
    next: int = 0  # chips handed to a replica so far
    remaining: int = 0  # chips without a prediction yet
    error: BaseException | None = None
    cancelled: bool = False
    done: bool = False
    cache: dict[str, Any] = field(default_factory=dict)
    enqueued: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.results = [None] * len(self.chips)
        self.remaining = len(self.chips)

    @property
    def key(self) -> tuple[str, float | None]:
        return self.prompt, self.score_threshold

    @property
    def pending(self) -> int:
        return len(self.chips) - self.next


@dataclass
class Batch:
    """Chips of one key for one model call: ``slices`` are ``(job, start, stop)`` into each job's chips."""

    prompt: str
    score_threshold: float | None
    slices: list[tuple[Job, int, int]]

    @property
    def chips(self) -> list[np.ndarray]:
        return [chip for job, a, b in self.slices for chip in job.chips[a:b]]

    def __len__(self) -> int:
        return sum(b - a for _, a, b in self.slices)


def new_request_id() -> int:
    return next(_serial)


class Scheduler:
    """The shared queue (see the module docstring). Thread-safe."""

    def __init__(self, batch_size: int, max_wait_s: float, max_queue: int) -> None:
        self.batch_size, self.max_wait_s, self.max_queue = int(batch_size), float(max_wait_s), int(max_queue)
        self.client_share = max(1, self.max_queue // 2)
        self._queues: dict[str, collections.deque[Job]] = {}
        self._turns: collections.deque[str] = collections.deque()  # clients in round-robin order
        self._queued = 0  # chips not handed to a replica yet
        self._cond = threading.Condition()
        self._closed = False
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        self.chips_done = 0
        self.busy_seconds = 0.0

    # -- admission ------------------------------------------------------------------------------
    def submit(self, jobs: list[Job], retry_after: float = 1.0) -> None:
        """Queue ``jobs`` (one request's) or raise :class:`Busy` without queueing any."""
        chips = sum(len(job.chips) for job in jobs)
        if not jobs:
            return
        client = jobs[0].client
        with self._cond:
            if self._closed:
                raise Busy("the server is shutting down; retry on another server or later", retry_after)
            own = sum(job.pending for job in self._queues.get(client, ()))
            if self._queued and self._queued + chips > self.max_queue:
                raise Busy(f"the queue is full ({self._queued} chips wait); retry later", retry_after)
            if own and own + chips > self.client_share:
                raise Busy(f"this client already has {own} chips queued; retry later", retry_after)
            queue = self._queues.setdefault(client, collections.deque())
            if client not in self._turns:  # a client with nothing queued goes first: it has waited no turn
                self._turns.appendleft(client)
            queue.extend(jobs)
            self._queued += chips
            self._cond.notify_all()

    @property
    def queued(self) -> int:
        with self._cond:
            return self._queued

    def cancel(self, client: str, request: int | None = None) -> int:
        """Drop the chips of ``client`` (only of ``request`` if given) that no replica has started; their jobs end
        cancelled at once (a job partly running ends when its running chips finish). Returns the chips dropped."""
        ended: list[Job] = []
        dropped = 0
        with self._cond:
            queue = self._queues.get(client)
            for job in list(queue or ()):
                if request is not None and job.request != request:
                    continue
                dropped += job.pending
                self._queued -= job.pending
                job.remaining -= job.pending
                job.next = len(job.chips)
                job.cancelled = True
                queue.remove(job)
                if job.remaining == 0 and not job.done:
                    job.done = True
                    ended.append(job)
            self._forget_if_idle(client)
        for job in ended:
            job.on_done(job)
        return dropped

    def drop_all(self) -> int:
        """:meth:`cancel` every client's queued chips; returns how many were dropped."""
        with self._cond:
            clients = list(self._queues)
        return sum(self.cancel(client) for client in clients)

    def close(self) -> None:
        """Refuse new work; replicas finish what is queued, then :meth:`next_batch` returns ``None``."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- replicas -------------------------------------------------------------------------------
    def next_batch(self, poll_s: float = 0.5) -> Batch | None:
        """The next batch (blocks); ``None`` once closed and empty."""
        with self._cond:
            while True:
                head = next((c for c in self._turns if self._queues.get(c)), None)
                if head is None:
                    if self._closed:
                        return None
                    self._cond.wait(poll_s)
                    continue
                first = self._queues[head][0]
                key = first.key
                ready = sum(job.pending for q in self._queues.values() for job in q if job.key == key)
                wait = first.enqueued + self.max_wait_s - time.monotonic()
                if ready < self.batch_size and wait > 0 and not self._closed:
                    self._cond.wait(wait)
                    continue
                order = list(self._turns)
                start = order.index(head) + 1
                batch = self._take(head, key)
                # The client after ``head`` goes first next time (clients left idle were forgotten by _take).
                self._turns = collections.deque(c for c in order[start:] + order[:start] if c in self._queues)
                return batch

    def _take(self, head: str, key: tuple[str, float | None]) -> Batch:
        """Fill a batch of ``key``, one chip per client in turn (starting with ``head``)."""
        order = list(self._turns)
        start = order.index(head)
        clients = [c for c in order[start:] + order[:start] if any(j.key == key for j in self._queues.get(c, ()))]
        taken: dict[int, list[Any]] = {}  # id(job) -> [job, start, stop]
        room = self.batch_size
        while room and clients:
            for client in list(clients):
                job = next((j for j in self._queues[client] if j.key == key and j.pending), None)
                if job is None:
                    clients.remove(client)
                    continue
                entry = taken.setdefault(id(job), [job, job.next, job.next])
                entry[2] += 1
                job.next += 1
                self._queued -= 1
                if not job.pending:
                    self._queues[client].remove(job)
                room -= 1
                if not room:
                    break
        for client in order:
            self._forget_if_idle(client)
        return Batch(key[0], key[1], [(job, a, b) for job, a, b in taken.values()])

    def _forget_if_idle(self, client: str) -> None:
        if client in self._queues and not self._queues[client]:
            del self._queues[client]
            self._turns.remove(client)

    def finish(self, batch: Batch, predictions: list[ChipPrediction] | None, error: BaseException | None = None,
               cache: dict[str, Any] | None = None, seconds: float = 0.0) -> None:
        """Hand a batch's predictions (or its ``error``) to its jobs; ``cache``: the call's cache counters, shared
        out by chips."""
        ended: list[Job] = []
        total = len(batch)
        with self._cond:
            self.batch_sizes[total] += 1
            self.chips_done += total
            self.busy_seconds += seconds
            offset = 0
            for job, a, b in batch.slices:
                if error is not None:
                    job.error = job.error or error
                else:
                    job.results[a:b] = predictions[offset:offset + b - a]
                    _add_cache(job.cache, cache, (b - a) / total)
                offset += b - a
                job.remaining -= b - a
                if job.error is not None and job.pending and not job.cancelled:  # the rest cannot succeed
                    self._queued -= job.pending
                    job.remaining -= job.pending
                    job.next = len(job.chips)
                    queue = self._queues.get(job.client)
                    if queue is not None and job in queue:
                        queue.remove(job)
                        self._forget_if_idle(job.client)
                if job.remaining == 0 and not job.done:
                    job.done = True
                    ended.append(job)
        for job in ended:
            job.on_done(job)

    def seconds_per_chip(self) -> float:
        with self._cond:
            return self.busy_seconds / self.chips_done if self.chips_done else 1.0


def _add_cache(into: dict[str, Any], delta: dict[str, Any] | None, share: float) -> None:
    """Add ``share`` of one model call's cache counters to a job's (hits and misses rounded per tier)."""
    if not delta:
        return
    for name in ("hits", "misses"):
        tiers = into.setdefault(name, {})
        for tier, count in (delta.get(name) or {}).items():
            tiers[tier] = tiers.get(tier, 0) + int(round(count * share))
    into["evictions"] = into.get("evictions", 0) + int(round(delta.get("evictions", 0) * share))
    for name in ("bytes", "items", "max_bytes"):
        if name in delta:
            into[name] = delta[name]


__all__ = ["Batch", "Busy", "Job", "Scheduler", "new_request_id"]
