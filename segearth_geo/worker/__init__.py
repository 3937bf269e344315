"""The JSON-lines engine worker behind ``segearth-geo worker`` (used by the QGIS plugin).

One JSON object per line on stdin; one JSON object per line on stdout; the protocol is in
``docs/worker-protocol.md``. Three parts: :mod:`.protocol` (strict JSON out, ids, a request parsed once),
:mod:`.handlers` (``load``, ``segment``, ``batch``: one table), :mod:`.server` (the reading loop, the job
queue and thread, signals).
"""

from __future__ import annotations

from segearth_geo.worker.handlers import HANDLERS, TOO_LATE, WorkerState
from segearth_geo.worker.protocol import Request, RequestRejected, clean_text, encode_reply, id_key, json_safe
from segearth_geo.worker.server import REQUEST_FIELDS, REQUEST_TYPES, Worker, run_worker, serve

__all__ = ["HANDLERS", "REQUEST_FIELDS", "REQUEST_TYPES", "Request", "RequestRejected", "TOO_LATE", "Worker",
           "WorkerState", "clean_text", "encode_reply", "id_key", "json_safe", "run_worker", "serve"]
