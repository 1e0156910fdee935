"""The image handler: identify by bytes, refuse bombs, SVG and broken files, normalise the rest.

Files are made by the real libraries (Pillow, pillow-heif) or taken from the shared corpus; the
hooks are called directly on a staged file, and a few uploads go through the HTTP API (where the
handler runs in its own process).
"""

from __future__ import annotations

import csv
import hashlib
import io
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from PIL import Image, ImageCms

from careshare.core.models import Identification, Processed, Source
from careshare.core.policy import Policy
from careshare.core.problems import Problem
from careshare.plugins.filetypes import image as handler
from careshare.testing.strategies.images import (
    FORMATS,
    QUADRANT_COLOURS,
    encode,
    exif_bytes,
    images,
    quadrants,
    store_oriented,
    swapped_red_blue_profile,
)

if TYPE_CHECKING:
    from litestar.testing import AsyncTestClient

    from careshare.core.models import RenditionOutput
    from careshare.testing.strategies.images import GeneratedImage

CORPUS = Path("/work/shared/corpus")
# The Pillow decoder that must read each declared media type back.
READER = {"image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF", "image/webp": "WEBP"}
XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'


# -- helpers -----------------------------------------------------------------------------------


def source_for(tmp_path: Path, data: bytes, name: str = "upload") -> Source:
    """A staged upload as the ingest pipeline hands it over: a file to read and a private workdir."""
    staged = tmp_path / name
    staged.write_bytes(data)
    workdir = tmp_path / f"{name}-work"
    workdir.mkdir()
    ident = handler.careshare_identify(head=data[: 64 * 1024])
    return Source(
        path=staged,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        kind="image",
        media_type=ident.media_type if ident else "application/octet-stream",
        workdir=workdir,
    )


_counter = iter(range(10**9))


def process(tmp_path: Path, data: bytes, policy: Policy | None = None) -> Processed:
    result = handler.careshare_process(
        source=source_for(tmp_path, data, f"f{next(_counter)}"), kind="image", policy=policy or Policy()
    )
    assert isinstance(result, Processed)
    return result


def refusal(tmp_path: Path, data: bytes, policy: Policy | None = None) -> Problem:
    with pytest.raises(Problem) as refused:
        process(tmp_path, data, policy)
    problem = refused.value
    assert problem.detail and problem.detail[-1] == "."
    return problem


def rendition(processed: Processed, role: str) -> RenditionOutput:
    return next(r for r in processed.renditions if r.role == role)


def reopen(output: RenditionOutput) -> Image.Image:
    """The rendition read back by Pillow as exactly its declared media type."""
    assert output.path is not None
    image = Image.open(output.path, formats=[READER[output.media_type]])
    image.load()
    return image


def assert_clean(output: RenditionOutput) -> None:
    """No EXIF, GPS, XMP, comment, text chunk or non-sRGB ICC profile in the written file."""
    assert output.path is not None
    data = output.path.read_bytes()
    image = reopen(output)
    assert not image.getexif(), dict(image.getexif())
    for key in ("exif", "xmp", "XML:com.adobe.xmp", "comment", "icc_profile", "photoshop", "Comment"):
        assert key not in image.info, key
    assert not getattr(image, "text", None)
    for marker in (b"Exif\x00", b"CareshareTestCam", b"Jane Doe", b"xmpmeta", b"careshare swapped", b"ftyp"):
        assert marker not in data, marker


def nearest_quadrant(pixel: Any, grey: bool) -> int:
    """Which of ``QUADRANT_COLOURS`` (by index) a sampled pixel is closest to."""
    if grey:
        targets = [(0.299 * r + 0.587 * g + 0.114 * b,) for r, g, b in QUADRANT_COLOURS]
        value: tuple[float, ...] = (float(pixel),) if not isinstance(pixel, tuple) else (float(pixel[0]),)
    else:
        targets = [tuple(map(float, c)) for c in QUADRANT_COLOURS]
        value = tuple(float(v) for v in pixel[:3])
    distances = [sum((a - b) ** 2 for a, b in zip(value, t, strict=True)) for t in targets]
    return distances.index(min(distances))


def quadrant_order(image: Image.Image, grey: bool = False) -> list[int]:
    """The colour index found at the centre of the top-left, top-right, bottom-right, bottom-left quadrants."""
    width, height = image.size
    grey = grey or image.mode in ("L", "LA")
    points = [(width // 4, height // 4), (3 * width // 4, height // 4), (3 * width // 4, 3 * height // 4)]
    points.append((width // 4, 3 * height // 4))
    return [nearest_quadrant(image.getpixel(p), grey) for p in points]


def png_header_only(width: int, height: int, idat: bytes = b"") -> bytes:
    """A PNG whose IHDR declares ``width`` x ``height`` followed by ``idat`` (no real pixel data)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def gif_screen_with_frames(width: int, height: int, frames: int) -> bytes:
    """A GIF declaring a ``width`` x ``height`` canvas with ``frames`` one-pixel frames."""
    out = b"GIF89a" + struct.pack("<HH", width, height) + b"\x80\x00\x00" + b"\x00\x00\x00\xff\xff\xff"
    for _ in range(frames):
        out += b"\x21\xf9\x04\x00\x0a\x00\x00\x00"  # graphic control: 100 ms
        out += b"\x2c" + struct.pack("<HHHH", 0, 0, 1, 1) + b"\x00" + b"\x02\x02\x44\x01\x00"
    return out + b"\x3b"


# -- identify ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_hook_careshare_identify_every_format(fmt: str) -> None:
    data = encode([quadrants((8, 8))], fmt)
    assert handler.careshare_identify(head=data) == Identification(kind="image", media_type=FORMATS[fmt])


@pytest.mark.parametrize(
    ("brands", "expected"),
    [
        ((b"heic", [b"mif1", b"heic"]), "image/heic"),
        ((b"mif1", [b"heic"]), "image/heic"),
        ((b"heix", []), "image/heic"),
        ((b"hevc", [b"msf1"]), "image/heic"),
        ((b"avif", [b"mif1", b"miaf"]), "image/avif"),
        ((b"avis", [b"msf1", b"iso8"]), "image/avif"),
        ((b"mif1", [b"avif"]), "image/avif"),
        ((b"mif1", [b"miaf"]), "image/heif"),
        ((b"msf1", []), "image/heif"),
        ((b"MiHE", [b"heic"]), "image/heic"),  # an unknown major brand listing an image brand
        # Video major brands are the video handler's, whatever they list as compatible.
        ((b"isom", [b"iso2", b"mif1", b"heic"]), None),
        ((b"mp42", [b"isom", b"avif"]), None),
        ((b"qt  ", [b"qt  "]), None),
        ((b"M4V ", [b"M4V ", b"mp42"]), None),
        ((b"3gp5", [b"3gp5", b"isom"]), None),
        ((b"avc1", [b"mif1"]), None),
        ((b"dash", [b"iso6", b"mp41"]), None),
        ((b"crx ", [b"isom"]), None),  # an ISO BMFF file with no image brand at all
    ],
)
def test_identify_iso_bmff_by_brand(brands: tuple[bytes, list[bytes]], expected: str | None) -> None:
    major, compatible = brands
    body = major + b"\x00\x00\x00\x00" + b"".join(compatible)
    head = struct.pack(">I", 8 + len(body)) + b"ftyp" + body + b"\x00\x00\x00\x08free"
    ident = handler.careshare_identify(head=head)
    assert (ident.media_type if ident else None) == expected


@pytest.mark.parametrize(
    "text",
    [
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        b"\xef\xbb\xbf  \n<?xml version='1.0'?>\n<!-- made by hand -->\n<svg>",
        b'<?xml version="1.0" standalone="no"?><!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "x"><svg>',
        b"<!doctype svg><svg/>",
        b"<?xml version='1.0'?><?xml-stylesheet href='a.css'?><svg\n  width='1'>",
        b"<!DOCTYPE html><svg width='1'/>",
        "\ufeff<svg/>".encode("utf-16"),
    ],
)
def test_identify_svg(text: bytes) -> None:
    assert handler.careshare_identify(head=text) == Identification(kind="image", media_type="image/svg+xml")


@pytest.mark.parametrize(
    "text",
    [
        b"<svgfoo/>",
        b"<html><svg/></html>",
        b"<?xml version='1.0'?><note>svg</note>",
        b"<!-- never closed <svg>",
        b"hello <svg>",
        b"",
    ],
)
def test_identify_not_svg(text: bytes) -> None:
    assert handler.careshare_identify(head=text) is None


@pytest.mark.parametrize(
    "head",
    [
        b"BMW is a car, not a bitmap" + bytes(40),  # "BM" without a DIB header size
        b"II" + bytes(20),
        b"RIFF\x00\x00\x00\x00WAVEfmt ",
        b"GIF90a",
        b"\xff\xd8",  # two bytes of a JPEG are not enough
        b"%PDF-1.7\n",
        bytes(128) + b"DICM" + bytes(64),
        b"II*\x00" + bytes(124) + b"DICM" + bytes(64),  # a DICOM preamble holding a TIFF header: DICOM's
    ],
)
def test_identify_leaves_other_files(head: bytes) -> None:
    assert handler.careshare_identify(head=head) is None


def test_motion_photo_is_an_image() -> None:
    """A Pixel motion photo is a JPEG with an MP4 appended: the bytes start as a JPEG."""
    data = encode([quadrants((16, 16))], "JPEG") + b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00isommp42"
    assert handler.careshare_identify(head=data) == Identification(kind="image", media_type="image/jpeg")


# -- accepted files ----------------------------------------------------------------------------


def test_hook_careshare_process(tmp_path: Path) -> None:
    data = encode([store_oriented(quadrants((60, 40), noise=8), 6)], "JPEG", exif=exif_bytes(6, gps=True))
    processed = process(tmp_path, data)
    assert processed.handler == "image"
    assert Image.__version__ in processed.handler_version
    assert processed.metadata == {
        "width": 60,
        "height": 40,
        "format": "JPEG",
        "frames": 1,
        "had_exif": True,
        "had_gps": True,
    }
    assert processed.changes == ("orientation-applied", "metadata-stripped")
    shareable, thumbnail = processed.renditions
    assert (shareable.role, shareable.media_type) == ("shareable", "image/jpeg")
    assert (thumbnail.role, thumbnail.media_type) == ("thumbnail", "image/jpeg")
    assert reopen(shareable).size == (60, 40)
    assert quadrant_order(reopen(shareable)) == [0, 1, 2, 3]
    assert_clean(shareable)
    assert_clean(thumbnail)

    # Another kind is another handler's job.
    assert handler.careshare_process(source=source_for(tmp_path, data, "pdf"), kind="pdf", policy=Policy()) is None


@pytest.mark.parametrize(
    ("fmt", "mode"),
    [
        ("JPEG", "RGB"),
        ("JPEG", "L"),
        ("PNG", "RGB"),
        ("PNG", "L"),
        ("PNG", "P"),
        ("PNG", "I;16"),
        ("GIF", "P"),
        ("WEBP", "RGB"),
        ("AVIF", "RGB"),
        ("HEIF", "RGB"),
        ("TIFF", "RGB"),
        ("TIFF", "I;16"),
        ("BMP", "RGB"),
        ("BMP", "P"),
    ],
)
def test_every_format_becomes_a_clean_picture(tmp_path: Path, fmt: str, mode: str) -> None:
    picture = quadrants((48, 32), noise=6)
    if mode == "I;16":
        picture = Image.fromarray(np.asarray(picture.convert("L"), dtype=np.uint16) * 257)
    elif mode == "P":
        picture = picture.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    else:
        picture = picture.convert(mode)
    processed = process(tmp_path, encode([picture], fmt))
    shareable = rendition(processed, "shareable")
    # Palette pictures stay PNG (sharp edges); everything else opaque is a JPEG photo.
    assert shareable.media_type == ("image/png" if mode == "P" else "image/jpeg")
    image = reopen(shareable)
    assert image.size == (48, 32)
    assert image.mode in ("RGB", "L")
    assert quadrant_order(image) == [0, 1, 2, 3]
    assert processed.metadata["format"] == {"HEIF": "HEIC", "WEBP": "WebP"}.get(fmt, fmt)
    assert_clean(shareable)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF", "AVIF", "HEIF"])
def test_exif_orientation_puts_corners_in_place(tmp_path: Path, fmt: str, orientation: int) -> None:
    """The stored pixels are turned as a camera would; the shareable copy must be upright again."""
    upright = quadrants((64, 32))
    data = encode([store_oriented(upright, orientation)], fmt, exif=exif_bytes(orientation))
    processed = process(tmp_path, data)
    for role in ("shareable", "thumbnail"):
        image = reopen(rendition(processed, role))
        assert image.size == (64, 32), (role, image.size)
        assert quadrant_order(image) == [0, 1, 2, 3], role
    assert (processed.metadata["width"], processed.metadata["height"]) == (64, 32)
    # libheif (HEIC) and Pillow's TIFF reader turn the picture while decoding; the change is noted all the same.
    assert ("orientation-applied" in processed.changes) == (orientation != 1)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "AVIF", "HEIF", "TIFF"])
def test_gps_xmp_comments_and_profiles_are_stripped(tmp_path: Path, fmt: str) -> None:
    data = encode(
        [quadrants((40, 40))],
        fmt,
        exif=exif_bytes(1, gps=True),
        xmp=XMP,
        comment=b"patient: Jane Doe",
        icc=ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes(),
    )
    source_image = Image.open(io.BytesIO(data))
    assert dict(source_image.getexif().get_ifd(0x8825)), "the source must carry GPS for this test to mean anything"
    processed = process(tmp_path, data)
    assert processed.metadata["had_gps"] is True
    assert processed.metadata["had_exif"] is True
    assert "metadata-stripped" in processed.changes
    assert "converted-to-srgb" not in processed.changes  # an sRGB profile needs no conversion
    for output in processed.renditions:
        assert_clean(output)


def test_no_metadata_means_nothing_stripped(tmp_path: Path) -> None:
    processed = process(tmp_path, encode([quadrants((20, 20))], "BMP"))
    assert processed.changes == ()
    assert processed.metadata["had_exif"] is False
    assert processed.metadata["had_gps"] is False


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path: Path) -> None:
    data = encode([quadrants((40, 40)).convert("CMYK")], "JPEG")
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    processed = process(tmp_path, data)
    image = reopen(rendition(processed, "shareable"))
    assert image.mode == "RGB"
    assert quadrant_order(image) == [0, 1, 2, 3]
    assert "converted-to-srgb" in processed.changes


def test_embedded_profile_is_honoured_then_dropped(tmp_path: Path) -> None:
    """Under a profile whose red means blue, stored red pixels are blue once in sRGB."""
    stored = Image.new("RGB", (32, 32), (255, 0, 0))
    for fmt in ("PNG", "JPEG", "WEBP", "TIFF"):
        processed = process(tmp_path, encode([stored], fmt, icc=swapped_red_blue_profile()))
        image = reopen(rendition(processed, "shareable"))
        red, green, blue = image.getpixel((16, 16))[:3]
        assert blue > 200 and red < 40 and green < 40, (fmt, image.getpixel((16, 16)))
        assert "converted-to-srgb" in processed.changes
        assert "metadata-stripped" in processed.changes
        assert_clean(rendition(processed, "shareable"))


def test_broken_profile_is_ignored(tmp_path: Path) -> None:
    processed = process(tmp_path, encode([quadrants((20, 20))], "PNG", icc=b"not a profile at all" * 10))
    assert quadrant_order(reopen(rendition(processed, "shareable"))) == [0, 1, 2, 3]
    assert "converted-to-srgb" not in processed.changes


def test_transparency_makes_png(tmp_path: Path) -> None:
    picture = quadrants((40, 40)).convert("RGBA")
    picture.putpixel((0, 0), (0, 0, 0, 0))
    processed = process(tmp_path, encode([picture], "WEBP"))
    for output in processed.renditions:
        assert output.media_type == "image/png"
        image = reopen(output)
        assert image.mode == "RGBA"
        assert image.getpixel((0, 0))[3] == 0

    # An alpha channel nobody uses (all opaque) is a photo: JPEG.
    processed = process(tmp_path, encode([quadrants((40, 40)).convert("RGBA")], "PNG"))
    assert [o.media_type for o in processed.renditions] == ["image/jpeg", "image/jpeg"]


def test_long_edge_and_thumbnail_are_capped(tmp_path: Path) -> None:
    data = encode([quadrants((5000, 1000), noise=8)], "JPEG")
    processed = process(tmp_path, data)
    shareable = reopen(rendition(processed, "shareable"))
    assert shareable.size == (4096, 819)
    assert quadrant_order(shareable) == [0, 1, 2, 3]
    assert reopen(rendition(processed, "thumbnail")).size == (320, 64)
    assert processed.changes == ("resized",)
    assert (processed.metadata["width"], processed.metadata["height"]) == (5000, 1000)

    # The caps come from the policy, and apply after orientation (a tall picture stays tall).
    data = encode([store_oriented(quadrants((300, 600)), 8)], "PNG", exif=exif_bytes(8))
    processed = process(tmp_path, data, Policy(max_long_edge=100, thumbnail_size=30))
    shareable = reopen(rendition(processed, "shareable"))
    assert shareable.size == (50, 100)
    assert quadrant_order(shareable) == [0, 1, 2, 3]
    assert reopen(rendition(processed, "thumbnail")).size == (15, 30)
    assert set(processed.changes) >= {"resized", "orientation-applied"}

    # Never enlarged.
    processed = process(tmp_path, encode([quadrants((10, 6))], "PNG"))
    assert [reopen(o).size for o in processed.renditions] == [(10, 6), (10, 6)]


def test_first_frame_of_animations_and_first_page_of_tiffs(tmp_path: Path) -> None:
    frames = [quadrants((30, 30)), Image.new("RGB", (30, 30), "black"), Image.new("RGB", (30, 30), "yellow")]
    for fmt in ("GIF", "WEBP", "PNG", "TIFF"):
        processed = process(tmp_path, encode(frames, fmt))
        assert processed.metadata["frames"] == 3, fmt
        assert "first-frame-only" in processed.changes
        image = reopen(rendition(processed, "shareable"))
        assert getattr(image, "n_frames", 1) == 1
        assert quadrant_order(image) == [0, 1, 2, 3], fmt


def test_small_animations_are_kept_when_the_policy_says_so(tmp_path: Path) -> None:
    keep = Policy().with_section(handler.ImageOptions(keep_small_animations=True))
    frames = [quadrants((30, 30)), Image.new("RGB", (30, 30), "black"), Image.new("RGB", (30, 30), "yellow")]
    for fmt, media_type in (("GIF", "image/gif"), ("WEBP", "image/webp"), ("PNG", "image/webp")):
        data = encode([f.convert("P") if fmt == "GIF" else f for f in frames], fmt, comment=b"patient: Jane Doe")
        processed = process(tmp_path, data, keep)
        shareable = rendition(processed, "shareable")
        assert shareable.media_type == media_type
        assert shareable.path is not None
        image = Image.open(shareable.path, formats=[media_type.split("/")[1].upper()])
        assert image.n_frames == 3
        assert "comment" not in image.info
        assert b"Jane Doe" not in shareable.path.read_bytes()
        assert processed.metadata["animated"] is True
        assert "first-frame-only" not in processed.changes

    # Not small: more than SMALL_ANIMATION_EDGE on the long edge.
    big = [Image.new("RGB", (handler.SMALL_ANIMATION_EDGE + 1, 8), c) for c in ("red", "blue")]
    processed = process(tmp_path, encode(big, "GIF"), keep)
    assert rendition(processed, "shareable").media_type == "image/png"  # a GIF frame: palette, so PNG
    assert "first-frame-only" in processed.changes


def test_heic_primary_image_is_the_one_shared(tmp_path: Path) -> None:
    """zPug_3.heic holds three images; the primary is index 1 (per pillow_heif's tests)."""
    data = (CORPUS / "image" / "pillowheif_zPug_3.heic").read_bytes()
    processed = process(tmp_path, data)
    primary = Image.open(io.BytesIO(data), formats=["HEIF"])
    assert primary.tell() == 1
    assert reopen(rendition(processed, "shareable")).size == primary.size
    assert processed.metadata["frames"] == 3


# -- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        png_header_only(20_000, 20_000, b"garbage"),
        png_header_only(50_001, 1_000),
        gif_screen_with_frames(65_535, 65_535, 1),
        gif_screen_with_frames(5_000, 5_000, 3),  # 25 MP a frame, 75 MP in all: frames count
    ],
    ids=["png-400MP", "png-just-over", "gif-4GP", "gif-frames"],
)
def test_bombs_are_refused_before_decoding(tmp_path: Path, data: bytes) -> None:
    """These files carry no decodable pixels: decoding would fail as unreadable, not as too large."""
    problem = refusal(tmp_path, data)
    assert problem.code == "image-too-large"
    assert problem.status == 422
    assert "50 megapixels" in problem.detail


def test_pixel_cap_comes_from_the_policy_and_counts_every_frame(tmp_path: Path) -> None:
    small = Policy(max_image_pixels=1_000)
    assert process(tmp_path, encode([quadrants((20, 20))], "GIF"), small).metadata["frames"] == 1
    # 400 pixels each, 1200 in all (different frames: Pillow's GIF writer merges identical ones).
    frames = [quadrants((20, 20), noise=30, seed=seed) for seed in range(3)]
    for fmt in ("GIF", "WEBP", "PNG"):
        assert refusal(tmp_path, encode(frames, fmt), small).code == "image-too-large", fmt
    # A TIFF whose second page is larger than its first: caught when the page is reached.
    pages = [quadrants((10, 10)), quadrants((40, 40))]
    problem = refusal(tmp_path, encode(pages, "TIFF"), small)
    assert problem.code == "image-too-large"
    assert "0.001 megapixels" in problem.detail


@pytest.mark.parametrize(
    "data",
    [
        png_header_only(0, 10),
        png_header_only(70_000, 1),  # 70,000 pixels, far under the cap, but no camera makes that edge
    ],
    ids=["zero-width", "absurd-edge"],
)
def test_zero_or_absurd_dimensions_are_unreadable(tmp_path: Path, data: bytes) -> None:
    assert refusal(tmp_path, data).code == "image-unreadable"


def test_svg_is_refused(tmp_path: Path) -> None:
    problem = refusal(tmp_path, b"<?xml version='1.0'?>\n<svg onload='alert(1)'><script>x</script></svg>")
    assert problem.code == "image-svg-unsupported"
    assert problem.status == 415


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("keep", [0.5, 0.95])
def test_truncated_files_are_unreadable(tmp_path: Path, fmt: str, keep: float) -> None:
    picture = quadrants((120, 90), noise=60)
    data = encode([picture.convert("P") if fmt == "GIF" else picture], fmt)
    assert refusal(tmp_path, data[: int(len(data) * keep)]).code == "image-unreadable"


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_files_claiming_an_image_type_are_unreadable(tmp_path: Path, fmt: str) -> None:
    # Only the bytes identification looks at; WebP's VP8 header would give libwebp enough to paint noise.
    magic = encode([quadrants((8, 8))], fmt)[: {"WEBP": 12, "AVIF": 32, "HEIF": 32, "BMP": 18}.get(fmt, 8)]
    data = magic + b"this is not a picture, just text after the magic " * 20
    assert handler.careshare_identify(head=data) is not None
    # GIF's canvas size follows the magic, so the text reads as a 26,740 x 29,545 canvas: refused as
    # too large before anything is decoded, which is right for what the header declares.
    expected = "image-too-large" if fmt == "GIF" else "image-unreadable"
    assert refusal(tmp_path, data).code == expected


def test_refusal_sentences_are_plain() -> None:
    for problem_type in (handler.IMAGE_TOO_LARGE, handler.IMAGE_UNREADABLE, handler.IMAGE_SVG_UNSUPPORTED):
        assert problem_type.detail.endswith(".")
        assert "Pillow" not in problem_type.detail and "decompression" not in problem_type.detail.lower()


# -- the corpus --------------------------------------------------------------------------------

EXPECTED_CODE = {"bomb": "image-too-large", "corrupt": "image-unreadable", "svg": "image-svg-unsupported"}


def corpus_rows() -> list[dict[str, str]]:
    with (CORPUS / "MANIFEST.tsv").open(newline="") as manifest:
        return [row for row in csv.DictReader(manifest, delimiter="\t") if row["path"].startswith("image/")]


@pytest.mark.parametrize("row", corpus_rows(), ids=lambda row: row["path"])
def test_corpus_file_ends_as_the_manifest_says(tmp_path: Path, row: dict[str, str]) -> None:
    data = (CORPUS / row["path"]).read_bytes()
    assert handler.careshare_identify(head=data[: 64 * 1024]) is not None
    expected = row["expected"]
    if expected == "accept":
        processed = process(tmp_path, data)
        for output in processed.renditions:
            assert_clean(output)
            assert max(reopen(output).size) <= 4096
    else:
        reason = expected.removeprefix("refuse:")
        # pillow_png_decompression_dos.png is a 1x1 PNG whose zTXt chunk inflates without end: a
        # bomb in hidden data, refused as image-too-large with its own sentence (no "resize" advice).
        assert refusal(tmp_path, data).code == EXPECTED_CODE[reason]


@pytest.mark.parametrize(
    ("name", "size", "gps"),
    [
        ("imgproxy_orientation-6.png", (100, 200), False),
        ("pillow_avif_rot1mir0.avif", (640, 427), False),
        ("exoplayer_pixel-motion-photo-shortened.jpg", (3024, 4032), True),
        ("exoplayer_sample_still_photo.heic", (1080, 1920), False),
    ],
)
def test_corpus_pictures_stand_upright(tmp_path: Path, name: str, size: tuple[int, int], gps: bool) -> None:
    processed = process(tmp_path, (CORPUS / "image" / name).read_bytes())
    assert (processed.metadata["width"], processed.metadata["height"]) == size
    assert reopen(rendition(processed, "shareable")).size == size
    assert processed.metadata["had_gps"] is gps


# -- properties --------------------------------------------------------------------------------

policies = st.builds(
    lambda keep, **shared: Policy(**shared).with_section(handler.ImageOptions(keep_small_animations=keep)),
    max_long_edge=st.sampled_from([24, 4096]),
    thumbnail_size=st.sampled_from([8, 320]),
    keep=st.booleans(),
)


@hypothesis_settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(picture=images(), policy=policies)
def test_random_pictures_become_valid_shareable_copies(tmp_path: Path, picture: GeneratedImage, policy: Policy) -> None:
    assert handler.careshare_identify(head=picture.data) == Identification("image", picture.media_type)
    processed = process(tmp_path, picture.data, policy)  # valid pictures under every cap are accepted
    width, height = picture.upright_size
    assert (processed.metadata["width"], processed.metadata["height"]) == (width, height)
    assert processed.metadata["had_gps"] is picture.has_gps
    assert processed.metadata["frames"] == picture.frames
    shareable, thumbnail = processed.renditions
    image = reopen(shareable)
    assert max(image.size) <= policy.max_long_edge
    assert max(reopen(thumbnail).size) <= policy.thumbnail_size
    assert_clean(shareable)
    assert_clean(thumbnail)
    if min(image.size) >= 16:
        # Corners in place; a swapped red-blue profile must have swapped those colours.
        expected = [2, 1, 0, 3] if picture.has_icc else [0, 1, 2, 3]
        if picture.mode != "1":  # two grey levels cannot tell four quadrants apart
            first = image.convert("RGBA") if image.mode == "P" else image  # a kept GIF animation
            assert quadrant_order(first, grey=picture.mode in ("L", "LA", "I;16")) == expected


@given(data=st.binary(max_size=2048))
def test_random_bytes_never_crash(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    ident = handler.careshare_identify(head=data)
    assert ident is None or ident.kind == "image"
    if data:
        try:
            process(tmp_path_factory.mktemp("random"), data)
        except Problem as problem:
            assert problem.code in {"image-unreadable", "image-too-large", "image-svg-unsupported"}


MAGICS = [
    b"\xff\xd8\xff",
    b"\x89PNG\r\n\x1a\n",
    b"GIF89a",
    b"RIFF\x00\x10\x00\x00WEBPVP8 ",
    b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf",
    b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic",
    b"II*\x00",
    b"MM\x00*",
    b"BM\x00\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00\x28\x00\x00\x00",
]


@given(magic=st.sampled_from(MAGICS), tail=st.binary(max_size=1024))
def test_random_bytes_after_an_image_magic_only_refuse(
    tmp_path_factory: pytest.TempPathFactory, magic: bytes, tail: bytes
) -> None:
    data = magic + tail
    assert handler.careshare_identify(head=data) is not None
    try:
        processed = process(tmp_path_factory.mktemp("magic"), data)
    except Problem as problem:
        assert problem.code in {"image-unreadable", "image-too-large"}
    else:
        assert processed.renditions  # random bytes that happen to decode still make a clean copy


# -- through the API (the handler runs in its own process there) -----------------------------


async def test_upload_photo_end_to_end(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str
) -> None:
    data = encode([store_oriented(quadrants((80, 40), noise=6), 6)], "JPEG", exif=exif_bytes(6, gps=True), xmp=XMP)
    response = await client.post(
        f"/v1/patients/{patient_id}/files", content=data, params={"filename": "photo.jpg"}, headers=clinician
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["kind"], body["media_type"], body["status"]) == ("image", "image/jpeg", "ready")
    assert body["metadata"]["had_gps"] is True
    assert (body["metadata"]["width"], body["metadata"]["height"]) == (80, 40)
    assert body["check"]["handler"] == "image"
    assert "orientation-applied" in body["check"]["changes"]
    roles = {r["role"]: r["media_type"] for r in body["renditions"]}
    assert roles == {"original": "image/jpeg", "shareable": "image/jpeg", "thumbnail": "image/jpeg"}
    shareable = await client.get(f"/v1/files/{body['id']}/content?rendition=shareable", headers=clinician)
    assert shareable.status_code == 200
    image = Image.open(io.BytesIO(shareable.content), formats=["JPEG"])
    assert image.size == (80, 40)
    assert not image.getexif()
    assert b"xmpmeta" not in shareable.content
    assert quadrant_order(image) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>", 415, "image-svg-unsupported"),
        (png_header_only(30_000, 30_000), 422, "image-too-large"),
        (b"\x89PNG\r\n\x1a\n but truncated", 422, "image-unreadable"),
    ],
    ids=["svg", "bomb", "not-a-png"],
)
async def test_upload_refusals_end_to_end(
    client: AsyncTestClient[Any], clinician: dict[str, str], patient_id: str, data: bytes, status: int, code: str
) -> None:
    response = await client.post(
        f"/v1/patients/{patient_id}/files", content=data, params={"filename": "picture"}, headers=clinician
    )
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code
    assert body["detail"].endswith(".")
    listing = await client.get(f"/v1/patients/{patient_id}/files", headers=clinician)
    # Refused by its check: the row stays, rejected with the reason; refused before (415): no row.
    kept = listing.json()["items"]
    assert [(f["id"], f["status"], f["check"]["reason"]) for f in kept] == (
        [(body["file_id"], "rejected", code)] if "file_id" in body else []
    )
    assert all(f["renditions"] == [] for f in kept)
