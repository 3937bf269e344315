"""The options of ``segearth-geo serve`` (:class:`ServeOptions`), the server's token and the start-up checks.

Declared once with their :class:`~segearth_geo.params.Rule` like every other parameter set, so the CLI builds
its options from them (``cli/serve.py``) and the Python API checks them the same way. Nothing here imports the
web libraries.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from segearth_geo.errors import UsageError
from segearth_geo.params import Checked, Rule, field_name, param

log = logging.getLogger(__name__)

TOKEN_ENV = "SEGEARTH_TOKEN"
_SECRET = Rule("secret", "an access token")


@dataclass(frozen=True)
class ServeOptions(Checked):
    """Where the server listens, how it batches, and its access control (the model is a
    :class:`~segearth_geo.params.LoadOptions`)."""

    host: str = param("127.0.0.1", Rule(
        "text", "a host name or IP address", metavar="HOST",
        help="Address to listen on (default 127.0.0.1: this machine only). Another address needs a token."))
    port: int = param(8765, Rule("count", "a TCP port (0: any free port)", low=0, high=65535, metavar="PORT",
                                 help="TCP port (0: any free port; the one chosen is printed)."))
    token_file: str | None = param(None, Rule(
        "path", "a file holding the access token", metavar="F",
        help="File holding the access token clients must send (default: the environment variable SEGEARTH_TOKEN)."))
    batch_size: int = param(8, Rule(
        "count", "a positive number of chips", low=1, high=1024, metavar="N",
        help="Most chips per model call, gathered from every client's requests (also the model's forward batch)."))
    max_wait_ms: float = param(10.0, Rule(
        "number", "a non-negative number of milliseconds", low=0.0, high=60_000.0, metavar="W",
        help="How long a model call that is not full waits for more chips."))
    max_queue: int = param(256, Rule(
        "count", "a positive number of chips", low=1, high=1_000_000, metavar="Q",
        help="Most chips waiting in all; beyond it clients are told to retry later (HTTP 503)."))
    certfile: str | None = param(None, Rule("path", "a PEM certificate file", metavar="F",
                                            help="TLS certificate (PEM); with --keyfile the server speaks HTTPS."))
    keyfile: str | None = param(None, Rule("path", "a PEM private key file", metavar="F",
                                           help="TLS private key (PEM) of --certfile."))
    insecure_no_token: bool = param(False, Rule(
        "flag", "true or false", help="Allow a non-loopback --host without a token (anyone who reaches the port "
                                      "can use the GPU). Not recommended."))

    def _check_together(self, style: str) -> None:
        if (self.certfile is None) != (self.keyfile is None):
            raise UsageError(f"give both {field_name('certfile', style)} and {field_name('keyfile', style)} for "
                             "TLS, or neither")
        for name in ("certfile", "keyfile", "token_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).expanduser().is_file():
                raise UsageError(f"{field_name(name, style)}: {path} is not a file")

    @property
    def tls(self) -> bool:
        return self.certfile is not None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"


def read_token(options: ServeOptions, style: str = "cli") -> str | None:
    """The token clients must send: the first line of ``token_file``, else ``SEGEARTH_TOKEN``, else ``None``.

    Raises :class:`UsageError` (never showing the value) when it is empty or not printable ASCII.
    """
    if options.token_file is not None:
        path = Path(options.token_file).expanduser()
        try:
            text = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{field_name('token_file', style)}: cannot read {path} ({type(exc).__name__})") from None
        source = f"{field_name('token_file', style)} {path}"
    else:
        text = os.environ.get(TOKEN_ENV)
        if text is None:
            return None
        source = f"the environment variable {TOKEN_ENV}"
    try:
        return _SECRET.coerce(text)
    except ValueError as exc:
        raise UsageError(f"the token in {source} {exc}") from None


def is_loopback(host: str) -> bool:
    """``localhost``, ``127.x.x.x`` or ``::1``."""
    if host.strip().lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_access(options: ServeOptions, token: str | None, style: str = "cli") -> None:
    """Refuse (one line) to listen beyond this machine without a token, unless ``insecure_no_token``."""
    if token is not None or is_loopback(options.host):
        return
    if not options.insecure_no_token:
        raise UsageError(f"refusing to listen on {options.host} without a token: anyone who reaches the port could "
                         f"use the model; set {TOKEN_ENV} or {field_name('token_file', style)} (or pass "
                         f"{field_name('insecure_no_token', style)})")
    log.warning("listening on %s without a token: anyone who reaches the port can use the model", options.host)


__all__ = ["ServeOptions", "TOKEN_ENV", "check_access", "is_loopback", "read_token"]
