"""The outside channel (``examples/careshare-discharge``) is what the issue promises: small, installed, found.

Its own tests (``examples/careshare-discharge/tests``, the contract kit unchanged) run in the same
suite; this file checks what they cannot: its size, and that careshare finds it through the entry
point group like any other distribution.
"""

from __future__ import annotations

import importlib.metadata
import io
import tokenize
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "careshare-discharge"
#: The channel itself: what a product team writes to add one (its test adapter is not counted).
CHANNEL = ["careshare_discharge/__init__.py", "careshare_discharge/migrations/discharge_0001.py"]
MAX_LINES = 80


def code_lines(source: str) -> int:
    """Lines holding code: not blank, not only a comment, not part of a docstring or a bare string."""
    code: set[int] = set()
    statement_start = True
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in (tokenize.NL, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
            continue
        if token.type == tokenize.NEWLINE:
            statement_start = True
            continue
        if not (statement_start and token.type == tokenize.STRING):
            code.update(range(token.start[0], token.end[0] + 1))
        statement_start = False
    return len(code)


def test_the_channel_is_at_most_80_lines_of_python() -> None:
    counted = {name: code_lines((EXAMPLE / name).read_text()) for name in CHANNEL}
    assert sum(counted.values()) <= MAX_LINES, counted


@given(st.lists(st.sampled_from(["x = 1", "# note", "", '"""doc"""', "def f():\n    '''doc'''\n    return 2"])))
def test_code_lines_counts_only_code(parts: list[str]) -> None:
    """Comments, blank lines and docstrings never count; every other line does, once."""
    expected = sum({"x = 1": 1, "# note": 0, "": 0, '"""doc"""': 0}.get(p, 2) for p in parts)
    assert code_lines("\n".join(parts) + "\n") == expected


def test_careshare_finds_the_channel_through_its_entry_point() -> None:
    [entry] = [e for e in importlib.metadata.entry_points(group="careshare") if e.name == "discharge"]
    assert entry.value == "careshare_discharge"
    assert entry.dist is not None and entry.dist.name == "careshare-discharge"
    assert Path(entry.load().__file__).resolve().is_relative_to(EXAMPLE)
