"""What "Segment many rasters" asks the engine for: one ``batch`` request to the worker.

Pure Python (no Qt). The request goes to the same ``segearth-geo worker`` process as the
dock's requests (:meth:`~.engine_client.EngineClient.batch`), so the job reuses its loaded model;
progress arrives as ``progress`` replies, and cancelling stops the job between chip batches
(finished units stay in the job's ledger: running it again resumes it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class BatchRequest:
    """What the algorithm asks for (one batch job); ``options``: the run options' request fields
    (``parameters.request_options``: ``gsd``, ``threshold``, ``min_area``, …), as for one scene."""

    sources: list[str]
    prompts: list[str]
    out_dir: str
    merge: str | None = None
    merge_crs: str | None = None
    aoi: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def fields(self) -> dict[str, Any]:
        """The worker's ``batch`` request fields (see ``docs/worker-protocol.md``); unset options are left out."""
        fields: dict[str, Any] = {"inputs": list(self.sources), "prompts": list(self.prompts),
                                  "output_dir": self.out_dir}
        for key, value in (("merge", self.merge), ("merge_crs", self.merge_crs), ("aoi", self.aoi)):
            if value not in (None, ""):
                fields[key] = value
        return {**fields, **self.options}
