"""Fair dynamic batching (:mod:`segearth_geo.serve.scheduler`) and the replica that runs it, without HTTP."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from serve_models import POISON, SmoothSegmenter

from segearth_geo.serve.scheduler import Busy, Job, Scheduler, new_request_id
from segearth_geo.serve.server import Replica


def _chips(count: int, value: int = 0) -> list[np.ndarray]:
    return [np.full((8, 8, 3), (value + i) % 256, np.uint8) for i in range(count)]


def _job(client: str, count: int, prompt: str = "red", done: list | None = None) -> Job:
    return Job(client, new_request_id(), prompt, None, _chips(count), on_done=(done.append if done is not None else
                                                                                  lambda job: None))


def test_an_interactive_request_is_not_starved_by_a_queued_batch_job():
    scheduler = Scheduler(batch_size=4, max_wait_s=0.0, max_queue=1000)
    scheduler.submit([_job("batch-job", 400)])
    first = scheduler.next_batch()
    assert [job.client for job, _, _ in first.slices] == ["batch-job"]
    scheduler.submit([_job("dock", 2, prompt="blue")])  # another prompt: its own batch, next turn
    second = scheduler.next_batch()
    assert [job.client for job, _, _ in second.slices] == ["dock"] and len(second) == 2


def test_same_prompt_chips_of_several_clients_share_a_batch_in_turns():
    scheduler = Scheduler(batch_size=6, max_wait_s=0.0, max_queue=1000)
    for client in ("a", "b", "c"):
        scheduler.submit([_job(client, 10)])
    batch = scheduler.next_batch()
    assert len(batch) == 6
    assert sorted((job.client, b - a) for job, a, b in batch.slices) == [("a", 2), ("b", 2), ("c", 2)]


def test_a_full_queue_and_a_greedy_client_are_told_to_retry():
    scheduler = Scheduler(batch_size=4, max_wait_s=0.0, max_queue=20)
    scheduler.submit([_job("a", 10)])
    with pytest.raises(Busy):
        scheduler.submit([_job("a", 1)])  # more than half the queue for one client
    scheduler.submit([_job("b", 10)])
    with pytest.raises(Busy) as caught:
        scheduler.submit([_job("c", 1)])
    assert caught.value.retry_after > 0 and scheduler.queued == 20


def test_cancel_drops_only_that_clients_queued_chips():
    scheduler = Scheduler(batch_size=4, max_wait_s=0.0, max_queue=100)
    ended: list[Job] = []
    scheduler.submit([_job("a", 10, done=ended)])
    scheduler.submit([_job("b", 3, done=ended)])
    assert scheduler.cancel("a") == 10 and scheduler.queued == 3
    assert len(ended) == 1 and ended[0].cancelled and ended[0].client == "a"
    assert [job.client for job, _, _ in scheduler.next_batch().slices] == ["b"]


def test_a_batch_waits_for_more_chips_only_up_to_max_wait():
    scheduler = Scheduler(batch_size=8, max_wait_s=0.3, max_queue=100)
    scheduler.submit([_job("a", 2)])
    threading.Timer(0.05, lambda: scheduler.submit([_job("b", 3)])).start()
    batch = scheduler.next_batch()
    assert len(batch) == 5


def test_one_clients_failing_chips_fail_only_its_request():
    scheduler = Scheduler(batch_size=8, max_wait_s=0.5, max_queue=100)
    ended: list[Job] = []
    good = Job("good", new_request_id(), "red", None, _chips(3, 50), ended.append)
    bad_chips = _chips(2)
    bad_chips[1][0, 0] = POISON
    bad = Job("bad", new_request_id(), "red", None, bad_chips, ended.append)
    scheduler.submit([good])
    scheduler.submit([bad])
    replica = Replica(SmoothSegmenter(8), scheduler, "test")
    batch = scheduler.next_batch()
    assert len(batch.slices) == 2
    replica.run(batch)
    assert {job.client for job in ended} == {"good", "bad"}
    assert good.error is None and all(r is not None for r in good.results)
    assert isinstance(bad.error, ValueError)
    assert good.cache["misses"]["vision"] >= 3
