"""Real ``segearth-geo serve`` subprocesses for the tests (loopback only, free ports, always stopped).

    with Server("smooth") as server:          # tests/serve_models.py:smooth on 127.0.0.1:<free port>
        run_cli("segment", ..., "--model", server.url)

:class:`Server` waits for the ``Serving ... on http://127.0.0.1:PORT`` line (or fails with the server's stderr),
and on exit sends SIGTERM, then SIGKILL after a timeout, so no test leaves a server behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MODELS = HERE / "serve_models.py"
TOKEN = "test-token-8d1f0c9a"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


class Server:
    """One ``segearth-geo serve`` subprocess (see the module docstring)."""

    def __init__(self, model: str = "smooth", *args: str, token: str | None = None, port: int | None = None,
                 env: dict[str, str] | None = None, scheme: str = "http", start_timeout: float = 120) -> None:
        self.model, self.args, self.token, self.scheme = model_spec(model), list(args), token, scheme
        self.port = port or free_port()
        self.env = dict(env or {})
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.stderr: list[str] = []
        self.stdout: list[str] = []

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self) -> Server:
        env = cli_env(SEGEARTH_TOKEN=self.token, **self.env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "segearth_geo_cli.main", "serve", "--model", self.model, "--port", str(self.port),
             *self.args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(REPO))
        ready = threading.Event()

        def read(stream, into, mark: bool) -> None:
            for line in stream:
                into.append(line.rstrip("\n"))
                if mark and line.startswith("Serving "):
                    ready.set()
            if mark:  # the server ended before it served
                ready.set()

        threading.Thread(target=read, args=(self.proc.stdout, self.stdout, True), daemon=True).start()
        threading.Thread(target=read, args=(self.proc.stderr, self.stderr, False), daemon=True).start()
        if not ready.wait(self.start_timeout) or not any(s.startswith("Serving ") for s in self.stdout):
            self.stop()
            raise RuntimeError(f"the server did not start: {' | '.join(self.stderr[-8:])}")
        return self

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM (drain), then SIGKILL after ``timeout``; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL at once (a server that dies mid-job)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def wait_until(predicate, timeout: float = 30.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False
