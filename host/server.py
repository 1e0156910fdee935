"""The uvicorn configuration of ``careshare serve`` and ``careshare.testing.running_server``.

uvicorn times out an idle keep-alive connection, never an unfinished request head: the protocol
class here adds ``CARESHARE_HEADER_TIMEOUT`` (docs/decisions.md). Body timeouts are host/limits.py's.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import uvicorn

    from careshare.core.settings import Settings

__all__ = ["KEEP_ALIVE_SECONDS", "head_timeout_protocol", "uvicorn_config"]

logger = logging.getLogger("careshare.host")

#: uvicorn's own default: an idle keep-alive connection is closed after this long.
KEEP_ALIVE_SECONDS = 5


class _HeadTimeout:
    """Mixed into a uvicorn HTTP protocol: each request head must arrive whole within ``head_timeout``
    of the connection opening, or of its first byte after a response; else the connection gets
    ``408`` (when part of a head came) and is closed.
    """

    head_timeout: float = 20.0
    # uvicorn's protocol attributes this mixin reads.
    cycle: Any
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = False
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        if self._head_timer is None and (self.cycle is None or self.cycle.response_complete):
            self._arm_head_timer()
        if self._head_timer is not None:
            self._head_bytes = True
        super().data_received(data)  # type: ignore[misc]
        if self._head_timer is not None and self.cycle is not self._head_cycle:
            self._cancel_head_timer()  # a head arrived whole: its request runs

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm_head_timer(self) -> None:
        self._head_cycle = self.cycle
        self._head_bytes = False
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.cycle is not self._head_cycle or self.transport.is_closing():
            return  # a request began meanwhile (pipelined, not through data_received)
        if self._head_bytes:
            logger.info("request head timed out after=%ss", self.head_timeout)
            self.transport.write(_head_timeout_answer())
        self.transport.close()


def _head_timeout_answer() -> bytes:
    from careshare.core.problems import Problem
    from careshare.host.limits import REQUEST_TIMEOUT

    problem = Problem(REQUEST_TIMEOUT, "The request's headers did not arrive in time. Send the request again.")
    body = json.dumps(problem.to_dict()).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


_PROTOCOLS: dict[tuple[str, float], type[asyncio.Protocol]] = {}


def head_timeout_protocol(seconds: float, http: str = "auto") -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class ``http`` (auto, h11 or httptools) with a deadline for request heads."""
    cached = _PROTOCOLS.get((http, seconds))
    if cached is not None:
        return cached
    if http == "h11":
        from uvicorn.protocols.http.h11_impl import H11Protocol as base
    elif http == "httptools":
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as base
    elif http == "auto":
        from uvicorn.protocols.http.auto import AutoHTTPProtocol as base
    else:
        raise ValueError("http must be auto, h11 or httptools")
    protocol = type(f"HeadTimeout{base.__name__}", (_HeadTimeout, base), {"head_timeout": seconds})
    _PROTOCOLS[(http, seconds)] = protocol
    return protocol


def uvicorn_config(app: Any, settings: Settings, *, host: str, port: int, http: str = "auto") -> uvicorn.Config:
    """The uvicorn configuration of a careshare server: its timeouts, no uvicorn logging of its own."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=head_timeout_protocol(settings.header_timeout_seconds, http),
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        log_config=None,
        access_log=False,
        lifespan="on",
    )
