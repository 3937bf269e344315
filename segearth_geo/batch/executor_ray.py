"""Ray executor: the same units on a Ray cluster, one long-lived model actor per worker.

* ``ray.init(address=...)`` joins a running cluster (``"auto"`` or ``HOST:PORT``), or
  starts a local one when no address is given.
* One actor per GPU of the cluster (``num_gpus=1`` each, so Ray pins each actor to its
  own GPU), or ``workers`` CPU actors that share the cluster's CPUs. Each actor loads
  the model once and keeps a :class:`~segearth_geo.batch.unit.UnitRunner` for the job.
* Actors read their chips themselves from the source URI (windowed reads; datasets are
  never pickled) under the GDAL options (and credentials) of the driver's environment,
  and write each unit's shard into ``OUT_DIR/shards`` — which must therefore be on a file
  system every node shares. The driver only plans, records and merges.
* Each actor has at most two units in flight (one running, one queued), so a worker that
  dies loses at most its running unit: it is retried on another actor (a fresh actor
  replaces the dead one), up to :data:`MAX_ATTEMPTS` times in all.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import threading
from collections import deque
from pathlib import Path
from typing import Any, Callable, Sequence

from segearth_geo.batch.config import JobSpec
from segearth_geo.batch.plan import UnitSpec
from segearth_geo.batch.reaper import start_reaper
from segearth_geo.batch.unit import UnitResult, UnitRunner
from segearth_geo.errors import ModelError, SegEarthGeoError, UsageError
from segearth_geo.params import LoadOptions, field_name

MAX_ATTEMPTS = 3
CONNECT_TIMEOUT_S = 10.0  # a Ray address that does not answer within this is refused
IN_FLIGHT_PER_WORKER = 2
DEFAULT_CPU_WORKERS = 2
# Environment variables that configure GDAL's reads and the credentials of its virtual file systems.
GDAL_ENV_PREFIXES = ("GDAL_", "CPL_", "VSI_", "AWS_", "GS_", "GOOGLE_", "AZURE_", "OSS_", "SWIFT_", "PROJ_NETWORK")

log = logging.getLogger(__name__)


def gdal_env_options(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The GDAL options and credentials of ``environ`` (default ``os.environ``) to set in every worker."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items() if k.startswith(GDAL_ENV_PREFIXES)}


def import_ray():
    try:
        import ray
    except ImportError as exc:
        raise UsageError('the Ray executor needs Ray: pip install "segearth-geo[ray]"') from exc
    return ray


class _ModelActor:
    """The body of a model actor (wrapped with ``ray.remote`` at start-up)."""

    def __init__(self, load: LoadOptions, segmenter: Any, gdal_options: dict[str, str], cores: int) -> None:
        self.error: str | None = None  # why the model did not load (reported by describe())
        if segmenter is None:
            from segearth_geo.model.loading import load_model

            try:
                segmenter = load_model(load)
            except Exception as exc:  # noqa: BLE001 - handed to the driver as one line
                self.error = _first_line(exc) if isinstance(exc, SegEarthGeoError) else f"{type(exc).__name__}: {exc}"
        self.segmenter, self.gdal_options, self.cores = segmenter, gdal_options, cores
        self._runner: UnitRunner | None = None
        self._key: tuple | None = None

    def describe(self) -> tuple[int, str, int, str | None, str]:
        """``(chip_size, device, pid, error, notice)``; ``error`` says why the model did not load (else ``None``),
        ``notice`` what the model says wherever it runs."""
        from segearth_geo.prediction import describe_segmenter

        if self.error is not None:
            return 0, "", os.getpid(), self.error, ""
        info = describe_segmenter(self.segmenter)
        return info.chip_size, info.device or "cpu", os.getpid(), None, info.notice or ""

    def run(self, unit: UnitSpec, spec: JobSpec, shard_dir: str) -> UnitResult:
        key = (spec, shard_dir)
        if self._key != key:
            if self._runner is not None:
                self._runner.close()
            self._runner = UnitRunner(self.segmenter, spec, Path(shard_dir), self.gdal_options, self.cores)
            self._key = key
        return self._runner.run(unit)


class RayExecutor:
    """Runs units on Ray actors (see the module docstring).

    Args:
        load, segmenter: what each actor loads (a segmenter object is pickled to the actors; otherwise each
            actor loads ``load`` itself, on its own GPU when the cluster has GPUs).
        address: ``ray.init`` address; ``None`` starts a local Ray instance.
        workers: number of actors (default: one per GPU, else :data:`DEFAULT_CPU_WORKERS`).
        gdal_options: GDAL options for the workers' reads (default: from the environment).
    """

    name = "ray"

    def __init__(self, load: LoadOptions | None = None, *, segmenter: Any = None, address: str | None = None,
                 workers: int | None = None, gdal_options: dict[str, str] | None = None) -> None:
        self.ray = import_ray()
        self.load, self.segmenter = load or LoadOptions(), segmenter
        self.model, self.device = self.load.model, self.load.device
        self.address, self.requested = address, workers
        self.gdal_options = gdal_env_options() if gdal_options is None else dict(gdal_options)
        self._started_ray = False
        self._reaper: subprocess.Popen | None = None
        self._actors: list[Any] = []
        self._actor_class: Any = None
        self.workers = 0
        self.device_description = ""
        self.notice = ""
        self.started = False

    def start(self) -> int:
        """Join or start Ray, start the actors (each loads the model); returns the model's ``chip_size``."""
        ray = self.ray
        if not ray.is_initialized():
            if self.address not in (None, "auto"):
                check_reachable(self.address)
            terminate = signal.getsignal(signal.SIGTERM)
            try:
                ray.init(address=self.address, logging_level=logging.ERROR, log_to_driver=False,
                         include_dashboard=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = self.address or "a local instance"
                raise UsageError(f"cannot start or join Ray at {where}: {_first_line(exc)}") from None
            finally:
                # ray.init installs its own SIGTERM handler (a slow shutdown, exit status 15, the job's lock
                # held): the job's own handler unwinds, cleans up and exits 143.
                if terminate is not None and threading.current_thread() is threading.main_thread():
                    signal.signal(signal.SIGTERM, terminate)
            self._started_ray = True
            if self.address is None:
                self._reaper = start_reaper(_session_name(ray))
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0)) if self.device != "cpu" else 0
        cpus = max(1, int(resources.get("CPU", 1)))
        if gpus:
            self.workers = self.requested or gpus
            options = {"num_gpus": 1, "num_cpus": max(1, cpus // self.workers)}
        else:
            if self.device.startswith("cuda"):
                raise UsageError(f"{field_name('device')} {self.device} was asked but the Ray cluster has no GPU")
            self.workers = self.requested or min(DEFAULT_CPU_WORKERS, cpus)
            options = {"num_cpus": max(1, cpus // self.workers)}
        self._options = options
        self._actor_class = ray.remote(_ModelActor)
        self._actors = [self._new_actor() for _ in range(self.workers)]
        try:
            described = ray.get([a.describe.remote() for a in self._actors])
        except ray.exceptions.RayError as exc:
            raise ModelError(f"the Ray workers could not load the model {self.model!r}: {_first_line(exc)}") from exc
        errors = [d[3] for d in described if d[3] is not None]
        if errors:
            raise ModelError(f"the Ray workers could not load the model {self.model!r}: {errors[0]}")
        sizes = {d[0] for d in described}
        self.device_description = ", ".join(sorted({d[1] for d in described}))
        self.notice = next((d[4] for d in described if d[4]), "")
        self.started = True
        return sizes.pop()

    def _new_actor(self):
        from dataclasses import replace

        # Ray pins each GPU actor to its own GPU (CUDA_VISIBLE_DEVICES), so it sees it as "cuda".
        device = "cuda" if "num_gpus" in self._options else ("cpu" if self.device == "auto" else self.device)
        return self._actor_class.options(**self._options).remote(
            replace(self.load, device=device), self.segmenter, self.gdal_options, self._options["num_cpus"])

    def pids(self) -> list[int]:
        """Process ids of the live actors (for tests and diagnostics)."""
        return [d[2] for d in self.ray.get([a.describe.remote() for a in self._actors])]

    def run(self, units: Sequence[UnitSpec], spec: JobSpec, shard_dir: Path, *,
            on_start: Callable[[UnitSpec, str], None], on_result: Callable[[UnitSpec, UnitResult], None],
            on_chips: Callable[[int], None], should_stop: Callable[[], bool]) -> None:
        """Run ``units`` on the actors; a unit whose actor died is retried on another one."""
        ray = self.ray
        pending = deque(units)
        attempts: dict[str, int] = {}
        inflight: dict[Any, tuple[UnitSpec, int]] = {}
        load = [0] * len(self._actors)
        while pending or inflight:
            while pending and not should_stop():
                slot = min(range(len(self._actors)), key=load.__getitem__)
                if load[slot] >= IN_FLIGHT_PER_WORKER:
                    break
                unit = pending.popleft()
                attempts[unit.id] = attempts.get(unit.id, 0) + 1
                on_start(unit, f"ray-actor-{slot}")
                ref = self._actors[slot].run.remote(unit, spec, str(shard_dir))
                inflight[ref] = (unit, slot)
                load[slot] += 1
            if should_stop() and not inflight:
                return
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
            for ref in ready:
                unit, slot = inflight.pop(ref)
                if slot >= 0:
                    load[slot] -= 1
                try:
                    result = ray.get(ref)
                except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as exc:
                    if slot >= 0:  # slot -1: queued on an actor already replaced
                        self._replace(slot, inflight, load)
                    if attempts[unit.id] >= MAX_ATTEMPTS:
                        on_result(unit, UnitResult(unit.id, error=f"its worker died {MAX_ATTEMPTS} times "
                                                                  f"({_first_line(exc)})"))
                    else:
                        log.warning("worker of unit %s died; retrying it on another worker", unit.id)
                        pending.appendleft(unit)
                    continue
                except ray.exceptions.RayError as exc:
                    result = UnitResult(unit.id, error=_first_line(exc))
                on_chips(result.chips + result.skipped)
                on_result(unit, result)

    def _replace(self, slot: int, inflight: dict, load: list[int]) -> None:
        """Replace the dead actor of ``slot``; its queued units are requeued when their failures arrive."""
        old = self._actors[slot]
        try:
            self.ray.kill(old)
        except Exception:  # noqa: BLE001 - already gone
            pass
        self._actors[slot] = self._new_actor()
        # Units still queued on the dead actor fail with RayActorError in their turn and are retried then.
        for ref, (unit, s) in list(inflight.items()):
            if s == slot:
                inflight[ref] = (unit, -1)  # -1: their slot's load was the dead actor's
        load[slot] = sum(1 for _, s in inflight.values() if s == slot)

    def close(self) -> None:
        for actor in self._actors:
            try:
                self.ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self._actors = []
        if self._started_ray:
            self.ray.shutdown()
            self._started_ray = False
        if self._reaper is not None:  # the local Ray is down; the watcher checks and exits
            try:
                self._reaper.stdin.close()
                self._reaper.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._reaper.kill()
            self._reaper = None


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """:class:`UsageError` in one line when nothing answers at ``HOST:PORT`` within ``timeout`` seconds (Ray itself
    would retry for minutes)."""
    text = address.split("://", 1)[-1]
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"the Ray address must be auto or HOST:PORT, got {address!r}")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UsageError(f"cannot reach the Ray cluster at {address}: {reason} (waited up to {timeout:.0f} s); check "
                         f"{field_name('ray_address')}, or leave it out to start a local Ray") from None


def _session_name(ray) -> str:
    """The name of the Ray session this process started (``session_…``), for the reaper."""
    try:
        return os.path.basename(ray._private.worker._global_node.get_session_dir_path())
    except Exception:  # noqa: BLE001 - a private API; without it the reaper is not started
        return ""


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__

