"""Batch vectorization jobs: many scenes x prompts, crash-safe resume, one merged output, Ray.

One module per part: :mod:`.config` (the job and ``job.json``), :mod:`.inputs` (paths,
globs, lists, STAC, AOI), :mod:`.plan` (work units), :mod:`.unit` (running one unit),
:mod:`.shard` (a unit's pieces on disk), :mod:`.ledger` (SQLite status and the lock),
:mod:`.finish` (a scene's files from its shards), :mod:`.merge` (the merged file),
:mod:`.executor_local` and :mod:`.executor_ray`, :mod:`.job` (the driver,
:func:`run_batch`), :mod:`.report` (:class:`BatchReport`), :mod:`.status` (``batch-status``).
"""

from __future__ import annotations

from segearth_geo.batch.config import BatchOptions
from segearth_geo.batch.job import run_batch
from segearth_geo.batch.report import BatchReport, Failure, SceneReport
from segearth_geo.progress import Progress

__all__ = ["run_batch", "BatchOptions", "BatchReport", "SceneReport", "Failure", "Progress"]
