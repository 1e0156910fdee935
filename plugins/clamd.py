"""Malware scanning with ClamAV's daemon: every upload streamed to clamd (INSTREAM) when ``CARESHARE_CLAMD`` is set.

A client of our own, about sixty lines of asyncio (docs/decisions.md says why): it streams the
store's chunks to a unix socket or ``tcp://host:port`` as clamd's length-prefixed blocks, with a
timeout on every step, and reads one answer. Anything but a clear verdict is ``ScannerUnavailable``,
so the file waits: clamd down, slow, or answering an error never lets a file through.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from careshare import hookimpl
from careshare.core.scanning import ScannerUnavailable, ScanVerdict

if TYPE_CHECKING:
    from collections.abc import AsyncIterable

    from careshare.core.runtime import Careshare
    from careshare.core.scanning import ScanContent

__all__ = ["careshare_scan", "instream", "verdict"]

SCANNER = "clamd"
#: Bytes per INSTREAM block (clamd reads each block whole; its StreamMaxLength caps their sum).
BLOCK_BYTES = 256 * 1024
#: The most of an answer we read: one line such as ``stream: Win.Test.EICAR_HDB-1 FOUND``.
ANSWER_BYTES = 4096
#: Verdicts ClamAV gives (with ``AlertExceedsMax yes``) for what it stopped scanning at a limit.
_LIMIT_SIGNATURES = ("Heuristics.Limits.Exceeded",)


@hookimpl
async def careshare_scan(content: ScanContent, cs: Careshare) -> ScanVerdict | None:
    address = cs.settings.clamd
    if address is None:
        return None
    answer = await instream(address, content.chunks(), timeout=cs.settings.clamd_timeout_seconds)
    return verdict(answer)


def verdict(answer: str) -> ScanVerdict:
    """clamd's answer to INSTREAM as a verdict; an answer that is none raises ``ScannerUnavailable``."""
    if answer == "INSTREAM size limit exceeded. ERROR":
        return ScanVerdict(SCANNER, "too-large", "StreamMaxLength")
    if answer == "stream: OK":
        return ScanVerdict(SCANNER, "clean")
    if answer.startswith("stream: ") and answer.endswith(" FOUND"):
        signature = answer.removeprefix("stream: ").removesuffix(" FOUND")
        if signature.startswith(_LIMIT_SIGNATURES):
            return ScanVerdict(SCANNER, "too-large", signature)
        return ScanVerdict(SCANNER, "infected", signature)
    # "... ERROR" (out of memory, a read timeout on its side), or nothing: no verdict.
    raise ScannerUnavailable(f"clamd answered {answer[:200]!r}")


async def instream(address: str, chunks: AsyncIterable[bytes], *, timeout: float) -> str:
    """Stream ``chunks`` to clamd at ``address`` with ``zINSTREAM``; returns its answer (without the NUL).

    Every step (connecting, each block, the answer) may take ``timeout`` seconds. clamd stops
    reading at its stream limit, answers and hangs up, so a send it refused is followed by reading
    its answer. On a plain socket, not an asyncio transport: a transport drops what was received
    once a send fails, and that answer is exactly the one that says "size limit exceeded".
    """
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            sock = await _connect(loop, address)
    except (OSError, TimeoutError) as exc:
        raise ScannerUnavailable(f"cannot reach clamd: {type(exc).__name__}") from None
    with sock:
        stream = aiter(chunks)
        whole = False
        try:
            await _send(loop, sock, b"zINSTREAM\0", timeout)
            async for chunk in stream:
                for start in range(0, len(chunk), BLOCK_BYTES):
                    block = chunk[start : start + BLOCK_BYTES]
                    await _send(loop, sock, struct.pack(">I", len(block)) + block, timeout)
            await _send(loop, sock, struct.pack(">I", 0), timeout)
            whole = True
        except (BrokenPipeError, ConnectionResetError):
            pass  # clamd hung up mid-stream (its limit, or it died): its answer, if any, says which
        except TimeoutError:
            raise ScannerUnavailable("clamd stopped reading the stream") from None
        finally:
            if hasattr(stream, "aclose"):
                await stream.aclose()
        try:
            async with asyncio.timeout(timeout):
                answer = await _answer(loop, sock)
        except TimeoutError:
            raise ScannerUnavailable("clamd gave no answer in time") from None
        text = answer.split(b"\0", 1)[0].decode("utf-8", "replace").strip()
        if not whole and text == "stream: OK":  # OK of part of the file says nothing of the rest
            raise ScannerUnavailable("clamd answered before the whole file was sent")
        return text


async def _send(loop: asyncio.AbstractEventLoop, sock: socket.socket, data: bytes, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        await loop.sock_sendall(sock, data)


async def _answer(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
    """Read up to clamd's NUL or its hang-up (what arrived before a reset still counts)."""
    answer = b""
    while b"\0" not in answer and len(answer) < ANSWER_BYTES:
        try:
            more = await loop.sock_recv(sock, ANSWER_BYTES)
        except OSError:
            break
        if not more:
            break
        answer += more
    return answer


async def _connect(loop: asyncio.AbstractEventLoop, address: str) -> socket.socket:
    if address.startswith("tcp://"):
        parts = urlsplit(address)
        infos = await loop.getaddrinfo(parts.hostname, parts.port, type=socket.SOCK_STREAM)
        family, kind, proto, _, target = infos[0]
    else:
        family, kind, proto, target = socket.AF_UNIX, socket.SOCK_STREAM, 0, address.removeprefix("unix://")
    sock = socket.socket(family, kind, proto)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, target)
    except BaseException:
        sock.close()
        raise
    return sock
