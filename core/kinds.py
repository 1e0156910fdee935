"""File kinds: what the file-type plugins declare they handle, so core names none of them.

Each file-type plugin declares its kinds (``careshare_kinds``): the name ``careshare_identify``
gives, how a sentence names one such file, the policy section its handler reads, the options a
clinician may render it again with, and a refusal of its own for targets that leave it out. Core
reads kinds only through :func:`kinds`, so a new file type is one plugin, and core's text says
"every kind" without a list.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    import pluggy

    from careshare.core.problems import ProblemType

__all__ = ["Kind", "KindRefusal", "kinds", "listed", "options_sections", "unsupported_detail"]


@attrs.frozen
class KindRefusal:
    """How attaching a kind reads where a target leaves it out, in place of ``kind-not-allowed``.

    For a kind whose refusal is a stable part of the API of its own (one whose absence product teams
    ask about by name): ``GET /v1/targets`` shows ``rule`` as a boolean on every target (true where
    the target accepts the kind), and the problem names that rule as the one broken.
    """

    problem: ProblemType
    #: The boolean of ``GET /v1/targets`` (``"<kind>_allowed"`` by habit), named by the refusal's ``rule``.
    rule: str
    #: The problem's detail; ``{target}`` is replaced by the target's description (else its name).
    detail: str


@attrs.frozen
class Kind:
    """One kind of file a file-type plugin recognises and processes (``careshare_kinds``)."""

    #: The name ``careshare_identify`` gives and ``careshare_process`` is asked for (``StoredFile.kind``).
    name: str
    #: One such file in a sentence, article included ("a scan"): refusals list what can be sent.
    noun: str
    #: The policy section the handler reads (``Policy.section(options)``): an attrs class whose
    #: defaults are the defaults, set per organisation under the kind's name (``Policy.from_mapping``).
    options: type | None = None
    #: What a clinician may ask for when rendering a file of this kind again
    #: (``POST /v1/files/{fid}/render``): an attrs class the body is read into, then handed to the
    #: handler as a policy section. None: files of this kind are shared as they are.
    render_options: type | None = None
    #: The refusal where a target leaves this kind out; None: ``kind-not-allowed``.
    refusal: KindRefusal | None = None


def kinds(pm: pluggy.PluginManager) -> dict[str, Kind]:
    """Every kind the loaded plugins declare, by name, sorted by name (whatever order plugins load in).

    One name declared twice differently is an error: two handlers would disagree on what it means.
    """
    found: dict[str, Kind] = {}
    for kind in itertools.chain.from_iterable(pm.hook.careshare_kinds()):
        known = found.get(kind.name)
        if known is not None and known != kind:
            raise ValueError(f"file kind {kind.name!r} is declared twice, differently")
        found[kind.name] = kind
    return dict(sorted(found.items()))


def listed(nouns: list[str], conjunction: str = "or") -> str:
    """``["a", "b", "c"]`` -> ``"a, b or c"``: the kinds in a sentence."""
    if len(nouns) <= 1:
        return "".join(nouns)
    return f"{', '.join(nouns[:-1])} {conjunction} {nouns[-1]}"


def options_sections(found: dict[str, Kind]) -> dict[str, type]:
    """The policy section of each kind that has one, by the kind's name (``Policy.from_mapping``)."""
    return {name: kind.options for name, kind in found.items() if kind.options is not None}


def unsupported_detail(pm: pluggy.PluginManager) -> str | None:
    """The detail of ``unsupported-file-type`` naming what can be sent ("Send a ..., ... or ...")."""
    nouns = [kind.noun for kind in kinds(pm).values()]
    if not nouns:
        return None
    return f"careshare could not recognise this file as a type it can share. Send {listed(nouns)}."
