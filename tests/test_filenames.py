"""Display names from clients: properties of ``sanitise_filename`` and ``content_disposition``."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import unquote

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from careshare.core.filenames import MAX_FILENAME_BYTES, content_disposition, sanitise_filename

# Characters a hostile or careless client sends: separators, NUL and controls, bidi overrides,
# zero-width joiners and combining marks (which sit next to removed characters), dots, spaces.
_TRICKY = list('/\\.:*?"<>| \t\n\r\x00\x1b\x7f\x85\u00a0\u2028\u202e\u202d\u200b\u200d\ufeff\u0301\u0327\u1161\u11a8')
_CHARS = st.one_of(
    st.characters(exclude_categories=("Cs",)),  # any code point a str can carry to UTF-8
    st.sampled_from(_TRICKY),
    st.characters(min_codepoint=0x20, max_codepoint=0x7E),
)
NAMES = st.text(_CHARS, max_size=400)
LONG_NAMES = st.text(_CHARS, min_size=200, max_size=1200)

# The DOS device names, as CPython 3.13's ``ntpath.isreserved`` lists them.
_DEVICES = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"} | {
    f"{port}{digit}" for port in ("COM", "LPT") for digit in "123456789\u00b9\u00b2\u00b3"
}
_BIDI_AND_INVISIBLE = {"\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"}


def is_windows_device(name: str) -> bool:
    """CPython 3.13's rule (``nul .txt`` is the device too); 3.11 has no ``ntpath.isreserved``."""
    return name.partition(".")[0].rstrip(" ").upper() in _DEVICES


@given(NAMES)
@example("e\u200d\u0301")  # a removed joiner between a letter and its accent
@example("\u1100\u200b\u1161")  # Hangul jamo split by a zero-width space
@example("a\u202egpj.exe")
@example("../../etc/passwd")
@example("C:\\Users\\x\\report.pdf")
def test_sanitised_name_is_safe_everywhere(raw: str) -> None:
    name = sanitise_filename(raw)
    assert name
    assert not {"/", "\\", "\x00"} & set(name)
    assert not [char for char in name if unicodedata.category(char) in {"Cc", "Cf", "Cs", "Zl", "Zp"}]
    assert not _BIDI_AND_INVISIBLE & set(name)
    assert len(name.encode("utf-8")) <= MAX_FILENAME_BYTES
    assert name == name.strip(" ."), "no leading or trailing dots and spaces"
    assert name not in {".", ".."}
    assert not is_windows_device(name)
    assert unicodedata.normalize("NFC", name) == name


@given(NAMES)
@example("e\u200d\u0301")
@example("\u1100\u200b\u1161")
@example("e\u202e\u0301x")
@example("a\x00\u0327")
@example("x" * 254 + "\u0301")
def test_sanitising_is_idempotent(raw: str) -> None:
    once = sanitise_filename(raw)
    assert sanitise_filename(once) == once


@given(LONG_NAMES)
def test_long_names_are_capped_and_idempotent(raw: str) -> None:
    name = sanitise_filename(raw)
    assert len(name.encode("utf-8")) <= MAX_FILENAME_BYTES
    assert sanitise_filename(name) == name


@given(
    stem=st.text(
        st.characters(categories=("L", "M", "N", "P", "S", "Zs"), exclude_characters='/\\<>:"|?*'),
        max_size=600,
    ),
    ext=st.from_regex(r"[a-z0-9]{1,10}", fullmatch=True),
)
@example(stem="x" * 300, ext="pdf")
@example(stem="\u00e9" * 200, ext="pdf")  # two bytes each: the cut must fall between characters
@example(stem="\u6f22" * 120, ext="docx")  # three bytes each
@example(stem="." * 300, ext="pdf")
@example(stem=" " * 300, ext="pdf")
@example(stem="\u0301" * 300, ext="pdf")
def test_truncation_keeps_a_short_extension(stem: str, ext: str) -> None:
    raw = f"n_{stem}.{ext}"
    name = sanitise_filename(raw)
    assert len(name.encode("utf-8")) <= MAX_FILENAME_BYTES
    assert name.endswith(f".{ext}")
    assert name.startswith("n_"), "the start of the stem survives"
    assert sanitise_filename(name) == name


def test_a_long_name_is_cut_to_exactly_the_limit_with_its_extension() -> None:
    name = sanitise_filename("x" * 300 + ".pdf")
    assert name == "x" * (MAX_FILENAME_BYTES - 4) + ".pdf"


def test_a_long_extension_is_not_kept_as_an_extension() -> None:
    name = sanitise_filename("a" * 250 + "." + "b" * 40)
    assert len(name.encode()) == MAX_FILENAME_BYTES
    assert name == ("a" * 250 + "." + "b" * 40)[:MAX_FILENAME_BYTES]


def test_a_multibyte_character_is_never_split() -> None:
    name = sanitise_filename("\u6f22" * 100)  # 300 bytes
    assert name == "\u6f22" * 85  # 255 bytes exactly


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, "file"),
        ("", "file"),
        ("   ", "file"),
        ("..", "file"),
        ("/", "file"),
        ("\x00\x01\x02", "file"),
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\scan 1.pdf", "scan 1.pdf"),
        ("dir/sub/", "file"),
        ("invoice\u202egpj.exe", "invoicegpj.exe"),
        ("  multiple   spaces\tand\ttabs .pdf ", "multiple spaces and tabs .pdf"),
        ("...hidden.", "hidden"),
        ('a<b>c:d"e|f?g*h.txt', "a_b_c_d_e_f_g_h.txt"),
        ("zero\u200bwidth\ufeff.pdf", "zerowidth.pdf"),
        ("cafe\u0301.pdf", "caf\u00e9.pdf"),  # NFC: the accent joins its letter
        ("line\u2028break\r\nhere.pdf", "line break here.pdf"),
        ("\u00fcbersicht.pdf", "\u00fcbersicht.pdf"),
        ("\u75c5\u6b74.pdf", "\u75c5\u6b74.pdf"),
    ],
)
def test_examples(raw: str | None, expected: str) -> None:
    assert sanitise_filename(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "con",
        "CON",
        "con.txt",
        "Nul.tar.gz",
        "prn",
        "aux.pdf",
        "com1",
        "LPT9.doc",
        "com\u00b9",
        "nul .txt",
        "CONIN$",
        "conout$.log",
    ],
)
def test_windows_device_names_get_a_prefix(raw: str) -> None:
    name = sanitise_filename(raw)
    assert name.startswith("_")
    assert not is_windows_device(name)
    assert sanitise_filename(name) == name


@pytest.mark.parametrize("raw", ["console.txt", "context", "com10", "lpt", "auxiliary.pdf", "nullable"])
def test_names_that_only_look_like_devices_are_kept(raw: str) -> None:
    assert sanitise_filename(raw) == raw


# -- Content-Disposition ---------------------------------------------------------------------------

_FILENAME_STAR = re.compile(r"filename\*=UTF-8''([A-Za-z0-9%._~!$&+^`|-]*)$")
_ASCII_FALLBACK = re.compile(r'filename="([^"\\]*)"')


@given(NAMES)
@example("r\u00e9sum\u00e9 \u00bd \u201cfinal\u201d.pdf")
@example('quote"and;semicolon.pdf')
@example("\u75c5\u6b74.pdf")
@example("\r\nSet-Cookie: x=1")
def test_content_disposition_is_ascii_and_round_trips(raw: str) -> None:
    name = sanitise_filename(raw)
    header = content_disposition(name)
    header.encode("latin-1")
    assert header.isascii()
    assert not {"\r", "\n", "\x00"} & set(header)
    assert header.startswith("attachment; ")
    fallback = _ASCII_FALLBACK.search(header)
    assert fallback is not None and fallback.group(1)
    star = _FILENAME_STAR.search(header)
    assert star is not None, header
    assert unquote(star.group(1), encoding="utf-8", errors="strict") == name


@given(st.text(st.characters(exclude_categories=("Cs",)), max_size=200))
def test_content_disposition_round_trips_any_text(raw: str) -> None:
    header = content_disposition(raw, "inline")
    assert header.isascii() and header.startswith("inline; ")
    star = _FILENAME_STAR.search(header)
    assert star is not None
    assert unquote(star.group(1), encoding="utf-8", errors="strict") == raw


def test_content_disposition_example() -> None:
    assert content_disposition("caf\u00e9 menu.pdf") == (
        "attachment; filename=\"cafe menu.pdf\"; filename*=UTF-8''caf%C3%A9%20menu.pdf"
    )
