"""Real ``segearth-geo serve`` subprocesses for the tests (loopback only, free ports, always stopped).

    with Server("smooth") as server:          # tests/serve_models.py:smooth on 127.0.0.1:<free port>
        run_cli("segment", ..., "--model", server.url)

:class:`Server` waits for the ``Serving ... on http://127.0.0.1:PORT`` line (or fails with the server's stderr),
and on exit sends SIGTERM, then SIGKILL after a timeout, so no test leaves a server behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from segearth_geo.errors import ModelError
from segearth_geo.serve.local import LocalServer, free_port  # noqa: F401 - free_port: the tests import it from here

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MODELS = HERE / "serve_models.py"
TOKEN = "test-token-8d1f0c9a"


def model_spec(factory: str) -> str:
    """``--model`` of a factory in tests/serve_models.py (an absolute spec works from any folder)."""
    return factory if (":" in factory or factory == "demo" or "/" in factory) else f"{MODELS}:{factory}"


def cli_env(**extra: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SEGEARTH_TOKEN", "SEGEARTH_ALLOW_INSECURE_TOKEN")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update({k: v for k, v in extra.items() if v is not None})
    return env


def run_cli(*args: str, timeout: float = 180, **env: str | None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "segearth_geo_cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, env=cli_env(**env), cwd=str(REPO))


class Server(LocalServer):
    """One ``segearth-geo serve`` subprocess of a test model (see the module docstring): the library's
    :class:`~segearth_geo.serve.local.LocalServer` with the tests' environment and model files."""

    def __init__(self, model: str = "smooth", *args: str, token: str | None = None, port: int | None = None,
                 env: dict[str, str] | None = None, scheme: str = "http", start_timeout: float = 120) -> None:
        super().__init__(model_spec(model), *args, token=token, port=port, env=cli_env(**(env or {})), cwd=REPO,
                         scheme=scheme, start_timeout=start_timeout)

    def start(self) -> Server:
        try:
            return super().start()
        except ModelError as exc:
            raise RuntimeError(str(exc)) from None


def wait_until(predicate, timeout: float = 30.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False
