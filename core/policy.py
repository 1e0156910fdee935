"""Processing policy: the limits and options file-type handlers apply, with safe defaults."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["Policy"]


@attrs.frozen
class Policy:
    """What handlers may accept and how they render; one per organisation (defaults for now).

    Every limit here is a guard against hostile or accidental inputs; each refusal it causes names it.
    """

    #: Wall-clock seconds one file may spend in its handler before it is refused.
    time_limit_seconds: float = 120.0
    #: Memory one handler process may map (bytes); a decompression bomb dies here at worst.
    memory_limit_bytes: int = 4 * 1024**3
    #: PDF: most pages accepted.
    max_pdf_pages: int = 2000
    #: Images: most pixels, all frames counted, before anything is decoded.
    max_image_pixels: int = 50_000_000
    #: Images: the shareable copy's longest edge.
    max_long_edge: int = 4096
    #: Thumbnails' longest edge.
    thumbnail_size: int = 320
    #: Images: keep small animations (GIF, WebP, AVIF) animated rather than taking the first frame.
    keep_small_animations: bool = False
    #: JPEG quality of shareable photos and thumbnails.
    jpeg_quality: int = 85
    #: Video: largest width x height accepted (8K).
    max_video_pixels: int = 7680 * 4320
    #: Video: longest duration accepted, in seconds.
    max_video_seconds: float = 4 * 3600
    #: DICOM re-render options (``POST /v1/files/{fid}/render``); None means the defaults.
    dicom_frame: int | None = None
    dicom_window_center: float | None = None
    dicom_window_width: float | None = None

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> Policy:
        """A policy from a plain mapping; unknown keys are an error, so a typo is not a silent default."""
        if not values:
            return cls()
        unknown = set(values) - {field.name for field in attrs.fields(cls)}
        if unknown:
            raise ValueError(f"unknown policy options: {', '.join(sorted(unknown))}")
        return cls(**values)
