"""Display names from clients, made safe to store, show and send back in headers."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

__all__ = ["MAX_FILENAME_BYTES", "content_disposition", "sanitise_filename"]

MAX_FILENAME_BYTES = 255
FALLBACK_NAME = "file"
# DOS device names; Windows ignores spaces before the extension ("nul .txt" is the device too).
_WINDOWS_RESERVED = re.compile(r"^(con|prn|aux|nul|conin\$|conout\$|com[0-9¹²³]|lpt[0-9¹²³]) *(\..*)?$", re.IGNORECASE)
_FORBIDDEN = set('<>:"/\\|?*')


def _allowed(char: str) -> bool:
    # Control (Cc), format (Cf: bidi overrides, zero-width), surrogates, private use, unassigned.
    return char not in _FORBIDDEN and unicodedata.category(char) not in {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def _replacement(char: str) -> str:
    # Tabs, newlines and line separators part words like spaces do; other controls just go.
    if char.isspace():
        return " "
    if char in _FORBIDDEN:
        return "_"
    return char if _allowed(char) else ""


def sanitise_filename(raw: str | None) -> str:
    """A name safe for any file system, log-free display and ``Content-Disposition``.

    Keeps only the last path component, drops control, bidi and reserved characters, folds
    whitespace, trims dots and spaces at the ends, avoids Windows device names and caps the
    UTF-8 length at 255 bytes while keeping the extension. Never empty; idempotent.
    """
    name = unicodedata.normalize("NFC", raw or "")
    name = re.split(r"[/\\]", name)[-1]
    name = "".join(_replacement(char) for char in name)
    name = " ".join(name.split())
    # Dropping a joiner or control between a letter and its accent can leave the pair uncomposed.
    name = unicodedata.normalize("NFC", name)
    name = name.strip(" .")
    if not name:
        return FALLBACK_NAME
    if _WINDOWS_RESERVED.match(name):
        name = f"_{name}"
    return _cap_length(name)


def _cap_length(name: str) -> str:
    if len(name.encode()) <= MAX_FILENAME_BYTES:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or len(ext.encode()) > 16:
        stem, ext = name, ""
    suffix = f".{ext}" if ext else ""
    budget = MAX_FILENAME_BYTES - len(suffix.encode())
    stem = stem.encode()[:budget].decode(errors="ignore")
    # Cutting may leave a combining mark alone or a trailing space/dot; normalise and trim again.
    stem = unicodedata.normalize("NFC", stem).rstrip(" .")
    while len((stem + suffix).encode()) > MAX_FILENAME_BYTES:
        stem = stem[:-1].rstrip(" .")
    return (stem or FALLBACK_NAME) + suffix


def content_disposition(filename: str, disposition: str = "attachment") -> str:
    """``Content-Disposition`` with an ASCII fallback and the exact name as RFC 5987 ``filename*``."""
    ascii_name = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode()
    ascii_name = re.sub(r"[^A-Za-z0-9._ -]", "_", ascii_name).strip() or FALLBACK_NAME
    return f"{disposition}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"
