"""Identifiers that sort by creation time (ULID layout), so cursors are plain ids."""

from __future__ import annotations

import os
import threading
import time

__all__ = ["new_id"]

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
_lock = threading.Lock()
_last = 0


def new_id() -> str:
    """A 26-character lower-case ULID: 48 bits of milliseconds, then 80 random bits.

    Monotonic within a process: an id made in the same millisecond as the previous one is the
    previous one plus one, so ids sort in creation order (lists and cursors rely on it).
    """
    global _last
    fresh = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    with _lock:
        value = fresh if fresh >> 80 > _last >> 80 else _last + 1
        _last = value
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_CROCKFORD[digit])
    return "".join(reversed(chars))
