"""A ``segearth-geo serve`` subprocess on this machine, for scripts, benchmarks and tests.

    with LocalServer("sam3", "--batch-size", "16") as server:      # 127.0.0.1, a free port
        segmenter = load_segmenter(server.url)

:class:`LocalServer` starts the server on the loopback address only, waits for its ``Serving ... on
http://127.0.0.1:PORT`` line (or raises :class:`~segearth_geo.errors.ModelError` with the server's last stderr
lines), and on exit sends SIGTERM (the server drains), then SIGKILL after a timeout, so nothing is left behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from segearth_geo.errors import ModelError

START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0


def free_port() -> int:
    """A TCP port of 127.0.0.1 that is free now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalServer:
    """One ``segearth-geo serve --model MODEL ARGS...`` subprocess on 127.0.0.1 (see the module docstring).

    Args:
        model: the served model spec; ``args``: more ``serve`` options.
        token: the access token (given to the server as ``SEGEARTH_TOKEN``, never on its command line).
        port: the port (default: a free one).
        env: extra environment variables of the server; ``cwd``: its working folder.
        scheme: ``http`` or ``https`` (with ``--certfile``/``--keyfile`` in ``args``).
        start_timeout: seconds to wait for the server to listen (the model loads first).
    """

    def __init__(self, model: str, *args: str, token: str | None = None, port: int | None = None,
                 env: dict[str, str] | None = None, cwd: str | os.PathLike | None = None, scheme: str = "http",
                 start_timeout: float = START_TIMEOUT_S) -> None:
        self.model, self.args, self.token, self.scheme = model, list(args), token, scheme
        self.port = port or free_port()
        self.env = dict(env if env is not None else os.environ)
        self.cwd = None if cwd is None else Path(cwd)
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.stdout: list[str] = []
        self.stderr: list[str] = []

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self) -> LocalServer:
        env = {k: v for k, v in self.env.items() if k != "SEGEARTH_TOKEN"}
        if self.token is not None:
            env["SEGEARTH_TOKEN"] = self.token
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "segearth_geo_cli.main", "serve", "--model", self.model, "--host", "127.0.0.1",
             "--port", str(self.port), *self.args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=env, cwd=None if self.cwd is None else str(self.cwd))
        ready = threading.Event()

        def read(stream, into: list[str], mark: bool) -> None:
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
            raise ModelError(f"the model server did not start: {' | '.join(self.stderr[-8:]) or 'no output'}")
        return self

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM (the server drains), then SIGKILL after ``timeout`` seconds; returns the exit code."""
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


__all__ = ["LocalServer", "free_port"]
