"""A model server for the whole team: ``segearth-geo serve`` runs the model, clients send pixels.

The laptop keeps everything geographic (reading, chips, stitching, vectorising, outputs); the server runs only
the :class:`~segearth_geo.prediction.Segmenter`. A model spec ``http://HOST:PORT`` or ``https://HOST:PORT`` is a
remote segmenter everywhere a model spec is taken (``docs/serve.md``).

* :mod:`.wire` – the request and response bodies (numpy and the standard library only);
* :mod:`.client` – :class:`~segearth_geo.serve.client.RemoteSegmenter` (standard library HTTP, no torch);
* :mod:`.scheduler` – fair dynamic batching of every client's chips onto the model replicas;
* :mod:`.app` – the HTTP endpoints (Starlette); :mod:`.server` – replicas, limits, TLS, drain (uvicorn);
* :mod:`.config` – :class:`~segearth_geo.serve.config.ServeOptions`, the ``serve`` options.

Only :mod:`.app` and :mod:`.server` need the ``serve`` extra (``pip install "segearth-geo[serve]"``).
"""

from __future__ import annotations

REMOTE_SCHEMES = ("http://", "https://")


def is_remote_spec(model: object) -> bool:
    """Whether a model spec names a model server (``http://HOST:PORT`` or ``https://HOST:PORT``)."""
    return isinstance(model, str) and model.strip().lower().startswith(REMOTE_SCHEMES)


__all__ = ["REMOTE_SCHEMES", "is_remote_spec"]
