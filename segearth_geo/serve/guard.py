"""What the server adds to uvicorn: a deadline for a request's headers, and draining on SIGTERM.

uvicorn closes idle keep-alive connections but waits forever for the first request of a new connection, so a
client that opens thousands of connections and sends nothing (or a byte now and then) would keep every slot of
``limit_concurrency``. :func:`guarded_h11` gives each connection :data:`HEADER_SECONDS` to send a request's headers
(again after every response). :class:`DrainingServer` marks the server as draining at the first SIGTERM/Ctrl-C, so
requests that still arrive get 503 + ``Retry-After`` while the queued ones are answered.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol


def guarded_h11(header_seconds: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a deadline of ``header_seconds`` for each request's headers."""

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_header_deadline()

        def _arm_header_deadline(self) -> None:
            self._cycle_at_arm = self.cycle
            self._header_deadline = self.loop.call_later(header_seconds, self._header_deadline_passed)

        def _header_deadline_passed(self) -> None:
            # No new request cycle since the deadline was armed: the headers did not come in time.
            if self.cycle is self._cycle_at_arm and not self.transport.is_closing():
                self.transport.close()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._header_deadline.cancel()
            if not self.transport.is_closing():
                self._arm_header_deadline()

        def connection_lost(self, exc: Exception | None) -> None:
            self._header_deadline.cancel()
            super().connection_lost(exc)

    return GuardedH11Protocol


class DrainingServer(uvicorn.Server):
    """A uvicorn server that sets ``draining`` at the first exit signal (then shuts down gracefully)."""

    def __init__(self, config: uvicorn.Config, draining: threading.Event) -> None:
        super().__init__(config)
        self.draining = draining

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.draining.set()
        super().handle_exit(sig, frame)


__all__ = ["DrainingServer", "guarded_h11"]
