"""Processing policy: the limits and options file-type handlers apply, with safe defaults."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import attrs

__all__ = ["Policy"]

T = TypeVar("T")


@attrs.frozen
class Policy:
    """What handlers may accept and how they render; one per organisation (defaults for now).

    Every limit here is a guard against hostile or accidental inputs; each refusal it causes names it.
    The fields are the ones every handler shares; each file-type plugin keeps its own options in a
    section (an attrs class it declares with its kind, ``careshare_kinds``) and looks it up with
    :meth:`section`, so core names no format.
    """

    #: Wall-clock seconds one file may spend in its handler before it is refused.
    time_limit_seconds: float = 120.0
    #: Memory one handler process may map (bytes); a decompression bomb dies here at worst.
    memory_limit_bytes: int = 4 * 1024**3
    #: Pictures: most pixels a handler decodes, all frames counted, checked before decoding.
    max_image_pixels: int = 50_000_000
    #: Pictures: the longest edge of a shareable picture (a photo's copy, a poster).
    max_long_edge: int = 4096
    #: Thumbnails' longest edge.
    thumbnail_size: int = 320
    #: JPEG quality of shareable photos and thumbnails.
    jpeg_quality: int = 85
    #: The sections set, by their class; a section not set here takes its class's defaults.
    sections: dict[type, Any] = attrs.field(factory=dict, hash=False)

    def section(self, options: type[T]) -> T:
        """This policy's ``options`` section: the one set, else the class's defaults."""
        found = self.sections.get(options)
        return found if found is not None else options()

    def with_section(self, value: object) -> Policy:
        """This policy with ``value`` as the section of its class (replacing the one set)."""
        return attrs.evolve(self, sections={**self.sections, type(value): value})

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None, sections: Mapping[str, type] | None = None) -> Policy:
        """A policy from a plain mapping; unknown keys are an error, so a typo is not a silent default.

        Shared fields are top-level keys; a plugin's options are a mapping under its section's name
        (``{"time_limit_seconds": 60, "<kind>": {"<option>": ...}}``), for the ``sections`` the
        loaded plugins declare (:func:`careshare.core.kinds.options_sections`).
        """
        if not values:
            return cls()
        known = {field.name for field in attrs.fields(cls)} - {"sections"}
        declared = dict(sections or {})
        unknown = set(values) - known - set(declared)
        for name in sorted(set(values) & set(declared)):
            if not isinstance(values[name], Mapping):
                raise ValueError(f"policy section {name} must be a mapping of its options")
            fields = {field.name for field in attrs.fields(declared[name])}
            unknown |= {f"{name}.{key}" for key in set(values[name]) - fields}
        if unknown:
            raise ValueError(f"unknown policy options: {', '.join(sorted(unknown))}")
        policy = cls(**{key: value for key, value in values.items() if key in known})
        for name in sorted(set(values) & set(declared)):
            policy = policy.with_section(declared[name](**values[name]))
        return policy
