"""Hypothesis strategies for real image files written by Pillow (and pillow-heif for HEIC).

``images()`` draws a picture in any format careshare accepts, in a mode that format stores, with
random size, frames, EXIF orientation, GPS, XMP, comments and ICC profile. The upright picture is
four flat quadrants (red, green, blue, white from the top left, clockwise), so a test can tell
where its corners landed even through lossy encoders. The helpers below build the pieces on their
own for example-based tests.
"""

from __future__ import annotations

import io
import struct
from typing import Any

import attrs
import numpy as np
import pillow_heif
from hypothesis import strategies as st
from PIL import Image, ImageOps, PngImagePlugin

__all__ = [
    "FORMATS",
    "MODES",
    "QUADRANT_COLOURS",
    "GeneratedImage",
    "encode",
    "exif_bytes",
    "icc_profile",
    "images",
    "quadrants",
    "store_oriented",
    "swapped_red_blue_profile",
]

pillow_heif.register_heif_opener()

# Pillow format -> the media type careshare should identify.
FORMATS: dict[str, str] = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "AVIF": "image/avif",
    "HEIF": "image/heic",
    "TIFF": "image/tiff",
    "BMP": "image/bmp",
}
# Modes each writer stores as they are (Pillow converts nothing on the way).
MODES: dict[str, tuple[str, ...]] = {
    "JPEG": ("RGB", "L", "CMYK"),
    "PNG": ("RGB", "RGBA", "L", "LA", "P", "1", "I;16"),
    "GIF": ("P", "L"),
    "WEBP": ("RGB", "RGBA"),
    "AVIF": ("RGB", "RGBA"),
    "HEIF": ("RGB", "RGBA"),
    "TIFF": ("RGB", "RGBA", "L", "1", "CMYK", "I;16", "P"),
    "BMP": ("RGB", "L", "P", "1"),
}
EXIF_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "AVIF", "HEIF", "TIFF"})
ANIMATED_FORMATS = frozenset({"GIF", "PNG", "WEBP", "TIFF"})
# Top left, top right, bottom right, bottom left of the upright picture.
QUADRANT_COLOURS = ((220, 30, 30), (30, 200, 30), (30, 30, 220), (240, 240, 240))
# The transposes that undo each orientation's transform, so a stored picture plus its tag is upright.
_STORE = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


@attrs.frozen
class GeneratedImage:
    """An image file and what a correct handler must see in it."""

    data: bytes
    format: str
    media_type: str
    mode: str
    upright_size: tuple[int, int]
    orientation: int
    frames: int
    has_gps: bool
    has_exif: bool
    has_icc: bool


def quadrants(size: tuple[int, int], noise: int = 0, seed: int = 0) -> Image.Image:
    """The upright test picture: four flat quadrants (``QUADRANT_COLOURS``), optional noise."""
    width, height = size
    pixels = np.empty((height, width, 3), dtype=np.int16)
    half_w, half_h = max(1, width // 2), max(1, height // 2)
    tl, tr, br, bl = QUADRANT_COLOURS
    pixels[:half_h, :half_w] = tl
    pixels[:half_h, half_w:] = tr
    pixels[half_h:, half_w:] = br
    pixels[half_h:, :half_w] = bl
    if noise:
        pixels += np.random.default_rng(seed).integers(-noise, noise + 1, pixels.shape, dtype=np.int16)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def store_oriented(upright: Image.Image, orientation: int) -> Image.Image:
    """The pixels a camera stores for ``upright`` when it tags them with EXIF ``orientation``."""
    method = _STORE[orientation]
    return upright if method is None else upright.transpose(method)


def exif_bytes(orientation: int | None = None, gps: bool = False) -> bytes:
    """An EXIF block with an orientation tag and, when asked, a GPS position (a London street)."""
    exif = Image.Exif()
    exif[0x010F] = "CareshareTestCam"  # Make
    if orientation is not None:
        exif[0x0112] = orientation
    if gps:
        position = exif.get_ifd(0x8825)
        position.update({1: "N", 2: (51.0, 30.0, 26.0), 3: "W", 4: (0.0, 7.0, 39.0)})
    return exif.tobytes()


def _s15f16(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def icc_profile(
    description: str,
    red: tuple[float, float, float],
    green: tuple[float, float, float],
    blue: tuple[float, float, float],
) -> bytes:
    """A minimal ICC v2 RGB display profile: D50 colorants (XYZ) and a 2.2 gamma curve per channel."""

    def xyz(values: tuple[float, float, float]) -> bytes:
        return b"XYZ " + bytes(4) + b"".join(_s15f16(v) for v in values)

    text = description.encode("ascii") + b"\x00"
    desc = (
        b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(4) + bytes(4) + bytes(2) + bytes(1) + bytes(67)
    )
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, 0x0233) + bytes(2)
    tags = [
        (b"desc", desc),
        (b"wtpt", xyz((0.9642, 1.0, 0.8249))),
        (b"rXYZ", xyz(red)),
        (b"gXYZ", xyz(green)),
        (b"bXYZ", xyz(blue)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
        (b"cprt", b"text" + bytes(4) + b"public domain\x00"),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for signature, data in tags:
        padded = data + bytes(-len(data) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += padded
    size = offset + len(body)
    header = (
        struct.pack(">I", size)
        + bytes(4)
        + bytes([2, 0x10, 0, 0])
        + b"mntrRGB XYZ "
        + struct.pack(">6H", 2024, 1, 1, 0, 0, 0)
        + b"acsp"
        + bytes(24)
        + struct.pack(">I", 0)
        + _s15f16(0.9642)
        + _s15f16(1.0)
        + _s15f16(0.8249)
        + bytes(48)
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


def swapped_red_blue_profile() -> bytes:
    """A profile whose red channel means sRGB's blue and whose blue means red: conversion shows at once."""
    srgb_red, srgb_green, srgb_blue = (0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141)
    return icc_profile("careshare swapped red-blue", srgb_blue, srgb_green, srgb_red)


def _in_mode(image: Image.Image, mode: str) -> Image.Image:
    if mode == "I;16":
        return Image.fromarray(np.asarray(image.convert("L"), dtype=np.uint16) * 257)
    if mode == "1":
        return image.convert("L").point(lambda v: 255 if v >= 128 else 0).convert("1", dither=Image.Dither.NONE)
    if mode == "P":
        return image.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    if mode in ("RGBA", "LA"):
        converted = image.convert(mode)
        converted.putalpha(200)
        return converted
    return image.convert(mode)


def encode(
    frames: list[Image.Image],
    fmt: str,
    *,
    exif: bytes | None = None,
    icc: bytes | None = None,
    xmp: bytes | None = None,
    comment: bytes | None = None,
) -> bytes:
    """``frames`` written by Pillow as ``fmt`` with the metadata given (where the format stores it)."""
    options: dict[str, Any] = {}
    if exif is not None and fmt in EXIF_FORMATS:
        options["exif"] = exif
    if icc is not None and fmt in ("JPEG", "PNG", "WEBP", "TIFF", "AVIF", "HEIF"):
        options["icc_profile"] = icc
    if xmp is not None and fmt in ("JPEG", "WEBP", "AVIF"):
        options["xmp"] = xmp
    if fmt == "PNG" and (xmp is not None or comment is not None):
        text = PngImagePlugin.PngInfo()
        if xmp is not None:
            text.add_itxt("XML:com.adobe.xmp", xmp.decode())
        if comment is not None:
            text.add_text("Comment", comment.decode())
        options["pnginfo"] = text
    if comment is not None and fmt in ("JPEG", "GIF"):
        options["comment"] = comment
    if fmt == "TIFF" and "exif" not in options:
        options["compression"] = "tiff_deflate"  # libtiff's writer cannot take an EXIF block; Pillow's can
    if fmt == "HEIF":
        options["quality"] = 90
    if len(frames) > 1:
        options.update(save_all=True, append_images=frames[1:], duration=100, loop=0)
    out = io.BytesIO()
    frames[0].save(out, fmt, **options)
    return out.getvalue()


@st.composite
def images(
    draw: st.DrawFn,
    formats: tuple[str, ...] = tuple(FORMATS),
    max_side: int = 96,
    min_side: int = 1,
) -> GeneratedImage:
    """A random valid image file: any format, stored mode, size, frames, orientation and metadata."""
    fmt = draw(st.sampled_from(formats))
    mode = draw(st.sampled_from(MODES[fmt]))
    size = (draw(st.integers(min_side, max_side)), draw(st.integers(min_side, max_side)))
    orientation = draw(st.integers(1, 8)) if fmt in EXIF_FORMATS else 1
    gps = fmt in EXIF_FORMATS and draw(st.booleans())
    has_exif = fmt in EXIF_FORMATS and (gps or orientation != 1 or draw(st.booleans()))
    can_animate = fmt in ANIMATED_FORMATS and not (fmt == "TIFF" and mode == "P")
    frames = draw(st.integers(1, 3)) if can_animate else 1
    noise = draw(st.sampled_from((0, 0, 8)))
    with_icc = fmt in ("JPEG", "PNG", "WEBP", "TIFF") and mode in ("RGB", "RGBA") and draw(st.booleans())
    seed = draw(st.integers(0, 2**16))

    upright = quadrants(size, noise, seed)
    first = _in_mode(store_oriented(upright, orientation), mode)
    # Consecutive frames must differ: Pillow's GIF, PNG and WebP writers merge identical neighbours.
    inverted = _in_mode(ImageOps.invert(store_oriented(upright, orientation)), mode)
    others = [inverted if i % 2 else first for i in range(1, frames)]
    data = encode(
        [first, *others],
        fmt,
        exif=exif_bytes(orientation if orientation != 1 else None, gps) if has_exif else None,
        icc=swapped_red_blue_profile() if with_icc else None,
        xmp=b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>' if draw(st.booleans()) else None,
        comment=b"patient: Jane Doe" if draw(st.booleans()) else None,
    )
    # Writers may still merge frames they see as equal (Pillow's APNG writer does for 16-bit grey).
    stored_frames = getattr(Image.open(io.BytesIO(data)), "n_frames", 1) if frames > 1 else 1
    return GeneratedImage(
        data=data,
        format=fmt,
        media_type=FORMATS[fmt],
        mode=mode,
        upright_size=size,
        orientation=orientation,
        frames=stored_frames,
        has_gps=gps,
        has_exif=has_exif,
        has_icc=with_icc,
    )
